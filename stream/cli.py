"""The `livetok` command line: parses arguments and calls the library, nothing else.

`--json` prints one JSON object on stdout; everything meant for people goes to stderr. Errors are
one line (`livetok: error: ...`) and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the commands import what they need when they run: `livetok --help` stays fast
    from livetok.engine.config import SenderConfig
    from livetok.engine.runtime import Runtime
    from livetok.stream.broker_url import BrokerConfig

log = logging.getLogger("livetok")

EXIT_ERROR = 2
EXIT_DAMAGED = 1  # `decode`: the video was written, but frames were lost to damage in the file
# `receive` and `webrtc recv` end after this many seconds without a frame (--timeout): a receiver
# whose publisher was killed, or never came, ends on its own instead of waiting for ever
IDLE_TIMEOUT_S = 30.0


# ---------------------------------------------------------------------------------------------
# shared options


def _add_model_args(p: argparse.ArgumentParser, backend: bool = True) -> None:
    p.add_argument("--weights", default=None, help="weights file (.safetensors); default: the shipped model")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, auto (default: cpu)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (default: 2, or fewer when this process may use fewer CPUs; "
                        "$OMP_NUM_THREADS when set). Idle threads spin only briefly before they sleep "
                        "(GOMP_SPINCOUNT=5000 unless it or OMP_WAIT_POLICY is set), so processes sharing the "
                        "CPU do not stall each other; on a machine of your own, --threads <cores> may run faster")
    if backend:
        p.add_argument("--backend", default="torch", choices=["torch", "onnx", "cuda-graph", "auto"],
                       help="run the model in torch (default), onnxruntime (CUDA EP when onnxruntime-gpu has "
                            "one, else CPU) or torch replaying CUDA graphs (needs a CUDA device: an error "
                            "without one); auto = cuda-graph with CUDA, else onnx when the onnx extra is "
                            "installed, else torch")
        p.add_argument("--onnx-dir", default=None,
                       help="ONNX export to run (--backend onnx); default: exported on first use into "
                            "$XDG_CACHE_HOME (~/.cache)/livetok/onnx/<model id>")


def _add_sender_args(p: argparse.ArgumentParser, signal_flag: str = "--signal") -> None:
    p.add_argument("--policy", default="learned",
                   choices=["fixed", "infotok", "learned", "rdo", "prior", "oracle", "search"],
                   help="budget policy (default: learned, InfoTok's rule on the budget head's predicted gain: "
                        "no router decode); oracle and search are benchmark arms")
    p.add_argument("--rate", type=float, default=0.5,
                   help="InfoTok's beta as a fraction of the N positions (default 0.5): a frame whose information "
                        "equals the population mean stored with the weights keeps rate * N tokens; busier "
                        "frames keep more, quieter ones fewer, so a clip's kept fraction can be far from RATE "
                        "(an average, not a cap: exact only for --policy fixed). For a ceiling use --max-rate; "
                        "for a bit rate, --target-bps")
    p.add_argument("--max-rate", type=float, default=None,
                   help="hard ceiling: no frame, keyframes included, keeps more than floor(MAX_RATE * N) tokens "
                        "(applied after the policy and rate control; default: none)")
    p.add_argument("--target-bps", type=float, default=None,
                   help="rate control: scale beta to meet this many bits/s (whole packets over capture time: "
                        "README, kbit/s). A frame keeps at least the policy's floor of N/16 tokens, so a target "
                        "below that floor cannot be met: the stream runs at its floor and a warning says so")
    p.add_argument("--target-tokens", type=float, default=None,
                   help="rate control: scale beta to meet this mean number of tokens per frame")
    # the default is BudgetConfig.skip_fraction (not imported here: `livetok --help` stays fast)
    p.add_argument("--skip", type=float, default=1.0 / 24.0, metavar="FRACTION", dest="skip_fraction",
                   help="skip mode (infotok, learned): a frame whose tokens would buy less over repeating the "
                        "previous frame than FRACTION * N tokens' worth sends none, and the receiver repeats "
                        "its frame (default 1/24 ≈ 0.0417; 0: never skip, every frame keeps N/16)")
    p.add_argument("--normaliser", default="population", choices=["population", "ema"],
                   help="infotok normaliser: the population mean stored with the weights, or the stream's own EMA")
    p.add_argument("--keyframe-interval", type=int, default=300, help="frames between keyframes; 0 = first only")
    # `webrtc send` takes --signal for the signalling URL; its information signal is --router-signal
    p.add_argument(signal_flag, dest="signal", default="gain", choices=["error", "gain", "bits"],
                   help="infotok's information signal: full-rate error (the paper), the gain of the tokens, or "
                        "bits: their code length under the entropy coder (no router decode; positions ranked by it)")
    p.add_argument("--ranking", default="gain", choices=["error", "gain", "surprise", "prefix"],
                   help="which positions fill the budget (default: gain; error = InfoTok's)")
    p.add_argument("--wire", default="v2", choices=["v1", "v2"],
                   help="packet format: v2 entropy-codes the mask and tokens (default), v1 is fixed-length "
                        "(docs/PACKET.md); receivers read both")


def _sender(a: argparse.Namespace) -> SenderConfig:
    from livetok.engine.config import BudgetConfig, SenderConfig
    from livetok.engine.rate_control import RateControlConfig

    rc = None
    if a.target_bps is not None or a.target_tokens is not None:
        rc = RateControlConfig(target_bps=a.target_bps, target_tokens=a.target_tokens)
    return SenderConfig(
        budget=BudgetConfig(policy=a.policy, rate=a.rate, max_rate=a.max_rate, normaliser=a.normaliser,
                            signal=a.signal, skip_fraction=a.skip_fraction),
        keyframe_interval=a.keyframe_interval,
        ranking=a.ranking,
        rate_control=rc,
        wire=int(a.wire[1]),
    )


def _model(a: argparse.Namespace) -> Runtime:
    import torch

    from livetok.engine.threads import default_threads
    from livetok.export.backends import open_runtime

    threads = default_threads(a.threads)
    if threads:
        torch.set_num_threads(threads)
    return open_runtime(getattr(a, "backend", "torch"), a.weights, getattr(a, "onnx_dir", None), a.device,
                        threads)


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


def _progress() -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    con = _console()
    # off when nobody watches (a pipe, a log file): a stopped bar would leave a blank line there
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=con, transient=True, disable=not con.is_interactive)


def _metrics_line(m: dict[str, Any]) -> str:
    # kbit/s at the clip's own frame rate (stream/bitrate.py), where the run knows it
    rate = f" = {m['bits_per_s'] / 1000:.1f} kbit/s" if "bits_per_s" in m else ""
    return (f"PSNR {m['psnr']:.2f} dB  SSIM {m['ssim']:.4f}  "
            f"{m['tokens_per_frame']:.1f}/{m['positions']} tokens/frame  "
            f"{m['bits_per_frame'] / 1000:.2f} kbit/frame{rate}  enc {m['encode_ms']:.1f} ms  "
            f"dec {m['decode_ms']:.1f} ms  {m['decodes_per_frame']:.2f} decodes/frame  {m['frames']} frames")


def _warn(text: str | None) -> None:
    """One warning line on stderr (a rate target below what the stream can reach, ...)."""
    if text:
        _console().print(f"[yellow]warning[/]: {text}")


# ---------------------------------------------------------------------------------------------
# commands


def cmd_eval(a: argparse.Namespace) -> int:
    if a.inputs and all(Path(p).suffix.lower() in (".ltk", ".mcap") for p in a.inputs):  # recordings
        from livetok.stream.robotics_cli import cmd_eval_recordings

        return cmd_eval_recordings(a)
    from livetok.stream.evaluate import evaluate_files, video_files
    from livetok.stream.sources import frame_total

    sender = _sender(a)
    a.inputs = video_files(a.inputs)  # a folder: the clips in it
    totals = [frame_total(p, a.max_frames) for p in a.inputs]
    model = _model(a)
    with _progress() as prog:
        task = prog.add_task("eval", total=None if None in totals else sum(t or 0 for t in totals))
        res = evaluate_files(model, a.inputs, sender, max_frames=a.max_frames, per_frame=a.per_frame,
                             progress=lambda name, n: prog.update(task, advance=n, description=f"eval {name}"))
    con = _console()
    for name, m in res["clips"].items():
        con.print(f"[bold]{name}[/]: {_metrics_line(m)}")
    con.print(f"[bold]overall[/]: {_metrics_line(res['overall'])}")
    for m in res["clips"].values():
        _warn(m.get("warning"))
    # what was asked for, named apart from what each clip reached (`kept_fraction`)
    res["policy"], res["rate_target"], res["max_rate"] = a.policy, a.rate, a.max_rate
    if a.json:
        _print_json(res)
    return 0


def cmd_encode(a: argparse.Namespace) -> int:
    if Path(a.output).suffix.lower() == ".mcap":  # the same packets in an MCAP file (docs/ROBOTICS.md)
        from livetok.stream.robotics_cli import cmd_encode_mcap

        return cmd_encode_mcap(a)
    from livetok.stream.files import check_ltk_output, encode_file
    from livetok.stream.sources import frame_total

    sender = _sender(a)
    check_ltk_output(a.output)  # before the model loads
    total = frame_total(a.input, a.max_frames)
    model = _model(a)
    with _progress() as prog:
        task = prog.add_task("encode", total=total)
        summary = encode_file(model, a.input, a.output, sender, max_frames=a.max_frames,
                              progress=lambda name, n: prog.update(task, advance=n, description=f"encode {name}"))
    _console().print(f"wrote {summary['output']}: {summary['frames']} frames, "
                     f"{summary['tokens_per_frame']:.1f} tokens/frame, "
                     f"{summary['bits_per_frame'] / 1000:.2f} kbit/frame = {summary['bits_per_s'] / 1000:.1f} kbit/s")
    _warn(summary.get("warning"))
    if a.json:
        _print_json(summary)
    return 0


def cmd_decode(a: argparse.Namespace) -> int:
    if Path(a.input).suffix.lower() == ".mcap":  # an MCAP recording (docs/ROBOTICS.md)
        from livetok.stream.robotics_cli import cmd_decode_mcap

        return cmd_decode_mcap(a)
    from livetok.stream.files import decode_file, ltk_records
    from livetok.stream.wire import PacketError

    src = Path(a.input)
    if not src.is_file():  # said before the model loads
        raise ValueError(f"{src} is a folder, not a .ltk file" if src.is_dir() else f"no such file: {src}")
    model = _model(a)
    with _progress() as prog:
        task = prog.add_task("decode", total=ltk_records(a.input))
        res = decode_file(model, a.input, a.output, heatmap=a.heatmap,
                          progress=lambda name, n: prog.update(task, advance=n, description=f"decode {name}"))
    if not res["frames"]:  # nothing to watch: an error, not "wrote x.mp4: 0 frames" (no file was written)
        why = res["error"] or "the file holds no frames"
        raise PacketError(f"{src}: no frame could be decoded, nothing written: {why}")
    con = _console()
    lost = f", {res['frames_lost']} lost to damage (the last good frame held)" if res["frames_lost"] else ""
    con.print(f"wrote {res['output']}: {res['frames']} frames{lost}")
    if res["error"]:
        con.print(f"[yellow]warning[/]: {res['damaged']} damaged packet(s) or stretch(es) skipped, decoding resumed "
                  f"at the next keyframe; the first: {res['error']}")
    if a.json:
        _print_json(res)
    return 0 if res["error"] is None else EXIT_DAMAGED


def cmd_demo(a: argparse.Namespace) -> int:
    from livetok.stream.demo import demo_source, run_demo
    from livetok.stream.sources import frame_total

    sender = _sender(a)
    total = frame_total(*demo_source(a.source, a.frames))
    model = _model(a)
    with _progress() as prog:
        task = prog.add_task("demo", total=total)
        res = run_demo(model, a.source, a.out, sender, a.frames, progress=lambda rec: prog.update(task, advance=1))
    con = _console()
    con.print(f"[bold]{res['source']}[/]: {_metrics_line(res)}")
    for p in res["outputs"]:
        con.print(f"  wrote {p}")
    if a.json:
        _print_json(res)
    return 0


def _broker(a: argparse.Namespace) -> list[BrokerConfig]:
    """Every --broker (the nodes of one cluster, tried in order on failure), parsed."""
    from livetok.stream.broker_url import parse_broker_url

    if a.connect_timeout <= 0:
        raise ValueError(f"--connect-timeout must be > 0 seconds, got {a.connect_timeout:g}")
    return [parse_broker_url(url, ca_file=a.ca_file, password_file=a.password_file) for url in a.broker]


def _size(s: str | None) -> tuple[int, int] | None:
    if s is None:
        return None
    try:
        w, h = (int(v) for v in s.lower().split("x"))
    except ValueError:
        raise ValueError(f"bad --size {s!r}: use WIDTHxHEIGHT, e.g. 256x192") from None
    if w < 8 or h < 8:
        raise ValueError(f"bad --size {s!r}: both sides must be at least 8 pixels")
    return w, h


# the live table's columns: (header, stats key). Headers short enough that the table fits an
# 80-column terminal whole; the full names are the JSON keys
_STAGE_COLUMNS = (("stage", "stage"), ("frames", "count"), ("fps", "fps"), ("p50 ms", "latency_ms_p50"),
                  ("p99 ms", "latency_ms_p99"), ("queue", "queue_depth"), ("dropped", "dropped"))


def _ms(v: float | None) -> str:
    """A latency for people: "–" when no frame has been timed yet (never "None")."""
    return "–" if v is None else f"{v:g}"


def _stats_table(d: dict[str, Any]) -> Any:
    from rich.table import Table

    t = Table(title=f"{d['frames_published']} published, {d['frames_dropped']} dropped, "
                    f"p50 {_ms(d['latency_ms_p50'])} ms, {d['bits_per_s'] / 1000:.1f} kbit/s")
    for header, _ in _STAGE_COLUMNS:
        t.add_column(header, justify="left" if header == "stage" else "right", no_wrap=True)
    for s in d["stages"]:
        t.add_row(*(_ms(s[k]) if k.startswith("latency") else str(s[k]) for _, k in _STAGE_COLUMNS))
    return t


class _LiveTable:
    """The live per-stage table on stderr (only when stderr is a terminal)."""

    def __init__(self) -> None:
        self.con = _console()
        self.live: Any = None
        if self.con.is_terminal:
            from rich.live import Live

            self.live = Live(console=self.con, refresh_per_second=4, transient=True)
            self.live.start()

    def update(self, d: dict[str, Any]) -> None:
        if self.live is None:
            return
        self.live.update(_stats_table(d))

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()


def _stream_names(sources: list[str], streams: list[str]) -> list[str]:
    if len(streams) == len(sources):
        return streams
    if len(streams) == 1:
        return [f"{streams[0]}-{i}" for i in range(len(sources))]
    raise ValueError(f"{len(sources)} --source for {len(streams)} --stream: give one --stream, or one per --source")


def _check_sources(sources: Sequence[str]) -> None:
    """Refuse a missing or unreadable file, a malformed webcam:N or an unknown synthetic preset in
    one line before the model loads and the broker is reached (what encode and demo do, by the
    same function); a camera or URL that cannot be opened is said in one line when capture starts."""
    from livetok.stream.sources import frame_total

    for source in sources:
        frame_total(source)


def _until_stopped(work: Callable[[Any], Awaitable[dict[str, Any]]]) -> tuple[dict[str, Any], int | None]:
    """Run `work(stop_event)` with SIGINT and SIGTERM as a clean stop (stream/stopping.py): the run
    finishes its streams and returns its summary, with `ended_by` the signal's name. Returns the
    summary and the exit status the signal asks for (128 + its number), or None."""
    import asyncio

    from livetok.stream.stopping import StopSignals

    con = _console()

    def said(name: str) -> None:
        con.print(f"{name}: stopping: finishing the stream(s) (send it again to quit at once)")

    async def run() -> tuple[dict[str, Any], StopSignals]:
        async with StopSignals(on_stop=said) as stop:
            return await work(stop.event), stop

    res, stop = asyncio.run(run())
    if stop.name is not None:
        res["ended_by"] = stop.name
    return res, stop.exit_status


def cmd_publish(a: argparse.Namespace) -> int:
    from livetok.stream.robotics_cli import cmd_publish_robot, frame_ids, wants_robot

    if wants_robot(a):  # --zenoh / --foxglove / --mcap, with or without --broker (docs/ROBOTICS.md)
        return cmd_publish_robot(a)
    from livetok.stream.live import publish_sources
    from livetok.stream.mqtt import brokers_text

    streams = _stream_names(a.source, a.stream)
    ids = frame_ids(a, streams)  # each camera's frame id in its retained info (default: the stream name)
    sender, broker, size = _sender(a), _broker(a), _size(a.size)
    _check_sources(a.source)
    model = _model(a)
    table = _LiveTable()
    try:
        res, status = _until_stopped(lambda stop: publish_sources(
            model, a.source, broker, streams, sender, realtime=not a.as_fast_as_possible, loop=a.loop,
            max_frames=a.max_frames, size=size, first_connect_timeout_s=a.connect_timeout, on_stats=table.update,
            qos=a.qos, stop=stop, frame_ids=ids))
    finally:
        table.stop()
    res.setdefault("ended_by", "end_of_source")
    _console().print(f"published {res['frames_published']} frames to {brokers_text(broker)} stream(s) "
                     f"{', '.join(repr(s) for s in streams)}: {res['fps']} fps, {res['frames_dropped']} dropped, "
                     f"latency p50 {_ms(res['latency_ms_p50'])} ms p99 {_ms(res['latency_ms_p99'])} ms, "
                     f"{res['tokens_per_frame']} tokens/frame, {res['bits_per_s'] / 1000:.1f} kbit/s")
    for w in res.get("warnings", []):
        _warn(w)
    if a.json:
        _print_json(res)
    return status or 0


def _idle_timeout(a: argparse.Namespace) -> float | None:
    if a.timeout < 0:
        raise ValueError(f"--timeout must be >= 0 seconds (0: wait for ever), got {a.timeout:g}")
    return a.timeout or None


# `receive` / `webrtc recv` exit status when the run decoded no frame: a script must not read an
# empty recording as success (a signal's 128 + N, and errors' 2, come first)
EXIT_NO_FRAMES = 1


def _received_status(res: dict[str, Any], status: int | None) -> int:
    return status or (0 if res["frames_decoded"] else EXIT_NO_FRAMES)


def cmd_receive(a: argparse.Namespace) -> int:
    from livetok.stream.robotics_cli import cmd_receive_zenoh, wants_robot

    if wants_robot(a):  # --zenoh (docs/ROBOTICS.md)
        return cmd_receive_zenoh(a)
    from livetok.stream.live import receive_stream

    broker = _broker(a)
    timeout = _idle_timeout(a)
    if (a.workers > 1 or a.worker is not None) and a.stream != "+":
        raise ValueError(f"--workers/--worker split every stream: use --stream '+', not {a.stream!r}")
    if a.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {a.workers}")
    if a.workers > 1:
        return _run_workers(a)
    model = _model(a)
    con = _console()
    res, status = _until_stopped(lambda stop: receive_stream(
        model, broker, a.stream, out=a.out, show=a.show, idle_timeout_s=timeout, max_frames=a.max_frames,
        identifier=a.client_id, first_connect_timeout_s=a.connect_timeout, max_lag_s=a.max_lag,
        worker=a.worker, group=a.group, stop=stop, on_status=con.print))
    con.print(_received_line(res))
    for p in res["outputs"]:
        con.print(f"  wrote {p}")
    if a.json:
        _print_json(res)
    return _received_status(res, status)


def _run_workers(a: argparse.Namespace) -> int:
    """`receive --workers W`: W processes of this same command, each `--worker w<i>` of one group;
    they split the streams among themselves (stream/workers.py). Their summaries are merged into one
    (one JSON document with --json); SIGINT/SIGTERM are passed on to them, so each finishes its
    recordings. Exits with a signal's or an error's status, else 1 when no worker decoded a frame."""
    import signal
    import subprocess

    from livetok.stream.workers import merge_summaries

    argv, rest = [], iter(a.argv)
    for arg in rest:  # the same command line without --workers W / --workers=W
        if arg == "--workers":
            next(rest, None)
        elif not arg.startswith("--workers="):
            argv.append(arg)
    base = [sys.executable, "-m", "livetok.stream.cli", *argv, *([] if a.json else ["--json"])]
    # each worker in its own process group: a terminal's Ctrl-C reaches this process only, which
    # passes it on once (a second one, passed on too, makes them quit at once)
    procs = [subprocess.Popen([*base, "--worker", f"w{k}"], stdout=subprocess.PIPE, process_group=0)
             for k in range(a.workers)]

    def forward(signum: int, frame: Any) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        outs = [p.communicate()[0] for p in procs]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    codes = [p.returncode if p.returncode >= 0 else 128 - p.returncode for p in procs]
    docs = []
    for out in outs:
        try:
            docs.append(json.loads(out))
        except ValueError:  # a worker that failed (its error is on stderr) or was killed
            continue
    if not docs:
        return max(codes)
    res = merge_summaries(docs)
    _console().print(f"{len(docs)} workers: " + _received_line(res))
    if a.json:
        _print_json(res)
    worst = max(codes)
    return worst if worst not in (0, EXIT_NO_FRAMES) else _received_status(res, None)


def _received_line(res: dict[str, Any]) -> str:
    """The receiver's summary for people (receive, webrtc recv)."""
    if not res["frames_received"]:
        return "no frames received"  # latencies and rates of nothing would read "None"
    return (f"received {res['frames_received']} frames, decoded {res['frames_decoded']}, lost {res['frames_lost']}, "
            f"keyframes {res['keyframes']}, latency p50 {_ms(res['latency_ms_p50'])} ms p99 "
            f"{_ms(res['latency_ms_p99'])} ms, {res['bits_per_s'] / 1000:.1f} kbit/s")


def cmd_bench_stream(a: argparse.Namespace) -> int:
    from livetok.bench.live_stream import bench_stream

    sender, size = _sender(a), _size(a.size)
    assert size is not None
    model = _model(a)
    if a.find_max:
        return _bench_find_max(a, model, sender, size)
    res = bench_stream(model, a.streams, a.seconds, a.source, size, sender, a.broker, max_lag_s=a.max_lag)
    con = _console()
    for r in res["results"]:
        con.print(f"{r['streams']} stream(s) {r['size']}: {r['fps_per_stream']} fps/stream decoded, "
                  f"latency p50 {r['latency_ms_p50']} ms p99 {r['latency_ms_p99']} ms, "
                  f"{r['frames_dropped']} dropped at capture, {r['frames_shed']} shed by the receiver, "
                  f"{r['frames_lost']} lost")
    if a.json:
        _print_json(res)
    return 0


def _bench_find_max(a: argparse.Namespace, model: Any, sender: Any, size: tuple[int, int]) -> int:
    from livetok.bench.capacity import CapacityConfig, find_max_streams

    con = _console()

    def log(r: dict[str, Any]) -> None:
        con.print(f"{r['streams']} stream(s): {'keeps up' if r['keeps_up'] else 'falls behind'}, "
                  f"{r['fps_per_stream_min']} fps/stream decoded in time (min), latency p99 {r['latency_ms_p99']} ms")

    cfg = CapacityConfig(seconds=a.seconds, max_streams=a.max_streams)
    if a.broker and len(a.broker) > 1:
        raise ValueError("--find-max measures one receiver against one broker: give --broker once")
    res = find_max_streams(model, a.source, size, sender, cfg, a.broker[0] if a.broker else None, log=log)
    con.print(f"max {res['max_streams']}{'+' if res['capped'] else ''} streams at {res['size']} in real time")
    if a.json:
        _print_json(res)
    return 0


def cmd_bench_soak(a: argparse.Namespace) -> int:
    from livetok.bench.soak import bench_soak

    sender, size = _sender(a), _size(a.size)
    assert size is not None
    model = _model(a)
    res = bench_soak(model, a.minutes, a.window, a.source, size, sender, a.broker)
    con = _console()
    for w in res["windows"]:
        con.print(f"{w['t_s']:7.1f} s: {w['fps']} fps decoded, {w['frames_dropped']} dropped, {w['frames_lost']} lost, "
                  f"latency p50 {w['latency_ms_p50']} ms p99 {w['latency_ms_p99']} ms, RSS {w['rss_mib']} MiB, "
                  f"{w['open_fds']} fds")
    con.print(f"{res['frames_decoded']}/{res['frames_captured']} frames decoded, RSS {res['start']['rss_mib']} -> "
              f"{res['end']['rss_mib']} MiB, fds {res['start']['open_fds']} -> {res['end']['open_fds']}")
    if a.json:
        _print_json(res)
    return 0


def cmd_bench_speed(a: argparse.Namespace) -> int:
    from livetok.bench.speed import DEFAULT_SIZES, SpeedConfig, bench_speed
    from livetok.engine.checkpoint import load_default, load_weights

    sizes = tuple(s for s in (_size(v) for v in a.size) if s is not None) if a.size else DEFAULT_SIZES
    device = None if a.device == "cpu" else a.device
    cfg = SpeedConfig(backends=tuple(a.backend or ()), sizes=sizes, streams=a.streams, frames=a.frames,
                      warmup=a.warmup, repeats=a.repeats, source=a.source, sender=_sender(a),
                      threads=a.threads or None, device=device, onnx_dir=a.onnx_dir)
    model = load_weights(a.weights) if a.weights else load_default()
    con = _console()
    res = bench_speed(model, cfg, progress=lambda m: con.print(m))
    for r in res["results"]:
        con.print(f"[bold]{r['backend']:10s}[/] {r['size']:>8s} x{r['streams']}: "
                  f"encode+route {r['encode_fps']:.1f} fps "
                  f"(p50 {r['encode_ms_p50']:.1f} ms, p99 {r['encode_ms_p99']:.1f} ms, {r['decodes_per_frame']:.2f} "
                  f"decodes), decode {r['decode_fps']:.1f} fps (p50 {r['decode_ms_p50']:.1f} ms, p99 "
                  f"{r['decode_ms_p99']:.1f} ms), {r['gflops_per_frame']:.2f} GFLOP/frame"
                  + (f", {r['fraction_of_peak_flops']:.1%} of peak FLOP/s" if r["fraction_of_peak_flops"] is not None
                     else ""))
    if a.json:
        _print_json(res)
    return 0


def cmd_bench_rd(a: argparse.Namespace) -> int:
    from livetok.bench.rd import bench_rd, plot_rd
    from livetok.stream.evaluate import video_files

    a.inputs = video_files(a.inputs)  # a folder: the clips in it
    model = _model(a)
    con = _console()
    res = bench_rd(model, a.inputs, a.policies, tuple(a.codecs), a.max_frames, progress=lambda m: con.print(m))
    for name, pts in res["policies"].items():
        row = "  ".join(f"{p['tokens_per_frame']:.0f} tok {p['psnr']:.2f} dB" for p in pts)
        con.print(f"[bold]{name:13s}[/] {row}")
    s = res["summary"]
    con.print(f"tokens saved vs fixed at its 75% PSNR: infotok {s.get('tokens_saved_vs_fixed')}, "
              f"best {s.get('best_policy')} {s.get('best_tokens_saved_vs_fixed')}, "
              f"oracle {s.get('oracle_tokens_saved_vs_fixed')}")
    if a.plot:
        plot_rd(res, a.plot)
        con.print(f"wrote {a.plot}")
    if a.json:
        _print_json(res)
    return 0


def cmd_bench_arms(a: argparse.Namespace) -> int:
    from livetok.bench.arms import ArmsConfig, bench_arms, markdown_table
    from livetok.stream.evaluate import video_files

    a.inputs = video_files(a.inputs)  # a folder: the clips in it
    steps = {"steps": a.steps} if a.steps is not None else {}
    cfg = ArmsConfig(**steps, seed=a.seed, calib_frames=a.calib_frames, threads=a.threads, device=a.device)
    con = _console()
    with _progress() as bar:
        tasks: dict[str, Any] = {}

        def progress(task: str, done: float, total: float | None, note: str) -> None:
            if task not in tasks:
                tasks[task] = bar.add_task(task, total=total)
            bar.update(tasks[task], completed=done, total=total, description=f"{task}  {note}")
            if total is not None and done >= total and task != "evaluate":
                bar.console.print(f"{task}: {note}")

        res = bench_arms(a.inputs, cfg, a.out, a.data, a.max_frames, progress=progress)
    con.print(markdown_table(res))
    s = res["summary"]
    ref = s["reference"]
    con.print(f"tokens saved vs the fixed arm at {ref['psnr']:.2f} dB (its 0.75 model): "
              + ", ".join(f"{arm}/{pol} {v:+.1%}" for arm, d in s["tokens_saved_vs_fixed"].items()
                          for pol, v in d.items() if arm != "fixed")
              + f"; best {s.get('best')}  ({res['wall_s']:.0f} s)")
    if a.json:
        _print_json(res)
    return 0


def cmd_bench_perception(a: argparse.Namespace) -> int:
    from livetok.bench.perception import CRFS, RATES, bench_perception, markdown_table, plot_perception
    from livetok.stream.evaluate import video_files

    inputs = video_files(a.inputs)
    model = _model(a)
    con = _console()
    res = bench_perception(model, inputs, max_frames=a.max_frames, rates=a.rates or RATES, crfs=a.crfs or CRFS,
                           progress=lambda m: con.print(m))
    con.print(markdown_table(res))
    if a.plot:
        plot_perception(res, a.plot)
        con.print(f"wrote {a.plot}")
    if a.json:
        _print_json(res)
    return 0


def cmd_export_onnx(a: argparse.Namespace) -> int:
    from livetok.export.onnx_export import export_onnx

    model = _model(a)
    con = _console()
    meta = export_onnx(model, a.output, opset=a.opset)
    exporters = {name: g["exporter"] for name, g in meta["graphs"].items()}
    res: dict[str, Any] = {"output": a.output, "model_id": meta["model_id"], "opset": meta["opset"],
                           "exporters": exporters, "seconds": meta["seconds"], "parity": meta.get("parity", [])}
    con.print(f"wrote {a.output}: encoder/decoder/router.onnx + model.json for model {meta['model_id']} "
              f"(opset {meta['opset']}, {', '.join(f'{k} {v}' for k, v in exporters.items())}, "
              f"{meta['seconds']:.1f} s)")
    for p in res["parity"]:
        con.print(f"  onnxruntime vs torch at {p['size']}: indices equal {p['indices_equal']:.4%}, "
                  f"max |diff| {p['max_abs_diff']:.2e}")
    if a.verify:
        from livetok.export.verify import verify
        from livetok.stream.demo import DEMO_CLIP
        from livetok.stream.session import wire_roundtrip
        from livetok.stream.video_io import read_video

        clips = a.clips or [str(DEMO_CLIP)]
        for c in clips:
            if not Path(c).is_file():
                raise ValueError(f"no such file: {c}")
        frames = {Path(c).stem: read_video(c, max_frames=a.max_frames)[0] for c in clips}
        v = verify(model, a.output, frames, _sender(a), transport=wire_roundtrip(model))
        res["verify"] = v
        con.print(f"  verify on {v['providers'][0]}:")
        for name, c in v["clips"].items():
            con.print(f"  [bold]{name}[/] ({c['frames']} frames): indices equal {c['indices_equal']:.4%}, "
                      f"PSNR torch {c['psnr_torch']:.3f} dB onnx {c['psnr_onnx']:.3f} dB, "
                      f"max pixel diff {c['max_abs_pixel_diff']}, cross-backend drift "
                      f"{c['torch_to_onnx']['psnr_drift']:+.4f} / {c['onnx_to_torch']['psnr_drift']:+.4f} dB")
    if a.json:
        _print_json(res)
    return 0


def _webrtc_cfg(a: argparse.Namespace) -> Any:
    from livetok.stream.webrtc import WebRTCConfig

    return WebRTCConfig(unreliable=getattr(a, "unreliable", False), ice_timeout_s=a.ice_timeout)


def _signal_token(a: argparse.Namespace) -> str | None:
    import os

    # a flag beats the environment; an empty value means no token
    return a.token or os.environ.get("LIVETOK_SIGNAL_TOKEN") or None


def cmd_webrtc_send(a: argparse.Namespace) -> int:
    from livetok.stream.webrtc import webrtc_send

    sender, size, cfg = _sender(a), _size(a.size), _webrtc_cfg(a)
    _check_sources([a.source])
    model = _model(a)
    table = _LiveTable()
    try:
        res, status = _until_stopped(lambda stop: webrtc_send(
            model, a.source, a.signal_url, sender, cfg, stream=a.stream, token=_signal_token(a),
            realtime=not a.as_fast_as_possible, loop=a.loop, max_frames=a.max_frames, size=size,
            on_stats=table.update, stop=stop))
    finally:
        table.stop()
    res.setdefault("ended_by", "end_of_source")
    _console().print(f"sent {res['frames_published']} frames to {a.signal_url}: {res['fps']} fps, "
                     f"{res['frames_dropped']} dropped, {res['keyframe_requests']} keyframe requests, "
                     f"{res['tokens_per_frame']} tokens/frame, {res['bits_per_s'] / 1000:.1f} kbit/s")
    for w in res.get("warnings", []):
        _warn(w)
    if a.json:
        _print_json(res)
    return status or 0


def cmd_webrtc_recv(a: argparse.Namespace) -> int:
    from livetok.stream.webrtc import SignalingConfig, parse_listen, webrtc_recv

    host, port = parse_listen(a.listen)
    sig = SignalingConfig(host=host, port=port, token=_signal_token(a))
    cfg = _webrtc_cfg(a)
    timeout = _idle_timeout(a)
    model = _model(a)
    con = _console()
    res, status = _until_stopped(lambda stop: webrtc_recv(
        model, sig, cfg, out=a.out, show=a.show, idle_timeout_s=timeout, max_frames=a.max_frames,
        on_listening=lambda url: con.print(f"listening for a sender: livetok webrtc send --signal {url}"),
        stop=stop, on_status=con.print))
    con.print(_received_line(res))
    for p in res["outputs"]:
        con.print(f"  wrote {p}")
    if a.json:
        _print_json(res)
    return _received_status(res, status)


def cmd_webrtc_serve(a: argparse.Namespace) -> int:
    import asyncio

    from livetok.stream.webrtc import SignalingConfig
    from livetok.stream.webrtc.demo_server import DemoConfig, serve

    size = _size(a.size)
    assert size is not None
    sig = SignalingConfig(host=a.host, port=a.port, token=_signal_token(a))
    demo = DemoConfig(size=size, target_kbps=a.target_kbps, ice_timeout_s=a.ice_timeout)
    sender = _sender(a)
    model = _model(a)
    asyncio.run(serve(model, sender, sig, demo, on_listening=lambda url: _console().print(
        f"livetok webcam demo: open {url} (Ctrl-C stops)")))
    return 0


def _add_broker_args(p: argparse.ArgumentParser, many_streams: bool = False) -> None:
    p.add_argument("--broker", required=True, action="append",
                   help="mqtt://[user[:pass]@]host[:port] or mqtts://...; repeat it for the nodes of one broker "
                        "cluster: a lost node fails over to the next and the persistent session resumes there")
    if many_streams:
        p.add_argument("--stream", required=True, action="append", help="stream name (one, or one per --source)")
    else:
        p.add_argument("--stream", required=True, help="stream name (receive: '+' for every stream)")
    p.add_argument("--ca-file", default=None, help="CA certificate for mqtts://")
    p.add_argument("--password-file", default=None, help="read the broker password from this file")
    p.add_argument("--connect-timeout", type=float, default=10.0, metavar="SEC",
                   help="give up (exit 2, one line naming the broker and the cause) if the first connection "
                        "has not succeeded in SEC (default: 10); once connected, a lost broker is retried "
                        "without end")


def cmd_train(a: argparse.Namespace) -> int:
    from livetok.engine.data import DataConfig
    from livetok.engine.train import TrainConfig, train

    cfg = TrainConfig(
        preset=a.preset, arm=a.arm, fixed_rate=a.fixed_rate, steps=a.steps, batch=a.batch,
        clip_frames=a.clip_frames, stream_frames=(a.stream_frames[0], a.stream_frames[1]), lr=a.lr,
        warmup_steps=a.lr_warmup,
        mse_weight=a.mse_weight, rate_weight=a.rate_weight, max_minutes=a.max_minutes, sampler=a.sampler,
        amp=a.amp, channels_last=a.channels_last, seed=a.seed, threads=a.threads, device=a.device,
        depth_rate_scale=a.depth_rate_scale,
        router_signal=a.router_signal, zero_k_prob=a.zero_k_prob, head_steps=a.head_steps,
        data=DataConfig(crop=a.crop, synthetic_fraction=a.synthetic_fraction, freeze_prob=a.freeze_prob,
                        scale_range=(a.scale_range[0], a.scale_range[1])),
    )
    path = train(cfg, a.output, a.data, resume=not a.no_resume, progress=True, init_weights=a.init)
    if a.calibrate:
        from livetok.engine.calibrate import calibrate_file

        calibrate_file(path, a.data)
    _console().print(f"wrote {path}")
    return 0


# ---------------------------------------------------------------------------------------------
# parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("livetok")
    except PackageNotFoundError:
        return "unknown"


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="livetok", description="Streaming adaptive discrete video tokenizer.")
    p.add_argument("-v", "--verbose", action="store_true", help="log more (to stderr)")
    p.add_argument("--version", action="version", version=f"livetok {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("demo", help="tokenize a clip live and write a side-by-side video and a plot")
    d.add_argument("--source", default=None, help="PATH, webcam:N or synthetic[:PRESET] (default: the bundled clip)")
    d.add_argument("--out", default="livetok-demo", help="output folder (default: ./livetok-demo)")
    d.add_argument("--frames", type=int, default=None, help="frames to run (default: whole file; 150 live)")
    d.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    _add_sender_args(d)
    _add_model_args(d)
    d.set_defaults(func=cmd_demo)

    e = sub.add_parser("encode", help="encode a video (or webcam:N / synthetic) into a .ltk file")
    e.add_argument("input")
    e.add_argument("-o", "--output", required=True, help="output .ltk file (a video name such as x.mp4 is refused: "
                                                          "`livetok decode` makes the video)")
    e.add_argument("--max-frames", type=int, default=None)
    e.add_argument("--json", action="store_true")
    _add_sender_args(e)
    _add_model_args(e)
    e.set_defaults(func=cmd_encode)

    dd = sub.add_parser("decode", help="decode a .ltk file into an MP4",
                        description="Decode a .ltk file into an MP4. Damaged packets are skipped and decoding "
                                    "resumes at the next keyframe, the last good frame held for the lost ones. "
                                    f"Exit status 0: every frame decoded; {EXIT_DAMAGED}: written, with frames lost "
                                    f"to damage; {EXIT_ERROR}: nothing written (no frame could be decoded, or an "
                                    "error).")
    dd.add_argument("input")
    dd.add_argument("-o", "--output", required=True, help="output .mp4 file")
    dd.add_argument("--heatmap", action="store_true", help="put the token heat-map beside the reconstruction")
    dd.add_argument("--json", action="store_true")
    _add_model_args(dd)
    dd.set_defaults(func=cmd_decode)

    ev = sub.add_parser("eval", help="PSNR, SSIM, tokens and bits per frame, speed, per clip and overall")
    ev.add_argument("inputs", nargs="+", help="video files, or folders (the video files in them)")
    ev.add_argument("--max-frames", type=int, default=None)
    ev.add_argument("--per-frame", action="store_true", help="include per-frame records in the JSON")
    ev.add_argument("--json", action="store_true")
    _add_sender_args(ev)
    _add_model_args(ev)
    ev.set_defaults(func=cmd_eval)

    pb = sub.add_parser("publish", help="tokenize a live source and publish it to an MQTT broker")
    pb.add_argument("--source", required=True, action="append",
                    help="PATH, rtsp://..., webcam:N or synthetic[:PRESET]; repeat it for several cameras in one "
                         "process (frames of one size are encoded as one batched step; with one --stream NAME "
                         "they are published as NAME-0, NAME-1, ...; or give one --stream per --source)")
    _add_broker_args(pb, many_streams=True)
    pb.add_argument("--size", default=None, help="resize frames to WIDTHxHEIGHT (e.g. 256x192)")
    pb.add_argument("--as-fast-as-possible", action="store_true", help="do not pace a file at its frame rate")
    pb.add_argument("--loop", action="store_true", help="start a file again when it ends")
    pb.add_argument("--max-frames", type=int, default=None)
    pb.add_argument("--qos", type=int, choices=(0, 1), default=1,
                    help="MQTT QoS of the token packets: 1 loses nothing (default); 0 sends each once, a lost "
                         "one is repaired by the receiver's keyframe request (keyframes always go at QoS 1)")
    pb.add_argument("--json", action="store_true", help="print the final statistics as JSON")
    _add_sender_args(pb)
    _add_model_args(pb)
    pb.set_defaults(func=cmd_publish)

    rc = sub.add_parser("receive", help="receive, decode and record live streams from an MQTT broker")
    _add_broker_args(rc)
    rc.add_argument("--out", default=None, help="write MP4 (with '+': one file per stream, OUT-<stream>.mp4); each "
                    "frame at its capture time, so the file lasts as long as the stream even when the "
                    "publisher dropped frames. '-': one stream, live, as Matroska on stdout for a player "
                    "(`--out - | ffplay -`, or `| mpv -`): how to watch a stream")
    rc.add_argument("--show", action="store_true", help=argparse.SUPPRESS)  # refused in one line: SHOW_UNSUPPORTED
    rc.add_argument("--timeout", type=float, default=IDLE_TIMEOUT_S, metavar="SEC",
                    help=f"stop after SEC without a frame, whether no publisher has come yet or the stream "
                         f"went quiet (its publisher was killed) (default {IDLE_TIMEOUT_S:g}; 0: wait for ever). "
                         f"Exit status 1 when no frame was decoded")
    rc.add_argument("--max-frames", type=int, default=None)
    rc.add_argument("--client-id", default=None, help="MQTT client id: a fixed id keeps a persistent session")
    rc.add_argument("--max-lag", type=float, default=None, metavar="SEC",
                    help="live viewing: when decoding falls SEC behind, skip to a fresh keyframe "
                         "(default: decode every frame, however late)")
    rc.add_argument("--workers", type=int, default=1, metavar="W",
                    help="with --stream '+': W worker processes split the streams, each stream decoded by "
                         "one worker at a time; a dead worker's streams move to the others (from a keyframe)")
    rc.add_argument("--worker", default=None, metavar="NAME",
                    help="run as this one worker of --group (what --workers starts W of; start them on "
                         "several machines the same way)")
    rc.add_argument("--group", default="receivers", help="the worker group (default: receivers)")
    rc.add_argument("--json", action="store_true")
    _add_model_args(rc)
    rc.set_defaults(func=cmd_receive)
    from livetok.stream.robotics_cli import add_arguments as add_robotics_arguments

    add_robotics_arguments(pb, rc, ev, e)  # --zenoh, --foxglove, --mcap, --frame-id; eval --reference; --no-preview

    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench", metavar="BENCH")
    br = bench.add_parser("rd", help="rate-distortion of every budget policy and of x264/VP8")
    br.add_argument("inputs", nargs="+")
    br.add_argument("--policies", nargs="*", default=None, help="only these policies (fixed always runs)")
    br.add_argument("--codecs", nargs="*", default=["x264", "vp8"])
    br.add_argument("--max-frames", type=int, default=None)
    br.add_argument("--plot", default=None, help="write the PSNR vs bits/frame plot here (PNG)")
    br.add_argument("--json", action="store_true")
    _add_model_args(br)
    br.set_defaults(func=cmd_bench_rd)

    ba = bench.add_parser("arms", help="training arms on one backbone (fixed per rate, uniform, elbo): train tiny "
                                       "models, evaluate them with the fixed and infotok policies")
    ba.add_argument("inputs", nargs="+", help="evaluation clips (never trained or calibrated on)")
    ba.add_argument("--data", nargs="*", default=["../shared/data/train"],
                    help="training clip files/folders, also the calibration clips (never eval clips)")
    ba.add_argument("--out", default="runs/arms", help="checkpoints, one folder per model; reused when their "
                                                      "configuration matches (default: runs/arms)")
    ba.add_argument("--steps", type=int, default=None,
                    help="training steps of every model (default: ArmsConfig.steps, sized for ~15 min on 2 cores)")
    ba.add_argument("--seed", type=int, default=0)
    ba.add_argument("--calib-frames", type=int, default=8, help="frames per training clip for calibration")
    ba.add_argument("--max-frames", type=int, default=None, help="evaluate only the first frames of each clip")
    ba.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    ba.add_argument("--device", default="auto", help="training device: auto (CUDA when present), cpu, cuda")
    ba.add_argument("--json", action="store_true")
    ba.set_defaults(func=cmd_bench_arms)

    bs = bench.add_parser("stream", help="S live streams on loopback: fps, drops, capture-to-decoded latency")
    bs.add_argument("--streams", type=int, nargs="+", default=[1, 4], help="stream counts to measure (default 1 4)")
    bs.add_argument("--seconds", type=float, default=10.0)
    bs.add_argument("--source", default="synthetic", help="source of every stream (default: synthetic)")
    bs.add_argument("--size", default="256x192")
    bs.add_argument("--broker", default=None, action="append",
                    help="use this broker instead of starting a local mosquitto (repeat it for a cluster's nodes)")
    bs.add_argument("--max-lag", type=float, default=1.0, metavar="SEC",
                    help="the receiver skips to a fresh keyframe when it falls SEC behind (default 1.0; "
                         "0 or less: decode every frame)")
    bs.add_argument("--json", action="store_true")
    _add_sender_args(bs)
    _add_model_args(bs)
    bs.add_argument("--find-max", action="store_true",
                    help="raise the stream count until one receiver no longer decodes them in real time "
                         "(packets encoded once and replayed by another process); report the max")
    bs.add_argument("--max-streams", type=int, default=64, help="--find-max: stop at this many (default 64)")
    bs.set_defaults(func=cmd_bench_stream)

    bk = bench.add_parser("soak", help="one loopback stream at 30 fps for M minutes: fps, drops, latency, RSS and "
                                       "open files over time")
    bk.add_argument("--minutes", type=float, default=30.0)
    bk.add_argument("--window", type=float, default=30.0, help="seconds per reported window (default 30)")
    bk.add_argument("--source", default="synthetic", help="source of the stream (default: synthetic)")
    bk.add_argument("--size", default="256x192")
    bk.add_argument("--broker", default=None, help="use this broker instead of starting a local mosquitto")
    bk.add_argument("--json", action="store_true")
    _add_sender_args(bk)
    _add_model_args(bk)
    bk.set_defaults(func=cmd_bench_soak)

    bp = bench.add_parser("speed", help="frames/s and latency of encode+route and decode per backend and size; "
                                        "FLOPs per frame; fraction of the GPU's measured peak")
    bp.add_argument("--backend", nargs="+", default=None, choices=["torch", "onnx", "cuda-graph", "auto"],
                    help="backends to measure (default: every one this machine has: torch, onnx when installed, "
                         "cuda-graph when a CUDA device is present)")
    bp.add_argument("--size", nargs="+", default=None, help="WIDTHxHEIGHT sizes (default: 256x192 640x480)")
    bp.add_argument("--streams", type=int, default=1, help="streams batched into each step (default 1)")
    bp.add_argument("--frames", type=int, default=60, help="timed frames per run (default 60)")
    bp.add_argument("--warmup", type=int, default=5, help="untimed frames before them (default 5)")
    bp.add_argument("--repeats", type=int, default=1, help="runs per backend and size; the median is reported")
    bp.add_argument("--source", default=None, help="clip to play (default: the bundled demo clip)")
    bp.add_argument("--onnx-dir", default=None, help="ONNX export for the onnx backend (default: the cache)")
    bp.add_argument("--json", action="store_true")
    _add_sender_args(bp)
    _add_model_args(bp, backend=False)
    bp.set_defaults(func=cmd_bench_speed)

    wr = sub.add_parser("webrtc", help="WebRTC: token streaming between peers, the browser webcam demo"
                        ).add_subparsers(dest="webrtc", metavar="MODE")
    ws = wr.add_parser("send", help="tokenize a live source and stream the packets to a `webrtc recv` peer")
    ws.add_argument("--source", required=True, help="PATH, rtsp://..., webcam:N or synthetic[:PRESET]")
    ws.add_argument("--signal", dest="signal_url", required=True,
                    help="the receiver's offer URL, e.g. http://127.0.0.1:8765/offer")
    ws.add_argument("--stream", default="webrtc", help="stream name shown by the receiver")
    ws.add_argument("--unreliable", action="store_true",
                    help="unordered channel without retransmissions: a lost packet is repaired by a keyframe")
    ws.add_argument("--size", default=None, help="resize frames to WIDTHxHEIGHT (e.g. 256x192)")
    ws.add_argument("--as-fast-as-possible", action="store_true", help="do not pace a file at its frame rate")
    ws.add_argument("--loop", action="store_true", help="start a file again when it ends")
    ws.add_argument("--max-frames", type=int, default=None)
    ws.add_argument("--json", action="store_true", help="print the final statistics as JSON")
    _add_sender_args(ws, signal_flag="--router-signal")
    _add_model_args(ws)
    ws.set_defaults(func=cmd_webrtc_send)
    wv = wr.add_parser("recv", help="listen for a `webrtc send` peer; decode, record and report its stream")
    wv.add_argument("--listen", default="127.0.0.1:8765",
                    help="HOST:PORT of the signalling endpoint (default 127.0.0.1:8765: this host only)")
    wv.add_argument("--out", default=None, help="write the decoded video to this MP4, each frame at its capture "
                                                 "time (the file lasts as long as the stream); '-': live, as "
                                                 "Matroska on stdout for a player (`--out - | ffplay -`)")
    wv.add_argument("--show", action="store_true", help=argparse.SUPPRESS)  # refused in one line: SHOW_UNSUPPORTED
    wv.add_argument("--timeout", type=float, default=IDLE_TIMEOUT_S, metavar="SEC",
                    help=f"stop after SEC without a frame, whether no sender has come yet or the stream went "
                         f"quiet (default {IDLE_TIMEOUT_S:g}; 0: wait for ever). Exit status 1 when no frame was "
                         f"decoded")
    wv.add_argument("--max-frames", type=int, default=None)
    wv.add_argument("--json", action="store_true")
    _add_model_args(wv)
    wv.set_defaults(func=cmd_webrtc_recv)
    wd = wr.add_parser("serve", help="the browser webcam demo: original | reconstruction | token heat-map")
    wd.add_argument("--host", default="127.0.0.1", help="address to bind "
                    "(default 127.0.0.1: this host only; browsers allow cameras only on localhost or HTTPS)")
    wd.add_argument("--port", type=int, default=8080)
    wd.add_argument("--size", default="256x192", help="largest frame the server tokenizes (aspect kept)")
    wd.add_argument("--target-kbps", type=float, default=40.0,
                    help="initial rate target in kbit/s (the page has a slider and shows the range reachable "
                         "at the frame rate the server runs at; a target beyond it runs at the bound)")
    _add_sender_args(wd)
    _add_model_args(wd)
    wd.set_defaults(func=cmd_webrtc_serve)
    for w in (ws, wv, wd):
        w.add_argument("--token", default=None,
                       help="signalling token (or $LIVETOK_SIGNAL_TOKEN); a receiver/server with one refuses "
                            "requests without it")
        w.add_argument("--ice-timeout", type=float, default=10.0, help="give up if ICE has not connected in SEC")

    ex = sub.add_parser("export", help="export the model for other runtimes").add_subparsers(dest="export",
                                                                                           metavar="FORMAT")
    xo = ex.add_parser("onnx", help="encoder, decoder and router pass as ONNX graphs + model.json")
    xo.add_argument("-o", "--output", required=True, help="output folder")
    xo.add_argument("--opset", type=int, default=18)
    xo.add_argument("--verify", action="store_true",
                    help="run clips through torch and onnxruntime and across them (parity and drift)")
    xo.add_argument("--clips", nargs="*", default=None, help="clips for --verify (default: the bundled clip)")
    xo.add_argument("--max-frames", type=int, default=None, help="frames per clip for --verify")
    xo.add_argument("--json", action="store_true")
    _add_sender_args(xo)  # the policy --verify streams the clips with
    _add_model_args(xo, backend=False)
    xo.set_defaults(func=cmd_export_onnx)

    t = sub.add_parser("train", help="train weights on video clips and the synthetic generator")
    t.add_argument("--data", nargs="*", default=["../shared/data/train"], help="clip files/folders (never eval clips)")
    t.add_argument("--preset", default="default")
    t.add_argument("--arm", default="elbo", choices=["fixed", "uniform", "elbo"])
    t.add_argument("--fixed-rate", type=float, default=1.0, help="rate of the `fixed` arm")
    t.add_argument("--steps", type=int, default=6000)
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--crop", type=int, default=96)
    t.add_argument("--clip-frames", type=int, default=8, help="frames per gradient window (truncated BPTT)")
    t.add_argument("--stream-frames", type=int, nargs=2, default=[24, 120], metavar=("MIN", "MAX"),
                   help="each batch row plays a stream this many frames long, window by window")
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--lr-warmup", type=int, default=200)
    t.add_argument("--mse-weight", type=float, default=0.0)
    t.add_argument("--rate-weight", type=float, default=0.0,
                   help="weight of bits/pixel (under a learned stand-in of packet v2's entropy model) in "
                        "the loss; 0 = no rate term")
    t.add_argument("--router-signal", default="gain", choices=["error", "gain"],
                   help="signal of the elbo arm's router and of the ranking (default: gain)")
    t.add_argument("--zero-k-prob", type=float, default=0.1, help="share of frames trained with no tokens")
    t.add_argument("--head-steps", type=int, default=1500,
                   help="then train the budget head alone for this many steps (0 = skip)")
    t.add_argument("--synthetic-fraction", type=float, default=0.3)
    t.add_argument("--freeze-prob", type=float, default=0.3, help="share of streams with a frozen stretch")
    t.add_argument("--scale-range", type=float, nargs=2, metavar=("LO", "HI"), default=[0.6, 1.0],
                   help="a crop covers crop/scale pixels of the cached clip (short side 288), scale drawn in "
                        "[LO, HI]; ~0.67 matches a whole scene at 192 pixels high (default: 0.6 1.0)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=0)
    t.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    t.add_argument("--init", default=None, help="start from these weights (fine-tuning)")
    t.add_argument("--max-minutes", type=float, default=0.0,
                   help="stop after this much wall time; the learning rate anneals to it (0 = steps only)")
    t.add_argument("--sampler", default="auto", choices=["auto", "host", "device"],
                   help="where training streams are cut: host (numpy), device (clips as uint8 tensors on the "
                        "training device), auto (device on CUDA)")
    t.add_argument("--amp", default="auto", choices=["auto", "on", "off"],
                   help="bf16 autocast (auto: on CUDA and on CPUs with native bf16, AVX-512 bf16 or AMX)")
    t.add_argument("--depth-rate-scale", type=float, default=1.0,
                   help="depth-2 presets: the second token stage's bits weigh --rate-weight times this "
                        "(0 = free: what the second stage can carry at most)")
    t.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"],
                   help="weights in channels_last memory (auto: on the CPU)")
    t.add_argument("--no-resume", action="store_true", help="start over even if OUTPUT has a checkpoint")
    t.add_argument("--calibrate", action="store_true",
                   help="after training, measure the population error on the training clips and store it")
    t.add_argument("-o", "--output", required=True, help="output folder (model.safetensors, log, checkpoint)")
    t.set_defaults(func=cmd_train)
    bq = bench.add_parser("perception", help="OpenCV detectors (HOG people, Haar, ArUco, ORB) on the original "
                          "frames vs livetok's and x264's decoded frames at several rates")
    bq.add_argument("inputs", nargs="+", help="clips or folders")
    bq.add_argument("--max-frames", type=int, default=24, help="frames per clip (default 24)")
    bq.add_argument("--rates", type=float, nargs="+", default=None, help="livetok rates (default 0.125 .. 1)")
    bq.add_argument("--crfs", type=int, nargs="+", default=None, help="x264 CRFs (default 24 32 40 46 51)")
    bq.add_argument("--plot", default=None, help="write the score vs bits/frame plot here (PNG)")
    bq.add_argument("--json", action="store_true")
    _add_model_args(bq, backend=False)
    bq.set_defaults(func=cmd_bench_perception)

    _mark_subparsers(p)
    return p


def _mark_subparsers(p: argparse.ArgumentParser) -> None:
    """Set `_subparser` on every (nested) subcommand's parser to itself: the deepest one parsed wins."""
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sp in action.choices.values():
                sp.set_defaults(_subparser=sp)
                _mark_subparsers(sp)


def main(argv: Sequence[str] | None = None) -> int:
    from livetok.engine.threads import sleep_idle_threads

    sleep_idle_threads()  # before any command imports torch: OpenMP reads it when it loads
    parser = get_parser()
    a, extra = parser.parse_known_args(argv)
    a.argv = list(sys.argv[1:] if argv is None else argv)  # `receive --workers` starts W copies of it
    if extra:
        # argparse would blame the top-level parser and print its usage; the subcommand's is the useful one
        getattr(a, "_subparser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(name)s: %(message)s")
    if not getattr(a, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    if not a.verbose:
        _quiet_native_logs()
    from livetok.engine.errors import TokenizerError
    from livetok.stream.errors import StreamError
    from livetok.stream.wire import PacketError

    try:
        if hasattr(a, "rate"):
            _sender(a)  # bad sender values are refused here, before a command imports torch and loads a model
        _check_viewing(a)
        return int(a.func(a))
    except KeyboardInterrupt:
        print("livetok: interrupted", file=sys.stderr)
        return 130
    except (TokenizerError, PacketError, StreamError, ValueError) as e:
        print(f"livetok: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as e:
        print(f"livetok: error: {_os_error(e)}", file=sys.stderr)
        return EXIT_ERROR


def _check_viewing(a: argparse.Namespace) -> None:
    """`receive` / `webrtc recv`: --show (no window: SHOW_UNSUPPORTED) and `--out -` (the video on stdout,
    for one stream, without --json, which prints there too) are refused in one line before a model loads."""
    if getattr(a, "show", False):
        from livetok.stream.live import SHOW_UNSUPPORTED

        raise ValueError(SHOW_UNSUPPORTED)
    if getattr(a, "out", None) != "-" or a.command not in ("receive", "webrtc"):
        return
    if getattr(a, "json", False):
        raise ValueError("--out - writes the video to stdout, where --json would print too: drop one")
    if getattr(a, "stream", None) == "+" or getattr(a, "workers", 1) > 1:
        raise ValueError("--out - carries one stream: receive one --stream, not '+' (or write one file per "
                         "stream with --out FILE.mp4)")


def _os_error(e: OSError) -> str:
    """An OSError in words, naming the file: "no such file: x.ltk", not "[Errno 2] No such file or ..."."""
    if e.errno is None:
        return str(e)
    cause = _OS_CAUSES.get(e.errno) or (e.strerror or str(e)).lower()
    if e.filename is None:
        return cause
    path = Path(os.fsdecode(e.filename))
    if e.errno == errno.ENOENT and not path.parent.exists():
        return f"no such folder: {path.parent}"  # writing into a folder that is not there
    return f"{cause}: {path}" + (f" -> {os.fsdecode(e.filename2)}" if e.filename2 is not None else "")


_OS_CAUSES = {
    errno.ENOENT: "no such file", errno.EACCES: "permission denied", errno.EPERM: "not permitted",
    errno.EISDIR: "is a folder, not a file", errno.ENOTDIR: "not a folder", errno.ENOSPC: "no space left on the disk",
    errno.EROFS: "read-only file system", errno.EEXIST: "already exists",
}


def _quiet_native_logs() -> None:
    """Silence OpenCV's and FFmpeg's own log lines ("moov atom not found", "[ WARN:0@0.264] global
    cap_v4l.cpp ..."): they go to the C stderr beside our one-line errors, which already say what went
    wrong. `-v` keeps them; variables the user set win."""
    os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")  # read when cv2 is imported
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET: read when OpenCV's FFmpeg backend starts
    if "cv2" in sys.modules:  # imported already (a program that embeds the CLI, the tests)
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    if "av" in sys.modules:  # PyAV (the MP4 writer) logs nothing unless asked; keep it so
        import av.logging

        av.logging.set_level(None)


if __name__ == "__main__":
    sys.exit(main())
