"""Training streams sampled where the model runs: every clip held as a uint8 tensor on the device.

On a GPU the host sampler (engine/data.py: numpy crops, OpenCV resizes, one Python call per row)
cannot feed batches of hundreds of streams; here the decoded clips are carried onto the device once
and each new stream is cut, resized, flipped and frozen there by a handful of tensor operations. The
sampling rules are the host sampler's (`ClipSampler._real`, `_freeze`): clips drawn by sqrt(length),
a temporal stride, a random square crop at a random scale, horizontal flips and time reversal. The
synthetic share comes from a pool of generator clips made once at start (the generator is numpy).
Works on any device, so the CPU rehearses what the GPU runs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor

from .data import ClipSampler, DataConfig


class DeviceStreamSampler:
    """B persistent training streams on `device`, the `StreamSampler` contract with tensors out.

    `next(t)` returns (frames float32 [B, t, 3, crop, crop] in [-1, 1] on the device, new_stream
    bool [B] on the CPU); a row whose stream ran out starts a new one (the caller resets its state).
    """

    def __init__(self, clips: list[NDArray[np.uint8]], cfg: DataConfig, batch: int, lengths: tuple[int, int],
                 device: torch.device, seed: int = 0, synthetic_pool: int = 32) -> None:
        if lengths[0] < 1 or lengths[1] < lengths[0]:
            raise ValueError(f"stream lengths must satisfy 1 <= min <= max, got {lengths}")
        self.cfg, self.batch, self.lengths, self.device = cfg, batch, lengths, device
        self.rng = np.random.default_rng(seed)
        self.clips = [torch.from_numpy(np.ascontiguousarray(c)).to(device) for c in clips]
        w = np.sqrt(np.array([len(c) for c in clips], dtype=np.float64)) if clips else np.ones(0)
        self.weights = w / w.sum() if clips else w
        self.synthetic: Tensor | None = None
        if cfg.synthetic_fraction > 0 or not clips:
            host = ClipSampler(clips, cfg, seed=seed + 1)
            pool = [host._synthetic(lengths[1]) for _ in range(synthetic_pool)]
            self.synthetic = torch.from_numpy(np.stack(pool)).to(device)  # [P, L, crop, crop, 3]
        self.buf = torch.zeros(batch, lengths[1], cfg.crop, cfg.crop, 3, dtype=torch.uint8, device=device)
        self.length = [0] * batch
        self.pos = [0] * batch

    def _real(self, length: int, min_t: int) -> Tensor:
        rng, cfg = self.rng, self.cfg
        clip = self.clips[int(rng.choice(len(self.clips), p=self.weights))]
        n = clip.shape[0]
        stride = int(rng.choice(cfg.strides))
        while stride > 1 and (length - 1) * stride + 1 > n:
            stride -= 1
        t = max(min_t, min(length, (n - 1) // stride + 1))
        span = (t - 1) * stride + 1
        start = int(rng.integers(0, max(1, n - span + 1)))
        idx = torch.arange(start, start + span, stride, device=self.device).clamp(0, n - 1)
        h, w = clip.shape[1:3]
        side = min(h, w, round(cfg.crop / rng.uniform(*cfg.scale_range)))
        y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        seg = clip[idx, y0:y0 + side, x0:x0 + side]
        if side != cfg.crop:
            x = F.interpolate(seg.permute(0, 3, 1, 2).float(), size=(cfg.crop, cfg.crop), mode="area")
            seg = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        if rng.random() < 0.5:
            seg = seg.flip(2)
        if rng.random() < 0.1:
            seg = seg.flip(0)  # time reversal: still plausible motion, more variety
        return seg

    def _stream(self, length: int, min_t: int) -> Tensor:
        synth = self.synthetic is not None and (not self.clips or self.rng.random() < self.cfg.synthetic_fraction)
        if synth:
            assert self.synthetic is not None
            s = self.synthetic[int(self.rng.integers(0, self.synthetic.shape[0])), :length]
            s = s.flip(2) if self.rng.random() < 0.5 else s
        else:
            s = self._real(length, min_t)
        if self.rng.random() < self.cfg.freeze_prob:  # hold one frame still for a stretch, then carry on
            at = int(self.rng.integers(0, s.shape[0]))
            hold = int(self.rng.integers(self.cfg.freeze_frames[0], self.cfg.freeze_frames[1] + 1))
            idx = np.concatenate([np.arange(at + 1), np.full(hold, at), np.arange(at + 1, s.shape[0])])[: s.shape[0]]
            s = s[torch.from_numpy(idx).to(self.device)]
        return s

    def next(self, t: int) -> tuple[Tensor, NDArray[np.bool_]]:
        if t > self.lengths[1]:
            raise ValueError(f"window of {t} frames is longer than the longest stream ({self.lengths[1]})")
        new = np.zeros(self.batch, dtype=bool)
        for i in range(self.batch):
            if self.pos[i] + t > self.length[i]:
                want = int(self.rng.integers(max(t, self.lengths[0]), max(t, self.lengths[1]) + 1))
                s = self._stream(want, min_t=t)
                self.buf[i, : s.shape[0]] = s
                self.length[i], self.pos[i], new[i] = s.shape[0], 0, True
        idx = torch.tensor(self.pos, device=self.device)[:, None] + torch.arange(t, device=self.device)
        raw = self.buf[torch.arange(self.batch, device=self.device)[:, None], idx]  # [B, t, crop, crop, 3]
        for i in range(self.batch):
            self.pos[i] += t
        frames = raw.permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0
        return frames, new
