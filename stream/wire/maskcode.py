"""Coding of a boolean keep-mask over N grid positions (raster order) in the smallest of five modes.

The bit conventions of every mode are specified in docs/PACKET.md; this module is their reference.
"""

from __future__ import annotations

import operator
from enum import IntEnum

import numpy as np
from numpy.typing import NDArray

from .bitpack import pack_uints, packed_size
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


def _decode_bitmap(data: bytes, n: int) -> NDArray[np.bool_]:
    need = (n + 7) // 8
    if len(data) != need:
        raise PacketError(f"BITMAP mask of {n} positions needs exactly {need} bytes, got {len(data)}")
    buf = np.frombuffer(data, dtype=np.uint8)
    if n % 8 and int(buf[-1]) >> (n % 8):
        raise PacketError(f"BITMAP mask has non-zero padding bits in its last byte (0x{int(buf[-1]):02x}, "
                          f"{n % 8} bits used)")
    return np.unpackbits(buf, count=n, bitorder="little").astype(bool)


def _decode_rle(data: bytes, n: int) -> NDArray[np.bool_]:
    # Gamma codes are sequential, so decode with str.find over a '0'/'1' string: C-speed scanning,
    # one Python step per run, and the run count is bounded by n (every run after the first is >= 1).
    if len(data) > (3 * n + 7) // 8:  # gamma codes of runs summing below n take at most 3n bits
        raise PacketError(f"RLE mask of {len(data)} bytes is longer than any RLE mask of {n} positions "
                          f"(at most {(3 * n + 7) // 8})")
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="big")
    s = (bits + ord("0")).tobytes().decode("ascii")
    total, pos, acc = len(s), 0, 0
    runs: list[int] = []
    while pos < total:
        one = s.find("1", pos)
        if one < 0:  # only zeros left: legal padding when it stays inside the last byte
            if total - pos >= 8:
                raise PacketError(f"RLE mask has trailing garbage: {total - pos} zero bits after the last "
                                  "run (padding must be under 8 bits)")
            break
        zeros = one - pos
        end = one + zeros + 1
        if end > total:
            raise PacketError(f"RLE mask truncated: gamma code at bit {pos} needs {end - pos} bits, "
                              f"{total - pos} left")
        run = int(s[one:end], 2) - 1
        if run == 0 and runs:
            raise PacketError(f"RLE mask has a zero-length run (run #{len(runs)}); only the first run "
                              "may be 0")
        acc += run
        if acc >= n:
            raise PacketError(f"RLE runs overflow the mask: runs up to #{len(runs)} cover {acc} of {n} "
                              "positions (the last run must be implicit and non-empty)")
        runs.append(run)
        pos = end
    runs.append(n - acc)  # the implicit last run
    kept = np.zeros(len(runs), dtype=bool)
    kept[1::2] = True  # odd runs are kept, even ones dropped
    return np.repeat(kept, runs)


def _decode_index(data: bytes, n: int) -> NDArray[np.bool_]:
    width = index_width(n)
    if len(data) > packed_size(n, width):  # more than n positions: refuse before unpacking anything
        raise PacketError(f"INDEX mask of {len(data)} bytes holds more than the {n} positions of the grid")
    # k is not stored here: positions are strictly increasing, so the zero padding (< 8 bits), which may
    # read as trailing 0 entries, is told apart from real positions; see docs/PACKET.md.
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    count = bits.size // width
    if bits[count * width:].any():
        raise PacketError("INDEX mask has non-zero padding bits after its last position")
    bitmat = bits[: count * width].reshape(count, width).astype(np.int64)
    vals = bitmat @ (np.int64(1) << np.arange(width, dtype=np.int64))
    bad = np.flatnonzero(np.diff(vals) <= 0)
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
    """Decode a keep-mask, strictly: only the exact bytes :func:`encode_mask` could make for some mask.

    Args:
        mode: the mode byte (a :class:`MaskMode` value).
        data: the mask bytes.
        n: number of positions ``N`` (from the header), ``0..MAX_POSITIONS``.

    Returns:
        bool array of shape ``(n,)``.

    Raises:
        PacketError: unknown mode, wrong length, runs overflowing ``n``, non-zero padding or trailing
            garbage, positions out of range.
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
        return np.full(n, m == MaskMode.ALL, dtype=bool)
    if n == 0:
        raise PacketError(f"mask mode {m.name} is not used for an empty grid (use ALL)")
    if m == MaskMode.BITMAP:
        return _decode_bitmap(data, n)
    if m == MaskMode.RLE:
        return _decode_rle(data, n)
    return _decode_index(data, n)
