"""Fixed-width integer packing: exact lengths, exact bytes, round trips, strict validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livetok.stream.wire import MAX_BITS, PacketError, pack_uints, packed_size, unpack_uints


@pytest.mark.parametrize("bits", range(1, MAX_BITS + 1))
@pytest.mark.parametrize("count", [0, 1, 2, 7, 8, 9, 63, 100])
def test_exact_length_and_round_trip(bits: int, count: int) -> None:
    rng = np.random.default_rng(bits * 1000 + count)
    values = rng.integers(0, 1 << bits, size=count, dtype=np.uint64)
    data = pack_uints(values, bits)
    assert len(data) == (count * bits + 7) // 8 == packed_size(count, bits)
    out = unpack_uints(data, count, bits)
    assert out.dtype == np.uint32
    assert out.shape == (count,)
    np.testing.assert_array_equal(out, values)


def test_known_bytes_lsb_first() -> None:
    # 1, 2, 3 in 2 bits: stream bits 10 01 11 (LSB first) -> byte 0b00_11_10_01
    assert pack_uints(np.array([1, 2, 3]), 2) == bytes([0b00111001])
    assert pack_uints(np.array([0x3FF]), 10) == b"\xff\x03"
    assert pack_uints(np.array([1]), 1) == b"\x01"
    assert pack_uints(np.array([0xDEADBEEF], dtype=np.uint32), 32) == bytes.fromhex("efbeadde")
    # 3 and 999 in 10 bits: 20 bits -> 3 bytes
    assert pack_uints(np.array([3, 999]), 10) == b"\x03\x9c\x0f"


def test_extremes_of_every_width() -> None:
    for bits in range(1, MAX_BITS + 1):
        values = np.array([0, (1 << bits) - 1, 0, (1 << bits) - 1], dtype=np.uint64)
        assert np.array_equal(unpack_uints(pack_uints(values, bits), 4, bits), values)


def test_accepts_signed_and_narrow_dtypes() -> None:
    for dtype in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16):
        values = np.array([0, 1, 5, 100], dtype=dtype)
        assert np.array_equal(unpack_uints(pack_uints(values, 7), 4, 7), values)


def test_empty() -> None:
    assert pack_uints(np.zeros(0, dtype=np.uint32), 10) == b""
    assert unpack_uints(b"", 0, 10).shape == (0,)


@settings(max_examples=200, deadline=None)
@given(bits=st.integers(1, MAX_BITS), data=st.data())
def test_round_trip_property(bits: int, data: st.DataObject) -> None:
    values = data.draw(st.lists(st.integers(0, (1 << bits) - 1), max_size=200))
    arr = np.array(values, dtype=np.uint64)
    packed = pack_uints(arr, bits)
    assert len(packed) == (len(values) * bits + 7) // 8
    assert unpack_uints(packed, len(values), bits).tolist() == values
    assert unpack_uints(bytearray(packed), len(values), bits).tolist() == values
    assert unpack_uints(memoryview(packed), len(values), bits).tolist() == values


@pytest.mark.parametrize("bits", [0, 33, -1])
def test_bad_width(bits: int) -> None:
    with pytest.raises(ValueError, match=rf"bits must be in 1..32, got {bits}"):
        pack_uints(np.array([0]), bits)
    with pytest.raises(ValueError, match=r"bits must be in 1..32"):
        unpack_uints(b"\x00", 1, bits)


def test_value_too_wide() -> None:
    with pytest.raises(ValueError, match=r"value 1024 does not fit in 10 bits \(max 1023\)"):
        pack_uints(np.array([1, 1024]), 10)
    with pytest.raises(ValueError, match=r"value 2 does not fit in 1 bits"):
        pack_uints(np.array([2]), 1)


def test_bad_values() -> None:
    with pytest.raises(ValueError, match=r"values must be >= 0, got -1"):
        pack_uints(np.array([3, -1]), 8)
    with pytest.raises(ValueError, match=r"integer dtype, got float64"):
        pack_uints(np.array([1.0]), 8)
    with pytest.raises(ValueError, match=r"values must be 1-D, got shape \(2, 2\)"):
        pack_uints(np.zeros((2, 2), dtype=np.uint8), 8)


def test_unpack_truncated() -> None:
    with pytest.raises(PacketError, match=r"truncated: 3 values of 10 bits need 4 bytes, got 3"):
        unpack_uints(b"\x00\x00\x00", 3, 10)


def test_unpack_trailing_bytes() -> None:
    with pytest.raises(PacketError, match=r"2 trailing bytes: 1 values of 8 bits need exactly 1 bytes"):
        unpack_uints(b"\x00\x00\x00", 1, 8)


def test_unpack_nonzero_padding() -> None:
    # 3 values x 2 bits use the low 6 bits; bit 7 set is not something pack_uints makes
    with pytest.raises(PacketError, match=r"non-zero padding bits in its last byte \(0x80, 6 bits used\)"):
        unpack_uints(b"\x80", 3, 2)
    assert unpack_uints(b"\x3f", 3, 2).tolist() == [3, 3, 3]
