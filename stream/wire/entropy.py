"""Entropy coding of one frame's keep-mask and kept tokens (packet versions 2 and 3; spec: docs/PACKET.md §6).

Both ends hold a :class:`CoderState` per stream: integer count tables, the previous frame's mask and the
last digits sent at every grid position. It is explicit (passed in, returned updated), reset by every
keyframe, and every probability is derived from its integer counts by integer arithmetic only, so a
sender and a receiver on any machine derive bit-identical tables.

The coder is constriction's range coder (``constriction.stream.queue.RangeEncoder``: 32-bit words,
64-bit state, 24-bit probabilities); the models hand it 16-bit integer frequencies through its
lazy categorical model (``Categorical(perfect=False)``), whose quantisation of integer frequencies
summing to 2**16 is exact integer arithmetic (docs/PACKET.md §6.4). The symbols of a frame are coded
in batches ("chunks"): probabilities are fixed within a chunk and the counts updated after it, so the
decoder runs a few dozen vectorised calls per frame instead of one per symbol.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import constriction
import numpy as np
from numpy.typing import NDArray

from livetok.engine.fsq_index import digits_to_index, index_to_digits

from .errors import PacketError

__all__ = [
    "COUNT_LIMIT",
    "FIRST_CHUNK",
    "K_BINS",
    "MAX_CHUNK",
    "MAX_LEVEL",
    "PRECISION",
    "Q_BITS",
    "CoderState",
    "chunk_bounds",
    "decode_frame",
    "encode_frame",
    "quantised_cdf",
    "token_bits",
]

PRECISION = 24  # the range coder's probability precision: every cdf is an integer in [0, 2**24]
Q_BITS = 16  # counts are first quantised to frequencies that sum to 2**16
COUNT_LIMIT = 1 << 13  # a context's counts are halved (rounding up) while their total exceeds this
FIRST_CHUNK = 16  # chunk boundaries of a symbol sequence: 16, 32, 64, 128, ..., then every MAX_CHUNK
MAX_CHUNK = 4096  # longest chunk: bounds the decoder's working memory on huge grids
K_BINS = 8  # the mask model's kept-fraction context: floor(8k / (N + 1))
MAX_LEVEL = 255  # largest FSQ level (alphabet of one digit) the models accept
_MAX_TABLE = 1 << 20  # largest count table (contexts x alphabet) the models accept
_NB = 5  # kept 4-neighbours in the previous mask: 0..4


def _family() -> Any:
    """The coder's model family: categorical, probabilities given per symbol, constriction's fast
    ("lazy", ``perfect=False``) quantisation, which is exact on 16-bit integer frequencies."""
    return constriction.stream.model.Categorical(perfect=False)


# --- the state ----------------------------------------------------------------------------------------------


def _check_levels(levels: Sequence[int]) -> tuple[int, ...]:
    lv = tuple(int(x) for x in levels)
    if not lv or any(not 2 <= x <= MAX_LEVEL for x in lv):
        raise ValueError(f"FSQ levels must be a non-empty tuple of ints in 2..{MAX_LEVEL}, got {levels!r}")
    for d, size in enumerate(_table_shapes(lv)):
        if size[0] * size[1] > _MAX_TABLE:
            raise ValueError(f"digit {d} of levels {lv} needs a count table of {size[0]}x{size[1]}, "
                             f"over the limit of {_MAX_TABLE} entries")
    return lv


def _table_shapes(levels: tuple[int, ...]) -> list[tuple[int, int]]:
    """(contexts, alphabet) of each digit's count table: (last digit + 1) x (this token's digit d-1)."""
    return [((lv + 1) * (levels[d - 1] if d else 1), lv) for d, lv in enumerate(levels)]


def _ro(a: NDArray[Any]) -> NDArray[Any]:
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class CoderState:
    """What both ends of one stream know between frames; replaced (never mutated) after every frame.

    Attributes:
        levels: the FSQ levels; a token index is ``len(levels)`` digits (digit d in ``0..levels[d]-1``).
        grid: ``(grid_h, grid_w)`` since the last keyframe, or None before the first keyframe (then only
            a keyframe can be coded); ``n = grid_h * grid_w``.
        prev_mask: the previous frame's keep-mask ``[n]``, or None right after a reset.
        last: ``[len(levels), n]`` int16, the digits of the last token sent at each position, -1 where
            none has been sent since the reset.
        mask_counts: ``[3 * 5 * K_BINS, 2]`` int64 counts of the mask model.
        digit_counts: per digit, ``[(levels[d] + 1) * levels[d-1], levels[d]]`` int64 counts
            (``levels[-1]`` read as 1 for digit 0).
        frame_index: the frame index of the last packet coded through ``TokenPacket.pack_v2`` /
            ``unpack_v2`` / ``pack_v3`` / ``unpack_v3`` (None otherwise): a non-keyframe packet must carry
            the next one (version 3 carries only its low byte: the state supplies the rest).
        frame_size: ``(width, height)`` in pixels of the frames since the last keyframe packet, and
        bits_per_index: their index width; both set by the packet functions (None otherwise). A
            non-keyframe packet does not carry its geometry (docs/PACKET.md §6.1): it is the state's.
        model_id: the 8-byte model id of the keyframe packet that started the state (None otherwise): a
            version 3 non-keyframe does not carry it, and its CRC covers this one (docs/PACKET.md §7).
        timestamp_us: the capture timestamp of the last packet coded or decoded with the state (None
            otherwise): a version 3 non-keyframe carries its own as the difference from this one.
    """

    levels: tuple[int, ...]
    grid: tuple[int, int] | None
    prev_mask: NDArray[np.bool_] | None
    last: NDArray[np.int16]
    mask_counts: NDArray[np.int64]
    digit_counts: tuple[NDArray[np.int64], ...]
    frame_index: int | None = None
    frame_size: tuple[int, int] | None = None
    bits_per_index: int | None = None
    model_id: bytes | None = None
    timestamp_us: int | None = None

    @classmethod
    def empty(cls, levels: Sequence[int]) -> CoderState:
        """The state at stream start: nothing known, the first frame must be a keyframe."""
        lv = _check_levels(levels)
        return cls._reset(lv, None)

    @classmethod
    def _reset(cls, levels: tuple[int, ...], grid: tuple[int, int] | None) -> CoderState:
        width = grid[0] * grid[1] if grid else 0
        return cls(levels=levels, grid=grid, prev_mask=None,
                   last=_ro(np.full((len(levels), width), -1, np.int16)),
                   mask_counts=_ro(np.ones((3 * _NB * K_BINS, 2), np.int64)),
                   digit_counts=tuple(_ro(np.ones(s, np.int64)) for s in _table_shapes(levels)))

    def reset(self, grid: tuple[int, int]) -> CoderState:
        """The state a keyframe on ``grid`` starts from: initial counts, no history."""
        return CoderState._reset(self.levels, (int(grid[0]), int(grid[1])))

    @property
    def n(self) -> int | None:
        """Grid positions, or None before the first keyframe."""
        return None if self.grid is None else self.grid[0] * self.grid[1]

    @property
    def started(self) -> bool:
        """True once a keyframe has been coded: a non-keyframe on the same grid can follow."""
        return self.grid is not None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CoderState):
            return NotImplemented
        def same(a: Any, b: Any) -> bool:
            return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))
        return (self.levels == other.levels and self.grid == other.grid and self.frame_index == other.frame_index
                and self.frame_size == other.frame_size and self.bits_per_index == other.bits_per_index
                and self.model_id == other.model_id and self.timestamp_us == other.timestamp_us
                and same(self.prev_mask, other.prev_mask)
                and np.array_equal(self.last, other.last) and np.array_equal(self.mask_counts, other.mask_counts)
                and all(np.array_equal(a, b) for a, b in zip(self.digit_counts, other.digit_counts, strict=True)))

    __hash__ = None  # type: ignore[assignment]


# --- probabilities ------------------------------------------------------------------------------------------


def _qfreq(counts: NDArray[np.int64]) -> NDArray[np.float64]:
    """Each context's counts as integer frequencies summing to 2**Q_BITS (as float64: exact).

    ``q(s) = floor(C(s) * 2**16 / T)`` with ``C(s)`` the counts of the symbols below ``s`` and ``T`` the
    total; the frequency of ``s`` is ``q(s+1) - q(s)``.
    """
    cum = np.cumsum(counts, axis=1)
    q = (cum << Q_BITS) // cum[:, -1:]
    return np.diff(q, axis=1, prepend=0).astype(np.float64)


def quantised_cdf(counts: Sequence[int]) -> list[int]:
    """The coder's cdf (``PRECISION`` bits, ``A + 1`` values from 0 to 2**24) for one context's counts.

    What constriction computes from the frequencies :func:`_qfreq` hands it, in plain integers:
    ``cdf(s) = (q(s) * (2**24 - A)) >> 16 + s``. For documentation and tests; the coder never calls it.
    """
    c = [int(x) for x in counts]
    a, total = len(c), sum(c)
    cum = [0]
    for x in c:
        cum.append(cum[-1] + x)
    q = [(v << Q_BITS) // total for v in cum]
    return [((qs * ((1 << PRECISION) - a)) >> Q_BITS) + s for s, qs in enumerate(q)]


def chunk_bounds(m: int) -> list[tuple[int, int]]:
    """The chunks of a sequence of ``m`` symbols: ``[0, 16), [16, 32), [32, 64), ...``, each as long as
    everything before it up to MAX_CHUNK symbols, then ``MAX_CHUNK`` each; the last cut at ``m``."""
    out, a, size = [], 0, FIRST_CHUNK
    while a < m:
        out.append((a, min(a + size, m)))
        a += size
        size = min(a, MAX_CHUNK)
    return out


def _update(counts: NDArray[np.int64], ctx: NDArray[np.int64], sym: NDArray[np.int64]) -> NDArray[np.int64]:
    """Add 1 per coded (context, symbol); then halve, rounding up, every context whose total exceeds
    COUNT_LIMIT (repeatedly, until none does)."""
    c, a = counts.shape
    out = counts + np.bincount(ctx * a + sym, minlength=c * a).reshape(c, a)
    while True:
        big = out.sum(axis=1) > COUNT_LIMIT
        if not big.any():
            return out
        out[big] = (out[big] + 1) >> 1


# --- contexts -----------------------------------------------------------------------------------------------


def _mask_contexts(state: CoderState, grid: tuple[int, int], k: int) -> NDArray[np.int64]:
    """Per position: ``(prev * 5 + nb) * K_BINS + kb`` (docs/PACKET.md §6.2)."""
    h, w = grid
    n = h * w
    kb = (K_BINS * k) // (n + 1)
    if state.prev_mask is None:
        return np.full(n, kb, np.int64)
    prev = state.prev_mask.reshape(h, w).astype(np.int64)
    p = np.pad(prev, 1)
    nb = p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]
    return (((prev + 1) * _NB + nb) * K_BINS + kb).ravel()


def _digit_contexts(state: CoderState, d: int, pos: NDArray[np.int64],
                    digits: list[NDArray[np.int64]]) -> NDArray[np.int64]:
    """Per kept position: ``(last digit d + 1) * levels[d-1] + digit d-1 of this token`` (digit 0: no
    second term)."""
    a: NDArray[np.int64] = state.last[d, pos].astype(np.int64) + 1
    if d == 0:
        return a
    out: NDArray[np.int64] = a * state.levels[d - 1] + digits[d - 1]
    return out


# --- coding -------------------------------------------------------------------------------------------------


class _Recorder:
    """The range encoder every coded chunk goes through, in stream order: the encoder's output, and the
    decoder's canonical check (the decoded symbols encoded again, chunk by chunk as they come)."""

    def __init__(self) -> None:
        self.family = _family()
        self.encoder = constriction.stream.queue.RangeEncoder()
        self.coded = 0

    def add(self, sym: NDArray[np.int32], pmf: NDArray[np.float64]) -> None:
        self.encoder.encode(sym, self.family, pmf)
        self.coded += sym.shape[0]

    def encode(self) -> bytes:
        """The payload: the coder's u32 words big-endian, trailing zero bytes dropped."""
        if not self.coded:
            return b""
        words: NDArray[np.uint32] = self.encoder.get_compressed()
        return words.astype(">u4").tobytes().rstrip(b"\0")


def _code_sequence(counts: NDArray[np.int64], ctx: NDArray[np.int64], sym: NDArray[np.int64] | None,
                   rec: _Recorder, dec: Any = None) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Code one symbol sequence chunk by chunk; returns (symbols, updated counts).

    Encoding: ``sym`` given, ``dec`` None. Decoding: ``sym`` None, ``dec`` a RangeDecoder.
    """
    m = ctx.shape[0]
    out = np.empty(m, np.int64) if sym is None else sym
    for a, b in chunk_bounds(m):
        pmf = _qfreq(counts)[ctx[a:b]]
        if dec is not None:
            out[a:b] = dec.decode(rec.family, pmf)
        rec.add(out[a:b].astype(np.int32), pmf)
        counts = _update(counts, ctx[a:b], out[a:b])
    return out, counts


def _check_frame(state: CoderState, grid: tuple[int, int], keyframe: bool, exc: type[ValueError]) -> CoderState:
    if keyframe:
        return state.reset(grid)
    if state.grid is None:
        raise exc("a non-keyframe cannot be coded before the stream's first keyframe (the coder state is "
                  "empty): join at a keyframe")
    if state.grid != grid:
        raise exc(f"a non-keyframe on a {grid[0]}x{grid[1]} grid cannot follow frames on a "
                  f"{state.grid[0]}x{state.grid[1]} grid (the grid may change only at a keyframe)")
    return state


def _advance(state: CoderState, mask: NDArray[np.bool_], pos: NDArray[np.int64],
             digits: list[NDArray[np.int64]], mask_counts: NDArray[np.int64],
             digit_counts: list[NDArray[np.int64]]) -> CoderState:
    last = state.last.copy()
    for d, dg in enumerate(digits):
        last[d, pos] = dg
    return CoderState(levels=state.levels, grid=state.grid, prev_mask=_ro(mask.copy()), last=_ro(last),
                      mask_counts=_ro(mask_counts), digit_counts=tuple(_ro(c) for c in digit_counts))


_Pass = tuple[NDArray[np.bool_], NDArray[np.int64], list[NDArray[np.int64]], NDArray[np.int64],
              list[NDArray[np.int64]]]


def _run(state: CoderState, grid: tuple[int, int], k: int, rec: _Recorder, mask: NDArray[np.bool_] | None,
         digits: list[NDArray[np.int64]] | None, dec: Any = None) -> _Pass:
    """The model pass shared by encoder and decoder (``dec`` None: encode ``mask``/``digits``).

    Returns ``(mask, kept positions, digits per FSQ dimension, mask counts, digit counts)`` after the frame.
    """
    n = grid[0] * grid[1]
    mask_counts = state.mask_counts
    if 0 < k < n:
        ctx = _mask_contexts(state, grid, k)
        bits, mask_counts = _code_sequence(mask_counts, ctx, None if mask is None else mask.astype(np.int64),
                                           rec, dec)
        if mask is None:
            mask = bits.astype(bool)
            kept = int(np.count_nonzero(mask))
            if kept != k:
                raise PacketError(f"entropy-coded mask keeps {kept} positions but the header says k={k}")
    elif mask is None:
        mask = np.full(n, k == n, bool)
    pos = np.flatnonzero(mask)
    out: list[NDArray[np.int64]] = []
    counts = list(state.digit_counts)
    for d in range(len(state.levels)):
        ctx = _digit_contexts(state, d, pos, out)
        dg, counts[d] = _code_sequence(counts[d], ctx, None if digits is None else digits[d], rec, dec)
        out.append(dg)
    return mask, pos, out, mask_counts, counts


def _digits_of(indices: NDArray[Any], levels: tuple[int, ...]) -> list[NDArray[np.int64]]:
    digits: list[NDArray[np.int64]] = index_to_digits(indices.astype(np.int64), levels)
    return digits


def encode_frame(state: CoderState, mask: NDArray[np.bool_], indices: NDArray[np.integer[Any]],
                 grid: tuple[int, int], keyframe: bool) -> tuple[bytes, CoderState]:
    """Entropy-code one frame: the keep-mask (unless k is 0 or N) and the digits of the kept tokens.

    Args:
        state: the stream's coder state before this frame (``CoderState.empty(levels)`` at start).
        mask: bool ``[N]`` keep-mask in raster order, ``N = grid_h * grid_w``.
        indices: the ``k = mask.sum()`` token indices of the kept positions in raster order, each
            ``< prod(levels)``.
        grid: ``(grid_h, grid_w)``.
        keyframe: reset the state before coding (always allowed; required for the first frame and
            whenever the grid changes).

    Returns:
        ``(payload, new_state)``: the coded bytes (no trailing zero byte; empty when there is nothing to
        code) and the state after this frame.

    Raises:
        ValueError: bad shapes or values, or a non-keyframe the state cannot code (before the first
            keyframe, or a grid change).
    """
    h, w = (int(grid[0]), int(grid[1]))
    n = h * w
    mask = np.asarray(mask)
    if mask.dtype != np.bool_ or mask.shape != (n,):
        raise ValueError(f"mask must be bool of shape ({n},) for a {h}x{w} grid, got {mask.dtype} {mask.shape}")
    k = int(np.count_nonzero(mask))
    idx = np.asarray(indices)
    if idx.shape != (k,) or (k and idx.dtype.kind not in "ui"):
        raise ValueError(f"indices must be {k} integers (one per kept position), got {idx.dtype} {idx.shape}")
    size = math.prod(state.levels)
    if k and (int(idx.min()) < 0 or int(idx.max()) >= size):
        raise ValueError(f"token index out of range 0..{size - 1} for levels {state.levels}")
    state = _check_frame(state, (h, w), keyframe, ValueError)
    rec = _Recorder()
    digits = _digits_of(idx, state.levels)
    _, pos, out, mask_counts, counts = _run(state, (h, w), k, rec, mask, digits)
    return rec.encode(), _advance(state, mask, pos, out, mask_counts, counts)


def decode_frame(state: CoderState, data: bytes, grid: tuple[int, int], k: int,
                 keyframe: bool) -> tuple[NDArray[np.bool_], NDArray[np.uint32], CoderState]:
    """The exact inverse of :func:`encode_frame`.

    Only the bytes :func:`encode_frame` makes are accepted (the decoded symbols are re-encoded and
    compared), so every accepted payload re-packs to itself. Time and memory are linear in
    ``N + k * len(levels)``.

    Args:
        state: the stream's coder state before this frame.
        data: the payload.
        grid: ``(grid_h, grid_w)`` from the packet header.
        k: number of kept positions from the packet header, ``0 <= k <= N``.
        keyframe: the packet's keyframe flag.

    Returns:
        ``(mask [N] bool, indices [k] uint32, new_state)``.

    Raises:
        PacketError: the payload is not what the encoder makes for this state (garbage, truncated,
            trailing bytes, mask popcount differs from ``k``), or the state cannot decode this frame
            (a non-keyframe before the first keyframe, or a grid change without a keyframe).
    """
    h, w = (int(grid[0]), int(grid[1]))
    n = h * w
    if not 0 <= k <= n:
        raise PacketError(f"k={k} out of range 0..{n}")
    state = _check_frame(state, (h, w), keyframe, PacketError)
    data = bytes(data)
    if data.endswith(b"\0"):
        raise PacketError("entropy-coded payload ends with a zero byte (the encoder strips them)")
    rec = _Recorder()
    try:
        words = np.frombuffer(data + b"\0" * (-len(data) % 4), ">u4").astype(np.uint32)
        dec = constriction.stream.queue.RangeDecoder(words)
        mask, pos, out, mask_counts, counts = _run(state, (h, w), k, rec, None, None, dec)
        again = rec.encode()
    except PacketError:
        raise
    except Exception as e:  # constriction reports invalid data as AssertionError/ValueError
        raise PacketError(f"entropy-coded payload does not decode: {type(e).__name__}: {e}") from e
    except BaseException as e:  # a Rust panic surfaces as pyo3's PanicException (a BaseException)
        if type(e).__name__ != "PanicException":
            raise
        raise PacketError(f"entropy-coded payload does not decode: {type(e).__name__}: {e}") from e
    if again != data:
        raise PacketError(f"entropy-coded payload of {len(data)} bytes is not what the encoder makes for the "
                          f"symbols it decodes to ({len(again)} bytes): garbage or trailing bytes")
    idx = digits_to_index(out, state.levels)
    return mask, idx.astype(np.uint32), _advance(state, mask, pos, out, mask_counts, counts)


def token_bits(state: CoderState, indices: NDArray[np.integer[Any]]) -> NDArray[np.float64]:
    """Ideal code length in bits of the token at every position, were it kept in the next frame.

    ``-log2`` of the coder's probabilities (counts as they stand, digit d-1 context from the token
    itself; no within-frame adaptation): a cheap per-position rate estimate for routers. The mask bit
    is not included.

    Args:
        state: a started state (after at least one frame).
        indices: ``[n]`` candidate token index at every position.
    """
    if state.n is None:
        raise ValueError("token_bits needs a started coder state")
    idx = np.asarray(indices)
    if idx.shape != (state.n,):
        raise ValueError(f"indices must have shape ({state.n},), got {idx.shape}")
    digits = _digits_of(idx, state.levels)
    pos = np.arange(state.n)
    bits = np.zeros(state.n)
    for d, lv in enumerate(state.levels):
        ctx = _digit_contexts(state, d, pos, digits)
        q = _qfreq(state.digit_counts[d])
        cum = np.concatenate([np.zeros((q.shape[0], 1)), np.cumsum(q, axis=1)], axis=1).astype(np.int64)
        cdf = ((cum * ((1 << PRECISION) - lv)) >> Q_BITS) + np.arange(lv + 1)
        freq = (cdf[:, 1:] - cdf[:, :-1])[ctx, digits[d]]
        bits += PRECISION - np.log2(freq)
    return bits
