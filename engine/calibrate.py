"""Measure the population means of the router signals (InfoTok's E[ELBO]) on training clips and
store them with the weights.

The signal a stream shows depends on the state its policy leaves behind (a stream coded at rate
0.5 has a worse state than one at full rate). So each mean is measured at the operating point it
normalises: a fixed point of "run infotok at `rate` with the population normaliser E, measure the
mean signal E' of predicted frames, set E = E'". Then, over the training population, an average
frame gets about rate * N tokens.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import cast

import cv2
import numpy as np
import torch
from numpy.typing import NDArray

from .checkpoint import load_weights, read_metadata, save_weights
from .config import BudgetConfig, SenderConfig
from .data import find_videos
from .frames import to_tensor
from .model import Tokenizer

log = logging.getLogger(__name__)


def eval_protocol_clip(path: Path, size: tuple[int, int] = (256, 192), frames: int = 48) -> NDArray[np.uint8]:
    """The first `frames` frames, centre-cropped to the aspect of `size` and INTER_AREA-resized
    (the protocol of ../shared/tools/make_eval_clip.py), uint8 RGB [T, H, W, 3]."""
    w, h = size
    cap = cv2.VideoCapture(str(path))
    out: list[NDArray[np.uint8]] = []
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
            rgb = cv2.cvtColor(cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
            out.append(cast(NDArray[np.uint8], rgb))  # cv2's stubs do not track dtypes; decoded video is uint8
    finally:
        cap.release()
    return np.stack(out) if out else np.zeros((0, h, w, 3), np.uint8)


@torch.no_grad()
def mean_stream_signal(model: Tokenizer, clips: list[NDArray[np.uint8]], sender: SenderConfig) -> float:
    """Mean over predicted (non-key) frames of the frame's mean router signal, streams in order."""
    total, count = 0.0, 0
    dev = next(model.parameters()).device
    gain = sender.budget.signal == "gain"
    for clip in clips:
        state = None
        for frame in clip:
            tokens, state = model.encode_step(to_tensor(frame, dev), state, sender)
            sig = tokens.gain if gain else tokens.error
            if not bool(tokens.keyframe[0]) and sig is not None:
                total += float(sig.mean())
                count += 1
    if count == 0:
        raise ValueError("calibration needs clips of at least 2 frames")
    return total / count


def calibrate(
    model: Tokenizer, clips: list[NDArray[np.uint8]], rate: float = 0.5, iterations: int = 2
) -> dict[str, float]:
    """Set and return the model's population means of both signals (see the module docstring)."""
    out = {}
    for signal in ("error", "gain"):
        buf = model.population_error if signal == "error" else model.population_gain
        # no skips: the skip rule reads the population gain being measured, and every frame should
        # give its signal from a decoded state (as in every calibration before the skip mode)
        budget = BudgetConfig(policy="infotok", rate=1.0, normaliser="population", signal=signal, skip_fraction=0.0)
        # start near full rate (infotok at rate 1.0 from the current buffer; the `fixed` policy
        # skips the router's signal at full rate), then iterate at the operating point
        base = SenderConfig(budget=budget, keyframe_interval=0, ranking="gain")
        pe = mean_stream_signal(model, clips, base)
        log.info("calibration %s: full-rate mean %.5f", signal, pe)
        sender = replace(base, budget=replace(budget, rate=rate))
        for i in range(iterations):
            buf.fill_(pe)
            pe = mean_stream_signal(model, clips, sender)
            log.info("calibration %s: iteration %d mean %.5f", signal, i + 1, pe)
        buf.fill_(pe)
        out[signal] = pe
    return out


def calibrate_file(
    weights: str | Path, data_paths: list[str | Path], frames: int = 32, rate: float = 0.5
) -> dict[str, float]:
    """Calibrate a weights file in place on the given training clips; returns the population means."""
    import json

    model = load_weights(weights)
    clips = [c for c in (eval_protocol_clip(f, frames=frames) for f in find_videos(data_paths)) if len(c) >= 2]
    means = calibrate(model, clips, rate=rate)
    extra = json.loads(read_metadata(weights).get("extra", "{}"))
    extra["calibration"] = {"population": means, "rate": rate, "clips": len(clips), "frames_per_clip": frames}
    save_weights(model, weights, extra)
    return means
