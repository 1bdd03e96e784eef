"""`publish` and `receive`: live streams over MQTT (or, with --zenoh/--foxglove/--mcap, the robot
transports of cli/robotics.py), and `receive --workers`, which splits the streams among processes."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from . import robotics
from .options import add_model_args, add_sender_args, open_model, sender_config
from .output import EXIT_NO_FRAMES, console, fmt_ms, print_json
from .streaming import (
    IDLE_TIMEOUT_S,
    add_broker_args,
    brokers,
    capture_options,
    check_sources,
    received_line,
    received_status,
    record_options,
    report_received,
    run_sender,
    stream_names,
    until_stopped,
)

if TYPE_CHECKING:
    from types import FrameType

    from .options import Subparsers


def register(sub: Subparsers) -> None:
    pb = sub.add_parser("publish", help="tokenize a live source and publish it to an MQTT broker")
    pb.add_argument("--source", required=True, action="append",
                    help="PATH, rtsp://..., webcam:N or synthetic[:PRESET]; repeat it for several cameras in one "
                         "process (frames of one size are encoded as one batched step; with one --stream NAME "
                         "they are published as NAME-0, NAME-1, ...; or give one --stream per --source)")
    add_broker_args(pb, many_streams=True)
    pb.add_argument("--size", default=None, help="resize frames to WIDTHxHEIGHT (e.g. 256x192)")
    pb.add_argument("--as-fast-as-possible", action="store_true", help="do not pace a file at its frame rate")
    pb.add_argument("--loop", action="store_true", help="start a file again when it ends")
    pb.add_argument("--max-frames", type=int, default=None)
    pb.add_argument("--qos", type=int, choices=(0, 1), default=1,
                    help="MQTT QoS of the token packets: 1 loses nothing (default); 0 sends each once, a lost "
                         "one is repaired by the receiver's keyframe request (keyframes always go at QoS 1)")
    pb.add_argument("--json", action="store_true", help="print the final statistics as JSON")
    add_sender_args(pb)
    add_model_args(pb)
    pb.set_defaults(func=cmd_publish)

    rc = sub.add_parser("receive", help="receive, decode and record live streams from an MQTT broker")
    add_broker_args(rc)
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
    add_model_args(rc)
    rc.set_defaults(func=cmd_receive)
    robotics.add_live_arguments(pb, rc)  # --zenoh, --foxglove, --mcap, --frame-id, --no-preview


def cmd_publish(a: argparse.Namespace) -> int:
    if robotics.wants_robot(a):  # --zenoh / --foxglove / --mcap, with or without --broker (docs/ROBOTICS.md)
        return robotics.cmd_publish_robot(a)
    from livetok.stream.live import publish_sources
    from livetok.stream.mqtt import brokers_text

    streams = stream_names(a.source, a.stream)
    ids = robotics.frame_ids(a, streams)  # each camera's frame id in its retained info (default: the stream name)
    sender, broker, capture = sender_config(a), brokers(a), capture_options(a)
    check_sources(a.source)
    model = open_model(a)
    return run_sender(
        lambda stop, on_stats: publish_sources(
            model, a.source, broker, streams, sender, capture, frame_ids=ids, qos=a.qos,
            first_connect_timeout_s=a.connect_timeout, on_stats=on_stats, stop=stop),
        lambda res: (f"published {res.frames_published} frames to {brokers_text(broker)} stream(s) "
                     f"{', '.join(repr(s) for s in streams)}: {res.fps} fps, {res.frames_dropped} dropped, "
                     f"latency p50 {fmt_ms(res.latency_ms_p50)} ms p99 {fmt_ms(res.latency_ms_p99)} ms, "
                     f"{res.tokens_per_frame} tokens/frame, {res.bits_per_s / 1000:.1f} kbit/s"),
        a.json)


def cmd_receive(a: argparse.Namespace) -> int:
    if robotics.wants_robot(a):  # --zenoh (docs/ROBOTICS.md)
        return robotics.cmd_receive_zenoh(a)
    from livetok.stream.live import receive_stream

    broker = brokers(a)
    record = record_options(a, on_status=console().print)  # a bad --timeout is refused before anything starts
    if (a.workers > 1 or a.worker is not None) and a.stream != "+":
        raise ValueError(f"--workers/--worker split every stream: use --stream '+', not {a.stream!r}")
    if a.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {a.workers}")
    if a.workers > 1:
        return _run_workers(a)
    model = open_model(a)
    res, status = until_stopped(lambda stop: receive_stream(
        model, broker, a.stream, record, identifier=a.client_id, first_connect_timeout_s=a.connect_timeout,
        max_lag_s=a.max_lag, worker=a.worker, group=a.group, stop=stop))
    return report_received(res, status, a.json)


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
    base = [sys.executable, "-m", "livetok.cli", *argv, *([] if a.json else ["--json"])]
    # each worker in its own process group: a terminal's Ctrl-C reaches this process only, which
    # passes it on once (a second one, passed on too, makes them quit at once)
    procs = [subprocess.Popen([*base, "--worker", f"w{k}"], stdout=subprocess.PIPE, process_group=0)
             for k in range(a.workers)]

    def forward(signum: int, frame: FrameType | None) -> None:
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
    docs: list[dict[str, Any]] = []
    for out in outs:
        try:
            docs.append(json.loads(out))
        except ValueError:  # a worker that failed (its error is on stderr) or was killed
            continue
    if not docs:
        return max(codes)
    res = merge_summaries(docs)
    console().print(f"{len(docs)} workers: " + received_line(res))
    if a.json:
        print_json(res)
    worst = max(codes)
    return worst if worst not in (0, EXIT_NO_FRAMES) else received_status(res, None)
