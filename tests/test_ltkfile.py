"""The .ltk file: exact layout, round trip, and damage that stops at the right packet and byte offset."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from livetok.stream.wire import (
    FILE_HEADER_SIZE,
    MAX_META_BYTES,
    REQUIRED_META,
    CoderState,
    Damage,
    LtkReader,
    LtkWriter,
    PacketError,
    TokenPacket,
    read_ltk,
)

MODEL = bytes.fromhex("0123456789abcdef")
META = {"model_id": MODEL.hex(), "fps": 30, "width": 96, "height": 64, "preset": "tiny", "source": "unit"}


def packet(i: int, model: bytes = MODEL) -> TokenPacket:
    rng = np.random.default_rng(i)
    mask = rng.random(24) < 0.5
    return TokenPacket(model, i, i * 33_333, i == 0, False, 96, 64, 4, 6, 10, mask,
                       rng.integers(0, 1024, size=int(mask.sum())))


@pytest.fixture
def recording(tmp_path: Path) -> tuple[Path, list[TokenPacket], list[int]]:
    """A 5-packet file; returns its path, the packets and the byte offset of each record."""
    path = tmp_path / "clip.ltk"
    packets = [packet(i) for i in range(5)]
    with LtkWriter(path, META) as w:
        for p in packets:
            w.write(p.pack())
    assert w.packets_written == 5
    meta_len = len(json.dumps({**META, "fps": 30.0}, ensure_ascii=False).encode())
    offsets = [FILE_HEADER_SIZE + meta_len]
    for p in packets:
        offsets.append(offsets[-1] + 4 + len(p.pack()))
    return path, packets, offsets


def test_layout_is_exact(recording: tuple[Path, list[TokenPacket], list[int]]) -> None:
    path, packets, offsets = recording
    raw = path.read_bytes()
    assert FILE_HEADER_SIZE == 9
    assert raw[:5] == b"LTKF\x01"
    (meta_len,) = struct.unpack_from("<I", raw, 5)
    assert json.loads(raw[9:9 + meta_len]) == {**META, "fps": 30.0}
    assert len(raw) == offsets[-1]
    for p, off in zip(packets, offsets, strict=False):
        data = p.pack()
        assert raw[off:off + 4] == struct.pack("<I", len(data))
        assert raw[off + 4:off + 4 + len(data)] == data  # the same bytes as on the wire


def test_round_trip(recording: tuple[Path, list[TokenPacket], list[int]]) -> None:
    path, packets, _ = recording
    with LtkReader(path) as r:
        assert r.meta == {**META, "fps": 30.0}
        assert isinstance(r.meta["fps"], float)
        assert r.model_id == MODEL
        assert list(r) == packets
        assert list(r) == packets  # every iteration starts from the first packet
        assert list(r.iter_raw()) == [p.pack() for p in packets]
        assert list(r.iter_raw(verify=False)) == [p.pack() for p in packets]
    meta, got, err = read_ltk(path)
    assert (meta["preset"], got, err) == ("tiny", packets, None)


def test_writer_accepts_packets_and_byte_model_ids(tmp_path: Path) -> None:
    path = tmp_path / "b.ltk"
    with LtkWriter(path, {**META, "model_id": MODEL}) as w:
        w.write(packet(0))  # a TokenPacket is packed for you
        w.write(bytearray(packet(1).pack()))
    meta, got, err = read_ltk(path)
    assert meta["model_id"] == "0123456789abcdef" and [p.frame_index for p in got] == [0, 1] and err is None


def test_empty_recording(tmp_path: Path) -> None:
    path = tmp_path / "empty.ltk"
    with LtkWriter(path, META):
        pass
    assert read_ltk(path) == ({**META, "fps": 30.0}, [], None)


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({k: v for k, v in META.items() if k != "preset"}, r"meta lacks required keys \['preset'\]"),
        ({**META, "model_id": "0123"}, r"meta model_id must be 8 bytes or 16 hex digits"),
        ({**META, "model_id": "zz23456789abcdef"}, r"meta model_id must be 8 bytes or 16 hex digits"),
        ({**META, "fps": 0}, r"meta fps must be a positive finite number, got 0"),
        ({**META, "fps": float("nan")}, r"meta fps must be a positive finite number"),
        ({**META, "width": -1}, r"meta width must be a non-negative int, got -1"),
        ({**META, "preset": 3}, r"meta preset must be a str, got 3"),
        ({**META, "extra": object()}, r"meta is not JSON-serialisable"),
        ({**META, "notes": "x" * MAX_META_BYTES}, r"meta is \d+ bytes of JSON, the limit is 1048576"),
    ],
)
def test_writer_rejects_bad_meta(tmp_path: Path, meta: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LtkWriter(tmp_path / "x.ltk", meta)


def test_writer_rejects_bad_packets(tmp_path: Path) -> None:
    with LtkWriter(tmp_path / "x.ltk", META) as w:
        other = bytes.fromhex("fedcba9876543210")
        with pytest.raises(ValueError, match=r"packet is for model fedcba9876543210, this file records model "
                                             r"0123456789abcdef"):
            w.write(packet(0, model=other))
        with pytest.raises(PacketError, match=r"bad magic"):
            w.write(b"garbage" * 10)
        assert w.packets_written == 0
    with pytest.raises(ValueError, match=r"is closed"):
        w.write(packet(0))


# --- damage -------------------------------------------------------------------------------------------------


def test_every_truncation_stops_at_the_right_packet(
        tmp_path: Path, recording: tuple[Path, list[TokenPacket], list[int]]) -> None:
    path, packets, offsets = recording
    raw = path.read_bytes()
    cut_path = tmp_path / "cut.ltk"
    for cut in range(offsets[0], len(raw) + 1):
        cut_path.write_bytes(raw[:cut])
        complete = sum(1 for end in offsets[1:] if end <= cut)
        _, got, err = read_ltk(cut_path)
        assert got == packets[:complete], cut
        if cut in offsets:
            assert err is None
            continue
        assert err is not None
        where = f"packet #{complete} at byte offset {offsets[complete]}"
        assert where in str(err)
        assert "truncated .ltk file" in str(err)
        with pytest.raises(PacketError, match=re.escape(where)):
            read_ltk(cut_path, tolerant=False)


def test_corrupt_packet_yields_the_ones_before(
        tmp_path: Path, recording: tuple[Path, list[TokenPacket], list[int]]) -> None:
    path, packets, offsets = recording
    raw = bytearray(path.read_bytes())
    raw[offsets[3] + 4 + 20] ^= 0x01  # one bit inside packet #3's header (frame index)
    path.write_bytes(bytes(raw))
    _, got, err = read_ltk(path)
    assert got == packets[:3]
    assert err is not None
    assert re.search(rf"corrupt packet in \.ltk file .*: packet #3 at byte offset {offsets[3]}: CRC mismatch",
                     str(err))
    with LtkReader(path) as r:
        raws = []
        with pytest.raises(PacketError, match=r"packet #3 .*CRC mismatch"):
            for data in r.iter_raw():
                raws.append(data)
        assert len(raws) == 3
        assert len(list(r.iter_raw(verify=False))) == 5  # framing alone is intact


def test_bad_length_prefix(tmp_path: Path, recording: tuple[Path, list[TokenPacket], list[int]]) -> None:
    path, packets, offsets = recording
    raw = bytearray(path.read_bytes())
    raw[offsets[1]:offsets[1] + 4] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(raw))
    _, got, err = read_ltk(path)
    assert got == packets[:1]
    expected = f"packet #1 at byte offset {offsets[1]}: length prefix 4294967295 out of range 8..16777216"
    assert err is not None and expected in str(err)


# --- recovering from damage (LtkReader.recover, what `livetok decode` reads) -----------------------------------


def v2_recording(path: Path, frames: int = 12, keyframe_every: int = 4) -> tuple[list[TokenPacket], list[int]]:
    """A version 2 stream (coder state carried between packets) with a keyframe every `keyframe_every`
    frames; returns the packets and each record's byte offset (plus the end of the file)."""
    state, packets, offsets = CoderState.empty((8, 5, 5, 5)), [], []
    with LtkWriter(path, {**META, "fsq_levels": [8, 5, 5, 5]}) as w:
        for i in range(frames):
            rng = np.random.default_rng(i)
            mask = rng.random(24) < 0.5
            p = TokenPacket(MODEL, i, i * 33_333, i % keyframe_every == 0, False, 96, 64, 4, 6, 10, mask,
                            rng.integers(0, 1000, size=int(mask.sum())))
            data, state = p.pack_v2(state)
            assert w._file is not None
            offsets.append(w._file.tell())
            w.write(data)
            packets.append(p)
        assert w._file is not None
        offsets.append(w._file.tell())
    return packets, offsets


def recovered(path: Path) -> tuple[list[TokenPacket], list[Damage]]:
    with LtkReader(path) as r:
        items = list(r.recover())
    return [p for p in items if isinstance(p, TokenPacket)], [d for d in items if isinstance(d, Damage)]


def test_recover_reads_an_intact_file_as_iteration_does(tmp_path: Path) -> None:
    path = tmp_path / "v2.ltk"
    packets, _ = v2_recording(path)
    got, damage = recovered(path)
    assert got == packets == read_ltk(path)[1] and damage == []


@pytest.mark.parametrize(("where", "frames", "records", "resumed"), [
    ("payload", [0, 1, 2, 3, 4, 8, 9, 10, 11], 3, True),  # packet 5 damaged; 6 and 7 need it; resume at 8
    ("prefix", [0, 1, 2, 3, 4, 8, 9, 10, 11], 3, True),  # packet 5's length prefix: framing found again
    ("keyframe", [0, 1, 2, 3, 8, 9, 10, 11], 4, True),  # keyframe 4 damaged: 5, 6, 7 cannot decode
    ("last", list(range(10)), 2, False),  # packet 10 damaged: 11 needs it, no keyframe follows
])
def test_recover_resumes_at_the_next_keyframe(tmp_path: Path, where: str, frames: list[int], records: int,
                                              resumed: bool) -> None:
    path = tmp_path / "v2.ltk"
    packets, offsets = v2_recording(path)
    raw = bytearray(path.read_bytes())
    at = {"payload": offsets[5] + 4 + 22, "prefix": offsets[5] + 1, "keyframe": offsets[4] + 4 + 30,
          "last": offsets[10] + 4 + 21}[where]
    raw[at] ^= 0x04
    path.write_bytes(bytes(raw))
    got, damage = recovered(path)
    assert [p.frame_index for p in got] == frames
    assert got == [packets[i] for i in frames]  # what is decoded after the damage is exactly the sender's
    (d,) = damage
    start = {"payload": 5, "prefix": 5, "keyframe": 4, "last": 10}[where]
    assert (d.number, d.offset, d.records, d.resumed) == (start, offsets[start], records, resumed)
    assert d.skipped_bytes == offsets[start + records] - offsets[start]
    assert f"packet #{start} at byte offset {offsets[start]}" in d.error


def test_recover_finds_records_after_inserted_and_cut_bytes(tmp_path: Path) -> None:
    path = tmp_path / "v2.ltk"
    packets, offsets = v2_recording(path)
    raw = path.read_bytes()
    # 37 bytes of garbage (with a stray magic) between records 2 and 3, and records 6..7 cut in half
    bad = raw[:offsets[3]] + b"LTKP" + bytes(range(33)) + raw[offsets[3]:offsets[6] + 9] + raw[offsets[8]:]
    path.write_bytes(bad)
    got, damage = recovered(path)
    # 3 is intact but follows the garbage (its decoder state may be gone): skipped to keyframe 4
    assert [p.frame_index for p in got] == [0, 1, 2, 4, 5, 8, 9, 10, 11]
    assert got == [packets[i] for i in (0, 1, 2, 4, 5, 8, 9, 10, 11)]
    first, second = damage
    assert (first.offset, first.records, first.skipped_bytes) == (offsets[3], 2, 37 + offsets[4] - offsets[3])
    # record 6 cut 9 bytes in (its prefix and 5 bytes) and 7 gone: one stretch without framing (how many
    # frames it held: the indices around it)
    assert (second.offset, second.records, second.skipped_bytes) == (offsets[6] + 37, 1, 9)
    assert "length prefix" in first.error or "CRC mismatch" in first.error


def test_packet_for_another_model(tmp_path: Path) -> None:
    path = tmp_path / "mixed.ltk"
    with LtkWriter(path, META) as w:
        w.write(packet(0))
        assert w._file is not None
        stray = packet(1, model=bytes(8)).pack()  # bypass the writer's own model check
        w._file.write(struct.pack("<I", len(stray)) + stray)
    _, got, err = read_ltk(path)
    assert len(got) == 1
    assert err is not None and "packet #1" in str(err)
    assert "packet is for model 0000000000000000, this receiver runs model 0123456789abcdef" in str(err)


def header_bytes(magic: bytes = b"LTKF", version: int = 1, meta: bytes | None = None,
                 meta_len: int | None = None) -> bytes:
    blob = json.dumps(META).encode() if meta is None else meta
    return magic + bytes([version]) + struct.pack("<I", len(blob) if meta_len is None else meta_len) + blob


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"not a livetok \.ltk file: .* starts with b'', expected b'LTKF'"),
        (b"hello world, not a recording", r"not a livetok \.ltk file: .* starts with b'hell'"),
        (b"\x89PNG\r\n\x1a\n" + bytes(20), r"not a livetok \.ltk file"),
        (b"LTKP" + bytes(60), r"not a livetok \.ltk file: .* starts with b'LTKP'"),  # a bare packet
        (header_bytes(version=2), r"unsupported \.ltk version 2 in .* \(this build supports version 1\)"),
        (header_bytes(meta_len=MAX_META_BYTES + 1), r"metadata length 1048577 exceeds the limit of 1048576"),
        (header_bytes()[:-3], r"truncated \.ltk file .*: metadata needs \d+ bytes, got \d+"),
        (header_bytes(meta=b"{not json"), r"bad metadata: Expecting property name"),
        (header_bytes(meta=b"\xff\xfe"), r"bad metadata: 'utf-8' codec can't decode"),
        (header_bytes(meta=b"[1, 2]"), r"bad metadata: meta must be a dict, got list"),
        (header_bytes(meta=b'{"fps": 30}'), r"bad metadata: meta lacks required keys \['model_id', 'width'"),
        (header_bytes(meta=b"[" * 100_000), r"bad metadata"),
        # levels whose count tables are over the coder's limit: refused with the header, not at a packet
        (header_bytes(meta=json.dumps({**META, "fsq_levels": [102, 102]}).encode()),
         r"bad metadata: meta fsq_levels: digit 1 of levels \(102, 102\) needs a count table of 10506x102, over "
         r"the limit of 1048576 entries$"),
    ],
    ids=["empty", "text", "png", "packet", "version", "meta-size", "meta-cut", "json", "utf8", "list", "keys",
         "deep", "levels"],
)
def test_bad_file_headers(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.ltk"
    path.write_bytes(content)
    with pytest.raises(PacketError, match=message):
        LtkReader(path)
    with pytest.raises(PacketError, match=message):
        read_ltk(path)  # a damaged file header raises even in tolerant mode


def test_required_metadata_is_the_documented(tmp_path: Path) -> None:
    # docs/PACKET.md section 4: the keys marked required there are the ones the reader and writer require
    doc = (Path(__file__).parents[1] / "docs" / "PACKET.md").read_text()
    documented = [key for keys, req in re.findall(r"^\| (`[^|]+`) \| (yes|for version 2) \|", doc, re.M) if req == "yes"
                  for key in re.findall(r"`(\w+)`", keys)]
    assert documented == list(REQUIRED_META) == ["model_id", "fps", "width", "height", "preset"]
    for key in REQUIRED_META:
        with pytest.raises(ValueError, match=rf"meta lacks required keys \['{key}'\]"):
            LtkWriter(tmp_path / "x.ltk", {k: v for k, v in META.items() if k != key})
    for fps in (0, -1, float("inf")):
        with pytest.raises(ValueError, match=r"^meta fps must be a positive finite number"):
            LtkWriter(tmp_path / "x.ltk", {**META, "fps": fps})
    # model_id: written lowercase, read in either case
    path = tmp_path / "upper.ltk"
    blob = json.dumps({**META, "model_id": MODEL.hex().upper()}).encode()
    path.write_bytes(b"LTKF\x01" + struct.pack("<I", len(blob)) + blob)
    with LtkReader(path) as r:
        assert r.meta["model_id"] == MODEL.hex() and r.model_id == MODEL
    with LtkWriter(tmp_path / "w.ltk", {**META, "model_id": MODEL.hex().upper()}) as w:
        assert w.meta["model_id"] == "0123456789abcdef"
