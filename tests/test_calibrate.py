"""Calibration of the population means Ē (engine/calibrate.py): the fixed point at the operating rate."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from livetok.engine.calibrate import calibrate, mean_stream_signal
from livetok.engine.config import BudgetConfig, SenderConfig
from livetok.engine.model import Tokenizer
from livetok.engine.synthetic import PRESETS, generate_clip


def _clips() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    small = {"frames": 6, "height": 64, "width": 96}
    return [generate_clip(replace(PRESETS[name], **small), rng) for name in ("busy", "static")]


def test_calibrate_sets_both_buffers_to_the_measured_means(tiny_model: Tokenizer) -> None:
    model = copy.deepcopy(tiny_model)
    clips = _clips()
    means = calibrate(model, clips, rate=0.5, iterations=2)
    assert set(means) == {"error", "gain"}
    assert all(np.isfinite(v) and v > 0 for v in means.values()), means
    assert float(model.population_error) == pytest.approx(means["error"], rel=1e-6)
    assert float(model.population_gain) == pytest.approx(means["gain"], rel=1e-6)
    # the stored value is the mean signal measured at the operating point with the previous value
    # as normaliser: one more pass moves it by much less than the first pass did
    sender = SenderConfig(budget=BudgetConfig(policy="infotok", rate=0.5, normaliser="population", signal="error"),
                         keyframe_interval=0, ranking="gain")
    again = mean_stream_signal(model, clips, sender)
    assert again == pytest.approx(means["error"], rel=0.25)


def test_calibrate_refuses_single_frame_clips(tiny_model: Tokenizer) -> None:
    model = copy.deepcopy(tiny_model)
    one = [np.zeros((1, 64, 96, 3), np.uint8)]
    with pytest.raises(ValueError, match="at least 2 frames"):
        calibrate(model, one)
    assert torch.isfinite(model.population_error).all()
