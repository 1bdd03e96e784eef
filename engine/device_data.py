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

from .data import ClipSampler, DataConfig, draw_segment, freeze_index


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
        cfg = self.cfg
        clip = self.clips[int(self.rng.choice(len(self.clips), p=self.weights))]
        g = draw_segment(self.rng, cfg, tuple(clip.shape), length, min_t)
        seg = clip[torch.from_numpy(g.idx).to(self.device), g.y0:g.y0 + g.side, g.x0:g.x0 + g.side]
        if g.side != cfg.crop:
            x = F.interpolate(seg.permute(0, 3, 1, 2).float(), size=(cfg.crop, cfg.crop), mode="area")
            seg = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        if g.flip:
            seg = seg.flip(2)
        if g.reverse:
            seg = seg.flip(0)
        return seg

    def _stream(self, length: int, min_t: int) -> Tensor:
        synth = self.synthetic is not None and (not self.clips or self.rng.random() < self.cfg.synthetic_fraction)
        if synth:
            assert self.synthetic is not None
            s = self.synthetic[int(self.rng.integers(0, self.synthetic.shape[0])), :length]
            s = s.flip(2) if self.rng.random() < 0.5 else s
        else:
            s = self._real(length, min_t)
        if self.rng.random() < self.cfg.freeze_prob:
            s = s[torch.from_numpy(freeze_index(self.rng, self.cfg, s.shape[0])).to(self.device)]
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
        self.pos = [p + t for p in self.pos]
        frames = raw.permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0
        return frames, new
