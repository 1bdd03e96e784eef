"""Packet loss with QoS-0 style delivery (issue 7): a seeded lossy link into the real PacketReceiver
on a virtual clock — every loss is counted, a keyframe is requested, decoding comes back within a
second. The figures per loss rate are benchmarks/loss.py's (docs/BENCHMARKS.md)."""

from __future__ import annotations

import numpy as np
import pytest

from livetok.bench.lossy import LossConfig, LossyLink, simulate_loss
from livetok.engine.config import BudgetConfig, SenderConfig
from livetok.engine.model import Tokenizer

SENDER = SenderConfig(budget=BudgetConfig(policy="fixed", rate=0.5), keyframe_interval=0)


@pytest.fixture(scope="module")
def frames(real_frames: np.ndarray) -> list[np.ndarray]:
    clip = [np.ascontiguousarray(f[:48, :64]) for f in real_frames]
    return (clip * 5)[:60]  # 2 s at 30 fps


@pytest.mark.parametrize("loss", [0.01, 0.05, 0.20])
def test_every_loss_is_detected_and_repaired_within_a_second(tiny_model: Tokenizer, frames: list[np.ndarray],
                                                             loss: float) -> None:
    # seeds chosen so each run loses something; the loss pattern is reproducible
    seed = {0.01: 3, 0.05: 1, 0.20: 1}[loss]
    r = simulate_loss(tiny_model, frames, LossConfig(loss=loss, seed=seed), SENDER).to_json()
    assert r["packets_dropped"] >= 1
    assert r["losses_detected"] and r["frames_lost_counted"] >= r["packets_dropped"]
    assert r["keyframe_requests"] >= 1 and r["keyframes_sent"] >= 2  # the first, and the repair
    if loss < 0.2:
        assert r["recovery_s_max"] <= 1.0
    else:  # a lost keyframe costs another request interval; most losses still recover within 1 s
        assert r["recovered_within_1s"] >= 0.75 and r["recovery_s_p50"] <= 1.0
    assert r["frames_decoded"] + r["frames_frozen"] == r["frames"]


def test_no_loss_means_nothing_frozen(tiny_model: Tokenizer, frames: list[np.ndarray]) -> None:
    r = simulate_loss(tiny_model, frames[:30], LossConfig(loss=0.0), SENDER).to_json()
    assert r["frames_frozen"] == 0 and r["keyframe_requests"] == 0 and r["keyframes_sent"] == 1


def test_lossy_link_rates_and_bursts() -> None:
    for loss, burst in ((0.05, 1.0), (0.2, 1.0), (0.05, 4.0)):
        link = LossyLink(LossConfig(loss=loss, burst=burst, seed=0))
        drops = np.array([link.drops() for _ in range(40_000)])
        assert drops.mean() == pytest.approx(loss, rel=0.1)
        runs = np.diff(np.flatnonzero(np.diff(np.concatenate(([0], drops.astype(int), [0])))))[::2]
        assert runs.mean() == pytest.approx(burst if burst > 1 else 1 / (1 - loss), rel=0.15)
    with pytest.raises(ValueError, match="loss must be in"):
        LossConfig(loss=1.0)
