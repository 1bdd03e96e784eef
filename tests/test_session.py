"""Sender/receiver sessions: packets, end of stream, and rate control over real frames."""

from __future__ import annotations

import numpy as np
import pytest

from livetok.engine.config import BudgetConfig, SenderConfig
from livetok.engine.model import Tokenizer
from livetok.engine.rate_control import RateControlConfig
from livetok.stream.session import ReceiverSession, SenderSession
from livetok.stream.video_io import read_video
from livetok.stream.wire import TokenPacket

from .conftest import BUNDLED_CLIP


# the untrained test model barely uses its tokens (its gain signal is ~0), so infotok runs on the
# full-rate error here, and without the skip mode (its tokens buy nothing over a repeat: it would skip
# every frame); the shipped model's gain signal and skips are covered by the benchmarks
@pytest.mark.parametrize("policy", ["fixed", "infotok"])
def test_rate_control_holds_a_token_target(tiny_model: Tokenizer, policy: str) -> None:
    frames, _ = read_video(BUNDLED_CLIP)
    frames = frames[:, :96, :128]  # N = 192 positions
    rc = RateControlConfig(target_tokens=120.0, fps=30.0)  # the content asks for ~170-192 at rate 0.9
    budget = BudgetConfig(policy=policy, rate=0.9, signal="error", skip_fraction=0.0)
    tx = SenderSession(tiny_model, SenderConfig(budget=budget, rate_control=rc, keyframe_interval=0, ranking="error"))
    ks = []
    for i in range(3):  # the clip three times: 144 frames, 4.8 s
        for j, f in enumerate(frames):
            ks.append(tx.encode(f, timestamp_us=round((i * 48 + j) * 1e6 / 30)).packet.k)
    assert abs(np.mean(ks) / 120.0 - 1) < 0.05, np.mean(ks)
    assert ks[0] > 150  # the stream starts above target; the controller pays it back


def test_end_of_stream_packet_follows_the_last_frame(tiny_model: Tokenizer, real_frames: np.ndarray) -> None:
    tx, rx = SenderSession(tiny_model), ReceiverSession(tiny_model)
    for f in real_frames[:3]:
        assert rx.decode(tx.encode(f, 0).data).shape == f.shape
    eos = TokenPacket.unpack(tx.end_of_stream(123))
    assert eos.end_of_stream and eos.frame_index == 3 and eos.n == 0 and eos.timestamp_us == 123


def test_bits_signal_routes_without_a_router_decode(tiny_model: Tokenizer) -> None:
    """signal `bits`: the budget follows the code length of the frame's tokens under the sender's own
    entropy coder (InfoTok's rate term, measured): one decoder pass per frame, a frozen scene gets far
    fewer tokens than new content, and the receiver decodes every frame exactly."""
    frames, _ = read_video(BUNDLED_CLIP)
    frames = frames[:, :96, :128]  # N = 192 positions
    rng = np.random.default_rng(3)
    noise = [(rng.random((96, 128, 3)) * 255).astype(np.uint8) for _ in range(6)]
    still = [frames[10]] * 8
    budget = BudgetConfig(policy="infotok", rate=0.5, signal="bits", population_bits=2.0)
    tx, rx = SenderSession(tiny_model, SenderConfig(budget=budget, keyframe_interval=0)), ReceiverSession(tiny_model)
    ks, decodes = [], []
    for i, f in enumerate([*still, *noise]):
        enc = tx.encode(f, timestamp_us=i * 33_333)
        assert np.array_equal(rx.decode(enc.data), enc.recon)
        ks.append(enc.packet.k)
        decodes.append(enc.tokens.decodes)
    assert decodes == [1] * len(ks)  # no router pass: the only decode is the frame's own
    assert ks[0] == 192  # the keyframe is coded in full
    static, busy = float(np.mean(ks[3:8])), float(np.mean(ks[9:]))
    assert static <= 0.25 * busy, (static, busy)


def test_bits_signal_needs_a_coder_view(tiny_model: Tokenizer) -> None:
    import torch

    sender = SenderConfig(budget=BudgetConfig(policy="infotok", signal="bits"))
    x = torch.zeros(1, 3, 48, 64)
    _, st = tiny_model.encode_step(x, None, sender, code_length=lambda idx: torch.ones(idx.shape))
    with pytest.raises(ValueError, match="bits signal needs the frame's code lengths"):
        tiny_model.encode_step(x, st, sender)
