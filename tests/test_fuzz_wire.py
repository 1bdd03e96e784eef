"""Fuzzing the wire format beyond test_packet.py's mutations: inflated size fields behind a valid CRC,
memory and time bounds per packet, damaged `.ltk` files, and packets a receiver's model could not have
made. Only PacketError may come out; the 10^6-packet run is `benchmarks/fuzz_packets.py`."""

from __future__ import annotations

import json
import re
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livetok.engine.checkpoint import model_identity
from livetok.engine.model import Tokenizer
from livetok.stream.cli import main
from livetok.stream.packet_guard import ReceiverLimits, check_packet_fits
from livetok.stream.session import ReceiverSession, SenderSession
from livetok.stream.video_io import read_video
from livetok.stream.wire import (
    CRC_SIZE,
    HEADER_SIZE,
    MAX_POSITIONS,
    LtkReader,
    LtkWriter,
    PacketError,
    TokenPacket,
    peek_header,
    read_ltk,
)
from livetok.stream.wire.packet import HEADER

from .test_packet import POOL, mutate, reseal, survives

# header fields by position in HEADER (see stream/wire/packet.py)
FIELDS = {"width": 6, "height": 7, "grid_h": 8, "grid_w": 9, "bits": 10, "mode": 11, "k": 12, "mask_bytes": 13,
          "token_bytes": 14}
LIMITS = {"width": 16, "height": 16, "grid_h": 16, "grid_w": 16, "bits": 8, "mode": 8, "k": 32, "mask_bytes": 32,
          "token_bytes": 32}


def inflate(data: bytes, field: str, value: int) -> bytes:
    """`data` with one header size field set to `value` and the CRC made valid again."""
    vals = list(HEADER.unpack_from(data))
    vals[FIELDS[field]] = value
    return reseal(HEADER.pack(*vals) + data[HEADER_SIZE:])


def unpack_bounded(data: bytes) -> tuple[float, int]:
    """Unpack under tracemalloc; returns (seconds, peak bytes allocated)."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        survives(data)
    finally:
        seconds = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return seconds, peak


# The parser allocates at most a few bytes per grid position (bounded by MAX_POSITIONS, a 2048x2048
# grid) plus a small multiple of the input: a 4 MiB bool mask is the worst a 52-byte packet can cost.
MEMORY_BOUND = 12 * MAX_POSITIONS


@settings(max_examples=150, deadline=None)
@given(start=st.integers(0, len(POOL) - 1), field=st.sampled_from(sorted(FIELDS)),
       value=st.one_of(st.sampled_from([0, 1, 2047, 2048, 2049, 4096, 16384, 16385, 65535, 2**22, 2**24, 2**31,
                                        2**32 - 1]), st.integers(0, 2**32 - 1)))
def test_inflated_size_fields_are_refused_before_allocation(start: int, field: str, value: int) -> None:
    data = POOL[start]
    value %= 1 << LIMITS[field]
    seconds, peak = unpack_bounded(inflate(data, field, value))
    assert peak < MEMORY_BOUND + 64 * len(data), f"{field}={value}: {peak} bytes allocated"
    assert seconds < 2.0, f"{field}={value}: {seconds:.2f} s"


def test_worst_case_packets_stay_small_and_fast() -> None:
    # the largest grids the format allows, with empty sections: the only way a tiny packet makes big arrays
    eos = next(d for d in POOL if len(d) == HEADER_SIZE + CRC_SIZE)
    base = HEADER.pack(*[*HEADER.unpack_from(eos)[:6], 16384, 16384, 2048, 2048, 1, 1, 0, 0, 0])  # NONE mask
    for flags in (0, 1, 2):  # delta, keyframe, end-of-stream with a grid
        vals = list(HEADER.unpack_from(base))
        vals[2] = flags
        seconds, peak = unpack_bounded(reseal(HEADER.pack(*vals) + bytes(CRC_SIZE)))
        assert peak < MEMORY_BOUND and seconds < 1.0
    # a full ALL mask needs k = N tokens: the announced size is checked against the data before allocating
    vals = list(HEADER.unpack_from(base))
    vals[11:15] = [0, MAX_POSITIONS, 0, MAX_POSITIONS // 8]
    with pytest.raises(PacketError, match=r"^truncated: header announces 524340 bytes"):
        TokenPacket.unpack(reseal(HEADER.pack(*vals) + bytes(CRC_SIZE)))


@settings(max_examples=50, deadline=None)
@given(start=st.integers(0, len(POOL) - 1),
       ops=st.lists(st.tuples(st.sampled_from(["flip", "set", "cut", "insert", "delete"]), st.integers(0, 10**6),
                              st.integers(0, 255)), min_size=1, max_size=3))
def test_mutations_are_bounded_in_time_and_memory(start: int, ops: list[tuple[str, int, int]]) -> None:
    data = POOL[start]
    for broken in (mutate(data, ops), reseal(mutate(data, ops)) if len(data) >= CRC_SIZE else data):
        seconds, peak = unpack_bounded(broken)
        assert peak < MEMORY_BOUND + 64 * len(broken) and seconds < 2.0


# --- packets the receiver's model could not have made -------------------------------------------------------


def _packet(model: Tokenizer, index: int = 1, **change: object) -> TokenPacket:
    fields: dict[str, object] = dict(model_id=model_identity(model), frame_index=0, timestamp_us=0, keyframe=True,
                                     end_of_stream=False, width=64, height=48, grid_h=6, grid_w=8,
                                     bits_per_index=model.cfg.fsq.bits_per_index)
    fields.update(change)
    mask = np.zeros(int(fields["grid_h"]) * int(fields["grid_w"]), bool)  # type: ignore[call-overload]
    mask[:4] = True
    return TokenPacket(mask=mask, indices=np.full(4, index, np.uint32), **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(("change", "message"), [
    ({"width": 16384, "height": 16384, "grid_h": 2048, "grid_w": 2048},
     r"^frame 16384x16384 is over this receiver's limit"),
    ({"grid_h": 7}, r"^grid 7x8 does not match a 64x48 frame at stride 8 \(expected 6x8\)$"),
    ({"bits_per_index": 16}, r"^16 bits per index, this model uses 7$"),  # the tiny preset: 5x5x5 levels
    ({"index": 127}, r"^token index 127 is not a code of this model \(codebook of 125\)$"),
])
def test_receiver_refuses_packets_its_model_could_not_make(tiny_model: Tokenizer, change: dict[str, object],
                                                           message: str) -> None:
    packet = _packet(tiny_model, **change)
    rx = ReceiverSession(tiny_model)
    tracemalloc.start()
    try:
        with pytest.raises(PacketError, match=message):
            rx.decode(packet.pack())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BOUND  # refused before the decoder allocated anything at that size
    assert rx.state is None


def test_receiver_limits_are_configurable(tiny_model: Tokenizer) -> None:
    packet = _packet(tiny_model)
    check_packet_fits(packet, bits_per_index=7, codebook_size=125, stride=8)
    with pytest.raises(PacketError, match=r"^frame 64x48 is over this receiver's limit \(32 pixels a side"):
        check_packet_fits(packet, bits_per_index=7, codebook_size=125, stride=8,
                          limits=ReceiverLimits(max_side=32, max_pixels=10_000))
    with pytest.raises(ValueError, match="must be positive"):
        ReceiverLimits(max_side=0)


# --- damaged .ltk files, through `livetok decode` -----------------------------------------------------------


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory, tiny_model: Tokenizer,
              real_frames: np.ndarray) -> tuple[Path, list[int]]:
    """An 8-frame recording of a real clip (64x48 crops) and the byte offset of each record."""
    path = tmp_path_factory.mktemp("ltk") / "rec.ltk"
    tx = SenderSession(tiny_model)
    offsets = []
    with LtkWriter(path, {"model_id": model_identity(tiny_model), "fps": 30, "width": 64, "height": 48,
                              "fsq_levels": list(tiny_model.cfg.fsq.levels),
                          "preset": "tiny"}) as w:
        for i in range(8):
            offsets.append(w._file.tell())  # type: ignore[union-attr]
            w.write(tx.encode(np.ascontiguousarray(real_frames[i, :48, :64]), timestamp_us=i * 33_333).data)
    return path, offsets


def _decode_cli(capsys: pytest.CaptureFixture[str], ltk: Path, out: Path,
                weights: Path) -> tuple[int, dict[str, object], str]:
    code = main(["decode", str(ltk), "-o", str(out), "--weights", str(weights), "--json"])
    cap = capsys.readouterr()
    return code, json.loads(cap.out), cap.err


@pytest.mark.parametrize("damage", ["truncate", "flip"])
@pytest.mark.parametrize("packet", [0, 3, 7])
def test_decode_cli_keeps_every_frame_before_the_damage(
    tmp_path: Path, recording: tuple[Path, list[int]], tiny_weights: Path, capsys: pytest.CaptureFixture[str],
    damage: str, packet: int,
) -> None:
    src, offsets = recording
    data = bytearray(src.read_bytes())
    start = offsets[packet] + 4
    at = start + peek_header(bytes(data[start:])).header_size  # inside packet #`packet`'s sections
    if damage == "truncate":
        del data[at:]
    else:
        data[at] ^= 0x10
    bad = tmp_path / "bad.ltk"
    bad.write_bytes(bytes(data))
    out = tmp_path / "out.mp4"
    code, res, err = _decode_cli(capsys, bad, out, tiny_weights)
    assert code == 2 and res["frames"] == packet
    assert re.search(rf"packet #{packet} at byte offset {offsets[packet]}\b", str(res["error"]))
    assert ("truncated" if damage == "truncate" else "CRC mismatch") in str(res["error"])
    assert "Traceback" not in err and "stopped early:" in err
    if packet:
        assert read_video(out)[0].shape[0] == packet  # every frame before the damage is in the MP4


def test_decode_cli_whole_file_still_exits_zero(tmp_path: Path, recording: tuple[Path, list[int]],
                                                tiny_weights: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, res, err = _decode_cli(capsys, recording[0], tmp_path / "out.mp4", tiny_weights)
    assert code == 0 and res["frames"] == 8 and res["error"] is None and "warning" not in err


@settings(max_examples=25, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["flip", "set", "cut", "insert", "delete"]), st.integers(0, 10**6),
                              st.integers(0, 255)), min_size=1, max_size=3))
def test_mutated_ltk_files_yield_a_prefix_then_one_packet_error(
    tmp_path_factory: pytest.TempPathFactory, recording: tuple[Path, list[int]], ops: list[tuple[str, int, int]],
) -> None:
    src, _ = recording
    original = read_ltk(src)[1]
    path = tmp_path_factory.mktemp("m") / "m.ltk"
    path.write_bytes(mutate(src.read_bytes(), ops))
    try:
        with LtkReader(path) as reader:
            got = []
            try:
                for p in reader:
                    got.append(p)
            except PacketError as e:
                assert re.search(r"packet #\d+ at byte offset \d+", str(e)), str(e)
    except PacketError:
        return  # the file header itself is damaged: refused as a whole
    # CRC32 catches every mutation of up to 3 edits in these small packets: what came out is a prefix
    assert got == original[: len(got)]
