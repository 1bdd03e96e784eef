"""Packet version 3 (docs/PACKET.md §7): version 2's payload behind a header trimmed of what the stream does
not change. The golden fixture and worked example, header sizes, the CRC over the stream's model id, a lost
packet caught by the frame index's low byte, every rejection, a seeded mutation fuzz, `.ltk` recordings,
and versions 1 and 2 beside it."""

from __future__ import annotations

import asyncio
import json
import struct
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from livetok.bench.fuzz_packets import mutate, reseal, run_loop
from livetok.engine.config import BudgetConfig, SenderConfig
from livetok.engine.model import Tokenizer
from livetok.stream.packet_receiver import PacketReceiver
from livetok.stream.session import SenderSession
from livetok.stream.wire import (
    CRC_SIZE,
    HEADER_V3_MAX_SIZE,
    HEADER_V3_MIN_SIZE,
    MARKER_V3,
    MIN_PACKET_BYTES_V3,
    VERSION_V3,
    VERSIONS,
    CoderState,
    Damage,
    LtkReader,
    LtkWriter,
    PacketError,
    TokenPacket,
    extend_frame_index,
    packet_version,
    peek_header,
    read_ltk,
    verify_packet,
)
from livetok.stream.wire.packet import FLAG_END_OF_STREAM, FLAG_KEYFRAME, pack_header_v2, pack_header_v3

from .data.make_packet_v2_fixture import LEVELS, MODEL, fixture_packets
from .data.make_packet_v3_fixture import fixture_bytes

HERE = Path(__file__).parent / "data"
OTHER = bytes.fromhex("fedcba9876543210")


def records(blob: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(blob):
        (size,) = struct.unpack_from("<I", blob, i)
        out.append(blob[i + 4:i + 4 + size])
        i += 4 + size
    return out


GOLDEN = records((HERE / "packet_v3.bin").read_bytes())
GOLDEN_V2 = records((HERE / "packet_v2.bin").read_bytes())
G0, G1 = GOLDEN[0], GOLDEN[1]


def crc3(key: bytes, body: bytes) -> bytes:
    """§7.4, written out: zlib.crc32 over the model id, then the packet's bytes before the CRC."""
    return struct.pack("<I", zlib.crc32(key + body))


def states(packets: list[bytes]) -> list[CoderState]:
    """The coder state before each packet, and after the last."""
    out = [CoderState.empty(LEVELS)]
    for data in packets:
        out.append(TokenPacket.unpack_any(data, out[-1])[1])
    return out


ST = states(GOLDEN)  # ST[i]: the state packet i decodes with


def frame_256x192(index: int, keyframe: bool, kept: int, ts: int, seed: int = 0,
                  model: bytes = MODEL) -> TokenPacket:
    rng = np.random.default_rng(seed)
    mask = np.zeros(768, bool)
    mask[rng.choice(768, kept, replace=False)] = True
    return TokenPacket(model, index, ts, keyframe, False, 256, 192, 24, 32, 10, mask,
                       rng.integers(0, 1000, kept).astype(np.uint32))


# --- layout and the golden fixture ----------------------------------------------------------------------------


def test_layout_constants() -> None:
    assert VERSIONS == (1, 2, 3) and VERSION_V3 == 3 and MARKER_V3 == 0xF0
    assert ord("L") != MARKER_V3  # versions 1 and 2 begin with b"LTKP": the first byte tells them apart
    assert HEADER_V3_MIN_SIZE == 1 + 1 + 1 + 1 == 4  # first byte, low byte, one-byte delta and k
    assert HEADER_V3_MAX_SIZE == 1 + 8 + 5 + 10 + 5 + 4 * 3 + 2 == 43  # a keyframe, every varint its longest
    assert MIN_PACKET_BYTES_V3 == 8
    assert [packet_version(d) for d in (G0, G1, GOLDEN_V2[0], fixture_packets()[0].pack())] == [3, 3, 2, 1]


def test_golden_fixture() -> None:
    assert [len(d) for d in GOLDEN] == [35, 26, 38, 23]  # version 2: 40, 39, 51, 28
    assert fixture_bytes() == GOLDEN  # the maker still makes these bytes
    got, st = [], CoderState.empty(LEVELS)
    for data in GOLDEN:
        p, st = TokenPacket.unpack_v3(data, st, expect_model_id=MODEL)
        got.append(p)
    assert got == fixture_packets()  # frame indices, timestamps, model id and geometry restored from the state
    st = CoderState.empty(LEVELS)
    for p, data in zip(fixture_packets(), GOLDEN, strict=True):
        again, st = p.pack_v3(st)
        assert again == data
    # the keyframe: 0xf0 | keyframe, the model id, then version 2's varints and geometry, payload, CRC
    assert G0.hex(" ") == ("f1 01 23 45 67 89 ab cd ef 07 87 ad 4b 07 60 40 04 06 0a"
                           " 07 f0 02 09 58 ed 05 eb 1c 97 9e 61 43 fa 8b a5")
    # a non-keyframe: 0xf0, frame 8's low byte, 33 333 µs since frame 7 (b5 84 02), k = 9, payload, CRC
    assert G1.hex(" ") == "f0 08 b5 84 02 09 07 fc 01 b8 ed 77 b4 8d d1 70 a4 61 96 48 f8 a1 96 a9 74 10"
    assert GOLDEN[2][:6].hex(" ") == "f0 09 b5 84 02 18"  # frame 9, k = 24 (all kept: no mask coded)
    # the end of stream: 0xf0 | end of stream, the model id, frame 10, 1 334 566 µs, k 0, an empty grid
    assert GOLDEN[3].hex(" ") == "f2 01 23 45 67 89 ab cd ef 0a a6 ba 51 00 00 00 00 00 0a 7c 1f 78 0c"
    # the CRC of every packet covers the model id first; a non-keyframe's is the stream's (not in its bytes)
    for data in GOLDEN:
        assert data[-CRC_SIZE:] == crc3(MODEL, data[:-CRC_SIZE])
    # the payloads are version 2's, byte for byte (same coder, same state)
    for v3, v2 in zip(GOLDEN, GOLDEN_V2, strict=True):
        assert v3[peek_header(v3).header_size:-CRC_SIZE] == v2[peek_header(v2).header_size:-CRC_SIZE]
    assert [peek_header(d).header_size for d in GOLDEN] == [19, 6, 6, 19]  # version 2: 24, 19, 19, 24


def test_worked_example_packets() -> None:
    """docs/PACKET.md §7.6: the two frames of §6.7 as version 3 packets, byte for byte."""
    frames = [TokenPacket(MODEL, 0, 0, True, False, 16, 16, 2, 2, 10, np.array([1, 0, 0, 1], bool),
                          np.array([123, 999], np.uint32)),
              TokenPacket(MODEL, 1, 33_333, False, False, 16, 16, 2, 2, 10, np.array([1, 1, 0, 1], bool),
                          np.array([123, 124, 999], np.uint32))]
    want = ["f1 01 23 45 67 89 ab cd ef" + " 00 00 02 10 10 02 02 0a" + " 97 cc 33 a5" + " 98 7b 4c 98",
            "f0 01 b5 84 02 03" + " d7 2d 0a 0d dc 41 68" + " 82 d6 e3 56"]
    tx = rx = CoderState.empty(LEVELS)
    for p, hex_bytes in zip(frames, want, strict=True):
        data, tx = p.pack_v3(tx)
        assert data.hex(" ") == hex_bytes
        got, rx = TokenPacket.unpack_v3(data, rx)
        assert got == p
    assert (len(bytes.fromhex(want[0])), len(bytes.fromhex(want[1]))) == (25, 17)  # version 2: 30 and 30
    assert rx.model_id == MODEL and rx.frame_index == 1 and rx.timestamp_us == 33_333


# --- header sizes -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("what", "frame", "ts", "prev_ts", "k", "v2", "v3"), [
    # a file's non-keyframes (timestamps from 0, 30 fps): v2 20-22 bytes; v3 6-7 whatever the time
    ("file, 1 s", 30, 1_000_000, 966_667, 200, 14 + 1 + 3 + 2, 1 + 1 + 3 + 2),
    ("file, 1 s, k < 128", 30, 1_000_000, 966_667, 100, 14 + 1 + 3 + 1, 1 + 1 + 3 + 1),
    ("file, 60 s", 1800, 60_000_000, 59_966_667, 200, 14 + 2 + 4 + 2, 1 + 1 + 3 + 2),
    ("file, 5 min", 9000, 300_000_000, 299_966_667, 200, 14 + 2 + 5 + 2, 1 + 1 + 3 + 2),
    # a camera's (wall-clock µs, ~1.7e15: 8 bytes in v2; the difference still 3)
    ("camera", 300, 1_700_000_010_000_000, 1_700_000_009_966_000, 200, 14 + 2 + 8 + 2, 1 + 1 + 3 + 2),
    ("camera, frame 20000", 20000, 1_700_000_666_700_000, 1_700_000_666_666_000, 768, 14 + 3 + 8 + 2, 7),
])
def test_non_keyframe_header_sizes_at_256x192(what: str, frame: int, ts: int, prev_ts: int, k: int, v2: int,
                                              v3: int) -> None:
    """docs/PACKET.md §7.2: 1 (first byte) + 1 (low byte) + the difference (3 bytes up to 2.1 s) + k."""
    assert len(pack_header_v2(0, MODEL, frame, ts, k)) == v2
    assert len(pack_header_v3(0, MODEL, frame & 0xFF, ts - prev_ts, k)) == v3
    key = pack_header_v3(FLAG_KEYFRAME, MODEL, frame, ts, k, (256, 192, 24, 32, 10))
    assert len(key) == len(pack_header_v2(FLAG_KEYFRAME, MODEL, frame, ts, k, (256, 192, 24, 32, 10))) - 5


def test_header_sizes_of_real_streams() -> None:
    """The packets pack_v3 makes at 256x192 over 1.3 s, from a file and from a camera (with jitter): 10-11
    bytes of header and CRC per non-keyframe, where version 2 spends 23-24 (a file's first 2 s; 24-26
    later) and 28-29 (a camera's, 29-30 past frame 127)."""
    for start in (0, 1_700_000_000_000_000):  # a file's timestamps, a camera's
        st2 = st3 = CoderState.empty(LEVELS)
        sizes2, sizes3, keys = [], [], []
        for i in range(40):
            p = frame_256x192(i, i % 20 == 0, 100 + 10 * i, start + round(i * 1e6 / 30) + (i % 3) * 700, seed=i)
            d2, st2 = p.pack_v2(st2)
            d3, st3 = p.pack_v3(st3)
            h2, h3 = peek_header(d2).header_size, peek_header(d3).header_size
            assert d2[h2:-4] == d3[h3:-4]  # the same payload
            (keys if p.keyframe else sizes3).append(h3 + CRC_SIZE)
            if not p.keyframe:
                sizes2.append(h2 + CRC_SIZE)
        assert sorted(set(sizes3)) == [10, 11]  # k < 128, k >= 128
        assert sorted(set(sizes2)) == ([23, 24] if start == 0 else [28, 29])
        # the keyframes (k = 100 at frame 0, 300 at frame 20): 5 bytes less than version 2's 28, 31 and 35, 36
        assert keys == ([23, 26] if start == 0 else [30, 31])


# --- the CRC covers the stream's model id -------------------------------------------------------------------------


def test_the_model_id_is_checked_on_every_packet_without_travelling() -> None:
    # a keyframe carries it: refused by expect_model_id, as in version 2
    with pytest.raises(PacketError, match=r"^packet is for model 0123456789abcdef, this receiver runs model "
                                          r"fedcba9876543210$"):
        TokenPacket.unpack_v3(G0, ST[0], expect_model_id=OTHER)
    # a non-keyframe does not: fed to another model's stream (a state its keyframe started), it fails its CRC
    other = replace(fixture_packets()[0], model_id=OTHER)
    _, other_state = TokenPacket.unpack_v3(other.pack_v3(CoderState.empty(LEVELS))[0], CoderState.empty(LEVELS))
    assert other_state.model_id == OTHER and other_state.frame_index == ST[1].frame_index
    with pytest.raises(PacketError, match=r"^CRC mismatch: stored 0x[0-9a-f]{8}, computed 0x[0-9a-f]{8} over model "
                                          r"fedcba9876543210 and the packet: corrupt, truncated \(a version 3 packet "
                                          r"carries no length\), or not this stream's"):
        TokenPacket.unpack_v3(G1, other_state)
    # a relay or recorder checks it with the stream's model id (from its description)
    assert verify_packet(G1, model_id=MODEL).model_id == MODEL
    with pytest.raises(PacketError, match=r"^CRC mismatch: .* over model fedcba9876543210 and the packet"):
        verify_packet(G1, model_id=OTHER)
    with pytest.raises(PacketError, match=r"^a version 3 non-keyframe's CRC covers its stream's model id, which "
                                          r"the packet does not carry: check it with the stream's model id or coder "
                                          r"state$"):
        verify_packet(G1)
    # the model cannot change between keyframes: a sender refuses to make such a packet
    with pytest.raises(ValueError, match=r"^a non-keyframe of model fedcba9876543210 cannot follow the coder "
                                         r"state's frames of model 0123456789abcdef: the model changes only at a "
                                         r"keyframe$"):
        replace(fixture_packets()[1], model_id=OTHER).pack_v3(ST[1])
    # a CRC of the packet alone (version 2's rule) is not version 3's
    plain = G1[:-CRC_SIZE] + struct.pack("<I", zlib.crc32(G1[:-CRC_SIZE]))
    with pytest.raises(PacketError, match=r"^CRC mismatch"):
        TokenPacket.unpack_v3(plain, ST[1])


def test_a_lost_packet_is_caught_by_the_low_byte() -> None:
    with pytest.raises(PacketError, match=r"^a non-keyframe whose frame index ends in byte 0x09 does not follow "
                                          r"frame 7, the last one this coder state decoded \(frame 8 ends in 0x08\): "
                                          r"a packet is missing or out of order; decode in order, and after a loss "
                                          r"wait for, or request, a keyframe$"):
        TokenPacket.unpack_v3(GOLDEN[2], ST[1])  # frame 8 lost
    with pytest.raises(PacketError, match=r"ends in byte 0x08 does not follow frame 8"):
        TokenPacket.unpack_v3(G1, ST[2])  # frame 8 again (a repeat)
    with pytest.raises(PacketError, match=r"ends in byte 0x08 does not follow"):
        verify_packet(G1, state=ST[2])  # the same check without decoding
    # the caller's state is untouched: the right packet decodes after a refusal
    assert TokenPacket.unpack_v3(G1, ST[1])[0] == fixture_packets()[1]
    # a non-keyframe before any keyframe: refused before its CRC (which needs the state's model id)
    for data in (G1, G1[:-1] + bytes([G1[-1] ^ 1])):
        with pytest.raises(PacketError, match=r"^a non-keyframe cannot be decoded before the stream's first "
                                              r"keyframe \(the coder state is empty\): join at a keyframe$"):
            TokenPacket.unpack_v3(data, ST[0])
    # a sender never skips an index
    with pytest.raises(ValueError, match=r"^frame 9 does not follow frame 7"):
        fixture_packets()[2].pack_v3(ST[1])


def test_a_loss_of_256_frames_passes_the_low_byte_and_fails_the_payload() -> None:
    """docs/PACKET.md §7.3: 256 frames lost in a row leave the low byte right; the packet then decodes against
    the wrong coder state, and the payload's checks refuse it (as they refuse a resealed corruption, 6.6)."""
    p0 = frame_256x192(0, True, 200, 0, seed=1)
    tx = CoderState.empty(LEVELS)
    data, tx = p0.pack_v3(tx)
    _, rx = TokenPacket.unpack_v3(data, CoderState.empty(LEVELS))
    for i in range(1, 258):
        data, tx = frame_256x192(i, False, 200 + i % 50, i * 33_333, seed=i).pack_v3(tx)
    assert data[1] == 257 % 256 == 1 == (rx.frame_index + 1) % 256  # frames 1..256 lost
    with pytest.raises(PacketError, match=r"not what the encoder makes|does not decode|keeps \d+ positions"):
        TokenPacket.unpack_v3(data, rx)


def test_peek_and_verify_of_a_non_keyframe() -> None:
    h = peek_header(G1)  # no state, no model id: relative
    assert (h.version, h.relative, h.frame_index, h.timestamp_us, h.k, h.model_id) == (3, True, 8, 33_333, 9, b"")
    assert (h.has_geometry, h.n, h.header_size, h.keyframe, h.end_of_stream) == (False, 0, 6, False, False)
    v = verify_packet(G1, model_id=MODEL)
    assert v == replace(h, model_id=MODEL, payload_bytes=16)
    full = verify_packet(G1, state=ST[1])  # with the state: every field the packet's own
    assert (full.relative, full.frame_index, full.timestamp_us, full.model_id) == (False, 8, 1_267_900, MODEL)
    assert (full.width, full.height, full.grid_h, full.grid_w, full.bits_per_index) == (96, 64, 4, 6, 10)
    k = peek_header(G0)
    assert (k.relative, k.frame_index, k.timestamp_us, k.model_id, k.n, k.header_size) == (False, 7, 1_234_567,
                                                                                            MODEL, 24, 19)
    assert verify_packet(G0) == replace(k, payload_bytes=12)  # a keyframe verifies on its own
    # the frame index of a relative header, read near the one expected (RTP-style)
    assert [extend_frame_index(8, near) for near in (8, 9, 100, 136, 137, 300)] == [8, 8, 8, 8, 264, 264]
    assert extend_frame_index(250, 5) == 250 and extend_frame_index(0, 2**32 - 1) == 2**32 - 256


def test_timestamps_may_step_back() -> None:
    """The difference is taken mod 2**64: a wall clock that steps back costs one 10-byte varint, no error."""
    p0 = frame_256x192(0, True, 50, 1_700_000_000_000_000)
    p1 = frame_256x192(1, False, 50, 1_699_999_999_990_000, seed=1)  # 10 ms earlier
    d0, tx = p0.pack_v3(CoderState.empty(LEVELS))
    d1, _ = p1.pack_v3(tx)
    assert peek_header(d1).header_size == 1 + 1 + 10 + 1 and peek_header(d1).timestamp_us == 2**64 - 10_000
    _, rx = TokenPacket.unpack_v3(d0, CoderState.empty(LEVELS))
    assert TokenPacket.unpack_v3(d1, rx)[0] == p1


def test_versions_2_and_3_share_the_coder_state() -> None:
    """A stream may alternate between versions 2 and 3 at any packet (one payload, one state); version 1 does
    not touch the state, so after it a version 3 non-keyframe no longer follows."""
    packets = fixture_packets()
    out, st = [], CoderState.empty(LEVELS)
    for p, version in zip(packets, (2, 3, 2, 3), strict=True):
        data, st = p.pack_as(version, st)
        out.append(data)
    assert [packet_version(d) for d in out] == [2, 3, 2, 3]
    assert out[1] == G1 and out[2] == GOLDEN_V2[2]
    rx, got = CoderState.empty(LEVELS), []
    for data in out:
        p, rx = TokenPacket.unpack_any(data, rx)
        got.append(p)
    assert got == packets
    with pytest.raises(PacketError, match=r"^packet version 3 is not version 2: use TokenPacket.unpack_v3"):
        TokenPacket.unpack_v2(G0, ST[0])
    with pytest.raises(PacketError, match=r"^packet version 2 is not version 3: use TokenPacket.unpack_v2"):
        TokenPacket.unpack_v3(GOLDEN_V2[0], ST[0])
    with pytest.raises(PacketError, match=r"^packet version 3 is entropy-coded .* use TokenPacket.unpack_v3"):
        TokenPacket.unpack(G0)
    with pytest.raises(ValueError, match=r"^unknown packet version 4"):
        packets[0].pack_as(4, ST[0])


def test_end_of_stream_on_an_empty_grid_leaves_the_coder_state() -> None:
    eos = fixture_packets()[3]
    data, after = eos.pack_v3(ST[3])
    assert data == GOLDEN[3] and after is ST[3]
    got, after_rx = TokenPacket.unpack_v3(data, ST[0])  # checked against nothing: even before a keyframe
    assert got == eos and after_rx is ST[0]


# --- rejection of bad bytes --------------------------------------------------------------------------------------


def sealed(body: bytes, key: bytes = MODEL) -> bytes:
    return body + crc3(key, body)


@pytest.mark.parametrize(
    ("data", "state", "message"),
    [
        (G1[:3], 1, r"^truncated: need at least 4 bytes for a version 3 header, got 3$"),
        (G0[:8], 0, r"^truncated: the version 3 header ends inside its model_id field \(got 8 bytes\)$"),
        (G0[:15], 0, r"^truncated: the version 3 header ends inside its height field \(got 15 bytes\)$"),
        (G1[:4], 1, r"^truncated: the version 3 header ends inside its timestamp_delta_us field \(got 4 bytes\)$"),
        (G1[:6], 1, r"^truncated: a version 3 packet needs its 6-byte header and a 4-byte CRC, got 6 bytes$"),
        # no length: a packet cut short or run on fails its CRC
        (G1[:-1], 1, r"^CRC mismatch: .* corrupt, truncated \(a version 3 packet carries no length\), or not this "
                     r"stream's"),
        (G0 + b"\x00", 0, r"^CRC mismatch: .* over model 0123456789abcdef and the packet: corrupt, or truncated"),
        (reseal(G1[:-CRC_SIZE] + b"\x00" * 3 + bytes(CRC_SIZE)), 1, r"ends with a zero byte"),
        (reseal(G1[:-CRC_SIZE] + b"\x01" + bytes(CRC_SIZE)), 1, r"not what the encoder makes|does not decode"),
        # reserved flags: bits 2 and 3 of the first byte (0xf4 .. 0xff)
        (sealed(bytes([0xF4]) + G1[1:-CRC_SIZE]), 1, r"^reserved flag bits set: flags=0x04 \(only 0x03 are defined\)$"),
        (sealed(bytes([0xF9]) + G0[1:-CRC_SIZE]), 0, r"^reserved flag bits set: flags=0x09"),
        # varints: not minimal, too long, too wide
        (sealed(G1[:2] + b"\xb5\x84\x82\x00" + G1[5:-CRC_SIZE]), 1,
         r"^header field timestamp_delta_us is not minimally encoded \(a varint may not end in a zero byte\)$"),
        (sealed(G1[:5] + b"\x89\x00" + G1[6:-CRC_SIZE]), 1, r"^header field k is not minimally encoded"),
        (sealed(G0[:9] + b"\x87\x00" + G0[10:-CRC_SIZE]), 0, r"^header field frame_index is not minimally encoded"),
        (sealed(G1[:2] + b"\xff" * 10 + b"\x01" + G1[5:-CRC_SIZE]), 1,
         r"^header field timestamp_delta_us is a varint longer than 10 bytes$"),
        (sealed(G1[:5] + b"\xff\xff\xff\xff\x1f" + G1[6:-CRC_SIZE]), 1,
         r"^header field k = 8589934591 does not fit 32 bits$"),
        (sealed(G0[:14] + b"\xf0\xa2\x04" + G0[15:-CRC_SIZE]), 0, r"^header field width = 70000 does not fit 16 bits$"),
        # header fields against the state's grid (a non-keyframe) or its own (a keyframe)
        (sealed(G1[:5] + b"\x19" + G1[6:-CRC_SIZE]), 1, r"^k=25 exceeds the 24 positions of the 4x6 grid$"),
        (sealed(G1[:6] + b"\x01" * 351), 1,
         r"^payload byte length 351 is too large for N=24, k=9 at 10 bits per index \(at most 350\)$"),
        (sealed(pack_header_v3(FLAG_KEYFRAME, MODEL, 7, 0, 0, (96, 64, 4, 6, 10))), 0,
         r"^a keyframe must carry tokens, got k=0"),
        (sealed(pack_header_v3(FLAG_KEYFRAME, MODEL, 7, 0, 7, (96, 64, 0, 6, 10)) + G0[19:-CRC_SIZE]), 0,
         r"^grid 0x6 is empty; only an end-of-stream packet may have no positions$"),
        # an end-of-stream non-keyframe with a frame carries its model id: it must be the state's
        (sealed(pack_header_v3(FLAG_END_OF_STREAM, OTHER, 8, 1_267_900, 9, (96, 64, 4, 6, 10)) + G1[6:-CRC_SIZE],
                OTHER), 1, r"^an end-of-stream non-keyframe of model fedcba9876543210 cannot follow the coder "
                           r"state's frames of model 0123456789abcdef"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_unpack_v3_rejects(data: bytes, state: int, message: str) -> None:
    with pytest.raises(PacketError, match=message):
        TokenPacket.unpack_v3(data, ST[state])
    with pytest.raises(PacketError):
        TokenPacket.unpack_any(data, ST[state])


def test_mutated_packets_raise_packet_error_only() -> None:
    """2400 seeded mutations of the golden stream, each decoded with the state its original was decoded
    with (the CRC resealed over the model id as a reader computes it): PacketError, or a packet that
    re-packs to exactly the mutated bytes."""
    rng = np.random.default_rng(2025)
    refused = 0
    for i in range(2400):
        j = i % len(GOLDEN)
        bad = mutate(rng, GOLDEN[j])
        if len(bad) > CRC_SIZE and rng.random() < 0.6:
            bad = reseal(bad)  # most get a valid CRC, so that they reach the checks behind it
        try:
            p, _ = TokenPacket.unpack_any(bad, ST[j])
        except PacketError:
            refused += 1
        else:
            assert p.pack_as(packet_version(bad), ST[j])[0] == bad
    assert refused > 2000


def test_the_fuzz_loop_covers_version_3() -> None:
    """livetok.bench.fuzz_packets' loop (v1, v2 and v3 seeds, mutated and resealed): no exception but
    PacketError, and every accepted packet round-trips."""
    tally = run_loop(6000, seed=3, progress=lambda i: None)
    assert tally.crashes == [] and tally.total == 6000 and tally.accepted > 0
    assert any(r.startswith("a non-keyframe whose frame index ends in byte") for r in tally.reasons)


# --- .ltk recordings ----------------------------------------------------------------------------------------------

META = {"model_id": MODEL.hex(), "fps": 30.0, "width": 96, "height": 64, "preset": "default",
        "fsq_levels": list(LEVELS)}


def test_ltk_records_and_replays_v3(tmp_path: Path) -> None:
    path = tmp_path / "v3.ltk"
    with LtkWriter(path, META) as w:
        for data in GOLDEN:
            w.write(data)
    with LtkReader(path) as r:
        assert list(r) == fixture_packets()
        assert list(r.iter_raw()) == GOLDEN
    # a writer checks a non-keyframe's CRC with the file's model id: another model's is refused
    with LtkWriter(tmp_path / "other.ltk", {**META, "model_id": OTHER.hex()}) as w, \
            pytest.raises(PacketError, match=r"^CRC mismatch: .* over model fedcba9876543210"):
        w.write(G1)
    with LtkWriter(tmp_path / "x.ltk", {k: v for k, v in META.items() if k != "fsq_levels"}) as w, \
            pytest.raises(ValueError, match=r"^a version 3 packet needs the FSQ levels"):
        w.write(G0)


def test_ltk_recovery_finds_v3_non_keyframes(tmp_path: Path) -> None:
    """A damaged record in a version 3 recording: the reader finds the intact records after it (a
    non-keyframe by its first byte, a keyframe by its model id), passes over the non-keyframes and resumes
    at the next keyframe, counting the records as for version 2."""
    tx, packets = CoderState.empty(LEVELS), []
    for i in range(12):
        data, tx = frame_256x192(i, i % 6 == 0, 60 + i, i * 33_333, seed=i).pack_v3(tx)
        packets.append(data)
    path = tmp_path / "damaged.ltk"
    with LtkWriter(path, {**META, "width": 256, "height": 192}) as w:
        for data in packets:
            w.write(data)
    with LtkReader(path) as r:
        offset = r.data_offset + sum(4 + len(d) for d in packets[:2])  # record #2
    raw = bytearray(path.read_bytes())
    raw[offset + 4 + 8] ^= 0x20  # a bit of frame 2's payload
    path.write_bytes(bytes(raw))
    with LtkReader(path) as r:
        items = list(r.recover())
    damage = [d for d in items if isinstance(d, Damage)]
    got = [p.frame_index for p in items if isinstance(p, TokenPacket)]
    assert got == [0, 1, 6, 7, 8, 9, 10, 11]
    assert len(damage) == 1 and damage[0].number == 2 and damage[0].records == 4 and damage[0].resumed
    assert "CRC mismatch" in damage[0].error
    _, before, err = read_ltk(path)
    assert [p.frame_index for p in before] == [0, 1] and err is not None


# --- the live receiver: packets out of order, a long silence -----------------------------------------------------


class _Receiver(PacketReceiver):
    def __init__(self, model: Tokenizer) -> None:
        super().__init__(model, gap_timeout_s=10.0, end_on_eos=False, clock=lambda: self.now)
        self.now = 0.0
        self.requests: list[dict[str, object]] = []

    async def send_keyframe_request(self, stream: str, payload: str) -> None:
        self.requests.append(json.loads(payload))


def _stream(model: Tokenizer, frames: list[np.ndarray], count: int, keyframes: tuple[int, ...]) -> list[bytes]:
    tx = SenderSession(model, SenderConfig(budget=BudgetConfig(policy="fixed", rate=0.5), keyframe_interval=0))
    return [tx.encode(frames[i % len(frames)], timestamp_us=1_700_000_000_000_000 + i * 33_333,
                      force_keyframe=i in keyframes).data for i in range(count)]


def test_the_receiver_orders_v3_packets_by_their_low_byte(tiny_model: Tokenizer, real_frames: np.ndarray) -> None:
    frames = [np.ascontiguousarray(f[:48, :64]) for f in real_frames]
    sent = _stream(tiny_model, frames, 12, (0,))
    assert all(packet_version(d) == 3 for d in sent) and not peek_header(sent[1]).keyframe
    rx = _Receiver(tiny_model)
    order = [0, 2, 1, 3, 5, 4, 4, 6, 7, 9, 8, 10, 11]  # swaps, and a repeat

    async def run() -> list[tuple[int, int]]:
        for i in order:
            await rx.feed("cam", sent[i])
        return [(f.frame_index, f.timestamp_us) for f in rx.take_ready()]

    got = asyncio.run(run())
    assert got == [(i, 1_700_000_000_000_000 + i * 33_333) for i in range(12)]
    c = rx.streams["cam"].counters
    assert (c.frames_decoded, c.duplicates, c.frames_lost, c.packets_rejected, c.conflicting_packets) == (12, 1, 0, 0,
                                                                                                          0)


def test_the_receiver_counts_a_long_silence_as_lost(tiny_model: Tokenizer, real_frames: np.ndarray) -> None:
    """200 frames lost in a row (60..259): the next packets' low bytes read nearest as frames 4.., behind the
    expected 60, on indices received with other bytes. The receiver places them 256 on (docs/PACKET.md
    §7.3), sees the gap, asks for a keyframe, counts the frames lost and resumes at the keyframe."""
    frames = [np.ascontiguousarray(f[:48, :64]) for f in real_frames]
    sent = _stream(tiny_model, frames, 275, (0, 270))
    rx = _Receiver(tiny_model)
    got: list[int] = []

    async def run() -> None:
        for i in [*range(60), *range(260, 270)]:
            await rx.feed("cam", sent[i])
            got.extend(f.frame_index for f in rx.take_ready())  # the frames out (a queue of 64)
        rx.now = 20.0  # the gap times out
        await rx.poll_gaps()
        for i in range(270, 275):
            await rx.feed("cam", sent[i])
        got.extend(f.frame_index for f in rx.take_ready())

    asyncio.run(run())
    c = rx.streams["cam"].counters
    assert got == [*range(60), *range(270, 275)]  # nothing decoded against the wrong state
    assert c.frames_lost == 210 and c.duplicates == 0 and c.packets_rejected == 0  # 60..269: 260.. undecodable
    assert [r["reason"] for r in rx.requests] == ["gap"]
