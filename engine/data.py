"""Training data: real clips (decoded once with OpenCV, cached as uint8 arrays) sampled as random
crops, scales, flips and temporal strides, mixed with the synthetic generator.

Only `../shared/data/train` is ever read for training; a path containing an `eval` folder is
refused, so evaluation clips cannot leak into the weights by accident.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

import cv2
import numpy as np
from numpy.typing import NDArray

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".y4m")


@dataclass(frozen=True)
class DataConfig:
    """How clips are read and sampled."""

    cache_short_side: int = 288  # decoded frames are stored at this short side (eval clips are 192)
    max_frames_per_clip: int = 600  # long clips are capped so no single clip dominates
    crop: int = 128  # square training crops
    scale_range: tuple[float, float] = (0.6, 1.0)  # crop covers crop/scale cached pixels, then resized
    strides: tuple[int, ...] = (1, 1, 2)  # temporal strides drawn uniformly (more motion per frame)
    synthetic_fraction: float = 0.3  # share of samples drawn from the synthetic generator
    # frozen stretches: a frame held still for a while. Live streams are often static (a parked
    # robot, a fixed camera), and the router only saves tokens there if the model has learned to
    # keep refining a frame that does not change.
    freeze_prob: float = 0.3  # share of training streams that contain one
    freeze_frames: tuple[int, int] = (8, 48)

    def __post_init__(self) -> None:
        if self.crop < 16 or self.crop % 8:
            raise ValueError(f"DataConfig.crop must be a multiple of 8 and >= 16, got {self.crop}")
        lo, hi = self.scale_range
        if not 0.1 <= lo <= hi <= 1.0:
            raise ValueError(f"DataConfig.scale_range must satisfy 0.1 <= lo <= hi <= 1, got {self.scale_range}")
        if not 0.0 <= self.synthetic_fraction <= 1.0:
            raise ValueError(f"DataConfig.synthetic_fraction must be in [0, 1], got {self.synthetic_fraction}")
        if not 0.0 <= self.freeze_prob <= 1.0:
            raise ValueError(f"DataConfig.freeze_prob must be in [0, 1], got {self.freeze_prob}")
        if not 1 <= self.freeze_frames[0] <= self.freeze_frames[1]:
            raise ValueError(f"DataConfig.freeze_frames must satisfy 1 <= min <= max, got {self.freeze_frames}")


def find_videos(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Video files under the given files/folders (recursive, sorted), refusing evaluation folders."""
    out: list[Path] = []
    for p in map(Path, paths):
        if "eval" in p.resolve().parts:
            raise ValueError(f"refusing to train on {p}: it is inside an 'eval' folder (evaluation clips only)")
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix.lower() in VIDEO_SUFFIXES and f.is_file())
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
    return out


def read_clip(path: Path, short_side: int, max_frames: int) -> NDArray[np.uint8]:
    """Decode a video to uint8 RGB [T, H, W, 3] with its short side resized to `short_side`."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"cannot open video {path}")
    frames: list[NDArray[np.uint8]] = []
    try:
        while len(frames) < max_frames:
            ok, bgr = cap.read()
            if not ok:
                break
            h, w = bgr.shape[:2]
            s = short_side / min(h, w)
            size = (max(8, round(w * s)), max(8, round(h * s)))
            rgb = cv2.cvtColor(cv2.resize(bgr, size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
            frames.append(cast(NDArray[np.uint8], rgb))  # cv2's stubs do not track dtypes; decoded video is uint8
    finally:
        cap.release()
    if not frames:
        raise ValueError(f"no frames decoded from {path}")
    return np.stack(frames)


def _cache_path(path: Path, cfg: DataConfig, cache_dir: Path) -> Path:
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{cfg.cache_short_side}|{cfg.max_frames_per_clip}"
    return cache_dir / (hashlib.sha256(key.encode()).hexdigest()[:16] + ".npy")


def load_clips(files: list[Path], cfg: DataConfig, cache_dir: Path | None = None) -> list[NDArray[np.uint8]]:
    """Decode (or load from the cache) every clip; clips shorter than 2 frames are skipped."""
    clips: list[NDArray[np.uint8]] = []
    for f in files:
        cached = _cache_path(f, cfg, cache_dir) if cache_dir else None
        arr: NDArray[np.uint8]
        if cached is not None and cached.exists():
            arr = np.load(cached, mmap_mode=None)
        else:
            arr = read_clip(f, cfg.cache_short_side, cfg.max_frames_per_clip)
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                # a name of this process's own: two trainings filling one cache must not collide
                tmp = cached.with_suffix(f".{os.getpid()}.tmp.npy")
                np.save(tmp, arr)
                tmp.replace(cached)
        if len(arr) >= 2:
            clips.append(arr)
        log.info("clip %s: %s", f.name, arr.shape)
    return clips


def default_cache_dir() -> Path:
    return Path(os.environ.get("LIVETOK_CACHE", Path.home() / ".cache" / "livetok")) / "clips"


@dataclass(frozen=True)
class Segment:
    """Where one training stream is cut from a clip: frame indices, a square crop, the augmentations."""

    idx: NDArray[np.int64]  # frame indices into the clip (a short clip repeats its end)
    y0: int
    x0: int
    side: int  # crop side in cached pixels, resized to `DataConfig.crop` when different
    flip: bool  # horizontal flip
    reverse: bool  # time reversal


def draw_segment(rng: np.random.Generator, cfg: DataConfig, shape: tuple[int, ...], t: int,
                 min_t: int | None = None) -> Segment:
    """The sampling rules for a clip of `shape` [T, H, W, ...]: a temporal stride, t frames (with
    `min_t`, fewer for a clip too short, at least min_t), a random square crop at a random scale,
    flips and time reversal. Shared by the host and the device samplers, so both draw alike."""
    n, h, w = shape[0], shape[1], shape[2]
    stride = int(rng.choice(cfg.strides))
    while stride > 1 and (t - 1) * stride + 1 > n:
        stride -= 1
    if min_t is not None:
        t = max(min_t, min(t, (n - 1) // stride + 1))
    span = (t - 1) * stride + 1
    start = int(rng.integers(0, max(1, n - span + 1)))
    idx = np.arange(start, start + span, stride).clip(0, n - 1)
    scale = rng.uniform(*cfg.scale_range)
    side = min(h, w, round(cfg.crop / scale))
    y0 = int(rng.integers(0, h - side + 1))
    x0 = int(rng.integers(0, w - side + 1))
    flip = bool(rng.random() < 0.5)
    reverse = bool(rng.random() < 0.1)  # still plausible motion, more variety
    return Segment(idx, y0, x0, side, flip, reverse)


def freeze_index(rng: np.random.Generator, cfg: DataConfig, n: int) -> NDArray[np.int64]:
    """Frame order of an n-frame stream with one frame held still for a stretch, then carrying on
    (same length as before)."""
    at = int(rng.integers(0, n))
    hold = int(rng.integers(cfg.freeze_frames[0], cfg.freeze_frames[1] + 1))
    idx: NDArray[np.int64] = np.concatenate([np.arange(at + 1), np.full(hold, at), np.arange(at + 1, n)])[:n]
    return idx


class ClipSampler:
    """Draws batches of T-frame training clips, uint8 RGB [B, T, crop, crop, 3]."""

    def __init__(self, clips: list[NDArray[np.uint8]], cfg: DataConfig, seed: int = 0) -> None:
        if not clips and cfg.synthetic_fraction < 1.0:
            raise ValueError("no real clips to sample from (and synthetic_fraction < 1)")
        self.clips = clips
        self.cfg = cfg
        self.rng = np.random.default_rng(seed)
        # sample clips by sqrt(length): long clips are seen more, but do not drown the short ones
        w = np.sqrt(np.array([len(c) for c in clips], dtype=np.float64)) if clips else np.ones(0)
        self.weights = w / w.sum() if clips else w

    def _real(self, t: int, min_t: int | None = None) -> NDArray[np.uint8]:
        """t frames of a random clip; with `min_t`, a clip too short for t gives fewer (>= min_t)."""
        cfg = self.cfg
        clip = self.clips[self.rng.choice(len(self.clips), p=self.weights)]
        g = draw_segment(self.rng, cfg, clip.shape, t, min_t)
        seg = clip[g.idx, g.y0 : g.y0 + g.side, g.x0 : g.x0 + g.side]
        if g.side != cfg.crop:
            seg = np.stack([cv2.resize(f, (cfg.crop, cfg.crop), interpolation=cv2.INTER_AREA) for f in seg])
        if g.flip:
            seg = seg[:, :, ::-1]
        if g.reverse:
            seg = seg[::-1]
        return np.ascontiguousarray(seg)

    def _synthetic(self, t: int) -> NDArray[np.uint8]:
        from .synthetic import PRESETS as SYN
        from .synthetic import generate_clip

        cfg = replace(SYN["mixed"], height=self.cfg.crop, width=self.cfg.crop, frames=t)
        return generate_clip(cfg, self.rng)

    def stream(self, length: int, min_length: int = 1) -> NDArray[np.uint8]:
        """One stream of up to `length` frames (a real clip segment: at most what the clip holds, at
        least `min_length`; or a synthetic clip), uint8 RGB [T, crop, crop, 3]."""
        synth = not self.clips or self.rng.random() < self.cfg.synthetic_fraction
        s = self._synthetic(length) if synth else self._real(length, min_t=min_length)
        if self.rng.random() < self.cfg.freeze_prob:
            s = self._freeze(s)
        return s

    def _freeze(self, s: NDArray[np.uint8]) -> NDArray[np.uint8]:
        """Hold one frame still for a stretch, then carry on (same length as before)."""
        frozen: NDArray[np.uint8] = s[freeze_index(self.rng, self.cfg, len(s))]  # stubs type fancy indexing as Any
        return frozen

    def batch(self, batch: int, t: int) -> NDArray[np.uint8]:
        out = np.empty((batch, t, self.cfg.crop, self.cfg.crop, 3), dtype=np.uint8)
        for i in range(batch):
            synth = not self.clips or self.rng.random() < self.cfg.synthetic_fraction
            out[i] = self._synthetic(t) if synth else self._real(t)
        return out


class StreamSampler:
    """B persistent training streams for truncated BPTT over long horizons.

    Each call returns the next T frames of every stream; a stream that runs out is replaced by a
    new one (a keyframe: the caller resets that row's state). Streams are 24-120 frames long by
    default, so the model learns from states far older than one gradient window, as in use.
    """

    def __init__(self, clips: ClipSampler, batch: int, lengths: tuple[int, int], seed: int = 0) -> None:
        if lengths[0] < 1 or lengths[1] < lengths[0]:
            raise ValueError(f"stream lengths must satisfy 1 <= min <= max, got {lengths}")
        self.clips = clips
        self.batch = batch
        self.lengths = lengths
        self.rng = np.random.default_rng(seed)
        self._streams: list[NDArray[np.uint8] | None] = [None] * batch
        self._pos = [0] * batch

    def next(self, t: int) -> tuple[NDArray[np.uint8], NDArray[np.bool_]]:
        """Returns (frames uint8 [B, T, crop, crop, 3], new_stream bool [B])."""
        crop = self.clips.cfg.crop
        out = np.empty((self.batch, t, crop, crop, 3), dtype=np.uint8)
        new = np.zeros(self.batch, dtype=bool)
        for i in range(self.batch):
            s = self._streams[i]
            if s is None or self._pos[i] + t > len(s):
                length = int(self.rng.integers(max(t, self.lengths[0]), max(t, self.lengths[1]) + 1))
                s = self._streams[i] = self.clips.stream(length, min_length=t)
                self._pos[i] = 0
                new[i] = True
            out[i] = s[self._pos[i] : self._pos[i] + t]
            self._pos[i] += t
        return out, new
