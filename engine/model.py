"""The tokenizer: encoder + FSQ + ranked selection + decoder, driven one frame at a time through
an explicit `StreamState` (`encode_step` / `decode_step`, written once in engine/runtime.py)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .budget_head import BudgetHead
from .config import TokenizerConfig
from .decoder import Decoder
from .encoder import Encoder
from .fsq import FSQ
from .identity import weights_identity
from .runtime import StepRuntime

# population means of the router signals assumed before calibration (0-1 L1 units); `livetok
# train --calibrate` measures the real ones on the training clips
UNCALIBRATED_POPULATION_ERROR = 0.03
UNCALIBRATED_POPULATION_GAIN = 0.01


class Tokenizer(nn.Module, StepRuntime):
    """Causal, frame-conditioned adaptive tokenizer.

    Frames are float tensors [B, 3, H, W] in [-1, 1] of any size (padded to the stride inside and
    cropped back); B streams are coded in lockstep.
    """

    population_error: Tensor
    population_gain: Tensor

    def __init__(
        self,
        cfg: TokenizerConfig,
        population_error: float = UNCALIBRATED_POPULATION_ERROR,
        population_gain: float = UNCALIBRATED_POPULATION_GAIN,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.fsq = FSQ(cfg.fsq)
        self.decoder = Decoder(cfg)
        self.budget_head = BudgetHead(cfg)
        # InfoTok's E[ELBO]: population means of the router signals, stored with the weights
        self.register_buffer("population_error", torch.tensor(float(population_error)))
        self.register_buffer("population_gain", torch.tensor(float(population_gain)))

    def population(self, signal: str) -> float:
        """The stored population mean of a router signal ('error' or 'gain')."""
        return float(self.population_error if signal == "error" else self.population_gain)

    @property
    def device(self) -> torch.device:
        return self.population_error.device

    @property
    def dtype(self) -> torch.dtype:
        return self.population_error.dtype

    @property
    def identity(self) -> bytes:
        """8 bytes hashed from the config, population means and every weight (read on each call: the
        weights may have been trained since; a session reads it once)."""
        return weights_identity(self.cfg, self.population, self.state_dict())

    # -- the two networks (engine/runtime.py runs the frame around them) -------------------------

    def run_encoder(self, x: Tensor, prev_recon: Tensor, prev_hidden: Tensor,
                    predict: bool) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        z, features = self.encoder(x, prev_recon, prev_hidden)
        _, indices = self.fsq(z)
        return indices, (self.budget_head(features) if predict else None)

    def run_decoder(self, indices: Tensor, mask: Tensor, prev_recon: Tensor,
                    prev_hidden: Tensor) -> tuple[Tensor, Tensor]:
        # decoded from the indices, exactly as the receiver will: a bit-identical closed loop
        codes = self.fsq.indices_to_codes(indices, (int(prev_hidden.shape[-2]), int(prev_hidden.shape[-1])))
        recon, hidden = self.decoder(codes, mask, prev_recon, prev_hidden)
        return recon, hidden
