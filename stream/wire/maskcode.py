"""Coding of a boolean keep-mask over N grid positions (raster order) in the smallest of five modes.

The bit conventions of every mode are specified in docs/PACKET.md; this module is their reference.
"""

from __future__ import annotations

import operator
from enum import IntEnum

import numpy as np
from numpy.typing import NDArray

from .bitpack import pack_uints, packed_size, read_uints
from .errors import PacketError

__all__ = [
    "MAX_POSITIONS",
    "MaskMode",
    "decode_mask",
    "encode_mask",
    "encode_mask_as",
    "encoded_mask_sizes",
    "index_width",
]

MAX_POSITIONS = 1 << 22  # a 2048x2048 latent grid; bounds every allocation made while decoding


class MaskMode(IntEnum):
    """Mask encodings; the value is the byte stored in the packet header."""

    ALL = 0  # every position kept, no bytes
    NONE = 1  # no position kept, no bytes
    BITMAP = 2  # one bit per position, LSB-first
    RLE = 3  # Elias-gamma run lengths, MSB-first
    INDEX = 4  # kept positions as fixed-width integers


_KNOWN = ", ".join(f"{m.value}={m.name}" for m in MaskMode)


def index_width(n: int) -> int:
    """Bits per position in INDEX mode: ``ceil(log2 n)``, at least 1 (so ``n = 1`` still has a width)."""
    return max(1, (n - 1).bit_length())


def _check_n(n: int) -> int:
    try:
        v = operator.index(n)
    except TypeError:
        raise PacketError(f"mask size must be an int, got {n!r}") from None
    if not 0 <= v <= MAX_POSITIONS:
        raise PacketError(f"mask size {v} out of range 0..{MAX_POSITIONS}")
    return v


def _as_mask(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    arr = np.asarray(mask)
    if arr.dtype != np.bool_:
        raise ValueError(f"mask must have dtype bool, got {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"mask must be 1-D (raster order), got shape {arr.shape}")
    if arr.size > MAX_POSITIONS:
        raise ValueError(f"mask has {arr.size} positions, the limit is {MAX_POSITIONS}")
    return arr


def _runs(mask: NDArray[np.bool_]) -> NDArray[np.int64]:
    """Alternating run lengths, dropped first (the first run may be 0, all others are >= 1)."""
    change = np.flatnonzero(mask[1:] != mask[:-1]) + 1
    bounds = np.concatenate(([0], change, [mask.size]))
    runs = np.diff(bounds)
    if mask[0]:  # the first run is always a dropped one, here of length 0
        runs = np.concatenate(([0], runs))
    return runs.astype(np.int64)


def _bit_length(v: NDArray[np.int64]) -> NDArray[np.int64]:
    # frexp's exponent is the bit length, exactly, for integers below 2**53 (ours are <= 2**22 + 1)
    return np.frexp(v.astype(np.float64))[1].astype(np.int64)


def _gamma_bits(runs: NDArray[np.int64]) -> NDArray[np.uint8]:
    """Concatenated Elias-gamma codes of ``runs + 1`` as a 0/1 uint8 array, MSB first."""
    v = runs.astype(np.int64) + 1
    length = _bit_length(v)
    width = 2 * length - 1  # gamma(v) is v written MSB-first in 2L-1 bits (L-1 leading zeros)
    total = int(width.sum())
    owner = np.repeat(np.arange(v.size), width)  # which code each output bit belongs to
    start = np.cumsum(width) - width
    shift = (width[owner] - 1) - (np.arange(total) - start[owner])
    bits: NDArray[np.uint8] = ((v[owner] >> shift) & 1).astype(np.uint8)  # numpy 1.26's stubs say Any
    return bits


def _rle_size(runs: NDArray[np.int64]) -> int:
    explicit = runs[:-1] + 1  # the last run is implicit
    if explicit.size == 0:
        return 0
    length = _bit_length(explicit)
    return (int((2 * length - 1).sum()) + 7) // 8


def encoded_mask_sizes(mask: NDArray[np.bool_]) -> dict[MaskMode, int]:
    """Byte size of ``mask`` in every mode that can represent it (ALL/NONE only when they apply).

    Args:
        mask: bool array of shape ``(N,)``.

    Returns:
        ``{mode: size_in_bytes}``, in mode order.
    """
    arr = _as_mask(mask)
    n, k = arr.size, int(arr.sum())
    sizes: dict[MaskMode, int] = {}
    if k == n:
        sizes[MaskMode.ALL] = 0
    if k == 0:
        sizes[MaskMode.NONE] = 0
    if n:
        sizes[MaskMode.BITMAP] = (n + 7) // 8
        sizes[MaskMode.RLE] = _rle_size(_runs(arr))
        sizes[MaskMode.INDEX] = packed_size(k, index_width(n))
    return sizes


def encode_mask_as(mask: NDArray[np.bool_], mode: int) -> bytes:
    """Encode a keep-mask in a given mode (for tests and for senders that want a fixed mode).

    Args:
        mask: bool array of shape ``(N,)``.
        mode: a :class:`MaskMode` value that can represent ``mask`` (ALL needs every position kept,
            NONE none; the others need ``N >= 1``).

    Returns:
        The mask bytes, exactly as :func:`decode_mask` expects them.

    Raises:
        ValueError: bad ``mask``, unknown ``mode`` or one that cannot represent ``mask``.
    """
    arr = _as_mask(mask)
    try:
        m = MaskMode(mode)
    except ValueError:
        raise ValueError(f"unknown mask mode {mode!r} (known: {_KNOWN})") from None
    return _encode(arr, m, encoded_mask_sizes(arr))


def _encode(arr: NDArray[np.bool_], m: MaskMode, sizes: dict[MaskMode, int]) -> bytes:
    if m not in sizes:
        raise ValueError(f"mask mode {m.name} cannot represent a mask of {arr.size} positions with "
                         f"{int(arr.sum())} kept")
    if m in (MaskMode.ALL, MaskMode.NONE):
        data = b""
    elif m == MaskMode.BITMAP:
        data = np.packbits(arr, bitorder="little").tobytes()
    elif m == MaskMode.RLE:
        data = np.packbits(_gamma_bits(_runs(arr)[:-1]), bitorder="big").tobytes()
    else:
        data = pack_uints(np.flatnonzero(arr), index_width(arr.size))
    if len(data) != sizes[m]:  # a wrong size model would make encode_mask pick a non-minimal mode
        raise AssertionError(f"mask mode {m.name}: predicted {sizes[m]} bytes, made {len(data)}")
    return data


def encode_mask(mask: NDArray[np.bool_]) -> tuple[int, bytes]:
    """Encode a keep-mask in its smallest mode (ties go to the lower mode number).

    Args:
        mask: bool array of shape ``(N,)``, ``N <= MAX_POSITIONS``, True = position kept.

    Returns:
        ``(mode, data)`` with ``mode`` a :class:`MaskMode` value.

    Raises:
        ValueError: ``mask`` is not a 1-D bool array or is too large.
    """
    arr = _as_mask(mask)
    sizes = encoded_mask_sizes(arr)
    mode = min(sizes, key=lambda m: (sizes[m], int(m)))
    return int(mode), _encode(arr, mode, sizes)


# --- decoding -----------------------------------------------------------------------------------------------


def _best_mode(arr: NDArray[np.bool_]) -> MaskMode:
    """The mode :func:`encode_mask` picks for ``arr``, in O(N) time and about N bytes of memory.

    As :func:`encoded_mask_sizes` and the same tie rule, except that the RLE size is only worked out
    when RLE can win: every written run after the first costs at least 3 bits, so a mask with many
    runs (an alternating 2**22-position one has 4 million) is settled by counting its changes, without
    building its run arrays.
    """
    n, k = arr.size, int(np.count_nonzero(arr))
    if k == n:
        return MaskMode.ALL
    if k == 0:
        return MaskMode.NONE
    sizes = {MaskMode.BITMAP: (n + 7) // 8, MaskMode.INDEX: packed_size(k, index_width(n))}
    changes = int(np.count_nonzero(arr[1:] != arr[:-1]))
    if 3 * (changes - 1) < 8 * min(sizes.values()):  # else RLE needs more bits than both others
        sizes[MaskMode.RLE] = _rle_size(_runs(arr))
    return min(sizes, key=lambda m: (sizes[m], int(m)))


def _decode_bitmap(data: bytes, n: int) -> NDArray[np.bool_]:
    need = (n + 7) // 8
    if len(data) != need:
        raise PacketError(f"BITMAP mask of {n} positions needs exactly {need} bytes, got {len(data)}")
    buf = np.frombuffer(data, dtype=np.uint8)
    if n % 8 and int(buf[-1]) >> (n % 8):
        raise PacketError(f"BITMAP mask has non-zero padding bits in its last byte (0x{int(buf[-1]):02x}, "
                          f"{n % 8} bits used)")
    return np.unpackbits(buf, count=n, bitorder="little").astype(bool)


_STRIDE = 64  # chain steps per checkpoint in _gamma_starts


def _gamma_starts(bits: NDArray[np.uint8]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Where each gamma code of the stream starts, and the position of its first 1 bit.

    A code starting at ``p`` is ``z`` zeros, a 1 at ``o = p + z``, then ``z`` more bits, so the next
    one starts at ``2 * o - p + 1``: a chain through the stream. Decoding it code by code is one Python
    step per run (5 s for a crafted 1.8 MB mask). Here the successor of every bit position is one
    vectorised step; its 64th successor takes 6 more (squaring); a Python loop then walks the chain 64
    codes at a time, and 63 vectorised steps from those checkpoints fill in every code: about 10 passes
    over the ``T`` bit positions plus ``runs / 64`` Python steps.

    Returns:
        ``(starts, ones)``: the chain from bit 0 in order, each node ``< T``, and for each node its
        first 1 bit (``T`` where none follows: only padding is left). The last node may be a code that
        runs past the end (truncated); every other node starts a complete code.
    """
    total = bits.size
    end = total + 1  # absorbing: "past the stream"
    pos = np.arange(total + 2, dtype=np.int32)
    first_one = np.where(np.append(bits, [1, 1]).astype(bool), pos, end)  # position T reads as a 1
    first_one = np.minimum.accumulate(first_one[::-1])[::-1]  # the first 1 at or after each position
    step = 2 * first_one  # in place from here: each temporary is 4 bytes a bit, at most 16 MiB
    step -= pos
    step += 1
    del pos
    np.minimum(step, end, out=step)
    step[first_one >= total] = end  # no 1 left (or at the end itself): the chain stops here
    step[end] = end
    far = step
    for _ in range(_STRIDE.bit_length() - 1):
        far = far[far]  # the 2nd, 4th, ... 64th successor of every position
    checkpoints, p = [0], 0
    while p != end:
        p = int(far[p])
        checkpoints.append(p)
    rows = [np.array(checkpoints[:-1], dtype=np.int32)]
    for _ in range(_STRIDE - 1):
        rows.append(step[rows[-1]])
    chain = np.stack(rows, axis=1).ravel()  # checkpoint c's s-th successor at c * 64 + s: chain order
    starts = chain[: int(np.searchsorted(chain, end))].astype(np.int64)  # increasing, then `end`
    starts = starts[starts < total]
    return starts, np.minimum(first_one[starts], total).astype(np.int64)


def _decode_rle(data: bytes, n: int) -> NDArray[np.bool_]:
    buf = np.frombuffer(data, dtype=np.uint8)
    bits = np.unpackbits(buf, bitorder="big")
    total = bits.size
    starts, ones = _gamma_starts(bits)
    zeros = ones - starts
    complete = (ones < total) & (2 * ones - starts + 1 <= total)
    codes = int(np.count_nonzero(complete))  # all nodes but possibly the last
    # each code's value: the z + 1 bits from its first 1, read from a 40-bit big-endian window (z <= 22
    # for any run below 2**22 + 1; a longer code is an overflow, settled below without its value)
    o, z = ones[:codes], np.minimum(zeros[:codes], 23)
    padded = np.concatenate([buf, np.zeros(5, dtype=np.uint8)]).astype(np.uint64)
    at = o >> 3
    window = np.zeros(codes, dtype=np.uint64)
    for i in range(5):
        window = (window << np.uint64(8)) | padded[at + i]
    shift = (40 - (o & 7) - (z + 1)).astype(np.uint64)
    runs = ((window >> shift) & ((np.uint64(1) << (z + 1).astype(np.uint64)) - np.uint64(1))).astype(np.int64) - 1
    runs[zeros[:codes] > 22] = n  # longer than any grid: overflows
    covered = np.cumsum(runs)
    zero_run = np.flatnonzero(runs[1:] == 0)
    overflow = np.flatnonzero(covered >= n)
    first_zero = int(zero_run[0]) + 1 if zero_run.size else codes
    first_over = int(overflow[0]) if overflow.size else codes
    if first_zero < codes and first_zero <= first_over:
        raise PacketError(f"RLE mask has a zero-length run (run #{first_zero}); only the first run may be 0")
    if first_over < codes:
        raise PacketError(f"RLE runs overflow the mask: runs up to #{first_over} cover "
                          f"{int(covered[first_over]) if zeros[first_over] <= 22 else 'more'} of {n} positions "
                          "(the last run must be implicit and non-empty)")
    if codes < starts.size:  # the chain ends inside the stream: padding, or a code cut short
        pos = int(starts[codes])
        if int(ones[codes]) >= total:
            if total - pos >= 8:
                raise PacketError(f"RLE mask has trailing garbage: {total - pos} zero bits after the last "
                                  "run (padding must be under 8 bits)")
        else:
            need = 2 * int(zeros[codes]) + 1
            raise PacketError(f"RLE mask truncated: gamma code at bit {pos} needs {need} bits, "
                              f"{total - pos} left")
    runs = np.append(runs, n - (int(covered[-1]) if codes else 0))  # the implicit last run
    kept = np.zeros(runs.size, dtype=bool)
    kept[1::2] = True  # odd runs are kept, even ones dropped
    return np.repeat(kept, runs)


def _decode_index(data: bytes, n: int) -> NDArray[np.bool_]:
    width = index_width(n)
    # k is not stored here: positions are strictly increasing, so the zero padding (< 8 bits), which may
    # read as trailing 0 entries, is told apart from real positions; see docs/PACKET.md.
    buf = np.frombuffer(data, dtype=np.uint8)
    count = 8 * buf.size // width
    used = count * width
    if (used % 8 and int(buf[used // 8]) >> (used % 8)) or buf[(used + 7) // 8:].any():
        raise PacketError("INDEX mask has non-zero padding bits after its last position")
    vals = read_uints(buf, count, width)  # uint32, never widened to one byte per bit
    bad = np.flatnonzero(vals[1:] <= vals[:-1])
    k = int(bad[0]) + 1 if bad.size else count
    if vals[k:].any():
        raise PacketError(f"INDEX mask positions are not strictly increasing (entry #{k}: "
                          f"{int(vals[k])} after {int(vals[k - 1])})")
    if packed_size(k, width) != len(data):
        raise PacketError(f"INDEX mask has trailing garbage: {len(data)} bytes but its {k} positions of "
                          f"{width} bits need {packed_size(k, width)} (duplicate position 0?)")
    if k and int(vals[k - 1]) >= n:
        raise PacketError(f"INDEX mask position {int(vals[k - 1])} out of range for {n} positions")
    out = np.zeros(n, dtype=bool)
    out[vals[:k]] = True
    return out


def decode_mask(mode: int, data: bytes, n: int) -> NDArray[np.bool_]:
    """Decode a keep-mask, strictly: only the exact bytes :func:`encode_mask` makes for some mask.

    So the mode must be the one the encoder picks for the decoded mask (the smallest, ties to the lower
    number; ALL for ``n = 0``), and RLE or INDEX data as long as the BITMAP (``ceil(n/8)`` bytes) is
    refused before anything is decoded. Time and memory are linear in ``n`` and in ``len(data)``, which
    is then below ``n / 8``.

    Args:
        mode: the mode byte (a :class:`MaskMode` value).
        data: the mask bytes.
        n: number of positions ``N`` (from the header), ``0..MAX_POSITIONS``.

    Returns:
        bool array of shape ``(n,)``.

    Raises:
        PacketError: unknown mode, wrong length, runs overflowing ``n``, non-zero padding or trailing
            garbage, positions out of range, or a mode the encoder would not have picked.
    """
    n = _check_n(n)
    try:
        m = MaskMode(operator.index(mode))
    except (TypeError, ValueError):
        raise PacketError(f"unknown mask mode {mode!r} (known: {_KNOWN})") from None
    data = bytes(data)
    if m in (MaskMode.ALL, MaskMode.NONE):
        if data:
            raise PacketError(f"mask mode {m.name} carries no bytes, got {len(data)}")
        if m == MaskMode.NONE and n == 0:
            raise PacketError("mask mode NONE is not used for an empty grid (use ALL)")
        return np.full(n, m == MaskMode.ALL, dtype=bool)
    if n == 0:
        raise PacketError(f"mask mode {m.name} is not used for an empty grid (use ALL)")
    bitmap = (n + 7) // 8
    if m != MaskMode.BITMAP and len(data) >= bitmap:
        raise PacketError(f"{m.name} mask of {len(data)} bytes is not smaller than the {bitmap}-byte BITMAP "
                          f"of {n} positions (a mask is sent in its smallest mode)")
    if m == MaskMode.BITMAP:
        out = _decode_bitmap(data, n)
    elif m == MaskMode.RLE:
        out = _decode_rle(data, n)
    else:
        out = _decode_index(data, n)
    best = _best_mode(out)
    if best != m:
        raise PacketError(f"{m.name} mask is not the smallest encoding of its {int(np.count_nonzero(out))} "
                          f"kept of {n} positions: the encoder sends {best.name}")
    return out
