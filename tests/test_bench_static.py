"""`python -m livetok.bench.static`: static vs busy bits and the static stream's PSNR over time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from livetok.bench.static import main, static_vs_busy
from livetok.engine.config import BudgetConfig, SenderConfig
from livetok.engine.model import Tokenizer

from .conftest import eval_clips


def test_static_vs_busy_counts(tiny_model: Tokenizer, real_frames: np.ndarray) -> None:
    sender = SenderConfig(budget=BudgetConfig(policy="fixed", rate=1.0))
    r = static_vs_busy(tiny_model, real_frames[:6], sender).to_json()
    assert r["frames"] == 6
    assert list(r["static_psnr_at"]) == ["0", "1", "5", "last"]
    # full rate: every non-key frame sends all N tokens in both runs
    assert r["static_tokens"] == r["busy_tokens"] == 768
    assert r["static_bits"] > 0 and r["busy_bits"] > 0
    # frame 0 is the same keyframe in both runs
    assert r["static_psnr_at"]["0"] > 5


def test_cli_json(tiny_weights: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(eval_clips()[0]), "--weights", str(tiny_weights), "--frames", "3", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    o = res["overall"]
    assert o["static_over_busy_bits"] == pytest.approx(o["static_bits"] / o["busy_bits"])
    assert set(o["static_psnr_at"]) == {"0", "1", "last"}
