"""The per-frame bookkeeping every runtime shares (torch, onnxruntime, CUDA graphs): when a stream
(re)starts, which frames are keyframes, and zeroing the state where one starts. The runtimes
differ only in how they run the networks; keeping this in one place keeps their streams
frame-for-frame identical."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor

from .config import SenderConfig
from .errors import TokenizerError
from .state import FrameTokens, StreamState

InitState = Callable[[int, int, int, SenderConfig | None], StreamState]


def is_scheduled_keyframe(frame_index: int, interval: int) -> bool:
    """The keyframe schedule, the only copy: frame 0 and every `interval`-th frame (0 = the first only)."""
    return frame_index == 0 or (interval > 0 and frame_index % interval == 0)


def reset_where(key: Tensor, state: StreamState) -> tuple[Tensor, Tensor]:
    """The state a frame is coded from: zero (reconstruction and hidden) where `key` [B] is set.
    Done outside the networks so one graph serves keyframes and the rest."""
    k = key.view(-1, 1, 1, 1)
    return (torch.where(k, torch.zeros_like(state.recon), state.recon),
            torch.where(k, torch.zeros_like(state.hidden), state.hidden))


def hold_where(skip: Tensor, prev: tuple[Tensor, Tensor], new: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """The state after a frame: a skipped row (a non-keyframe with no tokens) repeats its previous
    reconstruction and keeps its hidden state, like a codec's skip mode; the others take the decode.
    Done outside the networks, on both ends, so every runtime agrees."""
    s = skip.view(-1, 1, 1, 1)
    return torch.where(s, prev[0], new[0]), torch.where(s, prev[1], new[1])


def skipped(mask: Tensor, key: Tensor) -> Tensor:
    """[B] bool: the rows that skip — no kept position and not a keyframe."""
    return ~mask.any(dim=1) & ~key.to(mask.device)


def begin_encode(
    x: Tensor,
    size: tuple[int, int],
    state: StreamState | None,
    sender: SenderConfig,
    force_keyframe: Tensor | bool,
    init_state: InitState,
) -> tuple[StreamState, Tensor, Tensor, Tensor]:
    """Before encoding the padded frame `x` [B, 3, Hp, Wp] of `size` (H, W): a new stream or a new
    frame size starts over (a keyframe, the frame count kept); frame 0, every keyframe_interval-th
    frame of each row and forced ones are keyframes. Returns (state, key [B] bool, prev_recon, prev_hidden)."""
    b = x.shape[0]
    key = torch.as_tensor(force_keyframe, device=x.device).expand(b).clone()
    if state is None or state.batch != b or state.padded_size != tuple(x.shape[-2:]):
        # rows keep their frame counts across a size change; a new batch starts its count over
        index = (0,) * b if state is None or state.batch != b else state.frame_indices
        fresh = init_state(b, size[0], size[1], sender)
        state = replace(fresh, frame_indices=index)
        key[:] = True
    key |= torch.tensor([is_scheduled_keyframe(t, sender.keyframe_interval) for t in state.frame_indices],
                        device=x.device)
    prev_recon, prev_hidden = reset_where(key, state)
    return state, key, prev_recon, prev_hidden


def begin_decode(
    tokens: FrameTokens, state: StreamState | None, stride: int, init_state: InitState
) -> tuple[StreamState, Tensor, Tensor]:
    """Before decoding `tokens`: the state to decode from, (state, prev_recon, prev_hidden). Without
    a state at this size only a keyframe can be decoded (TokenizerError otherwise)."""
    gh, gw = tokens.grid
    if state is None or state.padded_size != (gh * stride, gw * stride) or state.batch != tokens.indices.shape[0]:
        if not bool(tokens.keyframe.all()):
            raise TokenizerError(
                f"cannot decode frame {', '.join(map(str, tokens.frame_indices))}: it is not a keyframe and no "
                "state at this size exists yet (wait for a keyframe or request one)"
            )
        state = init_state(tokens.indices.shape[0], gh * stride, gw * stride, None)
    prev_recon, prev_hidden = reset_where(tokens.keyframe.to(state.recon.device), state)
    return state, prev_recon, prev_hidden
