"""MCAP recordings (the ROS 2 bag format) as a second container beside `.ltk`: `livetok encode -o x.mcap` writes
one, `livetok decode x.mcap` and `livetok eval x.mcap` read one. The packets inside are the same bytes as a
`.ltk` file's (stream/wire makes both); only the container differs (docs/ROBOTICS.md).

Writing goes through foxglove-sdk (stream/foxglove_feed.py: one camera's tokens and preview channels); reading
through the `mcap` library's reader, so a file livetok writes is read back by code that is not ours.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from livetok.engine.config import SenderConfig
from livetok.engine.errors import TokenizerError
from livetok.engine.results import JsonResult, optional
from livetok.engine.runtime import Runtime

from .errors import StreamError
from .files import EncodeSummary, ProgressCallback, encode_frames, summarize_encode
from .foxglove_feed import TOKEN_SCHEMA_NAME, CameraChannels, FoxgloveFeed, packet_bytes
from .heatmap import token_heatmap
from .optional import require
from .session import EncodedFrame, ReceiverSession
from .video_io import Mp4Writer
from .wire import PacketError, peek_header


def is_mcap(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() == ".mcap"


@dataclass(frozen=True, kw_only=True)
class McapEncodeSummary(EncodeSummary):
    """What `encode -o x.mcap` wrote: `EncodeSummary`'s keys (rates and the target check, as for a `.ltk`),
    and whether the preview channel was written."""

    preview: bool


@dataclass(frozen=True, kw_only=True)
class McapDecodeSummary(JsonResult):
    """What `decode x.mcap` wrote: `DecodeSummary`'s keys over every camera, each camera's file and frames."""

    output: str  # the one file, or the name the per-camera files were made from
    outputs: list[str]
    frames: int
    frames_lost: int
    damaged: int
    error: str | None
    cameras: dict[str, int]  # frames decoded per camera


@dataclass(frozen=True, kw_only=True)
class RecordingMetrics(JsonResult):
    """The metric set M of a recording's frames, from the recorded bytes: PSNR and SSIM only against a
    reference clip (None without), no encode time. `positions` is left out of a mean over recordings."""

    psnr: float | None
    ssim: float | None
    tokens_per_frame: float
    bits_per_frame: float
    encode_ms: None = None
    decode_ms: float
    decodes_per_frame: float = 1.0
    frames: int
    positions: int | None = optional()
    kept_fraction: float
    keyframes: int

    @staticmethod
    def weighted(ms: list[RecordingMetrics]) -> RecordingMetrics:
        """The recordings' overall figures: per-frame means weighted by frames (None where a clip has none);
        no `positions` (the recordings' grids may differ); the slowest decode."""
        n = sum(m.frames for m in ms)

        def mean(values: list[float | None]) -> float | None:
            if any(v is None for v in values):
                return None
            return float(sum(v * m.frames for v, m in zip(values, ms, strict=True) if v is not None) / n)

        def mean_of(values: list[float]) -> float:
            return float(sum(v * m.frames for v, m in zip(values, ms, strict=True)) / n)

        return RecordingMetrics(psnr=mean([m.psnr for m in ms]), ssim=mean([m.ssim for m in ms]),
                                tokens_per_frame=mean_of([m.tokens_per_frame for m in ms]),
                                bits_per_frame=mean_of([m.bits_per_frame for m in ms]),
                                kept_fraction=mean_of([m.kept_fraction for m in ms]), frames=n,
                                keyframes=sum(m.keyframes for m in ms), decode_ms=max(m.decode_ms for m in ms))


@dataclass(frozen=True)
class RecordingEval(JsonResult):
    """`livetok eval` of a recording: M overall and per camera."""

    overall: RecordingMetrics
    clips: dict[str, RecordingMetrics]
    recording: str


def encode_mcap(
    model: Runtime,
    input: str,
    output: str | Path,
    sender: SenderConfig,
    max_frames: int | None = None,
    meta_extra: dict[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    camera: str = "cam0",
    frame_id: str | None = None,
    preview: bool = True,
) -> McapEncodeSummary:
    """`stream.files.encode_file` into an MCAP file: the same packets (frame i stamped i / fps seconds), on
    camera `camera`'s tokens channel, and its decoded frames (the sender's reconstruction: what a receiver
    shows) on the preview channel. Returns its summary keys (rates, the target check) plus `preview`."""
    out = Path(output)

    def open_writer(meta: dict[str, Any]) -> _McapFrames:
        feed = FoxgloveFeed(model, mcap=out, preview=preview)
        try:
            return _McapFrames(feed, feed.camera(camera, frame_id, meta))
        except BaseException:
            feed.close()
            raise

    stats, tx = encode_frames(model, input, sender, open_writer, max_frames=max_frames, meta_extra=meta_extra,
                              progress=progress)
    return summarize_encode(McapEncodeSummary, out, stats, tx, preview=preview)


class _McapFrames:
    """`files.FrameWriter` onto one camera's channels: the packet, and its reconstruction as the preview."""

    def __init__(self, feed: FoxgloveFeed, cam: CameraChannels) -> None:
        self.feed, self.cam = feed, cam

    def write(self, enc: EncodedFrame) -> None:
        self.cam.log(enc.packet, enc.data, enc.recon)

    def close(self) -> None:
        self.feed.close()


@dataclass
class McapCamera:
    """One camera's tokens channel in an MCAP file: its metadata (the .ltk header's keys, decoded from JSON
    where they are JSON) and its packets in log order."""

    name: str
    meta: dict[str, Any]
    packets: list[bytes] = field(default_factory=list)
    log_times_ns: list[int] = field(default_factory=list)


def _meta(md: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in md.items():
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v  # a plain string (camera, frame_id, preset...)
    return out


def read_mcap(path: str | os.PathLike[str]) -> dict[str, McapCamera]:
    """Every camera's token packets in an MCAP file, read with the `mcap` library's reader.

    Raises:
        StreamError: not an MCAP file, a damaged one, or one with no livetok tokens channel (one line).
    """
    reader_mod = require("mcap.reader", "mcap", "reading MCAP files")
    exceptions = require("mcap.exceptions", "mcap", "reading MCAP files")
    cams: dict[str, McapCamera] = {}
    try:
        with open(path, "rb") as f:
            reader = reader_mod.make_reader(f)
            for schema, channel, message in reader.iter_messages(log_time_order=False):
                if schema is None or schema.name != TOKEN_SCHEMA_NAME:
                    continue  # previews, and whatever else a robot logged beside us
                meta = _meta(dict(channel.metadata))
                name = str(meta.get("camera") or channel.topic.strip("/").split("/")[0])
                cam = cams.setdefault(name, McapCamera(name, meta))
                cam.packets.append(packet_bytes(message.data))
                cam.log_times_ns.append(int(message.log_time))
    except (exceptions.McapError, EOFError, ValueError, KeyError) as e:
        raise StreamError(f"{path}: not a readable MCAP file: {type(e).__name__}: {e}") from None
    if not cams:
        raise StreamError(f"{path}: no {TOKEN_SCHEMA_NAME} channel in this MCAP file (not made by livetok?)")
    return cams


def mcap_records(path: str | os.PathLike[str]) -> int | None:
    """Token packets in an MCAP file (a progress bar's total), None when it cannot be read."""
    try:
        return sum(len(c.packets) for c in read_mcap(path).values())
    except (OSError, StreamError):
        return None


@dataclass(frozen=True)
class Decoded:
    """One decoded frame of a recording."""

    camera: str
    frame_index: int
    timestamp_us: int
    keyframe: bool
    k: int
    bits: int
    frame: np.ndarray  # uint8 RGB [H, W, 3]
    mask: np.ndarray  # bool [grid_h * grid_w]
    grid: tuple[int, int]
    decode_ms: float


def decode_packets(model: Runtime, camera: str, packets: list[bytes],
                   damage: Callable[[str], None] | None = None) -> Iterator[Decoded]:
    """Decode one camera's packets in order. A packet that fails (damage, a packet this model could not have
    made) is reported to `damage` and decoding resumes at the next keyframe; an end-of-stream packet ends."""
    import time

    rx = ReceiverSession(model)
    waiting = False
    for data in packets:
        try:
            h = peek_header(data)
            if h.end_of_stream and h.n == 0:
                return
            if waiting and not h.keyframe:
                continue
            t0 = time.perf_counter()
            packet, frame = rx.decode_packet(data)
            ms = (time.perf_counter() - t0) * 1e3
        except (PacketError, TokenizerError) as e:
            if damage is not None:
                damage(f"{camera}: {e}")
            rx, waiting = ReceiverSession(model), True
            continue
        waiting = False
        yield Decoded(camera, packet.frame_index, packet.timestamp_us, packet.keyframe, packet.k, 8 * len(data),
                      frame, np.asarray(packet.mask, bool), (packet.grid_h, packet.grid_w), ms)


def _check_model(model: Runtime, path: str | os.PathLike[str], cam: McapCamera) -> None:
    mid = cam.meta.get("model_id")
    if mid != model.identity.hex():
        raise PacketError(f"{path} (camera {cam.name!r}) was made by model {mid} (preset "
                          f"{cam.meta.get('preset', '?')!r}); this receiver runs model {model.identity.hex()} "
                          f"(preset {model.cfg.name!r}): decode it with --weights <that model's weights>")


def _out_path(output: str | Path, camera: str, several: bool) -> Path:
    p = Path(output)
    return p.with_name(f"{p.stem}-{camera}{p.suffix or '.mp4'}") if several else p


def decode_mcap(
    model: Runtime,
    input: str | Path,
    output: str | Path,
    heatmap: bool = False,
    progress: ProgressCallback | None = None,
) -> McapDecodeSummary:
    """`stream.files.decode_file` for an MCAP file: each camera's frames into an MP4 at their capture times
    (`output` for one camera; OUTPUT-<camera>.mp4 for several). Returns the same keys, plus `outputs` and
    `cameras` (frames per camera)."""
    cams = read_mcap(input)
    for cam in cams.values():
        _check_model(model, input, cam)
    several = len(cams) > 1
    errors: list[str] = []
    outputs: list[str] = []
    per: dict[str, int] = {}
    for cam in cams.values():
        if progress is not None:
            progress(cam.name, 0)
        path = _out_path(output, cam.name, several)
        n = 0
        writer: Mp4Writer | None = None
        try:
            for d in decode_packets(model, cam.name, cam.packets, errors.append):
                if writer is None:
                    writer = Mp4Writer(path, float(cam.meta.get("fps", 30.0) or 30.0))
                frame = d.frame
                if heatmap:
                    frame = np.concatenate([frame, token_heatmap(frame, d.mask, d.grid)], 1)
                writer.write(frame, d.timestamp_us)
                n += 1
                if progress is not None:
                    progress(cam.name, 1)
        finally:
            if writer is not None:
                writer.close()
                outputs.append(str(path))
        per[cam.name] = n
    total = sum(per.values())
    # frames recorded: every packet but the end-of-stream ones; those not decoded were lost to damage
    recorded = sum(1 for c in cams.values() for p in c.packets if not _is_eos(p))
    return McapDecodeSummary(output=outputs[0] if len(outputs) == 1 else str(output), outputs=outputs, frames=total,
                             frames_lost=recorded - total, damaged=len(errors), error=errors[0] if errors else None,
                             cameras=per)


def recording_packets(path: str | os.PathLike[str]) -> tuple[dict[str, dict[str, Any]], dict[str, list[bytes]]]:
    """(meta per camera, packets per camera) of a `.ltk` (one camera, named after the file) or an MCAP file."""
    if is_mcap(path):
        cams = read_mcap(path)
        return {n: c.meta for n, c in cams.items()}, {n: c.packets for n, c in cams.items()}
    from .wire import LtkReader

    with LtkReader(path) as reader:
        try:
            packets = list(reader.iter_raw())
        except PacketError as e:
            raise StreamError(str(e)) from None
        name = Path(path).stem
        return {name: dict(reader.meta)}, {name: packets}


def evaluate_recording(model: Runtime, path: str | os.PathLike[str], reference: str | None = None,
                       max_frames: int | None = None) -> RecordingEval:
    """`livetok eval` of a recording (.ltk or .mcap): decode every camera's packets and report tokens and bits
    per frame from the recorded bytes, decode time, keyframes; with a reference clip (`reference`, else the
    recording's `source` when it names a readable file) also PSNR and SSIM of frame i against the clip's
    frame i (an offline recording numbers every frame, so indices match). Returns M overall and per camera."""
    from livetok.engine.metrics import psnr, ssim

    from .video_io import VideoReader

    metas, packets = recording_packets(path)
    for name, meta in metas.items():
        if meta.get("model_id") != model.identity.hex():
            raise PacketError(f"{path} (camera {name!r}) was made by model {meta.get('model_id')}; this receiver "
                              f"runs model {model.identity.hex()}: use --weights <that model's weights>")
    clips: dict[str, RecordingMetrics] = {}
    allrows: list[dict[str, float]] = []
    for name, pk in packets.items():
        ref_path = reference or metas[name].get("source")
        ref: list[np.ndarray] | None = None
        if ref_path and Path(str(ref_path)).is_file():
            with VideoReader(str(ref_path)) as r:
                ref = [f for _, f in zip(range(len(pk) if max_frames is None else max_frames), r, strict=False)]
        rows: list[dict[str, float]] = []
        for d in decode_packets(model, name, pk):
            if max_frames is not None and len(rows) >= max_frames:
                break
            row: dict[str, float] = {"k": d.k, "bits": d.bits, "decode_ms": d.decode_ms, "keyframe": d.keyframe,
                                     "n": d.grid[0] * d.grid[1]}
            if ref is not None and d.frame_index < len(ref) and ref[d.frame_index].shape == d.frame.shape:
                row["psnr"] = psnr(ref[d.frame_index], d.frame)
                row["ssim"] = ssim(ref[d.frame_index], d.frame)
            rows.append(row)
        if not rows:
            raise StreamError(f"{path}: camera {name!r} has no decodable frame")
        clips[name] = _summary(rows)
        allrows += rows
    return RecordingEval(_summary(allrows), clips, str(path))


def _summary(rows: list[dict[str, float]]) -> RecordingMetrics:
    def mean(k: str) -> float | None:
        vals = [r[k] for r in rows if k in r]
        return float(np.mean(vals)) if len(vals) == len(rows) else None

    n = rows[0]["n"]
    return RecordingMetrics(psnr=mean("psnr"), ssim=mean("ssim"),
                            tokens_per_frame=float(np.mean([r["k"] for r in rows])),
                            bits_per_frame=float(np.mean([r["bits"] for r in rows])),
                            decode_ms=float(np.median([r["decode_ms"] for r in rows])), frames=len(rows),
                            positions=int(n), kept_fraction=float(np.mean([r["k"] for r in rows])) / n if n else 0.0,
                            keyframes=int(sum(bool(r["keyframe"]) for r in rows)))


def _is_eos(data: bytes) -> bool:
    try:
        h = peek_header(data)
    except PacketError:
        return False
    return h.end_of_stream and h.n == 0
