"""Several independent streams through one batched step: the frames of every stream of one size are
stacked on the batch axis, so a publisher serving many cameras runs one encoder pass (one CUDA-graph
replay under export/cuda_graphs.py) per frame time instead of one per camera. Each stream keeps its
own state, keyframe schedule and router memory; the rows are split back afterwards.

Works with any runtime that has the `Tokenizer` step interface (torch, onnx, cuda-graph).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import torch
from torch import Tensor

from livetok.engine.config import SenderConfig
from livetok.engine.errors import TokenizerError
from livetok.engine.state import FrameTokens, StreamState

# the frame index the batched state carries: never 0 and never a multiple of a keyframe interval
# above 1, so the step's own schedule never fires and each row's keyframe flag is passed in instead
# (with an interval of 1 every frame is a keyframe, which is what every row's own schedule says too)
_BATCH_INDEX = 1


def stack_states(states: list[StreamState]) -> StreamState:
    """One-stream states of one size -> one batched state (rows in order)."""
    return StreamState(torch.cat([s.recon for s in states]), torch.cat([s.hidden for s in states]), _BATCH_INDEX,
                       tuple(b for s in states for b in s.budget))


def split_state(state: StreamState, row: int, frame_index: int) -> StreamState:
    """Row `row` of a batched state as a one-stream state whose next frame is `frame_index`."""
    budget = (state.budget[row],) if state.budget else ()
    return StreamState(state.recon[row:row + 1], state.hidden[row:row + 1], frame_index, budget)


def split_tokens(tokens: FrameTokens, row: int, frame_index: int) -> FrameTokens:
    """Row `row` of a batched `FrameTokens` as one stream's tokens of frame `frame_index`."""
    sl = slice(row, row + 1)
    return FrameTokens(tokens.indices[sl], tokens.mask[sl], tokens.keyframe[sl], tokens.grid, tokens.size,
                       frame_index, None if tokens.error is None else tokens.error[sl], tokens.decodes,
                       None if tokens.gain is None else tokens.gain[sl])


def _as_batch1(name: str, frame: Tensor) -> Tensor:
    if frame.ndim == 3:
        frame = frame[None]
    if frame.ndim != 4 or frame.shape[0] != 1 or frame.shape[1] != 3:
        raise TokenizerError(f"stream {name!r}: a frame must be [3, H, W] or [1, 3, H, W], got {tuple(frame.shape)}")
    return frame


class MultiStreamEncoder:
    """Encodes many streams frame by frame, batching the streams that share a frame size.

    Equivalent to one `SenderSession.step` per stream (tested), in one step per frame size.
    """

    def __init__(self, model: Any, sender: SenderConfig | None = None) -> None:
        self.model = model
        self.sender = sender or SenderConfig()
        self.states: dict[str, StreamState] = {}
        self.batches = 0  # batched steps run so far

    def _key(self, state: StreamState | None, padded: tuple[int, int], forced: bool) -> bool:
        if state is None or state.padded_size != padded or forced:
            return True
        t, ki = state.frame_index, self.sender.keyframe_interval
        return bool(t == 0 or (ki > 0 and t % ki == 0))

    def encode(self, frames: Mapping[str, Tensor], force_keyframe: Collection[str] = ()) -> dict[str, FrameTokens]:
        """One frame of each named stream ([3, H, W] or [1, 3, H, W] in [-1, 1]) -> its tokens.

        A stream seen for the first time, or whose frame size changed, starts with a keyframe.
        """
        groups: dict[tuple[int, int], list[str]] = {}
        batch1 = {name: _as_batch1(name, f) for name, f in frames.items()}
        for name, f in batch1.items():
            groups.setdefault((int(f.shape[-2]), int(f.shape[-1])), []).append(name)
        s = self.model.stride
        out: dict[str, FrameTokens] = {}
        for (h, w), names in groups.items():
            padded = (h + (-h) % s, w + (-w) % s)
            states, keys, index = [], [], []
            for name in names:
                st = self.states.get(name)
                keys.append(self._key(st, padded, name in force_keyframe))
                index.append(0 if st is None else st.frame_index)
                if st is None or st.padded_size != padded:
                    st = self.model.init_state(1, h, w, self.sender)
                states.append(st)
            x = torch.cat([batch1[n] for n in names])
            tokens, new = self.model.encode_step(x, stack_states(states), self.sender, torch.tensor(keys))
            self.batches += 1
            for row, name in enumerate(names):
                out[name] = split_tokens(tokens, row, index[row])
                self.states[name] = split_state(new, row, index[row] + 1)
        return out

    def drop(self, name: str) -> None:
        """Forget a stream (it starts with a keyframe if it comes back)."""
        self.states.pop(name, None)


class MultiStreamDecoder:
    """Decodes many streams' tokens frame by frame, batching the streams that share a frame size."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.states: dict[str, StreamState] = {}
        self.batches = 0

    def decode(self, tokens: Mapping[str, FrameTokens]) -> dict[str, Tensor]:
        """One `FrameTokens` (batch 1) per named stream -> its frame [1, 3, H, W] in [-1, 1].

        Raises:
            TokenizerError: a stream without a state at this size got a frame that is not a keyframe.
        """
        groups: dict[tuple[tuple[int, int], tuple[int, int]], list[str]] = {}
        for name, t in tokens.items():
            if t.indices.shape[0] != 1:
                raise TokenizerError(f"stream {name!r}: expected one stream's tokens, got batch {t.indices.shape[0]}")
            groups.setdefault((t.grid, t.size), []).append(name)
        s = self.model.stride
        out: dict[str, Tensor] = {}
        for (grid, size), names in groups.items():
            padded = (grid[0] * s, grid[1] * s)
            states = []
            for name in names:
                st = self.states.get(name)
                if st is None or st.padded_size != padded:
                    t = tokens[name]
                    if not bool(t.keyframe.all()):
                        raise TokenizerError(f"stream {name!r}: cannot decode frame {t.frame_index}: it is not a "
                                             "keyframe and no state at this size exists yet (request a keyframe)")
                    st = self.model.init_state(1, padded[0], padded[1])
                states.append(st)
            ts = [tokens[n] for n in names]
            dev = states[0].recon.device
            batched = FrameTokens(torch.cat([t.indices.to(dev) for t in ts]), torch.cat([t.mask.to(dev) for t in ts]),
                                  torch.cat([t.keyframe.to(dev) for t in ts]), grid, size, _BATCH_INDEX)
            frames, new = self.model.decode_step(batched, stack_states(states))
            self.batches += 1
            for row, name in enumerate(names):
                out[name] = frames[row:row + 1]
                self.states[name] = split_state(new, row, ts[row].frame_index + 1)
        return out

    def drop(self, name: str) -> None:
        self.states.pop(name, None)
