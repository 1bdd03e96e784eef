from __future__ import annotations

import torch

from livetok.engine.selection import keep_mask, position_error, prefix_scores


def test_keep_mask_keeps_exactly_k_highest() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.7], [4.0, 3.0, 2.0, 1.0]])
    m = keep_mask(scores, torch.tensor([2, 3]))
    assert m.tolist() == [[False, True, False, True], [True, True, True, False]]
    assert m.sum(1).tolist() == [2, 3]


def test_keep_mask_ties_go_to_the_lower_index_and_extremes() -> None:
    scores = torch.zeros(1, 6)
    assert keep_mask(scores, torch.tensor([2])).tolist() == [[True, True, False, False, False, False]]
    assert int(keep_mask(scores, torch.tensor([0])).sum()) == 0
    assert int(keep_mask(scores, torch.tensor([6])).sum()) == 6
    g = torch.Generator().manual_seed(0)
    big = torch.rand(3, 768, generator=g)
    for k in (1, 48, 384, 767):
        assert keep_mask(big, torch.tensor([k] * 3)).sum(1).tolist() == [k] * 3


def test_prefix_order_keeps_the_first_positions() -> None:
    m = keep_mask(prefix_scores(1, 5), torch.tensor([3]))
    assert m.tolist() == [[True, True, True, False, False]]


def test_position_error_values() -> None:
    x = torch.zeros(1, 3, 16, 24)
    r = x.clone()
    r[..., :8, :8] = 0.5  # one cell off by 0.5 in [-1, 1] units = 0.25 in [0, 1] units
    e = position_error(x, r, 8)
    assert e.shape == (1, 6)
    assert torch.allclose(e, torch.tensor([[0.25, 0, 0, 0, 0, 0]]))
