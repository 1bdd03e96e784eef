from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from livetok.engine.checkpoint import load_weights
from livetok.engine.data import DataConfig
from livetok.engine.train import TrainConfig, train


def test_train_checkpoint_and_resume(tmp_path: Path) -> None:
    cfg = TrainConfig(preset="tiny", arm="elbo", steps=4, batch=2, clip_frames=2, stream_frames=(3, 5), lr=1e-3,
                      warmup_steps=2, log_every=1, checkpoint_every=2, head_steps=0,
                      data=DataConfig(crop=32, synthetic_fraction=1.0))
    out = tmp_path / "run"
    p = train(cfg, out, [], resume=False, progress=False)
    m = load_weights(p)
    assert m.cfg.name == "tiny"
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert all(r["loss"] > 0 and 0 < r["rate"] <= 1 for r in log)
    # resume: a longer run continues from step 4, it does not start over
    cfg6 = TrainConfig(**{**cfg.__dict__, "steps": 6})
    train(cfg6, out, [], resume=True, progress=False)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    # the same command with a head phase resumes after the main steps and trains only the head
    before = {k: v.clone() for k, v in load_weights(out / "model.safetensors").state_dict().items()}
    train(TrainConfig(**{**cfg6.__dict__, "head_steps": 3}), out, [], resume=True, progress=False)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["head_step"] for r in log if "head_step" in r] == [1, 2, 3]
    after = load_weights(out / "model.safetensors").state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and all(k.startswith("budget_head.") for k in changed), sorted(changed)[-3:]


@pytest.mark.parametrize("arm", ["fixed", "uniform"])
def test_other_arms_run(tmp_path: Path, arm: str) -> None:
    cfg = TrainConfig(preset="tiny", arm=arm, fixed_rate=0.5, steps=1, batch=2, clip_frames=2,
                      log_every=1, head_steps=0, data=DataConfig(crop=32, synthetic_fraction=1.0))
    train(cfg, tmp_path, [], resume=False, progress=False)
    rate = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[-1])["rate"]
    if arm == "fixed":
        assert rate == pytest.approx(0.5)


def test_bad_train_config() -> None:
    with pytest.raises(ValueError, match="arm"):
        TrainConfig(arm="magic")
    with pytest.raises(ValueError, match="preset"):
        TrainConfig(preset="nope")
