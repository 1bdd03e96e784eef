from __future__ import annotations

import pytest
import torch

from livetok.engine.config import FSQConfig
from livetok.engine.fsq import FSQ


@pytest.mark.parametrize("levels,size,bits", [((8, 5, 5, 5), 1000, 10), ((8, 8, 8, 5, 5, 5), 64000, 16),
                                              ((5, 5, 5), 125, 7)])
def test_codebook_size_and_bits(levels: tuple[int, ...], size: int, bits: int) -> None:
    cfg = FSQConfig(levels)
    assert cfg.codebook_size == size
    assert cfg.bits_per_index == bits
    assert cfg.dim == len(levels)


@pytest.mark.parametrize("levels", [(8, 5, 5, 5), (8, 8, 8, 5, 5, 5), (5, 5, 5), (2, 3)])
def test_indices_codes_round_trip_over_the_whole_codebook(levels: tuple[int, ...]) -> None:
    q = FSQ(FSQConfig(levels))
    n = q.codebook_size
    idx = torch.arange(n).view(1, n)  # a 1 x n "grid" holding every code once
    codes = q.indices_to_codes(idx, (1, n))
    assert codes.shape == (1, len(levels), 1, n)
    assert codes.min() >= -1 and codes.max() <= 1
    assert torch.equal(q.codes_to_indices(codes), idx)
    # every code is distinct
    assert torch.unique(codes.view(len(levels), n), dim=1).shape[1] == n


def test_known_codes() -> None:
    q = FSQ(FSQConfig((8, 5, 5, 5)))
    lo = torch.full((1, 4, 1, 1), -1.0)
    assert q.codes_to_indices(lo).item() == 0
    hi = torch.tensor([0.75, 1.0, 1.0, 1.0]).view(1, 4, 1, 1)  # even levels: top value is (L/2 - 1) / (L/2)
    assert q.codes_to_indices(hi).item() == 999
    # digit i has weight prod(levels[:i]): code (1 step up in dim 1) = index 8
    c = torch.tensor([-1.0, -0.5, -1.0, -1.0]).view(1, 4, 1, 1)
    assert q.codes_to_indices(c).item() == 8


def test_quantize_matches_inverse_exactly_and_passes_gradients() -> None:
    q = FSQ(FSQConfig((8, 5, 5, 5)))
    z = (torch.randn(2, 4, 6, 7, generator=torch.Generator().manual_seed(0)) * 3).requires_grad_()
    codes, idx = q(z)
    assert idx.shape == (2, 42) and idx.dtype == torch.int64
    assert int(idx.min()) >= 0 and int(idx.max()) < 1000
    back = q.indices_to_codes(idx, (6, 7))
    # what the receiver rebuilds from indices is what the sender quantized, to the last bit
    assert torch.equal(back, codes.detach())
    codes.sum().backward()
    assert z.grad is not None and float(z.grad.abs().sum()) > 0


def test_bad_config_and_input() -> None:
    with pytest.raises(ValueError, match="levels"):
        FSQConfig((1, 5))
    with pytest.raises(ValueError, match="channels"):
        FSQ(FSQConfig((5, 5)))(torch.zeros(1, 3, 2, 2))
