"""The robotics half of the commands (docs/ROBOTICS.md): MCAP for `encode`/`decode`/`eval`, and `--zenoh`,
`--foxglove`, `--mcap`, `--frame-id` for `publish`/`receive`. cli/files.py and cli/live.py hand over to the
commands here when their arguments ask for these outputs."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import open_model, sender_config
from .output import EXIT_DAMAGED, console, print_json, progress
from .streaming import (
    brokers,
    capture_options,
    report_received,
    run_sender,
    stream_names,
    until_stopped,
)

RECORDING_SUFFIXES = (".ltk", ".mcap")


def add_live_arguments(publish: argparse.ArgumentParser, receive: argparse.ArgumentParser) -> None:
    """The robotics options of `publish` and `receive` (one of --broker / --zenoh / --foxglove / --mcap is
    needed: wants_robot says so in one line when none is)."""
    for p in (publish, receive):
        p.add_argument("--zenoh", nargs="?", const="", default=None, metavar="ENDPOINT",
                       help="Zenoh transport (beside or instead of --broker): publish listens on ENDPOINT, receive "
                            "connects to it (default tcp/127.0.0.1:7447; peer to peer, no router)")
        p.add_argument("--zenoh-mode", choices=("peer", "client"), default="peer",
                       help="client: both ends connect to a Zenoh router at ENDPOINT (default: peer)")
    publish.add_argument("--foxglove", nargs="?", const="", default=None, metavar="HOST:PORT",
                         help="serve the stream live on Foxglove's WebSocket protocol (default 127.0.0.1:8765): "
                              "per camera a tokens channel and a decoded JPEG preview (docs/ROBOTICS.md)")
    publish.add_argument("--mcap", default=None, metavar="FILE", help="also record every camera to this MCAP file")
    publish.add_argument("--frame-id", action="append", default=None, metavar="ID",
                         help="the camera's coordinate frame, one per --source (default: the stream name)")
    publish.add_argument("--no-preview", action="store_true",
                         help="Foxglove/MCAP: tokens only, no decoded preview (saves a decode per frame)")


def add_eval_arguments(evaluate: argparse.ArgumentParser) -> None:
    evaluate.add_argument("--reference", default=None, metavar="CLIP",
                          help="for a .ltk/.mcap input: the clip it was made from, for PSNR and SSIM")


def add_encode_arguments(encode: argparse.ArgumentParser) -> None:
    encode.add_argument("--no-preview", action="store_true",
                        help="an .mcap output: tokens only, no decoded JPEG preview channel (a .ltk file has "
                             "none anyway)")


def is_recording(path: str) -> bool:
    return Path(path).suffix.lower() in RECORDING_SUFFIXES


def wants_robot(a: argparse.Namespace) -> bool:
    """Whether `publish`/`receive` go through the robot outputs (any of --zenoh/--foxglove/--mcap; --frame-id
    alone does not: MQTT's publish carries it too); refuses a publish or receive with nowhere to go."""
    robot = any(getattr(a, k, None) is not None for k in ("zenoh", "foxglove", "mcap"))
    if not robot and not a.broker:
        raise ValueError("nowhere to connect: give --broker mqtt://HOST:PORT, --zenoh [ENDPOINT]"
                         + (", --foxglove [HOST:PORT] or --mcap FILE" if hasattr(a, "foxglove") else ""))
    return robot


def frame_ids(a: argparse.Namespace, streams: list[str]) -> list[str] | None:
    """`--frame-id`, one per stream (None: each stream's name); a wrong count is refused before the model loads."""
    if a.frame_id and len(a.frame_id) != len(streams):
        raise ValueError(f"{len(a.frame_id)} --frame-id for {len(streams)} streams: give one per --source")
    return list(a.frame_id) if a.frame_id else None


def cmd_decode_mcap(a: argparse.Namespace) -> int:
    from livetok.stream.mcap_file import decode_mcap, mcap_records
    from livetok.stream.wire import PacketError

    src = Path(a.input)
    if not src.is_file():
        raise ValueError(f"{src} is a folder, not an .mcap file" if src.is_dir() else f"no such file: {src}")
    model = open_model(a)
    with progress() as prog:
        task = prog.add_task("decode", total=mcap_records(src))
        res = decode_mcap(model, src, a.output, heatmap=a.heatmap,
                          progress=lambda name, n: prog.update(task, advance=n, description=f"decode {name}"))
    if not res.frames:
        raise PacketError(f"{src}: no frame could be decoded, nothing written: {res.error or 'no frames'}")
    con = console()
    for p in res.outputs:
        con.print(f"wrote {p}")
    con.print(f"{res.frames} frames from {len(res.cameras)} camera(s)"
              + (f", {res.frames_lost} lost to damage; the first: {res.error}" if res.error else ""))
    if a.json:
        print_json(res.to_json())
    return 0 if res.error is None else EXIT_DAMAGED


def cmd_eval_recordings(a: argparse.Namespace) -> int:
    from livetok.stream.errors import StreamError
    from livetok.stream.mcap_file import RecordingMetrics, evaluate_recording

    for p in a.inputs:
        if not Path(p).is_file():
            raise ValueError(f"no such file: {p}")
    if a.reference is not None and len(a.inputs) != 1:
        raise ValueError("--reference names the clip of one recording: give one .ltk/.mcap with it")
    model = open_model(a)
    clips: dict[str, RecordingMetrics] = {}
    for p in a.inputs:
        res = evaluate_recording(model, p, reference=a.reference, max_frames=a.max_frames)
        for name, m in res.clips.items():
            key = name if name not in clips else f"{Path(p).stem}/{name}"
            if key in clips:
                raise StreamError(f"two inputs share the camera name {name!r}; rename one")
            clips[key] = m
    overall = RecordingMetrics.weighted(list(clips.values()))
    con = console()
    for name, m in clips.items():
        q = f"PSNR {m.psnr:.2f} dB, " if m.psnr is not None else "(no reference clip: no PSNR), "
        con.print(f"[bold]{name}[/]: {q}{m.tokens_per_frame:.1f} tokens/frame, "
                  f"{m.bits_per_frame / 1000:.2f} kbit/frame, decode {m.decode_ms:.1f} ms, {m.frames} frames")
    if a.json:
        print_json({"overall": overall.to_json(), "clips": {k: m.to_json() for k, m in clips.items()}})
    return 0


def cmd_publish_robot(a: argparse.Namespace) -> int:
    from livetok.stream.foxglove_feed import parse_host_port
    from livetok.stream.robotics import RobotOutputs, publish_robot
    from livetok.stream.sources import frame_total
    from livetok.stream.zenoh_transport import parse_zenoh

    streams = stream_names(a.source, a.stream)
    sender, capture = sender_config(a), capture_options(a)
    outputs = RobotOutputs(
        broker=brokers(a) if a.broker else None, qos=a.qos,
        zenoh=parse_zenoh(a.zenoh, a.zenoh_mode) if a.zenoh is not None else None,
        foxglove=parse_host_port(a.foxglove) if a.foxglove is not None else None,
        mcap=a.mcap, preview=not a.no_preview, connect_timeout_s=a.connect_timeout)
    ids = frame_ids(a, streams)
    for source in a.source:
        frame_total(source)  # a missing file or bad spec, in one line, before the model loads
    model = open_model(a)
    con = console()

    def ready(foxglove_port: int | None) -> None:
        if foxglove_port is not None:
            host = outputs.foxglove[0] if outputs.foxglove else "127.0.0.1"
            con.print(f"Foxglove: open ws://{host}:{foxglove_port} in Foxglove (Open connection -> "
                      f"Foxglove WebSocket)")

    # SIGINT/SIGTERM: a clean stop, as MQTT's publish (end of stream out, the MCAP file finalised)
    return run_sender(
        lambda stop, on_stats: publish_robot(
            model, a.source, streams, sender, outputs, capture, frame_ids=ids, on_stats=on_stats,
            on_ready=ready, stop=stop),
        lambda res: (f"published {res.frames_published} frames of {', '.join(repr(s) for s in streams)} to "
                     f"{'; '.join(res.outputs)}: {res.fps} fps, {res.frames_dropped} dropped, "
                     f"{res.tokens_per_frame} tokens/frame, {res.bits_per_s / 1000:.1f} kbit/s"),
        a.json)


def cmd_receive_zenoh(a: argparse.Namespace) -> int:
    from livetok.stream.live import RecordOptions
    from livetok.stream.robotics import receive_zenoh
    from livetok.stream.zenoh_transport import parse_zenoh

    if a.workers != 1 or a.worker is not None:
        raise ValueError("--workers/--worker split MQTT streams; with --zenoh run one receiver per stream")
    if a.broker:
        raise ValueError("receive reads one transport: give --broker or --zenoh, not both")
    cfg = parse_zenoh(a.zenoh, a.zenoh_mode)
    timeout = a.timeout if a.timeout and a.timeout > 0 else None
    model = open_model(a)
    con = console()
    record = RecordOptions(out=a.out, show=a.show, idle_timeout_s=timeout, max_frames=a.max_frames,
                           on_status=con.print)
    # SIGINT/SIGTERM: a clean stop, as MQTT's receive (the MP4 finalised, the summary printed, 128 + signal)
    res, status = until_stopped(lambda stop: receive_zenoh(model, cfg, a.stream, record, max_lag_s=a.max_lag,
                                                           stop=stop))
    return report_received(res, status, a.json)
