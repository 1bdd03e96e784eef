"""`livetok eval`: run clips through sender -> packet bytes -> receiver and measure what arrives.

Bits are counted from the real packet bytes (header, mask and CRC included). PSNR and SSIM are
computed per frame on uint8 RGB and averaged over frames (DESIGN.md §7).
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from livetok.engine.config import SenderConfig
from livetok.engine.metrics import psnr, ssim
from livetok.engine.results import JsonResult, optional
from livetok.engine.runtime import Runtime

from .bitrate import check_target, policy_floor
from .errors import StreamError
from .session import EncodedFrame, ReceiverSession, SenderSession
from .video_io import VideoReader


@dataclass(frozen=True)
class FrameRecord(JsonResult):
    index: int
    keyframe: bool
    k: int
    n: int
    bits: int  # the packet as sent (SenderConfig.wire: v3 entropy-coded by default)
    bits_v1: int  # the same tokens as a fixed-length v1 packet: what the entropy coder saves
    psnr: float
    ssim: float
    encode_ms: float
    decode_ms: float
    decodes: int


FrameCallback = Callable[[np.ndarray, EncodedFrame, np.ndarray, FrameRecord], None]


def run_frames(
    model: Runtime,
    frames: Iterable[np.ndarray],
    sender: SenderConfig,
    fps: float = 30.0,
    on_frame: FrameCallback | None = None,
    receiver: bool = True,
) -> list[FrameRecord]:
    """Stream frames through a sender and a receiver; one record per frame.

    `on_frame(original, encoded, decoded, record)` sees every frame (for video writers, plots).
    Raises StreamError if the receiver's frame ever differs from the sender's reconstruction:
    the closed loop must be exact on one backend. `receiver=False` skips the receiver and scores
    the sender's reconstruction, which that check (and tests/test_session.py) shows is the same
    frame; decode_ms is then NaN. The packets are still made: bits are real.
    """
    tx, rx = SenderSession(model, sender), ReceiverSession(model)
    records = []
    for i, frame in enumerate(frames):
        enc = tx.encode(frame, timestamp_us=round(i * 1e6 / fps))
        if receiver:
            t0 = time.perf_counter()
            out = rx.decode(enc.data)
            dec_ms = (time.perf_counter() - t0) * 1e3
            if not np.array_equal(out, enc.recon):
                raise StreamError(f"frame {i}: the receiver's frame differs from the sender's reconstruction")
        else:
            out, dec_ms = enc.recon, math.nan
        rec = FrameRecord(
            index=i, keyframe=enc.packet.keyframe, k=enc.packet.k, n=enc.packet.n, bits=len(enc.data) * 8,
            bits_v1=len(enc.packet.pack()) * 8,
            psnr=psnr(frame, out), ssim=ssim(frame, out), encode_ms=enc.encode_ms, decode_ms=dec_ms,
            decodes=enc.tokens.decodes,
        )
        records.append(rec)
        if on_frame is not None:
            on_frame(frame, enc, out, rec)
    if not records:
        raise StreamError("no frames to evaluate")
    return records


@dataclass(frozen=True, kw_only=True)
class Metrics(JsonResult):
    """The metric set M of DESIGN.md §6 over some frames (frame-weighted means; times are per-frame medians)."""

    psnr: float
    ssim: float
    tokens_per_frame: float
    bits_per_frame: float  # the packets as sent
    bits_per_frame_v1: float  # the same tokens as fixed-length v1 packets
    encode_ms: float
    decode_ms: float  # NaN without a receiver (`run_frames`)
    decodes_per_frame: float
    frames: int
    positions: int
    # achieved, not requested: the requested rate is the sender's (`rate_target` in `eval --json`)
    kept_fraction: float
    keyframes: int


@dataclass(frozen=True, kw_only=True)
class OverallMetrics(Metrics):
    """M over every clip, and all packets over all clips' durations."""

    bits_per_s: float


@dataclass(frozen=True, kw_only=True)
class ClipMetrics(Metrics):
    """M of one clip, at its own frame rate; the target keys (`TargetCheck`) with a `target_bps`, the frames'
    records when asked for."""

    fps: float
    bits_per_s: float  # its packets at `fps` (stream/bitrate.py: `bits_per_frame * fps`)
    target_bps: float | None = optional()
    target_below_floor: bool | None = optional()
    floor_share: float | None = optional()
    warning: str | None = optional(present_with="target_bps")
    per_frame: list[FrameRecord] | None = optional()


@dataclass(frozen=True)
class EvalResult(JsonResult):
    """`livetok eval`'s result: M overall (frame-weighted) and per clip (by name)."""

    overall: OverallMetrics
    clips: dict[str, ClipMetrics]


def summarize(records: list[FrameRecord]) -> Metrics:
    """The metric set M of DESIGN.md §6 (frame-weighted means; times are per-frame medians)."""
    def mean(key: str) -> float:
        return float(np.mean([getattr(r, key) for r in records]))

    n = records[0].n
    return Metrics(
        psnr=mean("psnr"),
        ssim=mean("ssim"),
        tokens_per_frame=mean("k"),
        bits_per_frame=mean("bits"),
        bits_per_frame_v1=mean("bits_v1"),
        encode_ms=float(statistics.median(r.encode_ms for r in records)),
        decode_ms=float(statistics.median(r.decode_ms for r in records)),
        decodes_per_frame=mean("decodes"),
        frames=len(records),
        positions=n,
        kept_fraction=mean("k") / n if n else 0.0,
        keyframes=sum(r.keyframe for r in records),
    )


def video_files(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """The clips named on a command line: a file as it is, a folder as the video files directly in it
    (sorted; `engine.data.VIDEO_SUFFIXES`). One-line errors for a missing path and an empty folder."""
    from livetok.engine.data import VIDEO_SUFFIXES

    out: list[str] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(str(f) for f in p.iterdir() if f.suffix.lower() in VIDEO_SUFFIXES and f.is_file())
            if not found:
                raise StreamError(f"{p} is a folder with no video files in it ({', '.join(VIDEO_SUFFIXES)})")
            out += found
        elif p.is_file():
            out.append(str(p))
        else:
            raise StreamError(f"no such file or folder: {p}")
    return out


def clip_name(path: str | os.PathLike[str]) -> str:
    return Path(path).stem


def evaluate_files(
    model: Runtime,
    paths: list[str | os.PathLike[str]],
    sender: SenderConfig,
    max_frames: int | None = None,
    per_frame: bool = False,
    progress: Callable[[str, int], None] | None = None,
    receiver: bool = True,
) -> EvalResult:
    """Evaluate clips; returns M overall (frame-weighted means) and per clip.
    `receiver`: see run_frames.

    Besides M, each clip has `fps` (its own) and `bits_per_s`: its packets at that rate (stream/bitrate.py:
    `bits_per_frame * fps`); overall, all packets over all clips' durations. With a `target_bps`, each
    clip also has `target_bps`, `target_below_floor`, `floor_share` (`TargetCheck`) and `warning`."""
    clips: dict[str, ClipMetrics] = {}
    everything: list[FrameRecord] = []
    seconds = 0.0
    for p in paths:
        name = clip_name(p)
        if name in clips:
            raise StreamError(f"two inputs share the clip name {name!r}; rename one")
        with VideoReader(p) as reader:
            frames = _limit(reader, max_frames)
            recs = run_frames(model, frames, sender, reader.fps,
                              on_frame=(lambda *a, name=name: progress(name, 1)) if progress else None,
                              receiver=receiver)
            fps = reader.fps
        # frame i is stamped i / fps (run_frames): n frames last n / fps (stream/bitrate.py)
        clip_s = len(recs) / fps
        m = ClipMetrics.extending(summarize(recs), fps=fps, bits_per_s=sum(r.bits for r in recs) / clip_s,
                                  per_frame=recs if per_frame else None)
        rc = sender.rate_control
        coded = [r for r in recs if not r.keyframe and r.k]
        check = check_target(rc.target_bps if rc is not None else None, m.bits_per_s,
                             sum(r.k <= policy_floor(sender, r.n) for r in coded), len(coded), clip_s)
        if check is not None:
            m = dataclasses.replace(m, **check.as_json(), warning=check.warning(name))
        clips[name] = m
        everything += recs
        seconds += clip_s
    overall = OverallMetrics.extending(summarize(everything), bits_per_s=sum(r.bits for r in everything) / seconds)
    return EvalResult(overall, clips)


def _limit(frames: Iterable[np.ndarray], n: int | None) -> Iterable[np.ndarray]:
    for i, f in enumerate(frames):
        if n is not None and i >= n:
            return
        yield f
