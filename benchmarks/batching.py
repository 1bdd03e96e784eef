"""Several independent streams through one batched step: the frames of every stream of one size are
stacked on the batch axis, so a publisher serving many cameras runs one encoder pass (one CUDA-graph
replay under export/cuda_graphs.py) per frame time instead of one per camera. Each stream keeps its
own state, frame count, keyframe schedule and router memory (engine/sender.py does the batching);
this module only keeps the streams by name and groups them by frame size.

Works with any `Runtime` (torch, onnx, cuda-graph). A harness of `livetok bench speed --streams S` (the
live publisher batches its cameras through stream/session.py's `step_sessions` instead).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from torch import Tensor

from livetok.engine.config import SenderConfig
from livetok.engine.errors import TokenizerError
from livetok.engine.runtime import Runtime
from livetok.engine.sender import SenderState, decode_streams, encode_named
from livetok.engine.state import FrameTokens, StreamState


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

    def __init__(self, model: Runtime, sender: SenderConfig | None = None) -> None:
        self.model = model
        self.sender = sender or SenderConfig()
        self.states: dict[str, SenderState] = {}
        self.batches = 0  # batched steps run so far

    def encode(self, frames: Mapping[str, Tensor], force_keyframe: Collection[str] = ()) -> dict[str, FrameTokens]:
        """One frame of each named stream ([3, H, W] or [1, 3, H, W] in [-1, 1]) -> its tokens.

        A stream seen for the first time, or whose frame size changed, starts with a keyframe.
        """
        batch1 = {name: _as_batch1(name, f) for name, f in frames.items()}
        out, states = encode_named(self.model, batch1, self.states, self.sender, force_keyframe)
        self.states.update(states)
        self.batches += len({tuple(f.shape[-2:]) for f in batch1.values()})
        return out

    def drop(self, name: str) -> None:
        """Forget a stream (it starts with a keyframe if it comes back)."""
        self.states.pop(name, None)


class MultiStreamDecoder:
    """Decodes many streams' tokens frame by frame, batching the streams that share a frame size."""

    def __init__(self, model: Runtime) -> None:
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
        out: dict[str, Tensor] = {}
        for names in groups.values():
            try:
                frames, states = decode_streams(self.model, [tokens[n] for n in names],
                                                [self.states.get(n) for n in names])
            except TokenizerError as e:
                raise TokenizerError(f"stream(s) {', '.join(repr(n) for n in names)}: {e}") from e
            self.batches += 1
            for name, f, st in zip(names, frames, states, strict=True):
                out[name], self.states[name] = f, st
        return out

    def drop(self, name: str) -> None:
        self.states.pop(name, None)
