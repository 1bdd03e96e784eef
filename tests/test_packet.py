"""TokenPacket: the golden fixture, exact sizes, round trips, every rejection, and a fuzz test."""

from __future__ import annotations

import dataclasses
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livetok.bench.fuzz_packets import mutate, reseal
from livetok.stream.wire import (
    CRC_SIZE,
    HEADER_SIZE,
    MAGIC,
    MAX_PACKET_BYTES,
    MIN_PACKET_BYTES,
    VERSION,
    MaskMode,
    PacketError,
    TokenPacket,
    encoded_mask_sizes,
    index_width,
    packed_size,
    peek_header,
    verify_packet,
)
from livetok.stream.wire.packet import HEADER

FIXTURE = Path(__file__).parent / "data" / "packet_v1.bin"
MODEL = bytes.fromhex("0123456789abcdef")
FIELDS = ("magic", "version", "flags", "model_id", "frame_index", "timestamp_us", "width", "height", "grid_h",
          "grid_w", "bits", "mode", "k", "mask_bytes", "token_bytes")


def with_fields(data: bytes, seal: bool = True, **changes: int | bytes) -> bytes:
    values = dict(zip(FIELDS, HEADER.unpack_from(data), strict=True))
    values.update(changes)
    out = HEADER.pack(*values.values()) + data[HEADER_SIZE:]
    return reseal(out) if seal else out


def make(n_h: int = 4, n_w: int = 6, bits: int = 10, kept: list[int] | slice | None = None,
         **kw: object) -> TokenPacket:
    mask = np.zeros(n_h * n_w, dtype=bool)
    mask[kept if kept is not None else [0, 5, 6]] = True
    args: dict[str, object] = dict(model_id=MODEL, frame_index=1, timestamp_us=2, keyframe=False,
                                   end_of_stream=False, width=96, height=64, grid_h=n_h, grid_w=n_w,
                                   bits_per_index=bits, mask=mask,
                                   indices=np.arange(int(mask.sum()), dtype=np.uint64) % (1 << bits))
    args.update(kw)
    return TokenPacket(**args)  # type: ignore[arg-type]


# --- constants and the golden fixture -----------------------------------------------------------------------


def test_layout_constants() -> None:
    assert MAGIC == b"LTKP" and VERSION == 1
    assert HEADER_SIZE == 48 == 4 + 1 + 1 + 8 + 4 + 8 + 2 * 4 + 1 + 1 + 4 * 3
    assert MIN_PACKET_BYTES == 52
    assert MAX_PACKET_BYTES == 16 * 1024 * 1024


def test_golden_fixture() -> None:
    data = FIXTURE.read_bytes()
    assert len(data) == 63 == HEADER_SIZE + 2 + 9 + CRC_SIZE
    p = TokenPacket.unpack(data, expect_model_id=MODEL)
    assert p.model_id == MODEL and p.model_id_hex == "0123456789abcdef"
    assert (p.frame_index, p.timestamp_us, p.keyframe, p.end_of_stream) == (7, 1234567, True, False)
    assert (p.width, p.height, p.grid_h, p.grid_w, p.bits_per_index) == (96, 64, 4, 6, 10)
    assert (p.n, p.k) == (24, 7)
    assert np.flatnonzero(p.mask).tolist() == [5, 6, 7, 8, 9, 10, 11]
    assert p.indices.dtype == np.uint32
    assert p.indices.tolist() == [1023, 0, 512, 7, 300, 999, 1]
    h = peek_header(data)
    assert (h.version, h.flags, h.mask_mode, h.k) == (1, 1, MaskMode.RLE, 7)
    assert (h.mask_bytes, h.token_bytes) == (2, 9)
    assert h.packet_size == 63
    assert data[HEADER_SIZE:HEADER_SIZE + 2] == b"\x30\x80"  # the RLE mask, see test_maskcode
    assert data[-4:] == struct.pack("<I", zlib.crc32(data[:-4]))
    assert p.pack() == data
    mask = np.zeros(24, dtype=bool)
    mask[5:12] = True
    rebuilt = TokenPacket(MODEL, 7, 1234567, True, False, 96, 64, 4, 6, 10, mask,
                          np.array([1023, 0, 512, 7, 300, 999, 1], dtype=np.uint16))
    assert rebuilt == p and rebuilt.pack() == data


# --- construction -------------------------------------------------------------------------------------------


def test_sizes_are_exact() -> None:
    for kept in ([], [3], list(range(24)), [0, 23], list(range(0, 24, 2))):
        for bits in (1, 7, 10, 16, 32):
            p = make(bits=bits, kept=kept)
            mask_len = min(encoded_mask_sizes(p.mask).values())
            assert len(p.pack()) == HEADER_SIZE + mask_len + (len(kept) * bits + 7) // 8 + CRC_SIZE


def test_end_of_stream_without_positions() -> None:
    p = TokenPacket(MODEL, 99, 5, False, True, 0, 0, 0, 0, 10, np.zeros(0, dtype=bool), np.zeros(0))
    data = p.pack()
    assert len(data) == MIN_PACKET_BYTES
    q = TokenPacket.unpack(data)
    assert q == p and q.end_of_stream and q.k == q.n == 0


def test_documented_header_rules_for_the_mask() -> None:
    # docs/PACKET.md 1.1: M for INDEX is ceil(k * W / 8) with W = index_width(N), 1 bit at N = 1 (not
    # ceil(log2 1) = 0); the mode is the encoder's (ALL exactly when k = N, also at N = 0; NONE exactly
    # when k = 0 < N; RLE and INDEX shorter than the BITMAP), checked from the header
    one = make(1, 1, kept=[0])
    assert encoded_mask_sizes(one.mask)[MaskMode.INDEX] == 1 and index_width(1) == 1
    data = one.pack()
    with pytest.raises(PacketError, match=r"^mask byte length 0 disagrees with mode INDEX for N=1, k=1 "
                                          r"\(expected 1\)$"):
        peek_header(with_fields(data, mode=MaskMode.INDEX))
    with pytest.raises(PacketError, match=r"^mask mode INDEX is not used for k=1 of N=1 \(the encoder sends ALL"):
        peek_header(with_fields(data[:HEADER_SIZE] + b"\x80" + data[HEADER_SIZE:], mode=MaskMode.INDEX, mask_bytes=1))
    eos = TokenPacket(MODEL, 9, 5, False, True, 0, 0, 0, 0, 10, np.zeros(0, dtype=bool), np.zeros(0)).pack()
    assert peek_header(eos).mask_mode == MaskMode.ALL  # N = 0 is ALL ...
    with pytest.raises(PacketError, match=r"^mask mode NONE needs k = 0 and N > 0, got k=0, N=0 \(use ALL\)$"):
        peek_header(with_fields(eos, mode=MaskMode.NONE))  # ... never NONE
    with pytest.raises(PacketError, match=r"^mask mode ALL needs k = N = 24, got k=7$"):
        peek_header(with_fields(GOOD, mode=MaskMode.ALL, mask_bytes=0))
    with pytest.raises(PacketError, match=r"^mask byte length 3 for mode RLE is not smaller than the 3-byte BITMAP "
                                          r"of N=24 \(a mask is sent in its smallest mode\)$"):
        peek_header(with_fields(GOOD, mask_bytes=3))


def test_equality_and_immutability() -> None:
    a, b = make(), make()
    assert a == b and a != make(kept=[1, 5, 6]) and a != make(frame_index=2) and a != "packet"
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.frame_index = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        a.indices[0] = 5
    with pytest.raises(ValueError, match="read-only"):
        a.mask[0] = False


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model_id": b"1234567"}, r"model_id must be 8 bytes"),
        ({"frame_index": -1}, r"frame_index=-1 out of range 0..4294967295"),
        ({"frame_index": 1 << 32}, r"frame_index=4294967296 out of range"),
        ({"timestamp_us": 1 << 64}, r"timestamp_us=18446744073709551616 out of range"),
        ({"frame_index": True}, r"frame_index must be an int"),
        ({"keyframe": 1}, r"keyframe must be a bool"),
        ({"width": 16385}, r"frame size 16385x64 out of range"),
        ({"width": 0}, r"frame size 0x64 is empty but the grid has 24 positions"),
        ({"bits_per_index": 0}, r"bits_per_index 0 out of range 1..32"),
        ({"bits_per_index": 33}, r"bits_per_index 33 out of range 1..32"),
        ({"mask": np.zeros(23, dtype=bool)}, r"mask must be bool of shape \(24,\)"),
        ({"mask": np.zeros(24, dtype=np.uint8)}, r"mask must be bool of shape \(24,\)"),
        ({"indices": np.array([1, 2])}, r"indices must have shape \(3,\)"),
        ({"indices": np.array([1, 2, 1024])}, r"token index 1024 out of range 0..1023 for 10 bits"),
        ({"indices": np.array([1, -2, 3])}, r"token index -2 out of range"),
        ({"indices": np.array([1.0, 2.0, 3.0])}, r"indices must be unsigned integers, got dtype float64"),
    ],
)
def test_constructor_validation(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        make(**changes)
    assert type(info.value) is ValueError  # bad arguments are not bad bytes


def test_constructor_grid_limits() -> None:
    with pytest.raises(ValueError, match=r"grid 2048x2049 has 4196352 positions, the limit is 4194304"):
        make(n_h=2048, n_w=2049, kept=[])
    with pytest.raises(ValueError, match=r"grid 0x6 is empty; only an end-of-stream packet"):
        make(n_h=0, kept=[])


def test_pack_refuses_oversized_packet() -> None:
    p = make(n_h=2048, n_w=2048, bits=32, kept=slice(None))  # 4 Mi positions x 4 bytes = 16 MiB of tokens
    with pytest.raises(ValueError, match=r"packet would be 16777268 bytes, over the limit of 16777216"):
        p.pack()


# --- rejection of bad bytes ---------------------------------------------------------------------------------

GOOD = FIXTURE.read_bytes()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (GOOD[:10], r"^truncated: need 48 bytes for the header, got 10$"),
        (b"", r"^truncated: need 48 bytes for the header, got 0$"),
        (b"XXXX" + GOOD[4:], r"^bad magic b'XXXX', expected b'LTKP'$"),
        (GOOD[:4] + b"\x03" + GOOD[5:], r"^unsupported packet version 3 \(this build supports versions 1 and 2 "
                                          r"after b'LTKP', and version 3, whose first byte is 0xf0\.\.0xf3\)$"),
        (with_fields(GOOD, flags=0x05), r"^reserved flag bits set: flags=0x05"),
        (GOOD[:50] + b"\x00" + GOOD[51:], r"^CRC mismatch: stored 0x[0-9a-f]{8}, computed 0x[0-9a-f]{8}$"),
        (GOOD[:-1],
         r"^truncated: header announces 63 bytes \(48 header \+ 2 mask \+ 9 token \+ 4 CRC\), got 62$"),
        (GOOD + b"\x00", r"^1 trailing bytes after the CRC \(header announces 63 bytes\)$"),
        (with_fields(GOOD, mask_bytes=0xFFFFFFFF, seal=False),
         r"^header announces a packet of 4294967356 bytes"),
        (with_fields(GOOD + b"\x00", token_bytes=10),
         r"^token byte length 10 disagrees with k=7 at 10 bits per index \(expected 9\)$"),
        (with_fields(GOOD, mode=MaskMode.BITMAP),
         r"^mask byte length 2 disagrees with mode BITMAP for N=24, k=7 \(expected 3\)$"),
        (with_fields(GOOD, mode=9),
         r"^unknown mask mode 9 \(known: 0=ALL, 1=NONE, 2=BITMAP, 3=RLE, 4=INDEX\)$"),
        (with_fields(GOOD, k=25), r"^k=25 exceeds the 24 positions of the 4x6 grid$"),
        (with_fields(GOOD[:-5] + GOOD[-4:], k=6, token_bytes=8),
         r"^mask keeps 7 positions but the header says k=6$"),
        (with_fields(GOOD, grid_h=2048, grid_w=2049),
         r"^grid 2048x2049 has 4196352 positions, the limit is 4194304$"),
        (with_fields(GOOD, width=16385), r"^frame size 16385x64 out of range \(each side 0..16384\)$"),
        (with_fields(GOOD, bits=0), r"^bits_per_index 0 out of range 1..32$"),
        (with_fields(GOOD, grid_h=0),
         r"^grid 0x6 is empty; only an end-of-stream packet may have no positions$"),
        # the index section's padding bits are not zero: not something pack() makes
        (reseal(GOOD[:-5] + bytes([GOOD[-5] | 0x80]) + GOOD[-4:]),
         r"^bit-packed data has non-zero padding bits"),
        # the mask section: a zero run in the middle of the RLE stream
        (reseal(GOOD[:HEADER_SIZE] + b"\x3c\x80" + GOOD[HEADER_SIZE + 2:]),
         r"^RLE mask has a zero-length run"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_unpack_rejects(data: bytes, message: str) -> None:
    with pytest.raises(PacketError, match=message):
        TokenPacket.unpack(data)


def test_unpack_rejects_oversized_input() -> None:
    with pytest.raises(PacketError, match=r"^packet of 16777217 bytes exceeds the limit of 16777216$"):
        TokenPacket.unpack(bytes(MAX_PACKET_BYTES + 1))


def test_model_mismatch_names_both_ids() -> None:
    other = bytes.fromhex("fedcba9876543210")
    expected = "packet is for model 0123456789abcdef, this receiver runs model fedcba9876543210"
    with pytest.raises(PacketError, match=f"^{re.escape(expected)}$"):
        TokenPacket.unpack(GOOD, expect_model_id=other)
    with pytest.raises(ValueError, match=r"expect_model_id must be 8 bytes") as info:
        TokenPacket.unpack(GOOD, expect_model_id=b"short")
    assert type(info.value) is ValueError


def test_unpack_accepts_bytes_likes_only() -> None:
    assert TokenPacket.unpack(bytearray(GOOD)) == TokenPacket.unpack(memoryview(GOOD))
    with pytest.raises(PacketError, match=r"expected a bytes-like packet, got int"):
        TokenPacket.unpack(123)  # type: ignore[arg-type]
    with pytest.raises(PacketError, match=r"expected a bytes-like packet, got str"):
        TokenPacket.unpack("LTKP")  # type: ignore[arg-type]


def test_peek_and_verify() -> None:
    h = peek_header(GOOD[:HEADER_SIZE])  # the header alone is enough to route
    assert (h.frame_index, h.keyframe, h.end_of_stream, h.n, h.model_id) == (7, True, False, 24, MODEL)
    assert verify_packet(GOOD) == h
    with pytest.raises(PacketError, match=r"^reserved flag bits set"):
        peek_header(with_fields(GOOD, flags=0x80))
    with pytest.raises(PacketError, match=r"^CRC mismatch"):
        verify_packet(GOOD[:-1] + bytes([GOOD[-1] ^ 1]))
    with pytest.raises(PacketError, match=r"^truncated: need 48 bytes for the header, got 47$"):
        peek_header(GOOD[:47])


# --- properties ---------------------------------------------------------------------------------------------


@st.composite
def packets(draw: st.DrawFn) -> TokenPacket:
    grid_h, grid_w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    n = grid_h * grid_w
    bits = draw(st.integers(1, 32))
    style = draw(st.sampled_from(["iid", "block", "all", "none"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if style == "iid":
        mask = rng.random(n) < draw(st.sampled_from([0.05, 0.3, 0.7, 0.95]))
    else:
        mask = np.zeros(n, dtype=bool)
        if style == "block":
            a = draw(st.integers(0, n))
            mask[a:draw(st.integers(a, n))] = True
        elif style == "all":
            mask[:] = True
    indices = rng.integers(0, 1 << bits, size=int(mask.sum()), dtype=np.uint64)
    keyframe = draw(st.booleans()) and bool(mask.any())  # a keyframe carries tokens
    return TokenPacket(draw(st.binary(min_size=8, max_size=8)), draw(st.integers(0, 2**32 - 1)),
                       draw(st.integers(0, 2**64 - 1)), keyframe, draw(st.booleans()),
                       draw(st.integers(1, 16384)), draw(st.integers(1, 16384)), grid_h, grid_w, bits, mask,
                       indices)


@settings(max_examples=200, deadline=None)
@given(p=packets())
def test_round_trip(p: TokenPacket) -> None:
    data = p.pack()
    assert len(data) == verify_packet(data).packet_size
    q = TokenPacket.unpack(data, expect_model_id=p.model_id)
    assert q == p
    assert q.pack() == data


def survives(data: bytes) -> None:
    """Only PacketError may come out; anything accepted must re-pack into the same bytes (the parser takes
    only what the encoder makes: one byte string per packet)."""
    try:
        p = TokenPacket.unpack(data)
    except PacketError:
        return
    assert p.pack() == data
    assert TokenPacket.unpack(p.pack()) == p


def _pool() -> list[bytes]:
    """Seeded valid packets covering every mask mode and a spread of widths: the fuzz seeds."""
    rng = np.random.default_rng(1234)
    out = [GOOD]
    for i in range(60):
        grid_h, grid_w = int(rng.integers(1, 13)), int(rng.integers(1, 13))
        bits = int(rng.integers(1, 33))
        mask = rng.random(grid_h * grid_w) < [0.0, 0.05, 0.5, 0.95, 1.0][i % 5]
        if i % 7 == 0:
            mask = np.zeros(grid_h * grid_w, dtype=bool)
            mask[grid_w:2 * grid_w] = True
        indices = rng.integers(0, 1 << bits, size=int(mask.sum()), dtype=np.uint64)
        keyframe = i % 2 == 0 and bool(mask.any())  # a keyframe carries tokens
        out.append(TokenPacket(MODEL, i, i * 33_333, keyframe, i % 9 == 0, 64, 48, grid_h, grid_w, bits,
                               mask, indices).pack())
    eos = TokenPacket(MODEL, 0, 0, False, True, 0, 0, 0, 0, 8, np.zeros(0, dtype=bool), np.zeros(0))
    out.append(eos.pack())
    return out


POOL = _pool()


def test_pool_covers_every_mask_mode() -> None:
    assert {peek_header(d).mask_mode for d in POOL} == set(MaskMode)


# Hypothesis costs about 2 ms per example, so each example fans out: its seed mutates 8 pool packets
# (livetok.bench.fuzz_packets.mutate, the fuzzer's own mutator), anywhere (sealed and not) and, to reach
# the section decoders, in place inside the mask and token sections behind a valid header and CRC: 250
# examples, about 6000 unpacks.
@settings(max_examples=250, deadline=None)
@given(start=st.integers(0, len(POOL) - 1), seed=st.integers(0, 2**32 - 1))
def test_fuzz_mutated_packets(start: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for data in (POOL + POOL)[start:start + 8]:
        broken = mutate(rng, data)
        survives(broken)
        if len(broken) >= CRC_SIZE:
            survives(reseal(broken))
        if len(data) > MIN_PACKET_BYTES:
            sections = mutate(rng, data[HEADER_SIZE:-CRC_SIZE], keep_length=True)
            survives(reseal(data[:HEADER_SIZE] + sections + data[-CRC_SIZE:]))


@settings(max_examples=300, deadline=None)
@given(grid=st.tuples(st.integers(1, 12), st.integers(1, 12)), bits=st.integers(1, 32), k=st.integers(0, 144),
       rle_len=st.integers(0, 8), seed=st.binary(min_size=1, max_size=32))
def test_fuzz_consistent_headers(grid: tuple[int, int], bits: int, k: int, rle_len: int, seed: bytes) -> None:
    # headers that pass every header check, around random section bytes of the announced lengths, so
    # the mask decoders and the popcount/padding checks see arbitrary data; every mask mode is tried
    grid_h, grid_w = grid
    n, k = grid_h * grid_w, k % (grid_h * grid_w + 1)
    lengths = {0: 0, 1: 0, 2: (n + 7) // 8, 3: rle_len, 4: packed_size(k, index_width(n))}
    token_len = packed_size(k, bits)
    filler = seed * (1 + (max(lengths.values()) + token_len) // len(seed))
    for mode, mask_len in lengths.items():
        head = HEADER.pack(MAGIC, VERSION, 1, MODEL, 0, 0, 64, 48, grid_h, grid_w, bits, mode, k, mask_len,
                           token_len)
        survives(reseal(head + filler[:mask_len] + filler[mask_len:mask_len + token_len] + bytes(4)))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_fuzz_random_bytes(data: bytes) -> None:
    survives(data)
    survives(MAGIC + bytes([VERSION]) + data)
