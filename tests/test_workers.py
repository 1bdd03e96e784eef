"""Receiver workers (stream/workers.py) on the real three-node NATS cluster: W processes split the
streams by rendezvous hashing over the live workers; a SIGKILLed worker's streams move to the other,
which resumes them at a keyframe. And the ownership function itself."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from livetok.bench.cluster import wait_for_workers, worker_cmd
from livetok.bench.nats_cluster import NatsCluster
from livetok.engine.config import BudgetConfig, SenderConfig
from livetok.engine.model import Tokenizer
from livetok.stream.broker_url import parse_broker_url
from livetok.stream.capture import CaptureOptions
from livetok.stream.live import PublishSummary, publish_sources
from livetok.stream.ownership import owned, owner
from livetok.stream.pipeline import PipelineSnapshot
from livetok.stream.workers import presence_topic

STREAMS = [f"cam{i}" for i in range(6)]


def test_ownership_is_a_stable_partition() -> None:
    workers = ["w0", "w1", "w2"]
    parts = [owned(STREAMS * 1, w, workers) for w in workers]
    assert set().union(*parts) == set(STREAMS) and sum(map(len, parts)) == len(STREAMS)  # exactly one owner
    assert owner("cam3", workers) == owner("cam3", list(reversed(workers)))  # order does not matter
    assert owner("cam3", []) is None
    # a worker leaving moves only its own streams; the others stay where they were
    many = [f"s{i}" for i in range(300)]
    before = {s: owner(s, workers) for s in many}
    after = {s: owner(s, ["w0", "w2"]) for s in many}
    moved = {s for s in many if before[s] != after[s]}
    assert moved == {s for s in many if before[s] == "w1"}
    assert 70 <= len(moved) <= 130  # about a third of 300 each


def _worker(cluster: NatsCluster, weights: Path, name: str, out: Path) -> subprocess.Popen[bytes]:
    cmd = worker_cmd(cluster.urls, weights, name, "g", 8, 30, "--out", str(out / "rx.mp4"))
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "200"})


def test_a_dead_workers_streams_move_to_the_other(nats_cluster: NatsCluster, tiny_model: Tokenizer,
                                                  tiny_weights: Path, tmp_path: Path) -> None:
    workers = {"wa": _worker(nats_cluster, tiny_weights, "wa", tmp_path),
               "wb": _worker(nats_cluster, tiny_weights, "wb", tmp_path)}
    try:
        asyncio.run(wait_for_workers(nats_cluster.urls[0], "g", {"wa", "wb"}, 90))
        assert presence_topic("g", "wa") == "livetok/_workers/g/wa"
        sender = SenderConfig(budget=BudgetConfig(policy="fixed", rate=0.5), keyframe_interval=0)
        brokers = [parse_broker_url(u) for u in nats_cluster.urls]

        def kill_mid_stream(d: PipelineSnapshot) -> None:
            # once every stream has published frames: wa has decoded its streams for a while
            per = d.per_stream
            if workers["wa"].poll() is None and per and min(v.frames_published for v in per.values()) >= 5:
                workers["wa"].send_signal(signal.SIGKILL)  # no goodbye: the broker publishes its will

        async def run() -> PublishSummary:
            return await publish_sources(tiny_model, ["synthetic:calm"] * len(STREAMS), brokers, STREAMS, sender,
                                         CaptureOptions(max_frames=150, size=(128, 96)), first_connect_timeout_s=30,
                                         on_stats=kill_mid_stream)

        stats = asyncio.run(run()).to_json()
        assert workers["wa"].poll() is not None, "the stream ended before wa could be killed mid-stream"
        out, err = workers["wb"].communicate(timeout=120)
    finally:
        for p in workers.values():
            if p.poll() is None:
                p.kill()
            p.communicate()  # reaps it and closes its pipes
    assert workers["wb"].returncode == 0, err.decode()[-2000:]
    res = json.loads(out.decode()[out.decode().index("{"):])
    mine_before = owned(STREAMS, "wb", ["wa", "wb"])
    assert 0 < len(mine_before) < len(STREAMS)  # the 6 names split across both workers
    assert res["members"] == ["wb"] and res["streams_owned"] == sorted(STREAMS)  # it took wa's streams
    assert res["handoffs_in"] == len(STREAMS)
    per, published = res["streams"], {s: v["frames_published"] for s, v in stats["per_stream"].items()}
    for s in mine_before:  # wb's own streams: every published frame, none lost
        assert per[s]["frames_decoded"] == published[s] >= 10 and per[s]["frames_lost"] == 0, (s, per[s])
    taken = set(STREAMS) - mine_before
    for s in taken:  # wa's streams: from a keyframe after the handoff to the end, so fewer frames
        assert 1 <= per[s]["frames_decoded"] < published[s] and per[s]["keyframes"] >= 1, (s, per[s])
    # the keyframes came on request (keyframe_interval 0: the sender makes none on its own)
    assert stats["keyframe_requests"] >= len(taken)


def test_workers_need_every_stream(capsys: pytest.CaptureFixture[str]) -> None:
    from livetok.cli import main

    assert main(["receive", "--broker", "mqtt://127.0.0.1:1", "--stream", "cam0", "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert "--workers/--worker split every stream: use --stream '+', not 'cam0'" in err and "Traceback" not in err
