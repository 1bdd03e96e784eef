"""The robotics latency table's harness: encode, transport and decode timed per frame over real MQTT (local
mosquitto), Zenoh and WebRTC links on loopback; every frame decodes to the sender's reconstruction."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

pytest.importorskip("zenoh", reason="needs the robotics extra: pip install 'livetok[robotics]'")

from livetok.bench.robotics_latency import TRANSPORTS, markdown_table, measure
from livetok.engine.config import BudgetConfig, SenderConfig
from livetok.engine.model import Tokenizer


def test_latency_per_transport(real_frames: np.ndarray, tiny_model: Tokenizer) -> None:
    import cv2

    # 4 small frames (64x48: a 4x3 token grid) keep it to a few seconds on a busy CPU; the harness is what is
    # tested (every frame through each real link, decoded bit-exactly, timed), not the figures
    frames = np.stack([cv2.resize(f, (64, 48), interpolation=cv2.INTER_AREA) for f in real_frames[:4]])
    sender = SenderConfig(budget=BudgetConfig(policy="fixed", rate=0.5))
    rows = [asyncio.run(measure(tiny_model, frames, t, sender, warmup=1)) for t in TRANSPORTS]
    for r in (row.to_json() for row in rows):
        assert r["frames"] == 3 and r["bits_per_frame"] > 0
        for k in ("encode_ms", "transport_ms", "decode_ms", "total_ms"):
            assert 0 <= r[k]["p50"] <= r[k]["p95"] < 10_000
        assert r["total_ms"]["p50"] >= r["transport_ms"]["p50"]
    table = markdown_table(rows)
    assert table.count("\n") == 4 and all(f"| {t} |" in table for t in TRANSPORTS)
