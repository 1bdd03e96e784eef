"""A `.ltk` reader written from docs/PACKET.md alone (sections 1 to 4 and 6: the file, both packet
versions, the mask modes, the varint header, the coder state's rules; the payload codec is the plain-
integer one of tests/test_entropy_reference.py, also written from the document), run on real recordings of
the shipped model with keyframes, skips and rate control, and compared with livetok's reader packet by
packet (issue 24 item 10: an independent decoder must need nothing the document does not say)."""

from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from livetok.cli import main
from livetok.stream.wire import LtkReader, TokenPacket

from .conftest import eval_clips
from .test_entropy_reference import RefState, ref_decode

# --- the reference reader, from the document ---------------------------------------------------------------


@dataclass
class Frame:
    """What the document says a packet carries."""

    version: int
    frame_index: int
    timestamp_us: int
    keyframe: bool
    end_of_stream: bool
    width: int
    height: int
    grid: tuple[int, int]
    bits: int
    mask: list[int]
    indices: list[int]


def read_file(data: bytes) -> tuple[dict[str, Any], list[bytes]]:
    """§4: b"LTKF", version 1, u32 JSON length, JSON, then u32-length-prefixed packets to the end."""
    assert data[:4] == b"LTKF" and data[4] == 1
    (j,) = struct.unpack_from("<I", data, 5)
    meta = json.loads(data[9:9 + j].decode("utf-8"))
    records, i = [], 9 + j
    while i < len(data):
        (size,) = struct.unpack_from("<I", data, i)
        assert size >= 21 and i + 4 + size <= len(data)
        records.append(data[i + 4:i + 4 + size])
        i += 4 + size
    return meta, records


def crc_ok(packet: bytes) -> bool:
    """§1.3: zlib.crc32 of everything before the last 4 bytes, u32 little-endian."""
    return zlib.crc32(packet[:-4]) == int.from_bytes(packet[-4:], "little")


def lsb_uints(data: bytes, count: int, width: int) -> list[int]:
    """§3: value i in stream bits [i*B, (i+1)*B), least significant first; bit j is bit j % 8 of byte j // 8."""
    bits = int.from_bytes(data, "little")
    return [(bits >> (i * width)) & ((1 << width) - 1) for i in range(count)]


def v1_mask(mode: int, data: bytes, n: int, k: int) -> list[int]:
    """§2: ALL, NONE, BITMAP (LSB-first), RLE (Elias-gamma, MSB-first), INDEX (W-bit LSB-first)."""
    if mode == 0:
        return [1] * n
    if mode == 1:
        return [0] * n
    if mode == 2:
        return [(data[i // 8] >> (i % 8)) & 1 for i in range(n)]
    if mode == 3:
        stream = [(byte >> (7 - b)) & 1 for byte in data for b in range(8)]
        runs, j = [], 0
        while sum(runs) < n and 1 in stream[j:]:
            zeros = 0
            while stream[j] == 0:
                zeros, j = zeros + 1, j + 1
            value = int("".join(map(str, stream[j:j + zeros + 1])), 2)
            j += zeros + 1
            runs.append(value - 1)
        runs.append(n - sum(runs))  # the last run is implicit
        out, kept = [], 0
        for r in runs:
            out += [kept] * r
            kept ^= 1
        return out
    w = max(1, math.ceil(math.log2(n)))  # INDEX: W = max(1, ceil(log2 N))
    positions = set(lsb_uints(data, k, w))
    return [int(i in positions) for i in range(n)]


def read_varint(data: bytes, i: int) -> tuple[int, int]:
    """§6.1: seven bits per byte, least significant group first, bit 7 set on every byte but the last."""
    value, shift = 0, 0
    while True:
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if not byte & 0x80:
            return value, i


@dataclass
class Stream:
    """§6.2: the coder state, plus what a non-keyframe takes from it (grid, frame size, index width)."""

    levels: tuple[int, ...]
    ref: RefState | None = None
    grid: tuple[int, int] | None = None
    size: tuple[int, int] = (0, 0)
    bits: int = 0
    last_index: int | None = None

    def read(self, packet: bytes) -> Frame:
        assert packet[:4] == b"LTKP" and crc_ok(packet)
        version, flags = packet[4], packet[5]
        keyframe, eos = bool(flags & 1), bool(flags & 2)
        if version == 1:  # §1.1: the fixed 48-byte header; the packet decodes on its own (rule 4)
            (_, _, _, _, index, ts, w, h, gh, gw, bits, mode, k, m, t) = struct.unpack_from("<4sBB8sIQHHHHBBIII",
                                                                                         packet)
            assert len(packet) == 48 + m + t + 4
            mask = v1_mask(mode, packet[48:48 + m], gh * gw, k)
            return Frame(1, index, ts, keyframe, eos, w, h, (gh, gw), bits, mask,
                         lsb_uints(packet[48 + m:48 + m + t], k, bits))
        assert version == 2
        i = 14
        index, i = read_varint(packet, i)
        ts, i = read_varint(packet, i)
        k, i = read_varint(packet, i)
        if flags & 3:  # the geometry: keyframes and end-of-stream packets only
            w, i = read_varint(packet, i)
            h, i = read_varint(packet, i)
            gh, i = read_varint(packet, i)
            gw, i = read_varint(packet, i)
            bits, i = read_varint(packet, i)
        else:  # a non-keyframe's is its keyframe's, which the state keeps (rule 2)
            assert self.ref is not None and self.grid is not None and index == self.last_index + 1  # type: ignore[operator]
            (w, h), (gh, gw), bits = self.size, self.grid, self.bits
        payload = packet[i:-4]  # no length field: P = packet length - header - CRC
        if gh * gw == 0:  # rule 4: an end-of-stream packet with an empty grid touches nothing
            assert eos and k == 0 and not payload
            return Frame(2, index, ts, keyframe, eos, w, h, (0, 0), bits, [], [])
        if keyframe:  # rule 1
            assert k >= 1  # §1.1: a keyframe always carries tokens
            self.ref, self.grid, self.size, self.bits = RefState(self.levels), (gh, gw), (w, h), bits
        assert self.ref is not None
        mask, indices = ref_decode(self.ref, gh, gw, k, payload, keyframe)  # rule 3 inside (skips too)
        self.last_index = index
        return Frame(2, index, ts, keyframe, eos, w, h, (gh, gw), bits, mask, indices)


def reference_read(path: Path) -> list[Frame]:
    meta, records = read_file(path.read_bytes())
    stream = Stream(tuple(meta["fsq_levels"]))  # §4: the levels are in the metadata, in no packet
    return [stream.read(r) for r in records]


# --- recordings of the shipped model, compared with livetok -----------------------------------------------


RECORDINGS = {
    # a still scene: each keyframe sharpens over a few frames, then frames at the floor, then skips
    "static-skips": ["synthetic:static", "--max-frames", "34", "--keyframe-interval", "16"],
    # a real clip under rate control: budgets change frame by frame; keyframes every 10
    "clip-rate": [None, "--max-frames", "20", "--target-bps", "40000", "--keyframe-interval", "10"],
    # the same as version 1 packets: every mask mode the encoder picks
    "clip-rate-v1": [None, "--max-frames", "20", "--target-bps", "40000", "--keyframe-interval", "10",
                     "--wire", "v1"],
}


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    folder = tmp_path_factory.mktemp("reference")
    for name, (source, *args) in RECORDINGS.items():
        path = folder / f"{name}.ltk"
        assert main(["encode", source or str(eval_clips()[0]), "-o", str(path), "--threads", "1", *args]) == 0
        out[name] = path
    return out


@pytest.mark.parametrize("name", list(RECORDINGS))
def test_a_reader_from_the_document_decodes_real_recordings(recordings: dict[str, Path], name: str) -> None:
    ours = reference_read(recordings[name])
    with LtkReader(recordings[name]) as r:
        theirs: list[TokenPacket] = list(r)
    assert len(ours) == len(theirs) > 0
    for a, b in zip(ours, theirs, strict=True):
        assert (a.frame_index, a.timestamp_us, a.keyframe, a.end_of_stream, a.width, a.height, a.grid, a.bits) == \
               (b.frame_index, b.timestamp_us, b.keyframe, b.end_of_stream, b.width, b.height,
                (b.grid_h, b.grid_w), b.bits_per_index)
        assert a.mask == [int(x) for x in b.mask] and a.indices == [int(x) for x in b.indices]
    # what the recordings hold, so the comparison covers it
    ks = [sum(f.mask) for f in ours]
    keys = [f.frame_index for f in ours if f.keyframe]
    if name == "static-skips":
        assert keys == [0, 16, 32] and ks.count(0) == 2  # two skips (k = 0) and the frames after them
        assert all(f.version == 2 for f in ours)
    else:
        assert keys == [0, 10] and len(set(ks)) >= 5  # rate control: budgets that change
        assert all(f.version == (1 if name.endswith("v1") else 2) for f in ours)
    if name.endswith("v1"):  # the mask modes the encoder picked (ALL at the keyframes)
        modes = {r[35] for r in read_file(recordings[name].read_bytes())[1]}
        assert 0 in modes and len(modes) >= 2, modes
