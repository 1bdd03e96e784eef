"""`demo`, `encode`, `decode` and `eval`: clips in, .ltk files and their videos out, quality figures.
An .mcap file (encode's output, decode's and eval's input) is cli/robotics.py's."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from . import robotics
from .options import add_model_args, add_sender_args, open_model, sender_config
from .output import EXIT_DAMAGED, EXIT_ERROR, console, print_json, progress, warn

if TYPE_CHECKING:
    from livetok.stream.evaluate import Metrics

    from .options import Subparsers


def register(sub: Subparsers) -> None:
    d = sub.add_parser("demo", help="tokenize a clip live and write a side-by-side video and a plot")
    d.add_argument("--source", default=None, help="PATH, webcam:N or synthetic[:PRESET] (default: the bundled clip)")
    d.add_argument("--out", default="livetok-demo", help="output folder (default: ./livetok-demo)")
    d.add_argument("--frames", type=int, default=None, help="frames to run (default: whole file; 150 live)")
    d.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    add_sender_args(d)
    add_model_args(d)
    d.set_defaults(func=cmd_demo)

    e = sub.add_parser("encode", help="encode a video (or webcam:N / synthetic) into a .ltk file")
    e.add_argument("input")
    e.add_argument("-o", "--output", required=True, help="output .ltk file (a video name such as x.mp4 is refused: "
                                                          "`livetok decode` makes the video)")
    e.add_argument("--max-frames", type=int, default=None)
    e.add_argument("--json", action="store_true")
    add_sender_args(e)
    add_model_args(e)
    robotics.add_encode_arguments(e)
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
    add_model_args(dd)
    dd.set_defaults(func=cmd_decode)

    ev = sub.add_parser("eval", help="PSNR, SSIM, tokens and bits per frame, speed, per clip and overall")
    ev.add_argument("inputs", nargs="+", help="video files, or folders (the video files in them)")
    ev.add_argument("--max-frames", type=int, default=None)
    ev.add_argument("--per-frame", action="store_true", help="include per-frame records in the JSON")
    ev.add_argument("--json", action="store_true")
    add_sender_args(ev)
    add_model_args(ev)
    robotics.add_eval_arguments(ev)
    ev.set_defaults(func=cmd_eval)


def metrics_line(m: Metrics) -> str:
    """A clip's quality, rate and speed figures on one line (eval, demo)."""
    # kbit/s at the clip's own frame rate (stream/bitrate.py), where the run knows it
    bits_per_s = getattr(m, "bits_per_s", None)
    rate = f" = {bits_per_s / 1000:.1f} kbit/s" if bits_per_s is not None else ""
    return (f"PSNR {m.psnr:.2f} dB  SSIM {m.ssim:.4f}  "
            f"{m.tokens_per_frame:.1f}/{m.positions} tokens/frame  "
            f"{m.bits_per_frame / 1000:.2f} kbit/frame{rate}  enc {m.encode_ms:.1f} ms  "
            f"dec {m.decode_ms:.1f} ms  {m.decodes_per_frame:.2f} decodes/frame  {m.frames} frames")


def cmd_eval(a: argparse.Namespace) -> int:
    if a.inputs and all(robotics.is_recording(p) for p in a.inputs):  # .ltk/.mcap recordings
        return robotics.cmd_eval_recordings(a)
    from livetok.stream.evaluate import evaluate_files, video_files
    from livetok.stream.sources import frame_total

    sender = sender_config(a)
    a.inputs = video_files(a.inputs)  # a folder: the clips in it
    totals = [frame_total(p, a.max_frames) for p in a.inputs]
    model = open_model(a)
    with progress() as prog:
        task = prog.add_task("eval", total=None if None in totals else sum(t or 0 for t in totals))
        res = evaluate_files(model, a.inputs, sender, max_frames=a.max_frames, per_frame=a.per_frame,
                             progress=lambda name, n: prog.update(task, advance=n, description=f"eval {name}"))
    con = console()
    for name, m in res.clips.items():
        con.print(f"[bold]{name}[/]: {metrics_line(m)}")
    con.print(f"[bold]overall[/]: {metrics_line(res.overall)}")
    for m in res.clips.values():
        warn(m.warning)
    if a.json:
        # what was asked for, named apart from what each clip reached (`kept_fraction`)
        print_json({**res.to_json(), "policy": a.policy, "rate_target": a.rate, "max_rate": a.max_rate})
    return 0


def cmd_encode(a: argparse.Namespace) -> int:
    from livetok.stream.files import check_ltk_output, encode_file
    from livetok.stream.mcap_file import McapEncodeSummary, encode_mcap, is_mcap
    from livetok.stream.sources import frame_total

    sender = sender_config(a)
    mcap = is_mcap(a.output)  # the same packets in an MCAP file (docs/ROBOTICS.md)
    if not mcap:
        check_ltk_output(a.output)  # before the model loads
    total = frame_total(a.input, a.max_frames)
    model = open_model(a)
    with progress() as prog:
        task = prog.add_task("encode", total=total)

        def advance(name: str, n: int) -> None:
            prog.update(task, advance=n, description=f"encode {name}")

        summary = (encode_mcap(model, a.input, a.output, sender, max_frames=a.max_frames, preview=not a.no_preview,
                               progress=advance) if mcap else
                   encode_file(model, a.input, a.output, sender, max_frames=a.max_frames, progress=advance))
    channels = (f" (MCAP: tokens{' + preview' if summary.preview else ''} channels)"
                if isinstance(summary, McapEncodeSummary) else "")
    console().print(f"wrote {summary.output}: {summary.frames} frames, "
                    f"{summary.tokens_per_frame:.1f} tokens/frame, "
                    f"{summary.bits_per_frame / 1000:.2f} kbit/frame = {summary.bits_per_s / 1000:.1f} kbit/s"
                    f"{channels}")
    warn(summary.warning)
    if a.json:
        print_json(summary.to_json())
    return 0


def cmd_decode(a: argparse.Namespace) -> int:
    if Path(a.input).suffix.lower() == ".mcap":  # an MCAP recording (docs/ROBOTICS.md)
        return robotics.cmd_decode_mcap(a)
    from livetok.stream.files import decode_file, ltk_records
    from livetok.stream.wire import PacketError

    src = Path(a.input)
    if not src.is_file():  # said before the model loads
        raise ValueError(f"{src} is a folder, not a .ltk file" if src.is_dir() else f"no such file: {src}")
    model = open_model(a)
    with progress() as prog:
        task = prog.add_task("decode", total=ltk_records(a.input))
        res = decode_file(model, a.input, a.output, heatmap=a.heatmap,
                          progress=lambda name, n: prog.update(task, advance=n, description=f"decode {name}"))
    if not res.frames:  # nothing to watch: an error, not "wrote x.mp4: 0 frames" (no file was written)
        why = res.error or "the file holds no frames"
        raise PacketError(f"{src}: no frame could be decoded, nothing written: {why}")
    con = console()
    lost = f", {res.frames_lost} lost to damage (the last good frame held)" if res.frames_lost else ""
    con.print(f"wrote {res.output}: {res.frames} frames{lost}")
    if res.error:
        con.print(f"[yellow]warning[/]: {res.damaged} damaged packet(s) or stretch(es) skipped, decoding resumed "
                  f"at the next keyframe; the first: {res.error}")
    if a.json:
        print_json(res.to_json())
    return 0 if res.error is None else EXIT_DAMAGED


def cmd_demo(a: argparse.Namespace) -> int:
    from livetok.stream.demo import demo_source, run_demo
    from livetok.stream.sources import frame_total

    sender = sender_config(a)
    total = frame_total(*demo_source(a.source, a.frames))
    model = open_model(a)
    with progress() as prog:
        task = prog.add_task("demo", total=total)
        res = run_demo(model, a.source, a.out, sender, a.frames, progress=lambda rec: prog.update(task, advance=1))
    con = console()
    con.print(f"[bold]{res.source}[/]: {metrics_line(res)}")
    for p in res.outputs:
        con.print(f"  wrote {p}")
    if a.json:
        print_json(res.to_json())
    return 0
