"""`livetok bench arms` (benchmarks/arms.py): two training steps per arm on synthetic data, a
few frames of the bundled clip; the JSON's structure, its numbers, checkpoint reuse and the CLI."""

from __future__ import annotations

import contextlib
import io
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from livetok.bench.arms import ArmsConfig, bench_arms, train_model
from livetok.cli import main
from livetok.engine.synthetic import PRESETS, generate_clip
from tests.conftest import BUNDLED_CLIP

CFG = ArmsConfig(steps=2, batch=2, crop=32, clip_frames=2, stream_frames=(2, 4), calib_frames=3, threads=1)


@pytest.fixture(scope="module")
def train_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic training (and calibration) clip: the eval clip is never trained on."""
    frames = generate_clip(replace(PRESETS["busy"], frames=4, height=64, width=96), np.random.default_rng(0))
    path = tmp_path_factory.mktemp("train") / "synthetic.mp4"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (96, 64))
    for f in frames:
        w.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    w.release()
    return path


def _check(res: dict[str, Any], cfg: ArmsConfig) -> None:
    n = res["positions"]
    assert n == (192 // 8) * (256 // 8)
    arms = res["arms"]
    assert set(arms) == {"fixed", "uniform", "elbo"}
    assert set(arms["fixed"]) == {"fixed"} and set(arms["uniform"]) == set(arms["elbo"]) == {"fixed", "infotok"}
    assert [p["model"] for p in arms["fixed"]["fixed"]] == ["fixed-0.25", "fixed-0.5", "fixed-0.75"]
    for arm, policies in arms.items():
        for policy, pts in policies.items():
            rates = cfg.fixed_rates if arm == "fixed" else cfg.rates
            assert [p["setting_rate"] for p in pts] == list(rates)
            for p, r in zip(pts, rates, strict=True):
                assert p["frames"] == 3 and math.isfinite(p["psnr"]) and 0 < p["ssim"] <= 1
                assert 1 <= p["tokens_per_frame"] <= n and p["bits_per_frame"] > 0
                if policy == "fixed":  # every frame, keyframe included, gets round(rate * N)
                    assert p["tokens_per_frame"] == round(r * n)
                else:  # infotok: per-frame budgets between N/16 and N
                    assert n / 16 - 1e-9 <= p["tokens_per_frame"] <= n
    assert set(res["models"]) == {"fixed-0.25", "fixed-0.5", "fixed-0.75", "uniform", "elbo"}
    for name in ("uniform", "elbo"):
        cal = res["models"][name]["calibration"]
        assert cal["clips"] == 1 and cal["frames_per_clip"] == 3 and cal["population"]["gain"] > 0
    s = res["summary"]
    ref = arms["fixed"]["fixed"][-1]
    assert s["reference"]["psnr"] == ref["psnr"] and s["reference"]["tokens_per_frame"] == round(0.75 * n)
    assert s["tokens_saved_vs_fixed"]["fixed"]["fixed"] == pytest.approx(0.0, abs=1e-9)
    for arm, d in s["tokens_saved_vs_fixed"].items():
        for policy, v in d.items():
            ps = [p["psnr"] for p in arms[arm][policy]]
            # NaN exactly when the reference PSNR lies outside the curve (nothing to interpolate)
            assert math.isnan(v) == (not min(ps) <= ref["psnr"] <= max(ps)), (arm, policy, v, ps)
            if not math.isnan(v):
                assert 1.0 - n / ref["tokens_per_frame"] <= v <= 1.0  # at most N tokens, at least none
    best = s["best"]
    assert s["tokens_saved_vs_fixed"][s["best_arm"]][s["best_policy"]] == s["best_tokens_saved_vs_fixed"]
    assert best == f"{s['best_arm']}/{s['best_policy']}"
    assert s["best_tokens_saved_vs_fixed"] == max(v for d in s["tokens_saved_vs_fixed"].values()
                                                  for v in d.values() if not math.isnan(v))


def _quality(res: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(arm, pol, p["psnr"], p["ssim"], p["tokens_per_frame"], p["bits_per_frame"])
            for arm, d in res["arms"].items() for pol, pts in d.items() for p in pts]


def test_bench_arms_trains_evaluates_and_reuses(tmp_path: Path, train_clip: Path) -> None:
    res = bench_arms([BUNDLED_CLIP], CFG, tmp_path / "arms", [train_clip], max_frames=3).to_json()
    _check(res, CFG)
    assert not any(m["train"]["reused"] for m in res["models"].values())
    json.dumps(res)  # serialisable as it is
    # a second run finds every checkpoint and calibration in place: it only evaluates, same numbers
    again = bench_arms([BUNDLED_CLIP], CFG, tmp_path / "arms", [train_clip], max_frames=3).to_json()
    assert all(m["train"]["reused"] for m in again["models"].values())
    assert all(again["models"][k]["calibration"]["reused"] for k in ("uniform", "elbo"))
    assert _quality(again) == _quality(res)  # timings aside, identical
    # another step count is another configuration: the model is trained again, from scratch
    other = replace(CFG, steps=1)
    info = train_model("elbo", other.train_config("elbo"), tmp_path / "arms" / "elbo", [train_clip])
    assert not info.reused and info.steps == 1
    steps = [json.loads(line)["step"] for line in (tmp_path / "arms" / "elbo" / "log.jsonl").read_text().splitlines()]
    assert steps == [1]


def test_bench_arms_refuses_eval_clips_as_training_data(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="evaluation clips"):
        bench_arms([BUNDLED_CLIP], CFG, tmp_path, [BUNDLED_CLIP])


def test_cli_bench_arms_json(tmp_path: Path, train_clip: Path) -> None:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["bench", "arms", str(BUNDLED_CLIP), "--data", str(train_clip), "--out", str(tmp_path),
                     "--steps", "1", "--calib-frames", "3", "--max-frames", "3", "--threads", "1", "--json"])
    assert code == 0
    res = json.loads(buf.getvalue())  # stdout is the JSON object alone
    assert res["config"]["steps"] == 1 and res["config"]["preset"] == "tiny"
    _check(res, ArmsConfig(steps=1))
