"""The one interface every runtime of the model offers, and the per-frame logic they share.

Three runtimes run the same model: torch eager (`engine.model.Tokenizer`), onnxruntime
(`export.onnx_runtime.OnnxTokenizer`) and torch replaying CUDA graphs
(`export.cuda_graphs.CudaGraphTokenizer`). They differ only in how the two networks run: the
encoder (frame and state -> token indices and the budget head's maps) and the decoder (tokens,
mask and state -> reconstruction and state). `StepRuntime` writes everything else once — padding,
the keyframe schedule and resets (engine/step.py), routing (engine/router.py), the state
bookkeeping — so their streams are frame-for-frame identical by construction.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from . import budget as budget_lib
from .config import SenderConfig, TokenizerConfig
from .errors import TokenizerError
from .layers import pad_to_multiple
from .router import RouteContext, route
from .state import FrameTokens, StreamState
from .step import begin_decode, begin_encode, hold_where, skipped

# policies that read the budget head's predicted maps (the others never run it)
PREDICTED_POLICIES = ("learned", "rdo", "prior")

# indices [B, N] -> code length [B, N] (bits) of each position's token were it kept: the sender's
# entropy coder's view (stream layer), for the `bits` router signal
CodeLength = Callable[[Tensor], Tensor]


@runtime_checkable
class Runtime(Protocol):
    """What the stream library needs of a model, whatever runs it.

    Attributes:
        cfg: the model config (FSQ levels, stride, state channels, preset name).
    """

    cfg: TokenizerConfig

    @property
    def stride(self) -> int: ...

    @property
    def device(self) -> torch.device:
        """Where input tensors go (the runtime copies nothing it need not)."""
        ...

    @property
    def identity(self) -> bytes:
        """8 bytes naming the weights: packets made by one runtime decode on another of equal identity."""
        ...

    def population(self, signal: str) -> float:
        """The population mean of a router signal ('error' or 'gain') stored with the weights."""
        ...

    def init_state(self, batch: int, height: int, width: int, sender: SenderConfig | None = None) -> StreamState: ...

    def encode_step(self, frame: Tensor, state: StreamState | None, sender: SenderConfig | None = None,
                    force_keyframe: Tensor | bool = False,
                    code_length: CodeLength | None = None) -> tuple[FrameTokens, StreamState]: ...

    def decode_step(self, tokens: FrameTokens, state: StreamState | None) -> tuple[Tensor, StreamState]: ...


def check_frame(frame: Tensor) -> None:
    """TokenizerError (one line) unless `frame` is a float [B, 3, H, W] tensor with non-empty sides."""
    if frame.ndim != 4 or frame.shape[1] != 3:
        raise TokenizerError(f"frame must be [B, 3, H, W], got shape {tuple(frame.shape)}")
    if not frame.is_floating_point():
        raise TokenizerError(f"frame must be a float tensor in [-1, 1], got {frame.dtype}")
    if frame.shape[-2] < 1 or frame.shape[-1] < 1:
        raise TokenizerError(f"frame has an empty side: {tuple(frame.shape)}")


class StepRuntime(ABC):
    """`Runtime` written once over two abstract network calls; subclasses say how the networks run."""

    cfg: TokenizerConfig

    @property
    def stride(self) -> int:
        return int(self.cfg.stride)

    @property
    @abstractmethod
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype:
        """The float type the networks compute in."""
        return torch.float32

    @property
    @abstractmethod
    def identity(self) -> bytes: ...

    @abstractmethod
    def population(self, signal: str) -> float: ...

    @abstractmethod
    def run_encoder(self, x: Tensor, prev_recon: Tensor, prev_hidden: Tensor,
                    predict: bool) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        """Padded frame [B, 3, Hp, Wp] and the (already reset) state -> (indices [B, N] int64, the budget
        head's (error, gain) maps [B, N] each when `predict`, else None)."""

    @abstractmethod
    def run_decoder(self, indices: Tensor, mask: Tensor, prev_recon: Tensor,
                    prev_hidden: Tensor) -> tuple[Tensor, Tensor]:
        """Indices [B, N] int64 (any value where `mask` [B, N] is False) and the state -> (recon
        [B, 3, Hp, Wp] in [-1, 1], hidden [B, Cs, Hp/s, Wp/s])."""

    # -- state ---------------------------------------------------------------------------------

    def init_state(self, batch: int, height: int, width: int, sender: SenderConfig | None = None) -> StreamState:
        """A fresh stream state for frames of height x width (as after a keyframe reset), at frame 0."""
        s = self.stride
        hp, wp = height + (-height) % s, width + (-width) % s
        recon = torch.zeros(batch, 3, hp, wp, device=self.device, dtype=self.dtype)
        hidden = torch.zeros(batch, self.cfg.decoder.state_channels, hp // s, wp // s, device=self.device,
                             dtype=self.dtype)
        pe = self.population((sender or SenderConfig()).budget.signal)
        return StreamState(recon, hidden, (0,) * batch,
                           tuple(budget_lib.initial_budget_state(pe) for _ in range(batch)))

    # -- one frame -------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_step(
        self,
        frame: Tensor,
        state: StreamState | None,
        sender: SenderConfig | None = None,
        force_keyframe: Tensor | bool = False,
        code_length: CodeLength | None = None,
    ) -> tuple[FrameTokens, StreamState]:
        """Tokenize frame t of B streams given the state after frame t-1.

        Args:
            frame: [B, 3, H, W] in [-1, 1].
            state: the previous state, or None to start a stream (frame 0 is a keyframe).
            sender: budget policy, rate, keyframe interval and ranking.
            force_keyframe: bool or [B] bool; e.g. a receiver asked for one.
            code_length: the sender's coder view (indices -> bits per position), for the `bits` signal.
        Returns:
            (tokens, new state); the new state's `recon` is the receiver's reconstruction (closed loop).
        """
        sender = sender or SenderConfig()
        check_frame(frame)
        height, width = int(frame.shape[-2]), int(frame.shape[-1])
        x = pad_to_multiple(frame.detach().to(self.device, self.dtype), self.stride)
        gh, gw = x.shape[-2] // self.stride, x.shape[-1] // self.stride
        state, key, prev_recon, prev_hidden = begin_encode(x, (height, width), state, sender, force_keyframe,
                                                           self.init_state)
        indices, predicted = self.run_encoder(x, prev_recon, prev_hidden, sender.budget.policy in PREDICTED_POLICIES)

        def decode(mask: Tensor) -> tuple[Tensor, Tensor]:
            return self.run_decoder(indices, mask, prev_recon, prev_hidden)

        bits = code_length(indices).to(indices.device) if sender.budget.signal == "bits" and code_length else None

        def population(signal: str) -> float:
            return sender.budget.population_bits if signal == "bits" else self.population(signal)

        ctx = RouteContext(x, (height, width), self.stride, sender, state.budget, key, population, predicted, bits,
                           prev=(prev_recon, prev_hidden))
        r = route(ctx, decode)
        t = state.frame_indices
        tokens = FrameTokens(indices, r.mask, key, (gh, gw), (height, width), t, r.error, r.decodes, r.gain)
        return tokens, StreamState(r.recon, r.hidden, tuple(i + 1 for i in t), r.budgets)

    @torch.no_grad()
    def decode_step(self, tokens: FrameTokens, state: StreamState | None) -> tuple[Tensor, StreamState]:
        """Reconstruct frame t from its tokens and the state after frame t-1.

        Returns:
            ([B, 3, H, W] frame in [-1, 1], new state).
        """
        state, prev_recon, prev_hidden = begin_decode(tokens, state, self.stride, self.init_state)
        mask = tokens.mask.to(self.device)
        # read on the tokens' own (host) mask: deciding whether to decode costs no device sync
        skip = skipped(tokens.mask, tokens.keyframe)
        if bool(skip.all()):  # nothing to decode: the receiver repeats its frame, like a codec's skip
            recon, hidden = prev_recon, prev_hidden
        else:
            recon, hidden = self.run_decoder(tokens.indices.to(self.device, torch.int64), mask, prev_recon,
                                             prev_hidden)
            if bool(skip.any()):  # some rows of the batch skip: they keep their state
                recon, hidden = hold_where(skip.to(self.device), (prev_recon, prev_hidden), (recon, hidden))
        h, w = tokens.size
        return recon[..., :h, :w], StreamState(recon, hidden, tuple(i + 1 for i in tokens.frame_indices),
                                               state.budget)
