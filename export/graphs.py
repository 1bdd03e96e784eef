"""Export graphs: plain `nn.Module`s with tensor-only forwards built from a trained `Tokenizer`
(the export graph is separate from the training graph). The stream state is explicit input and
output; keyframe resets, budgets and masks stay with the caller (engine/router.py)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from livetok.engine.model import Tokenizer
from livetok.engine.selection import position_error


class _Fsq(nn.Module):
    """FSQ without the training parts: latent -> indices and indices -> codes, integer arithmetic only
    (the FSQ's own digits <-> indices, engine/fsq_index.py)."""

    half_width: Tensor

    def __init__(self, model: Tokenizer) -> None:
        super().__init__()
        self.fsq = model.fsq
        self.register_buffer("half_width", (model.fsq.levels // 2).view(1, -1, 1, 1).clone(), persistent=False)

    def indices(self, z: Tensor) -> Tensor:
        """[B, dim, h, w] latent -> [B, h*w] int64; equal to `FSQ.forward(z)[1]` (no straight-through)."""
        digits: Tensor = self.fsq.bound(z.float()).round().long() + self.half_width
        return self.fsq.digits_to_indices(digits)

    def codes(self, indices: Tensor, like: Tensor) -> Tensor:
        """[B, N] int64 -> [B, dim, h, w] codes in [-1, 1]; the grid (h, w) is read off `like` [B, C, h, w]."""
        return self.fsq.indices_to_codes(indices, (like.shape[-2], like.shape[-1]))


class EncoderStep(nn.Module):
    """(frame, prev_recon, prev_hidden) -> (indices, pred_error, pred_gain).

    frame: [B, 3, H, W] in [-1, 1], H and W multiples of 8 (padded); prev_recon [B, 3, H, W] and
    prev_hidden [B, Cs, H/8, W/8] already reset to zero by the caller on keyframes.
    Returns indices [B, N] int64 and the budget head's maps [B, N] (N = H*W/64).
    """

    def __init__(self, model: Tokenizer) -> None:
        super().__init__()
        self.encoder = model.encoder
        self.budget_head = model.budget_head
        self.fsq = _Fsq(model)

    def forward(self, frame: Tensor, prev_recon: Tensor, prev_hidden: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        z, features = self.encoder(frame, prev_recon, prev_hidden)
        pred_error, pred_gain = self.budget_head(features)
        return self.fsq.indices(z), pred_error, pred_gain


class DecoderStep(nn.Module):
    """(indices, mask, prev_recon, prev_hidden) -> (recon, hidden): FSQ inverse + decoder.

    Sender and receiver both run this graph (closed loop). indices [B, N] int64 (any value where
    mask is False), mask [B, N] bool; recon [B, 3, H, W] in [-1, 1], hidden [B, Cs, H/8, W/8].
    """

    def __init__(self, model: Tokenizer) -> None:
        super().__init__()
        self.decoder = model.decoder
        self.fsq = _Fsq(model)

    def forward(self, indices: Tensor, mask: Tensor, prev_recon: Tensor, prev_hidden: Tensor) -> tuple[Tensor, Tensor]:
        codes = self.fsq.codes(indices, prev_hidden)
        recon, hidden = self.decoder(codes, mask, prev_recon, prev_hidden)
        return recon, hidden


class RouterPass(nn.Module):
    """InfoTok's router pass in one graph: (frame, indices, prev_recon, prev_hidden) ->
    (error [B, N], gain [B, N], recon_full, hidden_full).

    error is the full-rate decode's per-position error (engine/selection.position_error), gain the
    zero-token decode's error minus it, clamped at 0 (what the tokens buy).
    """

    def __init__(self, model: Tokenizer) -> None:
        super().__init__()
        self.step = DecoderStep(model)
        self.stride = model.stride

    def forward(
        self, frame: Tensor, indices: Tensor, prev_recon: Tensor, prev_hidden: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        full = torch.ones_like(indices, dtype=torch.bool)
        recon_full, hidden_full = self.step(indices, full, prev_recon, prev_hidden)
        recon_zero, _ = self.step(indices, ~full, prev_recon, prev_hidden)
        error = position_error(frame, recon_full, self.stride)
        gain = (position_error(frame, recon_zero, self.stride) - error).clamp_min(0.0)
        return error, gain, recon_full, hidden_full


def example_inputs(model: Tokenizer, batch: int = 2, height: int = 64, width: int = 96,
                   seed: int = 0) -> dict[str, Tensor]:
    """Random inputs of every graph at one size (for export and parity checks), by input name."""
    g = torch.Generator().manual_seed(seed)
    s, cs = model.stride, model.cfg.decoder.state_channels
    h, w = height // s, width // s
    n = h * w
    return {
        "frame": torch.rand(batch, 3, height, width, generator=g) * 2 - 1,
        "prev_recon": torch.rand(batch, 3, height, width, generator=g) * 2 - 1,
        "prev_hidden": torch.rand(batch, cs, h, w, generator=g) * 2 - 1,
        "indices": torch.randint(0, model.cfg.fsq.codebook_size, (batch, n), generator=g),
        "mask": torch.rand(batch, n, generator=g) < 0.5,
    }
