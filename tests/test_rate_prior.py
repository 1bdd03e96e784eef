"""The rate term's stand-in for packet v2's entropy model (engine/rate_prior.py)."""

from __future__ import annotations

import math

import numpy as np
import torch

from livetok.engine.config import FSQConfig
from livetok.engine.fsq import FSQ
from livetok.engine.rate_prior import DigitPrior, context_sizes, digit_context, empty_last
from livetok.stream.wire.entropy import CoderState, _digit_contexts, _table_shapes

LEVELS = (8, 5, 5)


def test_contexts_are_the_wires() -> None:
    """Same context index as the wire's coder for every digit, and the same table sizes."""
    assert context_sizes(LEVELS) == [c for c, _ in _table_shapes(LEVELS)]
    rng = np.random.default_rng(0)
    n = 40
    last = np.stack([rng.integers(-1, lv, n) for lv in LEVELS]).astype(np.int16)
    state = CoderState(levels=LEVELS, grid=(5, 8), prev_mask=None, last=last,
                       mask_counts=np.ones((120, 2), np.int64),
                       digit_counts=tuple(np.ones(s, np.int64) for s in _table_shapes(LEVELS)))
    digits = [rng.integers(0, lv, n) for lv in LEVELS]
    pos = np.arange(n)
    for d in range(len(LEVELS)):
        wire = _digit_contexts(state, d, pos, digits)
        ours = digit_context(LEVELS, d, torch.from_numpy(last[d].astype(np.int64)),
                             torch.from_numpy(digits[d - 1]) if d else None)
        assert np.array_equal(wire, ours.numpy())


def test_uniform_prior_bits_and_last() -> None:
    """A fresh prior is uniform: every kept token costs sum(log2 L) bits; `last` moves only where kept."""
    fsq, prior = FSQ(FSQConfig(levels=LEVELS)), DigitPrior(LEVELS)
    z = torch.randn(2, 3, 4, 4, requires_grad=True)
    keep = torch.zeros(2, 16, dtype=torch.bool)
    keep[0, :10] = True
    keep[1, 3:5] = True
    last = empty_last(2, LEVELS, 16, torch.device("cpu"))
    bits, new_last = prior(fsq.bound(z), keep, last)
    per_token = sum(math.log2(lv) for lv in LEVELS)
    assert torch.allclose(bits, torch.tensor([10 * per_token, 2 * per_token]), atol=1e-4)
    # the new last digits are the FSQ's own digits at kept positions, -1 elsewhere
    _, idx = fsq(z)
    digits = fsq.indices_to_digits(idx, (4, 4)).flatten(2)  # [2, 3, 16]
    assert torch.equal(new_last, torch.where(keep[:, None, :], digits, -1))
    # the gradient reaches the encoder's latent (through the soft assignment) and the logits
    skewed = DigitPrior(LEVELS)
    with torch.no_grad():
        for p in skewed.logits:
            p.normal_()
    b2, _ = skewed(fsq.bound(z), keep, last)
    b2.sum().backward()
    assert z.grad is not None and float(z.grad.abs().sum()) > 0
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in skewed.logits)


def test_repeated_codes_get_cheap() -> None:
    """Fitted on a stream that repeats its codes, the prior codes a repeat in far fewer bits than a
    fresh token: what the wire's last-digit context rewards."""
    fsq, prior = FSQ(FSQConfig(levels=LEVELS)), DigitPrior(LEVELS)
    opt = torch.optim.Adam(prior.parameters(), lr=0.1)
    torch.manual_seed(0)
    z = torch.randn(4, 3, 6, 6)
    keep = torch.ones(4, 36, dtype=torch.bool)
    for _ in range(100):
        _, last = prior(fsq.bound(z), keep, empty_last(4, LEVELS, 36, torch.device("cpu")))
        bits, _ = prior(fsq.bound(z), keep, last)
        opt.zero_grad()
        bits.sum().backward()
        opt.step()
    with torch.no_grad():
        first, last = prior(fsq.bound(z), keep, empty_last(4, LEVELS, 36, torch.device("cpu")))
        repeat, _ = prior(fsq.bound(z), keep, last)
    assert float(repeat.mean()) < 0.2 * float(first.mean())
