"""A sender's memory between frames, all of it explicit: the stream state (what the receiver knows,
plus the router's memory) and the rate controller's state, for one stream — and the step that
encodes one frame of several such streams as one batched pass.

Rate control speaks through beta's scale in the router state: before a frame, the controller's
current scale is written into the stream's budget states; after the frame is packed, its real cost
(bits or tokens) is accounted with the capture time passed in (`account`). Both are pure functions.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from .config import SenderConfig
from .errors import TokenizerError
from .rate_control import RateState, rate_update
from .runtime import CodeLength, Runtime
from .state import FrameTokens, StreamState


@dataclass(frozen=True)
class SenderState:
    """One stream's sender memory.

    Attributes:
        stream: the engine state after the last frame (None before the first).
        rate: the rate controller's state (unused without rate control).
    """

    stream: StreamState | None = None
    rate: RateState = field(default_factory=RateState)

    @property
    def next_frame(self) -> int:
        """The index the stream's next frame will have."""
        return 0 if self.stream is None else self.stream.frame_index


def _row_state(runtime: Runtime, state: SenderState, sender: SenderConfig, height: int,
               width: int) -> tuple[StreamState, bool]:
    """The one-row state this stream's next frame of height x width is coded from, and whether it
    must start over (a new stream, or a new frame size: a keyframe, the frame count kept)."""
    s = runtime.stride
    padded = (height + (-height) % s, width + (-width) % s)
    st = state.stream
    fresh = st is None or st.padded_size != padded
    if st is None or fresh:
        init = runtime.init_state(1, height, width, sender)
        st = replace(init, frame_indices=(state.next_frame,))
    if sender.rate_control is not None:
        st = replace(st, budget=tuple(replace(b, scale=state.rate.scale) for b in st.budget))
    return st, fresh


def encode_streams(runtime: Runtime, frames: Tensor, states: Sequence[SenderState], sender: SenderConfig,
                   force_keyframe: Sequence[bool] | None = None, code_length: CodeLength | None = None
                   ) -> tuple[list[FrameTokens], list[SenderState]]:
    """One frame of each of B independent streams of one size, as one batched encoder step.

    Args:
        frames: [B, 3, H, W] in [-1, 1], row b from stream b.
        states: B sender states (each stream keeps its own frame count, keyframe schedule, router and
            rate memory; the batch is only how they run).
        force_keyframe: per stream, whether a keyframe was asked for.
        code_length: the streams' coders' view (indices [B, N] -> bits [B, N]), for the `bits` signal.
    Returns:
        (each stream's tokens, each stream's new state); equal to B one-stream steps (tested).
    """
    b = int(frames.shape[0])
    if len(states) != b:
        raise TokenizerError(f"{b} frames for {len(states)} stream states")
    forced = [False] * b if force_keyframe is None else list(force_keyframe)
    rows = [_row_state(runtime, st, sender, int(frames.shape[-2]), int(frames.shape[-1])) for st in states]
    keys = torch.tensor([f or fresh for f, (_, fresh) in zip(forced, rows, strict=True)])
    batched = rows[0][0] if b == 1 else StreamState.stack([r for r, _ in rows])
    tokens, new = runtime.encode_step(frames, batched, sender, keys, code_length)
    if b == 1:
        return [tokens], [replace(states[0], stream=new)]
    return ([tokens.row(i) for i in range(b)],
            [replace(st, stream=new.row(i)) for i, st in enumerate(states)])


def encode_named(runtime: Runtime, frames: Mapping[str, Tensor], states: Mapping[str, SenderState],
                 sender: SenderConfig, force_keyframe: Collection[str] = (),
                 code_length: Mapping[str, CodeLength] | None = None
                 ) -> tuple[dict[str, FrameTokens], dict[str, SenderState]]:
    """One frame of each named stream ([1, 3, H, W] in [-1, 1]); the streams of one frame size run as
    one batched step (`encode_streams`). A name without a state starts a stream.

    `code_length`: per stream, its coder's view (indices [1, N] -> bits [1, N]), for the `bits` signal.
    Returns (tokens by name, new states by name), in the order of `frames`.
    """
    groups: dict[tuple[int, int], list[str]] = {}
    for name, f in frames.items():
        if f.ndim != 4 or f.shape[0] != 1:
            raise TokenizerError(f"stream {name!r}: a frame must be [1, 3, H, W], got {tuple(f.shape)}")
        groups.setdefault((int(f.shape[-2]), int(f.shape[-1])), []).append(name)
    tokens: dict[str, FrameTokens] = {}
    new: dict[str, SenderState] = {}
    for names in groups.values():
        x = frames[names[0]] if len(names) == 1 else torch.cat([frames[n].to(frames[names[0]].device) for n in names])
        rows = _rows(code_length, names) if code_length is not None else None
        out, sts = encode_streams(runtime, x, [states.get(n, SenderState()) for n in names], sender,
                                  [n in force_keyframe for n in names], rows)
        for name, t, st in zip(names, out, sts, strict=True):
            tokens[name], new[name] = t, st
    return {n: tokens[n] for n in frames}, {n: new[n] for n in frames}


def _rows(code_length: Mapping[str, CodeLength], names: list[str]) -> CodeLength:
    """Per-stream code lengths as one batched one (row i = stream names[i])."""
    def batched(indices: Tensor) -> Tensor:
        return torch.cat([code_length[n](indices[i:i + 1]) for i, n in enumerate(names)])

    return batched


def account(sender: SenderConfig, state: SenderState, bits: int, tokens: int, now_s: float) -> SenderState:
    """After a frame was packed: its cost (bits on the wire, or kept tokens for a token target) at
    capture time `now_s` moves the rate controller. Without rate control the state is unchanged."""
    rc = sender.rate_control
    if rc is None:
        return state
    used = bits if rc.target_bps is not None else tokens
    return replace(state, rate=rate_update(rc, state.rate, used, now_s))


def decode_streams(runtime: Runtime, tokens: Sequence[FrameTokens],
                   states: Sequence[StreamState | None]) -> tuple[list[Tensor], list[StreamState]]:
    """One frame of each of B independent streams of one grid and size, as one batched decoder step.

    Returns (each stream's frame [1, 3, H, W] in [-1, 1], each stream's new state). A stream without a
    state at this size must get a keyframe (TokenizerError otherwise).
    """
    b = len(tokens)
    if len(states) != b:
        raise TokenizerError(f"{b} streams' tokens for {len(states)} states")
    s = runtime.stride
    rows: list[StreamState] = []
    for t, st in zip(tokens, states, strict=True):
        if t.indices.shape[0] != 1:
            raise TokenizerError(f"expected one stream's tokens, got batch {t.indices.shape[0]}")
        padded = (t.grid[0] * s, t.grid[1] * s)
        if st is None or st.padded_size != padded:
            if not bool(t.keyframe.all()):
                raise TokenizerError(f"cannot decode frame {t.frame_index}: it is not a keyframe and no state at "
                                     "this size exists yet (wait for a keyframe or request one)")
            st = runtime.init_state(1, padded[0], padded[1])
        rows.append(st)
    if b == 1:
        frame, new = runtime.decode_step(tokens[0], rows[0])
        return [frame], [new]
    frames, new = runtime.decode_step(FrameTokens.stack(tokens), StreamState.stack(rows))
    return [frames[i:i + 1] for i in range(b)], [new.row(i) for i in range(b)]
