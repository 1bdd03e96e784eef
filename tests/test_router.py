"""Budget policies that decode to decide: oracle (grid + Lagrangian) and search (ElasticTok); the policy table."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from livetok.engine.config import POLICIES, BudgetConfig, SenderConfig
from livetok.engine.frames import to_tensor
from livetok.engine.model import Tokenizer
from livetok.engine.router import ORACLE_GRID, POLICY_ROUTES, frame_mse
from livetok.engine.selection import keep_mask

N = 192  # 96 x 128 frames


def second_frame(model: Tokenizer, frames: np.ndarray, sender: SenderConfig):  # type: ignore[no-untyped-def]
    x = to_tensor(frames[:2, :96, :128])
    _, st = model.encode_step(x[:1], None, sender)
    tok, st2 = model.encode_step(x[1:2], st, sender)
    return x[1:2], st, tok, st2


@torch.no_grad()
def decode_k(model: Tokenizer, x: torch.Tensor, st, k: int, scores: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    z, _ = model.encoder(x, st.recon, st.hidden)
    _, idx = model.fsq(z)
    codes = model.fsq.indices_to_codes(idx, (12, 16))
    return model.decoder(codes, keep_mask(scores, torch.tensor([k])), st.recon, st.hidden)[0]


@pytest.mark.parametrize("ranking,decodes", [("error", 1 + len(ORACLE_GRID)), ("gain", 2 + len(ORACLE_GRID))])
def test_oracle_costs_and_extremes(tiny_model: Tokenizer, real_frames: np.ndarray, ranking: str, decodes: int) -> None:
    grid_ks = {max(1, round(f * N)) for f in ORACLE_GRID} | {N}
    for lam, expect in [(0.0, None), (1e9, max(1, round(ORACLE_GRID[0] * N)))]:
        sender = SenderConfig(budget=BudgetConfig(policy="oracle", lam=lam), ranking=ranking, keyframe_interval=0)
        x, st, tok, st2 = second_frame(tiny_model, real_frames, sender)
        k = int(tok.k[0])
        assert tok.decodes == decodes and k in grid_ks
        if expect is not None:
            assert k == expect  # tokens are too dear: the smallest budget on the grid
        else:
            # lambda 0: the grid point with the least distortion
            scores = tok.error if ranking == "error" else tok.gain
            assert scores is not None
            mse = {kk: float(frame_mse(x, decode_k(tiny_model, x, st, kk, scores), (96, 128))) for kk in grid_ks}
            assert mse[k] == pytest.approx(min(mse.values()), rel=1e-5)
        frame, _ = tiny_model.decode_step(tok, st)  # the closed loop holds whatever the policy
        assert torch.equal(frame, st2.recon[..., :96, :128])


def test_search_finds_a_budget_meeting_tau(tiny_model: Tokenizer, real_frames: np.ndarray) -> None:
    for tau, expect in [(1e9, 12), (1e-9, N)]:  # anything meets tau: the N/16 floor; nothing does: full rate
        sender = SenderConfig(budget=BudgetConfig(policy="search", tau=tau), ranking="error", keyframe_interval=0)
        _, _, tok, _ = second_frame(tiny_model, real_frames, sender)
        assert int(tok.k[0]) == expect
        assert tok.decodes <= 1 + int(np.ceil(np.log2(N))) + 1
    # in between: the found k meets tau
    sender0 = SenderConfig(budget=BudgetConfig(policy="fixed", rate=1.0), ranking="error", keyframe_interval=0)
    x, st, tok_full, _ = second_frame(tiny_model, real_frames, sender0)
    assert tok_full.error is not None
    mse_full = float(frame_mse(x, decode_k(tiny_model, x, st, N, tok_full.error), (96, 128)))
    tau = mse_full * 1.3
    sender = SenderConfig(budget=BudgetConfig(policy="search", tau=tau), ranking="error", keyframe_interval=0)
    x, st, tok, st2 = second_frame(tiny_model, real_frames, sender)
    k = int(tok.k[0])
    assert tok.error is not None
    assert float(frame_mse(x, decode_k(tiny_model, x, st, k, tok.error), (96, 128))) <= tau
    assert torch.equal(tiny_model.decode_step(tok, st)[0], st2.recon[..., :96, :128])


@pytest.mark.parametrize("policy", ["learned", "rdo", "prior"])
def test_head_policies_cost_one_decode(tiny_model: Tokenizer, real_frames: np.ndarray, policy: str) -> None:
    sender = SenderConfig(budget=BudgetConfig(policy=policy, rate=0.5), keyframe_interval=0)
    x = to_tensor(real_frames[:4, :96, :128])
    st, rx = None, None
    for t in range(4):
        tok, st = tiny_model.encode_step(x[t : t + 1], st, sender)
        assert tok.decodes == 1  # no router pass: the head's maps decide
        assert tok.gain is not None and tok.gain.shape == (1, N)
        frame, rx = tiny_model.decode_step(tok, rx)
        assert torch.equal(frame, st.recon[..., :96, :128])
        if policy == "prior" and t == 0:
            assert int(tok.k[0]) == N  # a keyframe is known in advance and gets everything


def test_prior_budget_is_decided_before_the_frame(tiny_model: Tokenizer, real_frames: np.ndarray) -> None:
    """Frame t's budget under `prior` depends only on frames < t: two different frames t get the same k."""
    sender = SenderConfig(budget=BudgetConfig(policy="prior", rate=0.5), keyframe_interval=0)
    x = to_tensor(real_frames[:3, :96, :128])
    _, st = tiny_model.encode_step(x[:1], None, sender)
    _, st = tiny_model.encode_step(x[1:2], st, sender)
    a, _ = tiny_model.encode_step(x[2:3], st, sender)
    b, _ = tiny_model.encode_step(torch.rand_like(x[2:3]) * 2 - 1, st, sender)
    assert int(a.k[0]) == int(b.k[0])
    assert not torch.equal(a.mask, b.mask)  # which positions: decided on the frame itself


def test_every_policy_routes_through_one_function() -> None:
    assert tuple(POLICY_ROUTES) == POLICIES
    # the head's three policies share one family; the rest are a function each
    assert len(set(POLICY_ROUTES.values())) == len(POLICIES) - 2
