"""Fixed-width packing of unsigned integers into bytes (LSB-first), vectorised with numpy.

Value ``i`` occupies bits ``[i*bits, (i+1)*bits)`` of the stream, least significant bit first, and
stream bit ``j`` is bit ``j % 8`` of byte ``j // 8``; the last byte is zero-padded.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .errors import PacketError

__all__ = ["MAX_BITS", "pack_uints", "packed_size", "read_uints", "unpack_uints"]

MAX_BITS = 32


def _check_bits(bits: int) -> int:
    try:
        b = operator.index(bits)
    except TypeError:
        raise ValueError(f"bits must be an int in 1..{MAX_BITS}, got {bits!r}") from None
    if not 1 <= b <= MAX_BITS:
        raise ValueError(f"bits must be in 1..{MAX_BITS}, got {b}")
    return b


def packed_size(count: int, bits: int) -> int:
    """Number of bytes :func:`pack_uints` makes for ``count`` values of ``bits`` bits.

    Args:
        count: number of values, ``>= 0``.
        bits: width of each value, 1..32.

    Returns:
        ``ceil(count * bits / 8)``.
    """
    b = _check_bits(bits)
    c = operator.index(count)
    if c < 0:
        raise ValueError(f"count must be >= 0, got {c}")
    return (c * b + 7) // 8


def pack_uints(values: NDArray[np.integer[Any]], bits: int) -> bytes:
    """Pack unsigned integers, each in exactly ``bits`` bits, into a byte string.

    Args:
        values: 1-D array of integers (any integer dtype), each in ``[0, 2**bits)``.
        bits: width of each value, 1..32.

    Returns:
        ``ceil(len(values) * bits / 8)`` bytes; unused high bits of the last byte are zero.

    Raises:
        ValueError: ``bits`` out of range, ``values`` not a 1-D integer array, or a value that does not
            fit in ``bits`` bits.
    """
    b = _check_bits(bits)
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return b""
    if arr.dtype.kind not in "ui":
        raise ValueError(f"values must have an integer dtype, got {arr.dtype}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0:
        raise ValueError(f"values must be >= 0, got {lo}")
    if hi >= 1 << b:
        raise ValueError(f"value {hi} does not fit in {b} bits (max {(1 << b) - 1})")
    # Only the ceil(bits/8) low bytes of each little-endian uint32 carry data, so the bit matrix is
    # (n, 8*nbytes) rather than (n, 32): a 4x smaller temporary for the common 8..16-bit case.
    nbytes = (b + 7) // 8
    as_bytes = arr.astype("<u4").view(np.uint8).reshape(-1, 4)[:, :nbytes]
    bitmat = np.unpackbits(as_bytes, axis=1, bitorder="little")[:, :b]  # (n, bits), LSB first
    return np.packbits(bitmat.reshape(-1), bitorder="little").tobytes()


def unpack_uints(data: bytes, count: int, bits: int) -> NDArray[np.uint32]:
    """Inverse of :func:`pack_uints`.

    Strict, so that every accepted byte string re-packs to itself: ``data`` must be exactly
    ``ceil(count*bits/8)`` bytes and the padding bits of the last byte must be zero.

    Args:
        data: the packed bytes (``bytes``, ``bytearray`` or ``memoryview``).
        count: number of values to read, ``>= 0``.
        bits: width of each value, 1..32.

    Returns:
        uint32 array of shape ``(count,)``.

    Raises:
        PacketError: ``data`` has too few or too many bytes, or non-zero padding bits.
        ValueError: ``count`` or ``bits`` out of range.
    """
    need = packed_size(count, bits)
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size < need:
        raise PacketError(f"bit-packed data truncated: {count} values of {bits} bits need {need} bytes, "
                          f"got {buf.size}")
    if buf.size > need:
        raise PacketError(f"bit-packed data has {buf.size - need} trailing bytes: {count} values of {bits} "
                          f"bits need exactly {need} bytes")
    if count == 0:
        return np.zeros(0, dtype=np.uint32)
    used = count * bits
    if used % 8 and int(buf[-1]) >> (used % 8):
        raise PacketError(f"bit-packed data has non-zero padding bits in its last byte "
                          f"(0x{int(buf[-1]):02x}, {used % 8} bits used)")
    return read_uints(buf, count, bits)


def read_uints(buf: NDArray[np.uint8], count: int, bits: int) -> NDArray[np.uint32]:
    """The first ``count`` values of ``bits`` bits from ``buf``, with no length or padding checks.

    Works on whole bytes: eight values of ``bits`` bits fill exactly ``bits`` bytes, so the stream is
    read as ``(count / 8, bits)`` groups and each of the eight values of a group is gathered from the
    at most 5 bytes it spans. Nothing is widened to one byte per bit: the temporaries are about
    ``count`` bytes each, besides the ``4 * count`` bytes of the result.

    Args:
        buf: uint8 array of at least ``ceil(count * bits / 8)`` bytes.
        count: number of values, ``>= 0``.
        bits: width of each value, 1..32.

    Returns:
        uint32 array of shape ``(count,)``.
    """
    out = np.empty(count, dtype=np.uint32)
    groups = count // 8
    _read_groups(buf[:groups * bits].reshape(groups, bits), out[:groups * 8].reshape(groups, 8), bits)
    rest = count - 8 * groups
    if rest:  # the last, partial group, zero-extended to a whole one
        last = np.zeros((1, bits), dtype=np.uint8)
        tail = buf[groups * bits:(groups + 1) * bits]
        last[0, :tail.size] = tail
        vals = np.empty((1, 8), dtype=np.uint32)
        _read_groups(last, vals, bits)
        out[8 * groups:] = vals[0, :rest]
    return out


def _read_groups(groups: NDArray[np.uint8], out: NDArray[np.uint32], bits: int) -> None:
    """Value ``j`` of each group of eight (``groups``: rows of ``bits`` bytes) into ``out[:, j]``."""
    low = np.uint64((1 << bits) - 1)
    for j in range(8):
        start, shift = divmod(j * bits, 8)
        acc = groups[:, start].astype(np.uint64)
        for m in range(1, (shift + bits + 7) // 8):  # the further bytes this value spans
            acc |= groups[:, start + m].astype(np.uint64) << np.uint64(8 * m)
        out[:, j] = (acc >> np.uint64(shift)) & low
