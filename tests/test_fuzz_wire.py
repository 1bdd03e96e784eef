"""Fuzzing the wire format beyond test_packet.py's mutations: inflated size fields behind a valid CRC,
memory and time bounds per packet, damaged `.ltk` files, and packets a receiver's model could not have
made. Only PacketError may come out; the 10^6-packet run is `benchmarks/fuzz_packets.py`."""

from __future__ import annotations

import asyncio
import json
import re
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livetok.bench.fuzz_packets import CRAFTED, cost, mutate, reseal
from livetok.cli import main
from livetok.engine.checkpoint import model_identity
from livetok.engine.model import Tokenizer
from livetok.stream.files import DecodeSummary, decode_file
from livetok.stream.packet_guard import ReceiverLimits, check_packet_fits, largest_packet
from livetok.stream.packet_receiver import PacketReceiver
from livetok.stream.session import ReceiverSession, SenderSession
from livetok.stream.video_io import read_video
from livetok.stream.wire import (
    CRC_SIZE,
    HEADER_SIZE,
    MAX_PACKET_BYTES,
    MAX_POSITIONS,
    CoderState,
    LtkReader,
    LtkWriter,
    PacketError,
    TokenPacket,
    peek_header,
    read_ltk,
)
from livetok.stream.wire.packet import HEADER, pack_header_v2

from .test_packet import POOL, survives

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
@given(start=st.integers(0, len(POOL) - 1), seed=st.integers(0, 2**32 - 1))
def test_mutations_are_bounded_in_time_and_memory(start: int, seed: int) -> None:
    data = POOL[start]
    mutated = mutate(np.random.default_rng(seed), data)
    for broken in (mutated, reseal(mutated)):
        seconds, peak = unpack_bounded(broken)
        assert peak < MEMORY_BOUND + 64 * len(broken) and seconds < 2.0


# --- crafted packets: valid CRC, well-formed header (issue 14 item 7) ---------------------------------------
# Any packet up to 16 MiB is decoded or refused within these, measured as CPU time (other work on the
# machine does not count) and tracemalloc's peak; each case is built here, at the format's largest grid.

CPU_LIMIT_S = 0.5
PEAK_LIMIT = 200 * 2**20
# each case of livetok.bench.fuzz_packets.CRAFTED (built there, for its --crafted report): the refusal
# expected, or None where the packet is valid and must decode
REFUSALS: dict[str, str | None] = {
    # the issue's cases: 12 MB of INDEX for an all-kept grid, 1.8 MB of RLE for an alternating one
    "index_12mb": r"^mask mode INDEX is not used for k=4194304 of N=4194304 \(the encoder sends ALL, 0 bytes\)$",
    "rle_1_8mb": r"^mask byte length 1572864 for mode RLE is not smaller than the 524288-byte BITMAP of N=4194304",
    # an INDEX mask exactly as long as the BITMAP (190650 positions of 22 bits): the tie goes to BITMAP
    "index_bitmap_length": r"^mask byte length 524288 for mode INDEX is not smaller than the 524288-byte",
    # a BITMAP of an all-kept grid: ALL says it in 0 bytes
    "bitmap_of_all": r"^mask mode BITMAP is not used for k=4194304 of N=4194304",
    # a BITMAP of a sparse mask that INDEX says in 2.8 kB: refused once the mask is known
    "bitmap_of_index": r"^BITMAP mask is not the smallest encoding of its 1024 kept of 4194304 positions: the "
                       r"encoder sends INDEX$",
    # the costliest valid ones: the most RLE runs, a random BITMAP with 32-bit tokens, an INDEX mask,
    # and the 16 MiB packet of a full 2047x2048 grid of 32-bit tokens
    "rle_most_runs": None,
    "bitmap_32bit_tokens": None,
    "index_sparse": None,
    "all_32bit_tokens_16mb": None,
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_crafted_packets_are_decoded_or_refused_within_limits(case: str) -> None:
    assert set(REFUSALS) == set(CRAFTED)
    data, refusal = CRAFTED[case](), REFUSALS[case]
    assert len(data) <= MAX_PACKET_BYTES
    seconds, peak, out = cost(lambda: TokenPacket.unpack(data))
    if refusal is None:
        assert isinstance(out, TokenPacket) and out.pack() == data, out  # valid, and canonical
    else:
        assert isinstance(out, PacketError) and re.search(refusal, str(out)), out
    assert seconds < CPU_LIMIT_S, f"{case}: {seconds:.3f} s CPU"
    assert peak < PEAK_LIMIT, f"{case}: {peak / 2**20:.1f} MiB"


def test_crafted_sizes_are_the_issues() -> None:
    # the cases above are as large as the issue's: 12 MB, 1.8 MB, and a packet at the format's limit
    assert len(CRAFTED["index_12mb"]()) == 12_058_676
    assert len(CRAFTED["rle_1_8mb"]()) == 1_835_060
    assert MAX_PACKET_BYTES - len(CRAFTED["all_32bit_tokens_16mb"]()) < 10_000


def craft_v2_keyframe(model: Tokenizer, side: tuple[int, int]) -> bytes:
    """A version 2 keyframe of a `side` frame keeping every position, with an empty payload: every
    symbol decodes as the first of its alphabet (docs/PACKET.md 6.1), so it is valid and costs a full
    grid's decoding for 35 bytes."""
    (w, h), stride = side, model.cfg.stride
    gh, gw = -(-h // stride), -(-w // stride)
    body = pack_header_v2(1, model_identity(model), 0, 0, gh * gw, (w, h, gh, gw, model.cfg.fsq.bits_per_index))
    return reseal(body + bytes(CRC_SIZE))


def test_receiver_refuses_a_crafted_v2_grid_before_decoding(tiny_model: Tokenizer) -> None:
    # the format's largest v2 grid decodes in about 2 s and 300 MB at the wire level; a receiver refuses
    # it from its header, and decodes the largest grid its limits admit (a 4K frame) within the limits
    rx = ReceiverSession(tiny_model)
    huge = craft_v2_keyframe(tiny_model, (16384, 16384))
    seconds, peak, out = cost(lambda: rx.screen(huge))
    assert isinstance(out, PacketError) and str(out).startswith("frame 16384x16384 is over this receiver's limit")
    assert seconds < CPU_LIMIT_S and peak < PEAK_LIMIT
    uhd = craft_v2_keyframe(tiny_model, (3840, 2160))
    rx.screen(uhd)  # admitted: then decoded

    def decode() -> object:
        return TokenPacket.unpack_v2(uhd, CoderState.empty(tiny_model.cfg.fsq.levels))[0]

    seconds, peak, out = cost(decode)
    assert isinstance(out, TokenPacket) and out.k == 480 * 270
    assert seconds < CPU_LIMIT_S, f"{seconds:.3f} s"
    assert peak < PEAK_LIMIT, f"{peak / 2**20:.1f} MiB"


@pytest.mark.parametrize("wire", [2, 3])
def test_a_v2_or_v3_non_keyframe_is_bounded_by_its_keyframe(tiny_model: Tokenizer, real_frames: np.ndarray,
                                                            wire: int) -> None:
    # a non-keyframe's header carries no geometry (docs/PACKET.md 6.1, 7.1): it decodes on the coder state's
    # grid, which only a keyframe that passed the receiver's checks can have set
    from livetok.engine.config import SenderConfig

    tx = SenderSession(tiny_model, SenderConfig(wire=wire))
    key, non = (tx.encode(np.ascontiguousarray(real_frames[i, :48, :64]), timestamp_us=i * 33_333).data
                for i in range(2))
    h = peek_header(non)
    assert not h.keyframe and not h.has_geometry and h.n == 0 and h.version == wire
    rx = ReceiverSession(tiny_model)
    rx.screen(non)  # nothing to check in its header but size, model (v2) and flags
    seconds, peak, out = cost(lambda: rx.decode(non))  # no keyframe yet: refused before its CRC, one line
    which = "non-keyframe 1" if wire == 2 else "a non-keyframe"  # a v3 one carries only its index's low byte
    assert isinstance(out, PacketError) and re.fullmatch(
        rf"{which} cannot be decoded before the stream's first keyframe \(the coder state is empty\): "
        r"join at a keyframe", str(out)), out
    assert seconds < 0.05 and peak < 2**20
    # a keyframe refused by the guard does not start the state: the non-keyframe after it is refused too
    huge = craft_v2_keyframe(tiny_model, (16384, 16384))
    with pytest.raises(PacketError, match=r"^frame 16384x16384 is over this receiver's limit"):
        rx.decode(huge)
    assert not rx.coder.started
    with pytest.raises(PacketError, match=r"join at a keyframe$"):
        rx.decode(non)
    rx.decode(key)
    assert rx.coder.grid == (6, 8) and rx.coder.frame_size == (64, 48)
    assert rx.decode(non).shape == (48, 64, 3)


def test_receiver_refuses_packets_longer_than_its_model_sends(tiny_model: Tokenizer) -> None:
    bits, stride = tiny_model.cfg.fsq.bits_per_index, tiny_model.cfg.stride
    # 4K at stride 8: at most 480*270 + 2*480 + 1 = 130561 positions of 7 bits, a mask under 16321 bytes
    assert largest_packet(1, bits_per_index=bits, stride=stride) == 48 + 16321 + 114241 + 4
    assert largest_packet(2, bits_per_index=bits, stride=stride) == 48 + 3 * 130561 * 8 + 8 + 4
    big = CRAFTED["all_32bit_tokens_16mb"]()
    rx = ReceiverSession(tiny_model)
    seconds, peak, out = cost(lambda: rx.decode(big))
    assert isinstance(out, PacketError)
    assert re.fullmatch(r"packet of 16769076 bytes is over this receiver's limit of 130614 for version 1 \(the "
                        r"largest its model sends for a frame of at most 3840 pixels a side, 8294400 in all\)",
                        str(out)), out
    assert seconds < 0.05 and peak < 2**20  # refused from its length: no CRC, no copy
    # the live receiving path (MQTT and WebRTC feed the same PacketReceiver): dropped and counted
    live = PacketReceiver(tiny_model)
    asyncio.run(live.feed("cam", big))
    assert live.streams["cam"].counters.packets_rejected == 1


def test_ltk_reader_screens_records_before_decoding(tmp_path: Path, tiny_model: Tokenizer) -> None:
    # a recording holding the format's largest v2 keyframe: `livetok decode` refuses it unread
    path = tmp_path / "crafted.ltk"
    meta = {"model_id": model_identity(tiny_model), "fps": 30, "width": 16384, "height": 16384, "preset": "tiny",
            "fsq_levels": list(tiny_model.cfg.fsq.levels)}
    with LtkWriter(path, meta) as w:
        w.write(craft_v2_keyframe(tiny_model, (16384, 16384)))
    seconds, peak, out = cost(lambda: decode_file(tiny_model, path, tmp_path / "out.mp4"))
    assert isinstance(out, DecodeSummary) and out.frames == 0
    assert re.search(r"packet #0 at byte offset \d+: frame 16384x16384 is over this receiver's limit", str(out.error))
    assert seconds < CPU_LIMIT_S and peak < PEAK_LIMIT, (seconds, peak)
    rx = ReceiverSession(tiny_model)
    reader = LtkReader(path, max_packet_bytes=30)  # a record over the bound is refused before it is read
    with pytest.raises(PacketError, match=r"packet #0 at byte offset \d+: length prefix 35 out of range 8..30$"):
        list(reader)
    reader.close()
    assert rx.max_packet_bytes == largest_packet(2, bits_per_index=7, stride=8)


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
    return code, json.loads(cap.out) if cap.out else {}, cap.err


@pytest.mark.parametrize("damage", ["truncate", "flip"])
@pytest.mark.parametrize("packet", [0, 3, 7])
def test_decode_cli_keeps_every_frame_before_the_damage(
    tmp_path: Path, recording: tuple[Path, list[int]], tiny_weights: Path, capsys: pytest.CaptureFixture[str],
    damage: str, packet: int,
) -> None:
    """The recording's only keyframe is its first frame: everything from the damage on is lost (and
    counted); with nothing decodable at all, nothing is written and the exit status says so."""
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
    assert "Traceback" not in err
    where = rf"packet #{packet} at byte offset {offsets[packet]}\b"
    cause = "truncated" if damage == "truncate" else "CRC mismatch"
    if packet == 0:  # the keyframe: no frame can be decoded
        assert code == 2 and res == {} and not out.exists()
        (line,) = err.strip().splitlines()
        assert line.startswith(f"livetok: error: {bad}: no frame could be decoded, nothing written: ")
        assert re.search(where, line) and cause in line
        return
    # a cut file lost what was cut (one record begun: the rest is not known to have existed)
    lost = 1 if damage == "truncate" else 8 - packet
    assert code == 1 and res["frames"] == packet and res["frames_lost"] == lost and res["damaged"] == 1
    assert re.search(where, str(res["error"])) and cause in str(res["error"])
    assert "damaged packet(s) or stretch(es) skipped" in err
    assert read_video(out)[0].shape[0] == packet  # every frame before the damage is in the MP4


def test_decode_cli_whole_file_still_exits_zero(tmp_path: Path, recording: tuple[Path, list[int]],
                                                tiny_weights: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, res, err = _decode_cli(capsys, recording[0], tmp_path / "out.mp4", tiny_weights)
    assert code == 0 and res["frames"] == 8 and res["frames_lost"] == 0 and res["error"] is None
    assert "warning" not in err


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_mutated_ltk_files_yield_a_prefix_then_one_packet_error(
    tmp_path_factory: pytest.TempPathFactory, recording: tuple[Path, list[int]], seed: int,
) -> None:
    src, _ = recording
    original = read_ltk(src)[1]
    path = tmp_path_factory.mktemp("m") / "m.ltk"
    path.write_bytes(mutate(np.random.default_rng(seed), src.read_bytes(), packet=False))
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
    # CRC32 catches the mutations (1 to 4 edits) in these small packets: what came out is a prefix
    assert got == original[: len(got)]
