"""`bench rd|arms|stream|soak|speed|perception`: each benchmark of livetok.bench, run and summed up in its
own words (its `summary_lines`); the only part of the CLI that imports livetok.bench."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from .options import (
    add_model_args,
    add_sender_args,
    open_model,
    parse_size,
    required_size,
    sender_config,
)
from .output import console, print_json, progress

if TYPE_CHECKING:
    from rich.console import Console

    from livetok.engine.config import SenderConfig
    from livetok.engine.runtime import Runtime

    from .options import Subparsers


def register(sub: Subparsers) -> None:
    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench", metavar="BENCH")
    br = bench.add_parser("rd", help="rate-distortion of every budget policy and of x264/VP8")
    br.add_argument("inputs", nargs="+")
    br.add_argument("--policies", nargs="*", default=None, help="only these policies (fixed always runs)")
    br.add_argument("--codecs", nargs="*", default=["x264", "vp8"])
    br.add_argument("--max-frames", type=int, default=None)
    br.add_argument("--plot", default=None, help="write the PSNR vs bits/frame plot here (PNG)")
    br.add_argument("--json", action="store_true")
    add_model_args(br)
    br.set_defaults(func=cmd_bench_rd)

    ba = bench.add_parser("arms", help="training arms on one backbone (fixed per rate, uniform, elbo): train tiny "
                                       "models, evaluate them with the fixed and infotok policies")
    ba.add_argument("inputs", nargs="+", help="evaluation clips (never trained or calibrated on)")
    ba.add_argument("--data", nargs="*", default=["../shared/data/train"],
                    help="training clip files/folders, also the calibration clips (never eval clips)")
    ba.add_argument("--out", default="runs/arms", help="checkpoints, one folder per model; reused when their "
                                                      "configuration matches (default: runs/arms)")
    ba.add_argument("--steps", type=int, default=None,
                    help="training steps of every model (default 250: about 5 min in all on 2 cores)")
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
    add_sender_args(bs)
    add_model_args(bs)
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
    add_sender_args(bk)
    add_model_args(bk)
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
    add_sender_args(bp)
    add_model_args(bp, backend=False)
    bp.set_defaults(func=cmd_bench_speed)

    bq = bench.add_parser("perception", help="OpenCV detectors (HOG people, Haar, ArUco, ORB) on the original "
                          "frames vs livetok's and x264's decoded frames at several rates")
    bq.add_argument("inputs", nargs="+", help="clips or folders")
    bq.add_argument("--max-frames", type=int, default=24, help="frames per clip (default 24)")
    bq.add_argument("--rates", type=float, nargs="+", default=None, help="livetok rates (default 0.125 .. 1)")
    bq.add_argument("--crfs", type=int, nargs="+", default=None, help="x264 CRFs (default 24 32 40 46 51)")
    bq.add_argument("--plot", default=None, help="write the score vs bits/frame plot here (PNG)")
    bq.add_argument("--json", action="store_true")
    add_model_args(bq, backend=False)
    bq.set_defaults(func=cmd_bench_perception)


def _say(con: Console, lines: list[str]) -> None:
    for line in lines:
        con.print(line)


def cmd_bench_stream(a: argparse.Namespace) -> int:
    from livetok.bench.live_stream import bench_stream, summary_lines

    sender, size = sender_config(a), required_size(a.size)
    model = open_model(a)
    if a.find_max:
        return _bench_find_max(a, model, sender, size)
    res = bench_stream(model, a.streams, a.seconds, a.source, size, sender, a.broker, max_lag_s=a.max_lag)
    _say(console(), summary_lines(res))
    if a.json:
        print_json(res.to_json())
    return 0


def _bench_find_max(a: argparse.Namespace, model: Runtime, sender: SenderConfig, size: tuple[int, int]) -> int:
    from livetok.bench.capacity import CapacityConfig, find_max_streams, summary_line, trial_line

    con = console()
    cfg = CapacityConfig(seconds=a.seconds, max_streams=a.max_streams)
    if a.broker and len(a.broker) > 1:
        raise ValueError("--find-max measures one receiver against one broker: give --broker once")
    res = find_max_streams(model, a.source, size, sender, cfg, a.broker[0] if a.broker else None,
                           log=lambda r: con.print(trial_line(r)))
    con.print(summary_line(res))
    if a.json:
        print_json(res.to_json())
    return 0


def cmd_bench_soak(a: argparse.Namespace) -> int:
    from livetok.bench.soak import bench_soak, summary_lines

    sender, size = sender_config(a), required_size(a.size)
    model = open_model(a)
    res = bench_soak(model, a.minutes, a.window, a.source, size, sender, a.broker)
    _say(console(), summary_lines(res))
    if a.json:
        print_json(res.to_json())
    return 0


def cmd_bench_speed(a: argparse.Namespace) -> int:
    from livetok.bench.speed import DEFAULT_SIZES, SpeedConfig, bench_speed, summary_lines
    from livetok.engine.checkpoint import load_default, load_weights

    sizes = tuple(s for s in (parse_size(v) for v in a.size) if s is not None) if a.size else DEFAULT_SIZES
    device = None if a.device == "cpu" else a.device
    cfg = SpeedConfig(backends=tuple(a.backend or ()), sizes=sizes, streams=a.streams, frames=a.frames,
                      warmup=a.warmup, repeats=a.repeats, source=a.source, sender=sender_config(a),
                      threads=a.threads or None, device=device, onnx_dir=a.onnx_dir)
    model = load_weights(a.weights) if a.weights else load_default()
    con = console()
    res = bench_speed(model, cfg, progress=con.print)
    _say(con, summary_lines(res))
    if a.json:
        print_json(res.to_json())
    return 0


def cmd_bench_rd(a: argparse.Namespace) -> int:
    from livetok.bench.rd import bench_rd, plot_rd, summary_lines
    from livetok.stream.evaluate import video_files

    a.inputs = video_files(a.inputs)  # a folder: the clips in it
    model = open_model(a)
    con = console()
    res = bench_rd(model, a.inputs, a.policies, tuple(a.codecs), a.max_frames, progress=con.print)
    _say(con, summary_lines(res))
    if a.plot:
        plot_rd(res, a.plot)
        con.print(f"wrote {a.plot}")
    if a.json:
        print_json(res.to_json())
    return 0


def cmd_bench_arms(a: argparse.Namespace) -> int:
    from livetok.bench.arms import ArmsConfig, bench_arms, summary_lines
    from livetok.stream.evaluate import video_files

    a.inputs = video_files(a.inputs)  # a folder: the clips in it
    steps = {"steps": a.steps} if a.steps is not None else {}
    cfg = ArmsConfig(**steps, seed=a.seed, calib_frames=a.calib_frames, threads=a.threads, device=a.device)
    con = console()
    with progress() as bar:
        tasks: dict[str, Any] = {}

        def on_progress(task: str, done: float, total: float | None, note: str) -> None:
            if task not in tasks:
                tasks[task] = bar.add_task(task, total=total)
            bar.update(tasks[task], completed=done, total=total, description=f"{task}  {note}")
            if total is not None and done >= total and task != "evaluate":
                bar.console.print(f"{task}: {note}")

        res = bench_arms(a.inputs, cfg, a.out, a.data, a.max_frames, progress=on_progress)
    _say(con, summary_lines(res))
    if a.json:
        print_json(res.to_json())
    return 0


def cmd_bench_perception(a: argparse.Namespace) -> int:
    from livetok.bench.perception import CRFS, RATES, bench_perception, plot_perception, summary_lines
    from livetok.stream.evaluate import video_files

    inputs = video_files(a.inputs)
    model = open_model(a)
    con = console()
    res = bench_perception(model, inputs, max_frames=a.max_frames, rates=a.rates or RATES, crfs=a.crfs or CRFS,
                           progress=con.print)
    _say(con, summary_lines(res))
    if a.plot:
        plot_perception(res, a.plot)
        con.print(f"wrote {a.plot}")
    if a.json:
        print_json(res.to_json())
    return 0
