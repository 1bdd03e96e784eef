"""Packet version 2 (entropy-coded; docs/PACKET.md §6): the golden fixture, the header (no payload length;
geometry on keyframes and end-of-stream packets only), round trips with the coder state, every rejection,
a seeded mutation fuzz, `.ltk` recordings of v2 streams, and version 1
unchanged beside it."""

from __future__ import annotations

import struct
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from livetok.bench.fuzz_packets import mutate, reseal
from livetok.stream.wire import (
    CRC_SIZE,
    HEADER_SIZE,
    HEADER_V2_MAX_SIZE,
    HEADER_V2_MIN_SIZE,
    MIN_PACKET_BYTES_V2,
    VERSION,
    VERSION_V2,
    CoderState,
    LtkReader,
    LtkWriter,
    PacketError,
    TokenPacket,
    decode_frame,
    encode_frame,
    peek_header,
    read_ltk,
    verify_packet,
)
from livetok.stream.wire.packet import (
    FLAG_END_OF_STREAM,
    FLAG_KEYFRAME,
    HEADER,
    HEADER_V2_FIELDS,
    HEADER_V2_GEOMETRY,
    HEADER_V2_PREFIX,
    max_payload_bytes,
    pack_header_v2,
)

from .data.make_packet_v2_fixture import LEVELS, MODEL, fixture_packets

FIXTURE = Path(__file__).parent / "data" / "packet_v2.bin"
VARINTS = ("frame_index", "timestamp_us", "k")  # every packet
GEOMETRY = ("width", "height", "grid_h", "grid_w", "bits")  # keyframes and end-of-stream packets only


def records(blob: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(blob):
        (size,) = struct.unpack_from("<I", blob, i)
        out.append(blob[i + 4:i + 4 + size])
        i += 4 + size
    return out


def parse_v2_header(data: bytes) -> tuple[dict[str, int | bytes], int]:
    """The header as docs/PACKET.md §6.1 describes it, read independently of livetok: the 14-byte prefix,
    then three LEB128 varints, then five more when flag bit 0 (keyframe) or 1 (end of stream) is set.
    Returns (fields, header length); no checks. The payload is what header and CRC leave of the packet."""
    fields: dict[str, int | bytes] = {"magic": data[:4], "version": data[4], "flags": data[5],
                                      "model_id": data[6:14]}
    pos = 14
    for name in VARINTS + (GEOMETRY if data[5] & 0x03 else ()):
        value = shift = 0
        while True:
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        fields[name] = value
    return fields, pos


GOLDEN = records(FIXTURE.read_bytes())
G0 = GOLDEN[0]
HEAD = parse_v2_header(G0)[1]  # 24 bytes: the keyframe's header (the non-keyframes' are 19)


def with_fields(data: bytes, **changes: int | bytes) -> bytes:
    """``data`` with header fields changed, resealed. The geometry is written when the original has it,
    whatever the new flags say (so a changed flag can misplace it)."""
    values, size = parse_v2_header(data)
    values.update(changes)
    geometry = tuple(values[name] for name in GEOMETRY) if "width" in values else None
    head = pack_header_v2(values["flags"], values["model_id"], *(values[name] for name in VARINTS),  # type: ignore[arg-type]
                          geometry)  # type: ignore[arg-type]
    return reseal(head + data[size:])


def decode_all(packets: list[bytes], state: CoderState | None = None) -> tuple[list[TokenPacket], CoderState]:
    st = state or CoderState.empty(LEVELS)
    out = []
    for data in packets:
        p, st = TokenPacket.unpack_v2(data, st, expect_model_id=MODEL)
        out.append(p)
    return out, st


# --- layout and the golden fixture ----------------------------------------------------------------------------


def test_layout_constants() -> None:
    assert (VERSION, VERSION_V2) == (1, 2)
    assert [name for name, _ in HEADER_V2_FIELDS] == list(VARINTS)
    assert [bits for _, bits in HEADER_V2_FIELDS] == [32, 64, 32]
    assert [name for name, _ in HEADER_V2_GEOMETRY] == [*GEOMETRY[:4], "bits_per_index"]
    assert [bits for _, bits in HEADER_V2_GEOMETRY] == [16, 16, 16, 16, 8]
    assert HEADER_V2_MIN_SIZE == 14 + 3 == 17  # a non-keyframe, every varint one byte
    assert HEADER_V2_MAX_SIZE == 14 + 5 + 10 + 5 + 4 * 3 + 2 == 48  # a keyframe, every varint its longest
    assert MIN_PACKET_BYTES_V2 == 21
    # magic, version, flags and model_id sit at the same offsets in both versions
    assert HEADER.format[:7] == HEADER_V2_PREFIX.format == "<4sBB8s"
    assert max_payload_bytes(768, 768, 10) == 3 * (768 + 7680) + 8


def test_golden_fixture() -> None:
    assert [len(d) for d in GOLDEN] == [40, 39, 51, 28]
    want = fixture_packets()
    got, st = decode_all(GOLDEN)
    assert got == want
    assert st.grid == (4, 6) and st.prev_mask is not None and st.prev_mask.all()
    # the same stream packs to the identical bytes
    st = CoderState.empty(LEVELS)
    for p, data in zip(want, GOLDEN, strict=True):
        again, st = p.pack_v2(st)
        assert again == data
    # the first packet (a keyframe), field by field (docs/PACKET.md §6.1)
    h, size = parse_v2_header(GOLDEN[0])
    assert h == {"magic": b"LTKP", "version": 2, "flags": 1, "model_id": MODEL, "frame_index": 7,
                 "timestamp_us": 1234567, "k": 7, "width": 96, "height": 64, "grid_h": 4, "grid_w": 6, "bits": 10}
    # timestamp 1234567 = 0x12d687: groups 0x07, 0x2d, 0x4b, least significant first -> 87 ad 4b
    assert GOLDEN[0][:size].hex(" ") == "4c 54 4b 50 02 01 01 23 45 67 89 ab cd ef 07 87 ad 4b 07 60 40 04 06 0a"
    assert GOLDEN[0][size:-CRC_SIZE].hex(" ") == "07 f0 02 09 58 ed 05 eb 1c 97 9e 61"  # P = 40 - 24 - 4 = 12
    assert GOLDEN[0][-CRC_SIZE:] == struct.pack("<I", zlib.crc32(GOLDEN[0][:-CRC_SIZE]))
    assert peek_header(GOLDEN[0]).header_size == size == 24
    # the second (not a keyframe): frame 8, timestamp 1267900 (bc b1 4d), k = 9, and no geometry
    h, size = parse_v2_header(GOLDEN[1])
    assert h == {"magic": b"LTKP", "version": 2, "flags": 0, "model_id": MODEL, "frame_index": 8,
                 "timestamp_us": 1267900, "k": 9}
    assert GOLDEN[1][:size].hex(" ") == "4c 54 4b 50 02 00 01 23 45 67 89 ab cd ef 08 bc b1 4d 09"
    assert peek_header(GOLDEN[1]).header_size == size == 19 and len(GOLDEN[1]) - size - CRC_SIZE == 16
    # the end-of-stream packet: its geometry (an empty grid), nothing coded, 28 bytes
    h, size = parse_v2_header(GOLDEN[3])
    assert GOLDEN[3][:size].hex(" ") == "4c 54 4b 50 02 02 01 23 45 67 89 ab cd ef 0a a6 ba 51 00 00 00 00 00 0a"
    eos = verify_packet(GOLDEN[3])
    assert eos.end_of_stream and eos.n == 0 and eos.payload_bytes == 0 and eos.packet_size == 28


def test_the_implied_payload_length_is_bounded() -> None:
    # a keyframe's bound comes from its own header: N = 24, k = 7, 10 bits -> at most 290 payload bytes
    def keyframe_with(payload: int) -> bytes:
        return reseal(G0[:HEAD] + b"\x01" * payload + bytes(CRC_SIZE))

    with pytest.raises(PacketError, match=r"^payload byte length 291 is too large for N=24, k=7 at 10 bits per "
                                          r"index \(at most 290\)$"):
        verify_packet(keyframe_with(291))
    assert verify_packet(keyframe_with(290)).payload_bytes == 290
    assert peek_header(keyframe_with(291)).payload_bytes == 0  # a header alone says nothing about P
    # a non-keyframe's comes from its coder state's grid: N = 24 after frame 7, k = 9 -> at most 350
    _, st = decode_all(GOLDEN[:1])
    size = peek_header(GOLDEN[1]).header_size
    too_long = reseal(GOLDEN[1][:size] + b"\x01" * 351 + bytes(CRC_SIZE))
    assert verify_packet(too_long).payload_bytes == 351  # no geometry: verify_packet cannot bound it
    with pytest.raises(PacketError, match=r"^payload byte length 351 is too large for N=24, k=9 at 10 bits per "
                                          r"index \(at most 350\)$"):
        TokenPacket.unpack_v2(too_long, st)
    with pytest.raises(PacketError, match=r"^k=25 exceeds the 24 positions of the 4x6 grid$"):
        TokenPacket.unpack_v2(with_fields(GOLDEN[1], k=25), st)


def test_peek_and_verify_read_both_versions() -> None:
    h = peek_header(GOLDEN[0][:HEAD])  # the 24-byte header alone is enough to route
    assert (h.version, h.frame_index, h.keyframe, h.k, h.n, h.model_id) == (2, 7, True, 7, 24, MODEL)
    assert (h.width, h.height, h.grid_h, h.grid_w, h.bits_per_index, h.has_geometry) == (96, 64, 4, 6, 10, True)
    assert (h.mask_mode, h.mask_bytes, h.token_bytes, h.payload_bytes, h.header_size) == (-1, 0, 0, 0, 24)
    v = verify_packet(GOLDEN[0])  # a whole packet: P is what header and CRC leave
    assert v == replace(h, payload_bytes=12) and v.packet_size == len(GOLDEN[0])
    # a non-keyframe carries no geometry: without its coder state, the header says so
    h = peek_header(GOLDEN[1][:19])
    assert (h.frame_index, h.keyframe, h.k, h.header_size, h.has_geometry) == (8, False, 9, 19, False)
    assert (h.width, h.height, h.grid_h, h.grid_w, h.bits_per_index, h.n) == (0, 0, 0, 0, 0, 0)
    assert verify_packet(GOLDEN[1]) == replace(h, payload_bytes=16)
    v1 = fixture_packets()[0].pack()
    assert peek_header(v1).version == 1 and peek_header(v1).payload_bytes == 0 and peek_header(v1).has_geometry
    with pytest.raises(PacketError, match=r"^truncated: need at least 17 bytes for a version 2 header, got 16$"):
        peek_header(GOLDEN[1][:16])
    with pytest.raises(PacketError, match=r"^truncated: the version 2 header ends inside its timestamp_us field "
                                          r"\(got 17 bytes\)$"):
        peek_header(GOLDEN[1][:17])
    with pytest.raises(PacketError, match=r"^truncated: the version 2 header ends inside its grid_w field "
                                          r"\(got 22 bytes\)$"):
        peek_header(GOLDEN[0][:22])  # a keyframe's header goes on after k
    with pytest.raises(PacketError, match=r"^truncated: a version 2 packet needs its 24-byte header and a 4-byte "
                                          r"CRC, got 27 bytes$"):
        verify_packet(GOLDEN[0][:27])


def test_version_1_is_unchanged_and_versions_do_not_mix() -> None:
    for p in fixture_packets():
        data = p.pack()
        assert data[4] == VERSION and TokenPacket.unpack(data) == p
        q, st = TokenPacket.unpack_any(data, CoderState.empty(LEVELS))
        assert q == p and not st.started  # version 1 leaves the coder state alone
    with pytest.raises(PacketError, match=r"^packet version 2 is entropy-coded .* use TokenPacket.unpack_v2"):
        TokenPacket.unpack(GOLDEN[0])
    with pytest.raises(PacketError, match=r"^packet version 1 is not entropy-coded: use TokenPacket.unpack$"):
        TokenPacket.unpack_v2(fixture_packets()[0].pack(), CoderState.empty(LEVELS))
    p, st = TokenPacket.unpack_any(GOLDEN[0], CoderState.empty(LEVELS))
    assert p == fixture_packets()[0] and st.started
    other = bytearray(fixture_packets()[0].pack())
    other[4] = 3
    with pytest.raises(PacketError, match=r"^unsupported packet version 3 \(this build supports versions 1 and 2 "
                                                 r"after b'LTKP', and version 3, whose first byte is 0xf0\.\.0xf3\)$"):
        TokenPacket.unpack(bytes(other))


def test_v2_is_smaller_than_v1_on_the_fixture() -> None:
    v1 = sum(len(p.pack()) for p in fixture_packets())
    assert sum(map(len, GOLDEN)) == 158 and v1 == 263  # a tiny grid: the headers dominate both


def frame_256x192(index: int, keyframe: bool, kept: int, seed: int = 0) -> TokenPacket:
    rng = np.random.default_rng(seed)
    mask = np.zeros(768, bool)
    mask[rng.choice(768, kept, replace=False)] = True
    return TokenPacket(MODEL, index, 33_333 * index, keyframe, False, 256, 192, 24, 32, 10, mask,
                       rng.integers(0, 1000, kept).astype(np.uint32))


def test_a_non_keyframe_carries_no_geometry_and_no_length() -> None:
    """At 256x192 the geometry is 7 bytes (`80 02`, `c0 01`, `18`, `20`, `0a`): a non-keyframe omits it,
    and no packet has a length field (the 2-byte P of the layout before)."""
    _, st = TokenPacket.unpack_v2(frame_256x192(0, True, 200).pack_v2(CoderState.empty(LEVELS))[0],
                                  CoderState.empty(LEVELS))
    # with nothing to code (k = 0) the payload is empty: the packet is its header and CRC. A keyframe
    # (which always carries tokens) has the same header plus the geometry
    non, after = frame_256x192(1, False, 0).pack_v2(st)
    key = pack_header_v2(FLAG_KEYFRAME, MODEL, 1, 33_333, 0, (256, 192, 24, 32, 10))
    assert len(non) == 14 + 1 + 3 + 1 + CRC_SIZE and len(key) == len(non) - CRC_SIZE + 7
    assert key[:19] == bytes([*non[:5], FLAG_KEYFRAME, *non[6:19]])  # prefix (but flags) and varints alike
    assert key[19:].hex(" ") == "80 02 c0 01 18 20 0a"
    got, st2 = TokenPacket.unpack_v2(non, st)
    assert got == frame_256x192(1, False, 0) and st2 == after and after.frame_size == (256, 192)
    # with tokens: the header is frame_index, timestamp_us and k, then the payload up to the CRC
    p = frame_256x192(2, False, 300, seed=2)
    data, _ = p.pack_v2(after)
    fields, size = parse_v2_header(data)
    assert fields == {"magic": b"LTKP", "version": 2, "flags": 0, "model_id": MODEL, "frame_index": 2,
                      "timestamp_us": 66666, "k": 300}
    assert size == 14 + 1 + 3 + 2 == 20  # was 29 with the geometry (7 bytes) and P (2) on every packet
    assert len(pack_header_v2(FLAG_KEYFRAME, MODEL, 2, 66666, 300, (256, 192, 24, 32, 10))) == size + 7
    assert TokenPacket.unpack_v2(data, after)[0] == p
    # an end-of-stream packet carries its geometry too (flag bit 1)
    assert len(pack_header_v2(FLAG_END_OF_STREAM, MODEL, 2, 66666, 0, (0, 0, 0, 0, 10))) == 14 + 5 + 5


def test_worked_example_packets() -> None:
    """docs/PACKET.md §6.7 as packets: its two frames on a 16x16 frame, byte for byte."""
    prefix = "4c 54 4b 50 02 {:02x} 01 23 45 67 89 ab cd ef"
    frames = [TokenPacket(MODEL, 0, 0, True, False, 16, 16, 2, 2, 10, np.array([1, 0, 0, 1], bool),
                          np.array([123, 999], np.uint32)),
              TokenPacket(MODEL, 1, 33_333, False, False, 16, 16, 2, 2, 10, np.array([1, 1, 0, 1], bool),
                          np.array([123, 124, 999], np.uint32))]
    want = [prefix.format(1) + " 00 00 02 10 10 02 02 0a" + " 97 cc 33 a5" + " 28 99 31 33",
            prefix.format(0) + " 01 b5 84 02 03" + " d7 2d 0a 0d dc 41 68" + " a9 3d 8d bb"]
    tx = rx = CoderState.empty(LEVELS)
    for p, hex_bytes in zip(frames, want, strict=True):
        data, tx = p.pack_v2(tx)
        assert data.hex(" ") == hex_bytes
        got, rx = TokenPacket.unpack_v2(data, rx)
        assert got == p
    assert peek_header(data).header_size == 19 and rx.frame_size == (16, 16) and rx.grid == (2, 2)


def test_a_non_keyframe_without_a_started_state_is_refused_cheaply() -> None:
    message = (r"^non-keyframe 8 cannot be decoded before the stream's first keyframe \(the coder state is empty\): "
               r"join at a keyframe$")
    with pytest.raises(PacketError, match=message):
        TokenPacket.unpack_v2(GOLDEN[1], CoderState.empty(LEVELS))
    # before the CRC is even computed: a damaged one is refused for the same reason
    with pytest.raises(PacketError, match=message):
        TokenPacket.unpack_v2(GOLDEN[1][:-1] + bytes([GOLDEN[1][-1] ^ 1]), CoderState.empty(LEVELS))
    # a state started below the packet layer knows its grid but not the frame size the packet omits
    _, st = encode_frame(CoderState.empty(LEVELS), np.ones(24, bool), np.zeros(24, np.uint32), (4, 6), True)
    with pytest.raises(PacketError, match=r"^the coder state holds no frame size or index width \(it was not "
                                          r"started by a keyframe packet\), and a version 2 non-keyframe does not"):
        TokenPacket.unpack_v2(GOLDEN[1], replace(st, frame_index=7))
    with pytest.raises(ValueError, match=r"cannot follow the coder state's frames, none \(it was not started"):
        fixture_packets()[1].pack_v2(replace(st, frame_index=7))


def test_frame_size_and_index_width_change_only_at_a_keyframe() -> None:
    _, st = decode_all(GOLDEN[:1])
    p = fixture_packets()[1]
    for change in ({"width": 90}, {"height": 60}, {"bits_per_index": 11}):
        with pytest.raises(ValueError, match=r"^a non-keyframe of a \d+x\d+ frame at \d+ bits per index cannot "
                                             r"follow the coder state's frames, 96x64 at 10 bits per index: frame "
                                             r"size and index width change only at a keyframe$"):
            replace(p, **change).pack_v2(st)
    # an end-of-stream non-keyframe with positions carries its geometry: it must be the state's
    eos = replace(p, end_of_stream=True, width=90)
    data = pack_header_v2(FLAG_END_OF_STREAM, MODEL, 8, 0, 9, (90, 64, 4, 6, 10)) + GOLDEN[1][19:-CRC_SIZE]
    with pytest.raises(PacketError, match=r"^a non-keyframe of a 90x64 frame .* change only at a keyframe$"):
        TokenPacket.unpack_v2(reseal(data + bytes(CRC_SIZE)), st)
    with pytest.raises(ValueError, match=r"change only at a keyframe"):
        eos.pack_v2(st)
    got, _ = TokenPacket.unpack_v2(replace(eos, width=96).pack_v2(st)[0], st)
    assert got == replace(eos, width=96)


# --- the state through packets ---------------------------------------------------------------------------------


def test_join_at_a_keyframe_and_loss() -> None:
    # joining mid-stream: the non-keyframe needs the state only the previous packets built
    with pytest.raises(PacketError, match=r"join at a keyframe"):
        TokenPacket.unpack_v2(GOLDEN[1], CoderState.empty(LEVELS))
    # losing packet 1: packet 2 is refused (the state last decoded frame 7; this is frame 9)
    _, st = decode_all(GOLDEN[:1])
    assert st.frame_index == 7
    with pytest.raises(PacketError, match=r"^frame 9 does not follow frame 7, the last one this coder state "
                                          r"decoded: a packet is missing or out of order"):
        TokenPacket.unpack_v2(GOLDEN[2], st)
    # and with the chain check out of the way (frame-level API), the wrong state decodes it to something
    # else or fails: never silently the right thing
    h = peek_header(GOLDEN[2])
    payload = GOLDEN[2][h.header_size:-CRC_SIZE]
    try:
        mask, idx, _ = decode_frame(st, payload, (4, 6), h.k, False)
    except PacketError:
        pass
    else:
        want = fixture_packets()[2]
        assert not (np.array_equal(mask, want.mask) and np.array_equal(idx, want.indices))
    # the sender side refuses to skip a frame index too
    with pytest.raises(ValueError, match=r"frame 9 does not follow frame 7"):
        fixture_packets()[2].pack_v2(st)
    # a failed decode leaves the caller's state usable: the right packet still decodes after it
    _, st = decode_all(GOLDEN[:1])
    with pytest.raises(PacketError):
        TokenPacket.unpack_v2(GOLDEN[0][:-1] + bytes([GOLDEN[0][-1] ^ 1]), st)
    got, _ = decode_all(GOLDEN[1:3], st)
    assert got == fixture_packets()[1:3]


def test_pack_v2_rejects_what_the_state_cannot_code() -> None:
    p0, p1 = fixture_packets()[:2]
    with pytest.raises(ValueError, match=r"before the stream's first keyframe"):
        p1.pack_v2(CoderState.empty(LEVELS))
    with pytest.raises(ValueError, match=r"FSQ levels \(8, 8, 8, 5, 5, 5\) \(64000 codes\) do not fit .* 10 bits"):
        p0.pack_v2(CoderState.empty((8, 8, 8, 5, 5, 5)))
    with pytest.raises(ValueError, match=r"state must be a CoderState"):
        p0.pack_v2(None)  # type: ignore[arg-type]
    with pytest.raises(PacketError, match=r"do not fit the packet's 10 bits per index"):
        TokenPacket.unpack_v2(GOLDEN[0], CoderState.empty((8, 8, 8, 5, 5, 5)))
    big = TokenPacket(MODEL, 1, 0, True, False, 96, 64, 4, 6, 10, np.ones(24, bool), np.full(24, 1000, np.uint32))
    with pytest.raises(ValueError, match=r"token index out of range 0..999"):
        big.pack_v2(CoderState.empty(LEVELS))


# --- rejection of bad bytes --------------------------------------------------------------------------------------



@pytest.mark.parametrize(
    ("data", "message"),
    [
        (G0[:16], r"^truncated: need at least 17 bytes for a version 2 header, got 16$"),
        (G0[:20], r"^truncated: the version 2 header ends inside its height field \(got 20 bytes\)$"),
        (G0[:HEAD + 3], r"^truncated: a version 2 packet needs its 24-byte header and a 4-byte CRC, got 27 bytes$"),
        # no length field: a transport's framing ends the packet, the CRC checks it
        (G0[:-1], r"^CRC mismatch: .*: corrupt, or truncated \(a version 2 packet carries no length\)$"),
        (G0 + b"\x00", r"^CRC mismatch"),
        (reseal(G0 + b"\x00" * 5), r"ends with a zero byte"),  # trailing bytes, sealed: the payload's own checks
        (G0[:30] + bytes([G0[30] ^ 4]) + G0[31:], r"^CRC mismatch"),
        (reseal(G0[:14] + b"\x87\x00" + G0[15:]), r"^header field frame_index is not minimally encoded"),
        (reseal(G0[:14] + b"\xff" * 5 + b"\x01" + G0[15:]), r"^header field frame_index is a varint longer than 5"),
        (reseal(G0[:14] + b"\xff\xff\xff\xff\x1f" + G0[15:]), r"^header field frame_index = 8589934591 does not "
                                                               r"fit 32 bits$"),
        (reseal(G0[:19] + b"\xf0\xa2\x04" + G0[20:]), r"^header field width = 70000 does not fit 16 bits$"),
        (with_fields(G0, flags=0x10), r"^reserved flag bits set: flags=0x10"),
        (with_fields(G0, k=25), r"^k=25 exceeds the 24 positions of the 4x6 grid$"),
        (reseal(G0[:HEAD] + bytes(291 + CRC_SIZE)),
         r"^payload byte length 291 is too large for N=24, k=7 at 10 bits per index \(at most 290\)$"),
        (with_fields(G0, grid_h=0), r"^grid 0x6 is empty; only an end-of-stream packet may have no positions$"),
        (with_fields(G0, bits=0), r"^bits_per_index 0 out of range 1..32$"),
        (with_fields(G0, k=6), r"^entropy-coded mask keeps \d+ positions but the header says k=6$|not what"),
        (reseal(GOLDEN[3][:-CRC_SIZE] + b"\x01" + bytes(CRC_SIZE)),
         r"^payload byte length 1 is too large for N=0, k=0"),
        (reseal(G0[:-CRC_SIZE - 1] + b"\x00" + G0[-CRC_SIZE:]), r"ends with a zero byte"),
        (reseal(G0[:-CRC_SIZE] + b"\x77" + G0[-CRC_SIZE:]), r"not what the encoder makes"),
        (with_fields(G0, flags=0), r"^non-keyframe 7 cannot be decoded before the stream's first keyframe"),
        (with_fields(G0, flags=0x11), r"^reserved flag bits set: flags=0x11"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_unpack_v2_rejects(data: bytes, message: str) -> None:
    with pytest.raises(PacketError, match=message):
        TokenPacket.unpack_v2(data, CoderState.empty(LEVELS))


def test_model_mismatch_names_both_ids() -> None:
    with pytest.raises(PacketError, match=r"^packet is for model 0123456789abcdef, this receiver runs model "
                                          r"fedcba9876543210$"):
        TokenPacket.unpack_v2(G0, CoderState.empty(LEVELS), expect_model_id=bytes.fromhex("fedcba9876543210"))
    with pytest.raises(ValueError, match=r"expect_model_id must be 8 bytes"):
        TokenPacket.unpack_v2(G0, CoderState.empty(LEVELS), expect_model_id=b"short")


def test_mutated_packets_raise_packet_error_only() -> None:
    """2400 seeded mutations of the golden stream, each decoded with the state its original was decoded
    with: PacketError, or a packet that re-packs to exactly the mutated bytes."""
    rng = np.random.default_rng(2024)
    states = [CoderState.empty(LEVELS)]
    for data in GOLDEN:
        states.append(TokenPacket.unpack_v2(data, states[-1])[1])
    refused = 0
    for i in range(2400):
        j = i % len(GOLDEN)
        bad = mutate(rng, GOLDEN[j])
        if len(bad) > CRC_SIZE and rng.random() < 0.6:
            bad = reseal(bad)  # most mutations get a valid CRC so that they reach the checks behind it
        try:
            p, _ = TokenPacket.unpack_v2(bad, states[j])
        except PacketError:
            refused += 1
        else:
            assert p.pack_v2(states[j])[0] == bad
    assert refused > 2000


# --- .ltk recordings of version 2 ------------------------------------------------------------------------------

META = {"model_id": MODEL.hex(), "fps": 30.0, "width": 96, "height": 64, "preset": "default"}


def test_ltk_records_and_replays_v2(tmp_path: Path) -> None:
    path = tmp_path / "v2.ltk"
    with LtkWriter(path, {**META, "fsq_levels": list(LEVELS)}) as w:
        for data in GOLDEN:
            w.write(data)
    with LtkReader(path) as r:
        assert list(r) == fixture_packets()
        assert list(r.iter_raw()) == GOLDEN
    meta, packets, err = read_ltk(path)
    assert err is None and packets == fixture_packets() and meta["fsq_levels"] == [8, 5, 5, 5]
    # damage in the middle: the packets before it survive
    blob = path.read_bytes()
    path.write_bytes(blob[:-20])  # into the last record
    _, packets, err = read_ltk(path)
    assert packets == fixture_packets()[:3] and err is not None and "truncated" in str(err)


def test_ltk_v2_needs_the_levels(tmp_path: Path) -> None:
    path = tmp_path / "v2.ltk"
    with LtkWriter(path, META) as w, pytest.raises(ValueError, match=r"put 'fsq_levels' in the file's metadata"):
        w.write(GOLDEN[0])
    with LtkWriter(path, META) as w:
        w.write(fixture_packets()[0].pack())  # version 1 needs nothing more
    # a file whose writer skipped the check (or an older tool) fails at the v2 packet, clearly
    raw = path.read_bytes()
    path.write_bytes(raw + struct.pack("<I", len(GOLDEN[0])) + GOLDEN[0])
    _, packets, err = read_ltk(path)
    assert len(packets) == 1 and err is not None and "has no 'fsq_levels'" in str(err)
    with pytest.raises(ValueError, match=r"fsq_levels must be a non-empty list of ints in 2..255"):
        LtkWriter(tmp_path / "x.ltk", {**META, "fsq_levels": [1, 5]})


def test_v2_header_stays_within_v1_offsets() -> None:
    """Tools that read frame_index/flags/model_id at their v1 offsets read v2 headers the same way."""
    v1, v2 = fixture_packets()[1].pack(), GOLDEN[1]
    assert v1[5:14] == v2[5:14]  # flags, model_id
    assert HEADER_SIZE == 48


# --- issue 24 item 10: rules the document states, enforced and measured -------------------------------------


KEYFRAME_TOKENS = r"^a keyframe must carry tokens, got k=0 \(a frame without tokens repeats the previous frame, " \
                  r"and a keyframe starts from none\)$"


def test_a_keyframe_always_carries_tokens() -> None:
    with pytest.raises(ValueError, match=KEYFRAME_TOKENS):  # neither pack() nor pack_v2() can make one
        frame_256x192(0, True, 0)
    # version 1: a keyframe with mask NONE and k = 0, otherwise well formed
    body = HEADER.pack(b"LTKP", VERSION, FLAG_KEYFRAME, MODEL, 0, 0, 256, 192, 24, 32, 10, 1, 0, 0, 0)
    v1 = body + struct.pack("<I", zlib.crc32(body))
    # version 2: the keyframe's header with k = 0 and an empty payload
    head = pack_header_v2(FLAG_KEYFRAME, MODEL, 0, 0, 0, (256, 192, 24, 32, 10))
    v2 = head + struct.pack("<I", zlib.crc32(head))
    assert (len(v1), len(v2)) == (52, 14 + 3 + 7 + 4)
    for check in (TokenPacket.unpack, peek_header, verify_packet):
        with pytest.raises(PacketError, match=KEYFRAME_TOKENS):
            check(v1)
    for check in (lambda d: TokenPacket.unpack_v2(d, CoderState.empty(LEVELS)), peek_header, verify_packet):
        with pytest.raises(PacketError, match=KEYFRAME_TOKENS):
            check(v2)
    # a keyframe that ends the stream with an empty grid is no exception
    eos = pack_header_v2(FLAG_KEYFRAME | FLAG_END_OF_STREAM, MODEL, 9, 0, 0, (0, 0, 0, 0, 10))
    with pytest.raises(PacketError, match=KEYFRAME_TOKENS):
        peek_header(eos + struct.pack("<I", zlib.crc32(eos)))


@pytest.mark.parametrize(("frame", "seconds", "k", "camera", "size"), [
    (0, 0.0, 200, False, 14 + 1 + 1 + 2 + 7),  # the first keyframe of a file: 25
    (0, 0.0, 100, False, 14 + 1 + 1 + 1 + 7),  # k < 128: 24
    (300, 10.0, 200, False, 14 + 2 + 4 + 2 + 7),  # a file's keyframe at 10 s (interval 300): 29
    (9000, 300.0, 200, False, 14 + 2 + 5 + 2 + 7),  # at 5 min (timestamps past 2**28 µs): 30
    (20000, 666.7, 768, False, 14 + 3 + 5 + 2 + 7),  # frame indices past 2**14: 31
    (300, 1.7e9, 200, True, 14 + 2 + 8 + 2 + 7),  # a camera's (wall-clock µs since 1970): 33
])
def test_keyframe_header_sizes_after_the_first(frame: int, seconds: float, k: int, camera: bool, size: int) -> None:
    """docs/PACKET.md 6.1: a keyframe's header at 256x192 is the non-keyframe's plus the 7-byte geometry,
    and its varints grow with the frame index and the timestamp like any packet's."""
    ts = round(seconds * 1e6)
    key = pack_header_v2(FLAG_KEYFRAME, MODEL, frame, ts, k, (256, 192, 24, 32, 10))
    assert len(key) == size == len(pack_header_v2(0, MODEL, frame, ts, k)) + 7
    assert peek_header(key).header_size == size


def test_a_file_may_mix_versions_switching_to_2_at_a_keyframe(tmp_path: Path) -> None:
    """docs/PACKET.md 6.2 rule 4: version 1 packets do not touch the coder state, so after one a version 2
    stream resumes only at a keyframe (its next frame index no longer follows the state's)."""
    path = tmp_path / "mixed.ltk"
    meta = {"model_id": MODEL.hex(), "fps": 30, "width": 256, "height": 192, "preset": "x",
            "fsq_levels": list(LEVELS)}
    tx = CoderState.empty(LEVELS)
    kinds = [(2, True), (2, False), (1, False), (1, True), (2, False), (2, True), (2, False)]
    packets = [frame_256x192(i, key, 100, seed=i) for i, (_, key) in enumerate(kinds)]
    with LtkWriter(path, meta) as w:
        for p, (version, _) in zip(packets, kinds, strict=True):
            if version == 1:
                data = p.pack()
            else:  # frame 4 as a sender that went back to version 2 without a keyframe would send it
                data, tx = p.pack_v2(tx if p.keyframe else replace(tx, frame_index=p.frame_index - 1))
            w.write(data)
    _, got, err = read_ltk(path)
    assert [p.frame_index for p in got] == [0, 1, 2, 3]  # frame 4 (v2, not a keyframe) cannot follow frame 1
    assert err is not None and "frame 4 does not follow frame 1" in str(err)
    with LtkReader(path) as r:
        items = list(r.recover())
    assert [getattr(p, "frame_index", "damage") for p in items] == [0, 1, 2, 3, "damage", 5, 6]


def test_end_of_stream_on_an_empty_grid_leaves_the_coder_state() -> None:
    """docs/PACKET.md 6.2 rule 4: its frame index is the one after the last frame's, but it is checked
    against nothing and changes nothing; a stream may even end before its first keyframe."""
    _, st = TokenPacket.unpack_v2(frame_256x192(0, True, 50).pack_v2(CoderState.empty(LEVELS))[0],
                                  CoderState.empty(LEVELS))
    for index in (1, 7, 0):  # the next index (what livetok sends), a later one, an earlier one
        eos = TokenPacket(MODEL, index, 99, False, True, 0, 0, 0, 0, 10, np.zeros(0, bool), np.zeros(0, np.uint32))
        data, after = eos.pack_v2(st)
        got, after_rx = TokenPacket.unpack_v2(data, st)
        assert after is st and after_rx is st and got == eos and len(data) == 14 + 1 + 1 + 1 + 5 + 4
    assert TokenPacket.unpack_v2(data, CoderState.empty(LEVELS))[0] == eos  # no keyframe needed
