"""Keep-mask coding: exact bytes per mode, minimal mode choice, round trips, strict decoding."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livetok.stream.wire import (
    MAX_POSITIONS,
    MaskMode,
    PacketError,
    decode_mask,
    encode_mask,
    encode_mask_as,
    encoded_mask_sizes,
    index_width,
)


def mask_of(n: int, kept: list[int] | range) -> np.ndarray:
    m = np.zeros(n, dtype=bool)
    m[list(kept)] = True
    return m


# --- exact encodings ----------------------------------------------------------------------------------------


def test_all_and_none_are_free() -> None:
    assert encode_mask(np.ones(24, dtype=bool)) == (MaskMode.ALL, b"")
    assert encode_mask(np.zeros(24, dtype=bool)) == (MaskMode.NONE, b"")
    assert encode_mask(np.zeros(0, dtype=bool)) == (MaskMode.ALL, b"")  # both apply: the lower mode wins
    assert decode_mask(MaskMode.ALL, b"", 5).tolist() == [True] * 5
    assert decode_mask(MaskMode.NONE, b"", 5).tolist() == [False] * 5
    assert decode_mask(MaskMode.ALL, b"", 0).shape == (0,)


def test_rle_exact_bytes() -> None:
    # runs: 5 dropped, 7 kept, 12 dropped (implicit) -> gamma(6)=00110 gamma(8)=0001000, MSB first
    # 0011 0000 | 1000 [0000 padding] = 0x30 0x80
    m = mask_of(24, range(5, 12))
    assert encoded_mask_sizes(m) == {MaskMode.BITMAP: 3, MaskMode.RLE: 2, MaskMode.INDEX: 5}
    assert encode_mask(m) == (MaskMode.RLE, b"\x30\x80")


def test_rle_gamma_of_long_run() -> None:
    # 0 dropped then 20 kept then 4 dropped: gamma(1)="1", gamma(21)="000010101" -> 10 bits -> 2 bytes
    m = mask_of(24, range(0, 20))
    assert encode_mask_as(m, MaskMode.RLE) == bytes([0b10000101, 0b01000000])
    assert decode_mask(MaskMode.RLE, bytes([0b10000101, 0b01000000]), 24).tolist() == m.tolist()


def test_bitmap_exact_bytes() -> None:
    m = mask_of(8, [1, 3, 5, 7])  # RLE would be 7 x gamma(2) = 21 bits; INDEX 4 x 3 bits = 2 bytes
    assert encoded_mask_sizes(m) == {MaskMode.BITMAP: 1, MaskMode.RLE: 3, MaskMode.INDEX: 2}
    assert encode_mask(m) == (MaskMode.BITMAP, b"\xaa")  # LSB first: position i is bit i % 8
    assert encode_mask_as(mask_of(10, [0, 9]), MaskMode.BITMAP) == b"\x01\x02"


def test_index_exact_bytes() -> None:
    m = mask_of(1000, [3, 999])  # 10-bit positions: 20 bits -> 3 bytes; BITMAP 125, RLE 4
    assert index_width(1000) == 10
    assert encoded_mask_sizes(m) == {MaskMode.BITMAP: 125, MaskMode.RLE: 4, MaskMode.INDEX: 3}
    assert encode_mask(m) == (MaskMode.INDEX, b"\x03\x9c\x0f")


def test_index_width() -> None:
    sizes = (1, 2, 3, 4, 5, 24, 1024, 1025, MAX_POSITIONS)
    assert [index_width(n) for n in sizes] == [1, 1, 2, 2, 3, 5, 10, 11, 22]


def test_tie_prefers_lower_mode() -> None:
    # runs 2/3/4/6/9: RLE = 3+5+5+5 = 18 bits = 3 bytes = BITMAP's 3 bytes -> BITMAP (2) beats RLE (3)
    m = mask_of(24, [*range(2, 5), *range(9, 15)])
    sizes = encoded_mask_sizes(m)
    assert sizes[MaskMode.BITMAP] == sizes[MaskMode.RLE] == 3
    assert encode_mask(m)[0] == MaskMode.BITMAP


# --- properties ---------------------------------------------------------------------------------------------


@st.composite
def masks(draw: st.DrawFn) -> np.ndarray:
    """Masks of 1..300 positions: i.i.d. with a random density, or a few long runs."""
    n = draw(st.integers(1, 300))
    if draw(st.booleans()):
        p = draw(st.sampled_from([0.0, 0.02, 0.2, 0.5, 0.8, 0.98, 1.0]))
        seed = draw(st.integers(0, 2**32 - 1))
        return np.random.default_rng(seed).random(n) < p
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=6)))
    first = draw(st.booleans())
    m = np.zeros(n, dtype=bool)
    for i, (a, b) in enumerate(zip([0, *cuts], [*cuts, n], strict=True)):
        m[a:b] = first ^ bool(i % 2)
    return m


@settings(max_examples=250, deadline=None)
@given(m=masks())
def test_only_the_smallest_mode_decodes(m: np.ndarray) -> None:
    # every mode encodes every mask, but the decoder takes only the encoder's choice: any accepted
    # mask bytes re-encode to themselves, and no mask is read from more bytes than its smallest form
    sizes = encoded_mask_sizes(m)
    assert MaskMode.BITMAP in sizes and MaskMode.RLE in sizes and MaskMode.INDEX in sizes
    best, _ = encode_mask(m)
    for mode, size in sizes.items():
        data = encode_mask_as(m, mode)
        assert len(data) == size
        if mode == best:
            out = decode_mask(mode, data, m.size)
            assert out.dtype == np.bool_
            np.testing.assert_array_equal(out, m)
        else:
            with pytest.raises(PacketError, match=r"not smaller than the|is not the smallest encoding"):
                decode_mask(mode, data, m.size)


@settings(max_examples=250, deadline=None)
@given(m=masks())
def test_encode_mask_picks_the_minimum(m: np.ndarray) -> None:
    mode, data = encode_mask(m)
    actual = {md: len(encode_mask_as(m, md)) for md in encoded_mask_sizes(m)}
    best = min(actual.values())
    assert len(data) == best
    assert mode == min(md for md, size in actual.items() if size == best)
    np.testing.assert_array_equal(decode_mask(mode, data, m.size), m)


def test_large_grid_round_trip() -> None:
    rng = np.random.default_rng(0)
    m = rng.random(1 << 20) < 0.01  # sparse: RLE should win by far over a 131072-byte BITMAP
    mode, data = encode_mask(m)
    assert mode == MaskMode.RLE and len(data) < 20000
    np.testing.assert_array_equal(decode_mask(mode, data, m.size), m)


def test_encode_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"mask must have dtype bool, got int64"):
        encode_mask(np.array([0, 1], dtype=np.int64))
    with pytest.raises(ValueError, match=r"mask must be 1-D \(raster order\), got shape \(2, 3\)"):
        encode_mask(np.zeros((2, 3), dtype=bool))
    with pytest.raises(ValueError, match=r"mask mode ALL cannot represent a mask of 3 positions with 1 kept"):
        encode_mask_as(mask_of(3, [1]), MaskMode.ALL)
    with pytest.raises(ValueError, match=r"unknown mask mode 9"):
        encode_mask_as(mask_of(3, [1]), 9)


# --- strict decoding ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "data", "n", "message"),
    [
        (5, b"", 8, r"unknown mask mode 5 \(known: 0=ALL, 1=NONE, 2=BITMAP, 3=RLE, 4=INDEX\)"),
        (255, b"", 8, r"unknown mask mode 255"),
        (0, b"\x00", 8, r"mask mode ALL carries no bytes, got 1"),
        (1, b"\x00\x00", 8, r"mask mode NONE carries no bytes, got 2"),
        (2, b"", 0, r"mask mode BITMAP is not used for an empty grid"),
        (2, b"\xff", 9, r"BITMAP mask of 9 positions needs exactly 2 bytes, got 1"),
        (2, b"\xff\x00\x00", 9, r"BITMAP mask of 9 positions needs exactly 2 bytes, got 3"),
        (2, b"\xff\x02", 9, r"BITMAP mask has non-zero padding bits in its last byte \(0x02, 1 bits used\)"),
        # RLE and INDEX cases use N >= 9, so that their 1 or 2 bytes are shorter than the BITMAP
        # gamma(10)=0001010 -> a run of 9 dropped covers all 9 positions: nothing left for the implicit run
        (3, bytes([0b00010100]), 9, r"RLE runs overflow the mask: runs up to #0 cover 9 of 9 positions"),
        # gamma(3)=011 gamma(1)=1: a zero-length kept run
        (3, bytes([0b01110000]), 9, r"RLE mask has a zero-length run \(run #1\)"),
        # gamma(4)=00100 (3 dropped), then 11 zero bits: a whole zero byte past the padding
        (3, b"\x20\x00", 24, r"RLE mask has trailing garbage: 11 zero bits after the last run"),
        (3, bytes([0b00000001]), 9, r"RLE mask truncated: gamma code at bit 0 needs 15 bits, 8 left"),
        # position 0 twice (N=24, 5 bits): reads as one position plus 11 zero bits, more than padding
        (4, b"\x00\x00", 24, r"INDEX mask has trailing garbage: 2 bytes but its 1 positions of 5 bits"),
        # positions 3 then 2 (4 bits each, N=9): 0011 0010 -> LSB first
        (4, bytes([0b0010_0011]), 9, r"INDEX mask positions are not strictly increasing \(entry #1: 2"),
        (4, bytes([0b11111]), 24, r"INDEX mask position 31 out of range for 24 positions"),
        (4, bytes([0b111_00001]), 24, r"INDEX mask has non-zero padding bits"),
        (4, b"\x01\x00", 24, r"INDEX mask has trailing garbage: 2 bytes but its 1 positions of 5 bits need 1"),
        # not the encoder's choice: as long as the BITMAP (refused unread), or a larger mode than another
        (4, bytes(5), 8, r"^INDEX mask of 5 bytes is not smaller than the 1-byte BITMAP of 8 positions"),
        (3, bytes(4), 8, r"^RLE mask of 4 bytes is not smaller than the 1-byte BITMAP of 8 positions"),
        (4, bytes(1), 8, r"^INDEX mask of 1 bytes is not smaller than the 1-byte BITMAP"),
        (2, b"\xff", 8, r"^BITMAP mask is not the smallest encoding of its 8 kept of 8 positions: the encoder "
                        r"sends ALL$"),
        (2, b"\x00\x00", 9, r"^BITMAP mask is not the smallest encoding of its 0 kept of 9 positions: .* NONE$"),
        # 3 dropped, 1 kept, 20 dropped: RLE gamma(4) gamma(2) = 8 bits, 1 byte, below BITMAP's 3
        (2, b"\x08\x00\x00", 24, r"^BITMAP mask is not the smallest encoding .*: the encoder sends RLE$"),
        # N=1000, kept {3, 999}: INDEX 3 bytes; its RLE (4 bytes) is refused
        (3, encode_mask_as(mask_of(1000, [3, 999]), MaskMode.RLE), 1000,
         r"^RLE mask is not the smallest encoding of its 2 kept of 1000 positions: the encoder sends INDEX$"),
        (1, b"", 0, r"^mask mode NONE is not used for an empty grid \(use ALL\)$"),
        (2, b"", MAX_POSITIONS + 1, r"mask size 4194305 out of range 0..4194304"),
        (2, b"", -1, r"mask size -1 out of range"),
    ],
)
def test_decode_rejects(mode: int, data: bytes, n: int, message: str) -> None:
    with pytest.raises(PacketError, match=message):
        decode_mask(mode, data, n)


def test_rle_boundaries() -> None:
    # a first run of 0 (position 0 kept) and the implicit last run: 0 dropped, 10 kept, 90 dropped ->
    # gamma(1) gamma(11) = 1 0001011 = 0x8b, one byte (BITMAP 13, INDEX 9)
    m = mask_of(100, range(10))
    assert encode_mask(m) == (MaskMode.RLE, b"\x8b")
    np.testing.assert_array_equal(decode_mask(MaskMode.RLE, b"\x8b", 100), m)
    # the empty RLE stream reads as "all dropped", which is NONE's: refused
    with pytest.raises(PacketError, match=r"RLE mask is not the smallest encoding of its 0 kept of 100 positions"):
        decode_mask(MaskMode.RLE, b"", 100)


@pytest.mark.parametrize("n", [9, 24, 1001])
def test_alternating_mask_is_a_bitmap(n: int) -> None:
    # alternating runs of 1, the densest RLE stream there is (3 bits a position): never smaller than
    # the BITMAP, so refused from its length alone; the BITMAP decodes
    m = np.arange(n) % 2 == 0
    assert encode_mask(m)[0] == MaskMode.BITMAP
    with pytest.raises(PacketError, match=r"^RLE mask of \d+ bytes is not smaller than the"):
        decode_mask(MaskMode.RLE, encode_mask_as(m, MaskMode.RLE), n)
    np.testing.assert_array_equal(decode_mask(MaskMode.BITMAP, encode_mask_as(m, MaskMode.BITMAP), n), m)
