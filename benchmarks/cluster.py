"""Scale-out on a real three-node NATS cluster (issue 15): receiver workers and node failover.

    python -m livetok.bench.cluster workers --streams 8 --workers 1 2 4 --json [--weights W | --preset tiny]
    python -m livetok.bench.cluster failover --trials 3 --json

`workers`: S streams (packets encoded once, replayed at 30 fps with fresh indices by a separate
sender process, as `bench stream --find-max` does) into W worker processes (`livetok receive
--worker`, stream/workers.py) for each W; aggregate decoded fps, the streams each worker owned, and
the capture-to-decoded latency p50/p99 (the worst worker's). `failover`: one stream, the receiver's
node and then the publisher's node SIGKILLed mid-stream; frames published / decoded / lost, the
connection outage and the *stall* — from the kill to the first frame decoded after it, what a viewer
sees. Nodes, workers and sender share this machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livetok.engine.checkpoint import DEFAULT_WEIGHTS, load_weights, save_weights
from livetok.engine.config import PRESETS, BudgetConfig, SenderConfig
from livetok.engine.model import Tokenizer
from livetok.engine.results import JsonResult
from livetok.engine.runtime import Runtime
from livetok.stream.broker_url import parse_broker_url
from livetok.stream.capture import CaptureOptions
from livetok.stream.live import publish_sources
from livetok.stream.pipeline import PipelineSnapshot
from livetok.stream.receiver import Receiver

from .capacity import Replayed, _replay_main, encode_clip
from .nats_cluster import INSTALL_HINT, NatsCluster, find_nats_server

__all__ = ["bench_failover", "bench_workers", "wait_for_workers", "worker_cmd"]


def _cluster(workdir: Path) -> NatsCluster:
    binary = find_nats_server()
    if binary is None:
        raise RuntimeError(INSTALL_HINT)
    c = NatsCluster(binary, workdir)
    c.start()
    return c


def worker_cmd(urls: list[str], weights: Path, name: str, group: str, idle_s: float, connect_timeout_s: float,
               *extra: str) -> list[str]:
    """The command line of one receiver worker (`livetok receive --worker`) of `group` over the cluster `urls`;
    it prints its summary as JSON and stops `idle_s` after its last frame."""
    return [sys.executable, "-m", "livetok.cli", "receive", *[a for u in urls for a in ("--broker", u)],
            "--stream", "+", "--worker", name, "--group", group, "--timeout", f"{idle_s:g}", "--weights",
            str(weights), "--connect-timeout", f"{connect_timeout_s:g}", "--json", *extra]


async def wait_for_workers(url: str, group: str, names: set[str], timeout_s: float) -> None:
    """Until every worker in `names` has announced itself in `group` (its retained presence message)."""
    import aiomqtt

    b = parse_broker_url(url)
    seen: set[str] = set()
    async with aiomqtt.Client(b.host, b.port) as c:
        await c.subscribe(f"livetok/_workers/{group}/+", qos=1)

        async def watch() -> None:
            async for m in c.messages:
                name = str(m.topic).rsplit("/", 1)[-1]
                (seen.add if m.payload else seen.discard)(name)
                if names <= seen:
                    return
        await asyncio.wait_for(watch(), timeout_s)


@dataclass(frozen=True, kw_only=True)
class WorkersRow(JsonResult):
    """S streams over W worker processes: what they decoded together, how the streams were split."""

    workers: int
    streams: int
    frames_sent: int
    frames_decoded: int
    frames_lost: int
    decoded_fps: float
    streams_per_worker: list[int]
    latency_ms_p50: float | None  # the slowest worker's
    latency_ms_p99: float | None
    send_wall_s: float
    scaling_efficiency: float | None  # decoded fps per worker against one worker's


@dataclass(frozen=True, kw_only=True)
class WorkersBench(JsonResult):
    preset: str
    size: list[int]
    seconds: float
    fps: float
    cpus: int | None
    rows: list[WorkersRow]


@dataclass(frozen=True, kw_only=True)
class FailoverTrial(JsonResult):
    """One node of the cluster killed mid-stream: what the stream lost, how long it stalled."""

    killed: str  # "receiver's node" or "publisher's node"
    frames_published: int
    frames_decoded: int
    in_order: bool
    frames_lost: int
    failovers: int  # the side whose node was killed
    outage_s: list[float]
    stall_s: float | None  # the kill to the next frame decoded


@dataclass(frozen=True, kw_only=True)
class FailoverSummary(JsonResult):
    trials: int
    frames_lost: int
    stall_s_median: float | None
    stall_s_max: float | None


@dataclass(frozen=True)
class FailoverBench(JsonResult):
    trials: list[FailoverTrial]
    summary: dict[str, FailoverSummary]  # by the node killed


def bench_workers(model: Runtime, weights: Path, streams: int = 8, workers: tuple[int, ...] = (1, 2, 4),
                  seconds: float = 10.0, fps: float = 30.0, size: tuple[int, int] = (256, 192),
                  source: str = "synthetic") -> WorkersBench:
    """Aggregate decoded fps of S replayed streams over W worker processes, for each W. Workers stop
    15 s after their last frame (their idle timeout also covers the sender's start-up)."""
    payloads = encode_clip(model, source, size, SenderConfig(budget=BudgetConfig(policy="fixed", rate=0.5)), 60)
    frames = max(2, round(seconds * fps))
    rows: list[WorkersRow] = []
    for w in workers:
        with tempfile.TemporaryDirectory() as tmp:
            cluster = _cluster(Path(tmp) / "nats")
            names = [f"w{k}" for k in range(w)]
            cmd = ["--threads", "1"]  # one core each: W workers on W cores
            procs = [subprocess.Popen(worker_cmd(cluster.urls, weights, n, "bench", 15.0, 60.0, *cmd),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE) for n in names]
            try:
                asyncio.run(wait_for_workers(cluster.urls[0], "bench", set(names), 120))
                ctx = mp.get_context("spawn")
                parent, child = ctx.Pipe(duplex=False)
                info = {"model_id": model.identity.hex(), "fps": fps}
                names_s = [f"s{j}" for j in range(streams)]
                sender = ctx.Process(target=_replay_main, daemon=True,
                                     args=(child, cluster.urls[0], names_s, payloads, fps, frames, info))
                sender.start()
                child.close()
                sent: Replayed | str = parent.recv()
                sender.join(30)
                if isinstance(sent, str):
                    raise RuntimeError(f"the replaying publishers failed: {sent}")
                outs = [p.communicate(timeout=300) for p in procs]
            finally:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
                        p.communicate()
                cluster.stop()
        results: list[dict[str, Any]] = []  # each worker's `receive --json` document
        for (out, err), p in zip(outs, procs, strict=True):
            if p.returncode != 0:
                raise RuntimeError(f"a worker failed: {err.decode()[-500:]}")
            text = out.decode()
            results.append(json.loads(text[text.index("{"):]))
        decoded = sum(r["frames_decoded"] for r in results)
        p50 = [r["latency_ms_p50"] for r in results if r["latency_ms_p50"] is not None]
        p99 = [r["latency_ms_p99"] for r in results if r["latency_ms_p99"] is not None]
        rows.append(WorkersRow(workers=w, streams=streams, frames_sent=streams * frames,
                               frames_decoded=decoded, frames_lost=sum(r["frames_lost"] for r in results),
                               decoded_fps=round(decoded / seconds, 1),
                               streams_per_worker=[len(r["streams_owned"]) for r in results],
                               latency_ms_p50=max(p50) if p50 else None, latency_ms_p99=max(p99) if p99 else None,
                               send_wall_s=sent.send_wall_s, scaling_efficiency=None))
    base = rows[0].decoded_fps / rows[0].workers if rows and rows[0].decoded_fps else None
    rows = [dataclasses.replace(r, scaling_efficiency=round(r.decoded_fps / (base * r.workers), 3) if base else None)
            for r in rows]
    return WorkersBench(preset=model.cfg.name, size=list(size), seconds=seconds, fps=fps, cpus=os.cpu_count(),
                        rows=rows)


async def _failover_trial(model: Runtime, cluster: NatsCluster, kill: int, frames: int) -> FailoverTrial:
    urls = cluster.urls
    rx_brokers = [parse_broker_url(u) for u in urls]  # the receiver on node 0, the publisher on node 1
    pub_brokers = [parse_broker_url(u) for u in urls[1:] + urls[:1]]
    sender = SenderConfig(budget=BudgetConfig(policy="fixed", rate=0.5), keyframe_interval=0)
    async with Receiver(model, rx_brokers, "cam0", identifier="bench-failover", first_connect_timeout_s=60) as rx:
        arrivals: list[tuple[float, int]] = []

        async def receive() -> None:
            async for f in rx:
                arrivals.append((time.monotonic(), f.frame_index))

        drain = asyncio.create_task(receive())
        killed: list[float] = []

        def maybe_kill(d: PipelineSnapshot) -> None:
            if not killed and len(arrivals) >= 15:
                cluster.kill(kill)
                killed.append(time.monotonic())

        stats = await publish_sources(model, ["synthetic:calm"], pub_brokers, ["cam0"], sender,
                                      CaptureOptions(max_frames=frames, size=(128, 96)), first_connect_timeout_s=60,
                                      on_stats=maybe_kill)
        await asyncio.wait_for(drain, 180)
        summary = rx.summary()
    t_kill = killed[0] if killed else float("nan")
    after = [t for t, _ in arrivals if t > t_kill]
    n = stats.frames_published
    return FailoverTrial(killed="receiver's node" if kill == 0 else "publisher's node", frames_published=n,
                         frames_decoded=len(arrivals), in_order=[i for _, i in arrivals] == list(range(n)),
                         frames_lost=summary.frames_lost,
                         failovers=summary.failovers if kill == 0 else stats.failovers,
                         outage_s=(summary.outages_s if kill == 0 else stats.outages_s) or [0.0],
                         stall_s=round(after[0] - t_kill, 3) if after else None)


def bench_failover(model: Runtime, trials: int = 3, frames: int = 150) -> FailoverBench:
    """Each trial: a fresh cluster, the receiver's node killed mid-stream; then again the publisher's."""
    rows = []
    for _ in range(trials):
        for kill in (0, 1):
            with tempfile.TemporaryDirectory() as tmp:
                cluster = _cluster(Path(tmp) / "nats")
                try:
                    rows.append(asyncio.run(_failover_trial(model, cluster, kill, frames)))
                finally:
                    cluster.stop()
    summary = {}
    for who in ("receiver's node", "publisher's node"):
        stalls = [r.stall_s for r in rows if r.killed == who and r.stall_s is not None]
        summary[who] = FailoverSummary(trials=sum(r.killed == who for r in rows),
                                       frames_lost=sum(r.frames_lost for r in rows if r.killed == who),
                                       stall_s_median=round(statistics.median(stalls), 2) if stalls else None,
                                       stall_s_max=round(max(stalls), 2) if stalls else None)
    return FailoverBench(rows, summary)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m livetok.bench.cluster", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    w = sub.add_parser("workers")
    w.add_argument("--streams", type=int, default=8)
    w.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    w.add_argument("--seconds", type=float, default=10.0)
    w.add_argument("--weights", default=None, help="default: the shipped model")
    w.add_argument("--preset", default=None, help="an untrained model of this preset instead (speed only)")
    f = sub.add_parser("failover")
    f.add_argument("--trials", type=int, default=3)
    f.add_argument("--preset", default="tiny", help="the model streamed (default tiny: the broker is measured)")
    for p in (w, f):
        p.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with tempfile.TemporaryDirectory() as tmp:
        if a.preset is not None:
            tok = Tokenizer(PRESETS[a.preset]).eval()
            weights = Path(tmp) / "w.safetensors"
            save_weights(tok, weights)
            model: Runtime = tok
        else:
            weights = Path(a.weights) if getattr(a, "weights", None) else DEFAULT_WEIGHTS
            model = load_weights(weights)
        res = (bench_workers(model, weights, a.streams, tuple(a.workers), a.seconds) if a.what == "workers"
               else bench_failover(model, a.trials))
    doc = res.to_json()
    print(json.dumps(doc, indent=2) if a.json else doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
