"""Broker killed and restarted mid-stream (issue 7): a real publisher (QoS 1) and a real receiver
(persistent session) on a real mosquitto with persistence; the broker is stopped (SIGTERM) once
frames flow, left down for --down-s, and started again on the same port. Reports frames lost
(expected 0), the reconnect counts and the outage each side saw (MqttLink.downtime_s), and the gap
in latency: capture-to-decoded latency before the restart vs the worst around it.

    OMP_NUM_THREADS=1 nice -n 19 python -m livetok.bench.broker_restart --source ../shared/data/eval/asl-yes.mkv --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from livetok.engine.config import BudgetConfig, SenderConfig
from livetok.engine.results import JsonResult
from livetok.engine.runtime import Runtime
from livetok.stream.broker_url import parse_broker_url
from livetok.stream.capture import CaptureOptions
from livetok.stream.live import publish_source
from livetok.stream.receiver import Receiver

from .localbroker import INSTALL_HINT, Broker, find_mosquitto
from .model_args import add_model_args, model_from_args


@dataclass(frozen=True, kw_only=True)
class Restart(JsonResult):
    """What a broker restart mid-stream cost: frames lost, each side's reconnects and outage, the latency gap."""

    broker_down_s: float
    frames_published: int
    frames_decoded: int
    frames_lost: int
    every_frame_decoded_once_in_order: bool
    frames_dropped_at_capture: int
    publisher_reconnects: int
    publisher_downtime_s: float
    receiver_reconnects: int
    receiver_downtime_s: float
    latency_ms_p50_before: float | None
    latency_ms_max_before: float | None
    latency_ms_max_around_restart: float | None
    latency_gap_ms: float | None
    latency_ms_p50_after: float | None
    frames_captured_around_restart_decoded: int


async def run(model: Runtime, broker: Broker, source: str, size: tuple[int, int], seconds: float,
              restart_after_s: float, down_s: float) -> Restart:
    cfg = parse_broker_url(broker.url)
    sender = SenderConfig(budget=BudgetConfig(policy="infotok", rate=0.5), keyframe_interval=0)
    frames: list[tuple[float, int, float]] = []  # (decode wall time, frame index, latency ms)
    async with Receiver(model, cfg, "restart", identifier="rx-restart-bench") as rx:
        async def receive() -> None:
            async for f in rx:
                frames.append((time.time(), f.frame_index, f.latency_ms))

        receiving = asyncio.create_task(receive())
        pub = asyncio.create_task(publish_source(
            model, source, cfg, "restart", sender,
            CaptureOptions(realtime=True, loop=True, max_frames=round(seconds * 30), size=size),
            first_connect_timeout_s=30.0))
        deadline = time.monotonic() + 120
        while not frames and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(restart_after_s)
        t_stop = time.time()
        await asyncio.to_thread(broker.stop)
        await asyncio.sleep(down_s)
        await asyncio.to_thread(broker.start)
        t_start = time.time()
        stats = await asyncio.wait_for(pub, seconds + 120)
        await asyncio.wait_for(receiving, 60)
        summary = rx.summary()
    lat = np.array([x[2] for x in frames])
    capture = np.array([x[0] - x[2] / 1e3 for x in frames])  # capture wall time of each decoded frame
    before = lat[capture < t_stop - 0.5]
    around = lat[(capture >= t_stop - 0.5) & (capture <= t_start + 2.0)]
    after = lat[capture > t_start + 5.0]
    indices = [x[1] for x in frames]
    return Restart(
        broker_down_s=round(t_start - t_stop, 3), frames_published=stats.frames_published,
        frames_decoded=len(frames), frames_lost=summary.frames_lost,
        every_frame_decoded_once_in_order=indices == list(range(stats.frames_published)),
        frames_dropped_at_capture=stats.frames_dropped,
        publisher_reconnects=stats.reconnects, publisher_downtime_s=stats.broker_downtime_s,
        receiver_reconnects=summary.reconnects, receiver_downtime_s=summary.broker_downtime_s,
        latency_ms_p50_before=round(float(np.median(before)), 1) if before.size else None,
        latency_ms_max_before=round(float(before.max()), 1) if before.size else None,
        latency_ms_max_around_restart=round(float(around.max()), 1) if around.size else None,
        latency_gap_ms=round(float(around.max() - np.median(before)), 1) if around.size and before.size else None,
        latency_ms_p50_after=round(float(np.median(after)), 1) if after.size else None,
        frames_captured_around_restart_decoded=int(around.size),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(ap)
    ap.add_argument("--source", default="synthetic", help="a clip, or synthetic[:PRESET] (default)")
    ap.add_argument("--size", default="256x192")
    ap.add_argument("--seconds", type=float, default=20.0, help="stream length (30 fps capture)")
    ap.add_argument("--restart-after", type=float, default=4.0, help="seconds of decoded frames before the stop")
    ap.add_argument("--down-s", type=float, default=1.0, help="how long the broker stays down")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    model = model_from_args(a)
    binary = find_mosquitto()
    if binary is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 1
    w, h = (int(v) for v in a.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="livetok-restart-") as d:
        broker = Broker(binary, Path(d))
        broker.start()
        try:
            r = asyncio.run(run(model, broker, a.source, (w, h), a.seconds, a.restart_after, a.down_s))
        finally:
            broker.stop()
    res = {"model": model.cfg.name, "source": a.source, "size": a.size, **r.to_json()}
    print(f"broker down {r.broker_down_s} s: {r.frames_lost} lost, latency p50 before "
          f"{r.latency_ms_p50_before} ms, max around the restart {r.latency_ms_max_around_restart} ms "
          f"(gap {r.latency_gap_ms} ms); outage seen by publisher {r.publisher_downtime_s} s, receiver "
          f"{r.receiver_downtime_s} s", file=sys.stderr)
    if a.json:
        print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
