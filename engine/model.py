"""The tokenizer: encoder + FSQ + ranked selection + decoder, driven one frame at a time through
an explicit `StreamState` (`encode_step` / `decode_step`)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import budget as budget_lib
from .budget_head import BudgetHead
from .config import SenderConfig, TokenizerConfig
from .decoder import Decoder
from .encoder import Encoder
from .errors import TokenizerError
from .fsq import FSQ
from .layers import pad_to_multiple
from .router import route
from .state import FrameTokens, StreamState
from .step import begin_decode, begin_encode

# population means of the router signals assumed before calibration (0-1 L1 units); `livetok
# train --calibrate` measures the real ones on the training clips
UNCALIBRATED_POPULATION_ERROR = 0.03
UNCALIBRATED_POPULATION_GAIN = 0.01


class Tokenizer(nn.Module):
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
    def stride(self) -> int:
        return self.cfg.stride

    # -- state ---------------------------------------------------------------------------------

    def init_state(
        self, batch: int, height: int, width: int, sender: SenderConfig | None = None
    ) -> StreamState:
        """A fresh stream state for frames of height x width (as after a keyframe reset)."""
        s = self.stride
        hp, wp = height + (-height) % s, width + (-width) % s
        p = next(self.parameters())
        recon = torch.zeros(batch, 3, hp, wp, device=p.device, dtype=p.dtype)
        hidden = torch.zeros(batch, self.cfg.decoder.state_channels, hp // s, wp // s, device=p.device, dtype=p.dtype)
        pe = self.population((sender or SenderConfig()).budget.signal)
        return StreamState(recon, hidden, 0, tuple(budget_lib.initial_budget_state(pe) for _ in range(batch)))

    # -- one frame -------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_step(
        self,
        frame: Tensor,
        state: StreamState | None,
        sender: SenderConfig | None = None,
        force_keyframe: Tensor | bool = False,
    ) -> tuple[FrameTokens, StreamState]:
        """Tokenize frame t given the stream state after frame t-1.

        Args:
            frame: [B, 3, H, W] in [-1, 1].
            state: the previous state, or None to start a stream (frame 0 is a keyframe).
            sender: budget policy, rate, keyframe interval and ranking.
            force_keyframe: bool or [B] bool; e.g. a receiver asked for one.
        Returns:
            (tokens, new state); the new state's `recon` is the receiver's reconstruction (closed loop).
        """
        sender = sender or SenderConfig()
        _check_frame(frame)
        height, width = frame.shape[-2:]
        x = pad_to_multiple(frame.to(self.population_error.dtype), self.stride)
        gh, gw = x.shape[-2] // self.stride, x.shape[-1] // self.stride
        state, key, prev_recon, prev_hidden = begin_encode(x, (height, width), state, sender, force_keyframe,
                                                           self.init_state)
        t = state.frame_index

        z, features = self.encoder(x, prev_recon, prev_hidden)
        _, indices = self.fsq(z)
        # decode from the indices, exactly as the receiver will: bit-identical closed loop
        codes = self.fsq.indices_to_codes(indices, (gh, gw))

        def decode(mask: Tensor) -> tuple[Tensor, Tensor]:
            return self.decoder(codes, mask, prev_recon, prev_hidden)

        predicted = self.budget_head(features) if sender.budget.policy in ("learned", "rdo", "prior") else None
        r = route(x, (height, width), self.stride, decode, sender, state.budget, key, self.population, predicted)
        tokens = FrameTokens(indices, r.mask, key, (gh, gw), (height, width), t, r.error, r.decodes, r.gain)
        return tokens, StreamState(r.recon, r.hidden, t + 1, r.budgets)

    @torch.no_grad()
    def decode_step(self, tokens: FrameTokens, state: StreamState | None) -> tuple[Tensor, StreamState]:
        """Reconstruct frame t from its tokens and the state after frame t-1.

        Returns:
            ([B, 3, H, W] frame in [-1, 1], new state).
        """
        gh, gw = tokens.grid
        state, prev_recon, prev_hidden = begin_decode(tokens, state, self.stride, self.init_state)
        codes = self.fsq.indices_to_codes(tokens.indices.to(prev_recon.device), (gh, gw))
        recon, hidden = self.decoder(codes, tokens.mask.to(prev_recon.device), prev_recon, prev_hidden)
        h, w = tokens.size
        return recon[..., :h, :w], StreamState(recon, hidden, tokens.frame_index + 1, state.budget)


def _check_frame(frame: Tensor) -> None:
    if frame.ndim != 4 or frame.shape[1] != 3:
        raise TokenizerError(f"frame must be [B, 3, H, W], got shape {tuple(frame.shape)}")
    if not frame.is_floating_point():
        raise TokenizerError(f"frame must be a float tensor in [-1, 1], got {frame.dtype}")
    if frame.shape[-2] < 1 or frame.shape[-1] < 1:
        raise TokenizerError(f"frame has an empty side: {tuple(frame.shape)}")
