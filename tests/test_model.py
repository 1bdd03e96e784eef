"""The engine's contracts: shapes, causality, streaming == offline, exact closed loop, keyframes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from livetok.engine.config import BudgetConfig, SenderConfig
from livetok.engine.errors import TokenizerError
from livetok.engine.frames import to_tensor
from livetok.engine.model import Tokenizer
from livetok.engine.train import run_clip

FIXED_HALF = SenderConfig(budget=BudgetConfig(policy="fixed", rate=0.5), keyframe_interval=0)
# skips off: an untrained model's tokens buy nothing over a repeat, so with the skip mode every
# predicted frame would send none and these contract tests would not reach the decoder
INFOTOK = SenderConfig(budget=BudgetConfig(policy="infotok", rate=0.5, skip_fraction=0.0), keyframe_interval=0)
# the skip mode on: here every predicted frame skips (the receiver repeats, the state holds)
INFOTOK_SKIP = SenderConfig(budget=BudgetConfig(policy="infotok", rate=0.5), keyframe_interval=0)


def stream(model: Tokenizer, frames: torch.Tensor, sender: SenderConfig) -> tuple[list, list[torch.Tensor]]:
    """Encode [T, 3, H, W] frame by frame; returns the tokens and the sender's reconstructions."""
    state, toks, recons = None, [], []
    for t in range(frames.shape[0]):
        tok, state = model.encode_step(frames[t : t + 1], state, sender)
        toks.append(tok)
        h, w = tok.size
        recons.append(state.recon[..., :h, :w].clone())
    return toks, recons


def test_shapes_any_frame_size(tiny_model: Tokenizer) -> None:
    x = torch.rand(1, 3, 187, 250) * 2 - 1  # neither side a multiple of 8
    tok, state = tiny_model.encode_step(x, None, FIXED_HALF)
    assert tok.grid == (24, 32) and tok.size == (187, 250)
    assert tok.indices.shape == (1, 768) and tok.mask.shape == (1, 768)
    assert tok.k.tolist() == [384]
    assert bool(tok.keyframe[0]) and tok.frame_index == 0
    assert int(tok.indices.max()) < tiny_model.fsq.codebook_size
    assert state.recon.shape == (1, 3, 192, 256) and state.frame_index == 1
    frame, _ = tiny_model.decode_step(tok, None)
    assert frame.shape == (1, 3, 187, 250)


# two sizes of the networks (the "tiny" and the full-width "rt" presets), each with its own frame counts
SIZES = pytest.mark.parametrize("model_name,frames", [("tiny_model", 8), ("rt_model", 7)])


@SIZES
@pytest.mark.parametrize("sender", [INFOTOK, INFOTOK_SKIP], ids=["infotok", "infotok-skip"])
def test_causality_future_frames_change_nothing(request: pytest.FixtureRequest, model_name: str, frames: int,
                                                real_frames: np.ndarray, sender: SenderConfig) -> None:
    model: Tokenizer = request.getfixturevalue(model_name)
    x = to_tensor(real_frames[:frames])
    future = frames - 3
    toks_a, rec_a = stream(model, x, sender)
    y = x.clone()
    y[future:] = torch.rand_like(y[future:]) * 2 - 1  # rewrite the future from that frame on
    toks_b, rec_b = stream(model, y, sender)
    for t in range(future):
        assert torch.equal(toks_a[t].indices, toks_b[t].indices)
        assert torch.equal(toks_a[t].mask, toks_b[t].mask)
        assert torch.equal(rec_a[t], rec_b[t])
    assert not torch.equal(toks_a[future].indices, toks_b[future].indices)  # the test would see a change


@SIZES
@pytest.mark.parametrize("rate,ranking", [(0.5, "error"), (0.5, "gain"), (1.0, "gain")])
def test_streaming_equals_offline_pass(request: pytest.FixtureRequest, model_name: str, frames: int,
                                       real_frames: np.ndarray, rate: float, ranking: str) -> None:
    """The step API equals the batched training pass (a different code path: straight-through
    codes, batched masks, no packets)."""
    model: Tokenizer = request.getfixturevalue(model_name)
    clip = frames - 2
    x = to_tensor(real_frames[:clip, :96, :128])
    sender = SenderConfig(budget=BudgetConfig(policy="fixed", rate=rate), keyframe_interval=0, ranking=ranking)
    toks, recons = stream(model, x, sender)
    collected: list[tuple[torch.Tensor, torch.Tensor]] = []
    n = toks[0].n
    with torch.no_grad():
        run_clip(model, x[None], lambda err, t: torch.tensor([round(rate * n)]), collect=collected,
                 signal=ranking)
    assert len(collected) == clip
    for t, (rec, mask) in enumerate(collected):
        assert torch.equal(mask, toks[t].mask), f"frame {t}: keep-masks differ"
        torch.testing.assert_close(rec, recons[t], atol=1e-5, rtol=0)


# the untrained tiny model's gain map is near-tied (gains 1e-8 apart), which a batch's float noise
# reorders: it ranks by error at a fixed half rate; the rt model runs InfoTok's gain rule
@pytest.mark.parametrize("model_name,sender", [
    ("tiny_model", SenderConfig(budget=BudgetConfig(policy="fixed", rate=0.5), keyframe_interval=0, ranking="error")),
    ("rt_model", INFOTOK)], ids=["tiny-fixed-error", "rt-infotok"])
def test_batched_streams_equal_single_streams(request: pytest.FixtureRequest, model_name: str, sender: SenderConfig,
                                              real_frames: np.ndarray) -> None:
    model: Tokenizer = request.getfixturevalue(model_name)
    a = to_tensor(real_frames[:4, :64, :96])
    b = to_tensor(real_frames[4:8, :64, :96].copy())
    ta, ra = stream(model, a, sender)
    tb, rb = stream(model, b, sender)
    assert all(0 < int(t.k[0]) < t.n for t in ta + tb)  # partial masks: the ranking decides
    state = None
    for t in range(4):
        _, state = model.encode_step(torch.cat([a[t : t + 1], b[t : t + 1]]), state, sender)
        torch.testing.assert_close(state.recon[0:1], ra[t], atol=1e-5, rtol=0)
        torch.testing.assert_close(state.recon[1:2], rb[t], atol=1e-5, rtol=0)


@pytest.mark.parametrize("sender", [INFOTOK, INFOTOK_SKIP, FIXED_HALF,
                                    SenderConfig(keyframe_interval=3, ranking="surprise"),
                                    SenderConfig(budget=BudgetConfig(policy="fixed", rate=0.25), ranking="prefix")])
def test_closed_loop_receiver_equals_sender_bitwise(tiny_model: Tokenizer, real_frames: np.ndarray,
                                                    sender: SenderConfig) -> None:
    x = to_tensor(real_frames[:8])
    tx, rx = None, None
    for t in range(8):
        tok, tx = tiny_model.encode_step(x[t : t + 1], tx, sender)
        frame, rx = tiny_model.decode_step(tok, rx)
        assert torch.equal(frame, tx.recon[..., :192, :256]), f"frame {t} drifted"
        assert torch.equal(rx.hidden, tx.hidden)


def test_keyframes_interval_forced_and_reset(tiny_model: Tokenizer, real_frames: np.ndarray) -> None:
    x = to_tensor(real_frames[:9])
    sender = SenderConfig(budget=BudgetConfig(policy="fixed", rate=0.5), keyframe_interval=4)
    state, keys = None, []
    toks = []
    for t in range(9):
        tok, state = tiny_model.encode_step(x[t : t + 1], state, sender, force_keyframe=(t == 6))
        keys.append(bool(tok.keyframe[0]))
        toks.append(tok)
    assert [i for i, k in enumerate(keys) if k] == [0, 4, 6, 8]
    # a keyframe decodes the same with or without the stream's history: a late joiner can start there
    fresh, _ = tiny_model.decode_step(toks[4], None)
    rx = None
    for t in range(5):
        frame, rx = tiny_model.decode_step(toks[t], rx)
    assert torch.equal(fresh, frame)


def test_non_keyframe_without_state_is_refused(tiny_model: Tokenizer, real_frames: np.ndarray) -> None:
    x = to_tensor(real_frames[:2])
    _, st = tiny_model.encode_step(x[:1], None, INFOTOK)
    tok1, _ = tiny_model.encode_step(x[1:2], st, INFOTOK)
    with pytest.raises(TokenizerError, match="not a keyframe"):
        tiny_model.decode_step(tok1, None)


def test_frame_size_change_starts_a_keyframe(tiny_model: Tokenizer) -> None:
    g = torch.Generator().manual_seed(0)
    tok, st = tiny_model.encode_step(torch.rand(1, 3, 64, 64, generator=g) * 2 - 1, None, INFOTOK)
    tok, st = tiny_model.encode_step(torch.rand(1, 3, 64, 64, generator=g) * 2 - 1, st, INFOTOK)
    assert not bool(tok.keyframe[0])
    tok, st = tiny_model.encode_step(torch.rand(1, 3, 40, 72, generator=g) * 2 - 1, st, INFOTOK)
    assert bool(tok.keyframe[0]) and tok.grid == (5, 9) and tok.frame_index == 2


def test_bad_frames_are_refused(tiny_model: Tokenizer) -> None:
    with pytest.raises(TokenizerError, match=r"\[B, 3, H, W\]"):
        tiny_model.encode_step(torch.zeros(3, 8, 8), None)
    with pytest.raises(TokenizerError, match="float"):
        tiny_model.encode_step(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), None)
    with pytest.raises(TokenizerError, match="uint8"):
        to_tensor(np.zeros((8, 8, 3), np.float32))


def test_decodes_per_frame(tiny_model: Tokenizer, real_frames: np.ndarray) -> None:
    x = to_tensor(real_frames[:1])

    def decodes(policy: str, rate: float, ranking: str, signal: str = "error") -> int:
        s = SenderConfig(budget=BudgetConfig(policy=policy, rate=rate, signal=signal), ranking=ranking)
        return tiny_model.encode_step(x, None, s)[0].decodes

    assert decodes("fixed", 1.0, "gain") == 1  # all kept: the full-rate pass is the output
    assert decodes("fixed", 0.5, "error") == 2  # InfoTok: full-rate pass to rank, then the real decode
    assert decodes("fixed", 0.5, "gain") == 3  # + the zero-token pass
    assert decodes("fixed", 0.5, "surprise") == 3
    assert decodes("fixed", 0.5, "prefix") == 1  # ElasticTok's order: no router pass at all
    # a keyframe's error is far above the uncalibrated population mean: k = N, one decode
    assert decodes("infotok", 0.5, "error", signal="error") == 1
