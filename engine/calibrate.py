"""Measure the population mean full-rate error E[e] (InfoTok's E[ELBO]) on training clips and store
it with the weights.

The error a stream sees depends on the state the policy leaves behind (a stream coded at rate 0.5
has a worse state than one at full rate, so its full-rate error is larger). We therefore measure
E[e] at the operating point it normalises: a fixed point of "run infotok at `rate` with the
population normaliser E, measure the mean error E' of predicted frames, set E = E'". Then, over
the training population, an average frame gets about rate * N tokens.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch

from .checkpoint import load_weights, read_metadata, save_weights
from .config import BudgetConfig, SenderConfig
from .data import find_videos
from .frames import to_tensor
from .model import Tokenizer

log = logging.getLogger(__name__)


def eval_protocol_clip(path: Path, size: tuple[int, int] = (256, 192), frames: int = 48) -> np.ndarray:
    """The first `frames` frames, centre-cropped to the aspect of `size` and INTER_AREA-resized
    (the protocol of ../shared/tools/make_eval_clip.py), uint8 RGB [T, H, W, 3]."""
    w, h = size
    cap = cv2.VideoCapture(str(path))
    out: list[np.ndarray] = []
    try:
        while len(out) < frames:
            ok, bgr = cap.read()
            if not ok:
                break
            fh, fw = bgr.shape[:2]
            if fw * h > fh * w:
                cw = fh * w // h
                bgr = bgr[:, (fw - cw) // 2 : (fw - cw) // 2 + cw]
            else:
                ch = fw * h // w
                bgr = bgr[(fh - ch) // 2 : (fh - ch) // 2 + ch]
            out.append(cv2.cvtColor(cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    return np.stack(out) if out else np.zeros((0, h, w, 3), np.uint8)


@torch.no_grad()
def mean_stream_error(model: Tokenizer, clips: list[np.ndarray], sender: SenderConfig) -> float:
    """Mean over predicted (non-key) frames of the frame's mean full-rate error, streams in order."""
    total, count = 0.0, 0
    dev = next(model.parameters()).device
    for clip in clips:
        state = None
        for frame in clip:
            tokens, state = model.encode_step(to_tensor(frame, dev), state, sender)
            if not bool(tokens.keyframe[0]) and tokens.error is not None:
                total += float(tokens.error.mean())
                count += 1
    if count == 0:
        raise ValueError("calibration needs clips of at least 2 frames")
    return total / count


def calibrate(model: Tokenizer, clips: list[np.ndarray], rate: float = 0.5, iterations: int = 3) -> float:
    """Set and return `model.population_error` (see the module docstring)."""
    base = SenderConfig(budget=BudgetConfig(policy="fixed", rate=1.0), keyframe_interval=0)
    pe = mean_stream_error(model, clips, base)
    log.info("calibration: full-rate mean error %.5f", pe)
    sender = replace(base, budget=BudgetConfig(policy="infotok", rate=rate, normaliser="population"))
    for i in range(iterations):
        model.population_error.fill_(pe)
        pe = mean_stream_error(model, clips, sender)
        log.info("calibration: iteration %d mean error %.5f", i + 1, pe)
    model.population_error.fill_(pe)
    return pe


def calibrate_file(weights: str | Path, data_paths: list[str | Path], frames: int = 32, rate: float = 0.5) -> float:
    """Calibrate a weights file in place on the given training clips."""
    import json

    model = load_weights(weights)
    clips = [c for c in (eval_protocol_clip(f, frames=frames) for f in find_videos(data_paths)) if len(c) >= 2]
    pe = calibrate(model, clips, rate=rate)
    extra = json.loads(read_metadata(weights).get("extra", "{}"))
    extra["calibration"] = {"population_error": pe, "rate": rate, "clips": len(clips), "frames_per_clip": frames}
    save_weights(model, weights, extra)
    return pe
