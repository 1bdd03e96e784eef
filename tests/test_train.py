from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from livetok.engine.checkpoint import load_weights
from livetok.engine.data import DataConfig
from livetok.engine.train import TrainConfig, train


def _log(run: Path) -> list[dict[str, float]]:
    """A run's log.jsonl, one record per logged step."""
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_train_checkpoint_and_resume(tmp_path: Path) -> None:
    cfg = TrainConfig(preset="tiny", arm="elbo", steps=4, batch=2, clip_frames=2, stream_frames=(3, 5), lr=1e-3,
                      warmup_steps=2, log_every=1, checkpoint_every=2, head_steps=0,
                      data=DataConfig(crop=32, synthetic_fraction=1.0))
    out = tmp_path / "run"
    p = train(cfg, out, [], resume=False, progress=False)
    m = load_weights(p)
    assert m.cfg.name == "tiny"
    log = _log(out)
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert all(r["loss"] > 0 and 0 < r["rate"] <= 1 for r in log)
    # resume: a longer run continues from step 4, it does not start over
    cfg6 = TrainConfig(**{**cfg.__dict__, "steps": 6})
    train(cfg6, out, [], resume=True, progress=False)
    log = _log(out)
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    # the same command with a head phase resumes after the main steps and trains only the head
    before = {k: v.clone() for k, v in load_weights(out / "model.safetensors").state_dict().items()}
    train(TrainConfig(**{**cfg6.__dict__, "head_steps": 3}), out, [], resume=True, progress=False)
    log = _log(out)
    assert [r["head_step"] for r in log if "head_step" in r] == [1, 2, 3]
    after = load_weights(out / "model.safetensors").state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and all(k.startswith("budget_head.") for k in changed), sorted(changed)[-3:]


@pytest.mark.parametrize("arm", ["fixed", "uniform"])
def test_other_arms_run(tmp_path: Path, arm: str) -> None:
    cfg = TrainConfig(preset="tiny", arm=arm, fixed_rate=0.5, steps=1, batch=2, clip_frames=2,
                      log_every=1, head_steps=0, data=DataConfig(crop=32, synthetic_fraction=1.0))
    train(cfg, tmp_path, [], resume=False, progress=False)
    rate = _log(tmp_path)[-1]["rate"]
    if arm == "fixed":
        assert rate == pytest.approx(0.5)


def test_head_only_from_weights_trains_the_head_alone_and_skips_change_its_streams(tmp_path: Path) -> None:
    """`--steps 0` on `--init` weights: the trunk is bit-identical after, only the budget head moves;
    with the served skips on, the head sees held frames, so it learns something else than without."""
    base = TrainConfig(preset="tiny", arm="elbo", steps=1, batch=2, clip_frames=3, stream_frames=(6, 6),
                       log_every=1, head_steps=0, data=DataConfig(crop=32, synthetic_fraction=1.0, freeze_prob=1.0,
                                                                  freeze_frames=(6, 6)))
    init = train(base, tmp_path / "init", [], resume=False, progress=False)
    before = load_weights(init).state_dict()
    heads = {}
    for skips in (True, False):
        cfg = TrainConfig(**{**base.__dict__, "steps": 0, "head_steps": 3, "head_skips": skips})
        p = train(cfg, tmp_path / f"head{skips}", [], resume=False, progress=False, init_weights=str(init))
        after = load_weights(p).state_dict()
        changed = {k for k in after if not torch.equal(after[k], before[k])}
        assert changed and all(k.startswith("budget_head.") for k in changed), sorted(changed)[-3:]
        log = _log(tmp_path / f"head{skips}")
        assert [r["head_step"] for r in log] == [1, 2, 3]
        heads[skips] = after["budget_head.out.weight"]
    assert not torch.equal(heads[True], heads[False])
    with pytest.raises(ValueError, match="head_steps"):
        TrainConfig(steps=0, head_steps=0)
    # the annealed schedule: head_lr * (1 + cos(pi * step / steps)) / 2 at steps 0, 1, 2 of 3, logged per step
    cfg = TrainConfig(**{**base.__dict__, "steps": 0, "head_steps": 3, "head_schedule": "cosine"})
    train(cfg, tmp_path / "cosine", [], resume=False, progress=False, init_weights=str(init))
    log = _log(tmp_path / "cosine")
    assert [r["lr"] for r in log] == pytest.approx([2e-3, 1.5e-3, 0.5e-3])
    assert [r["lr"] for r in _log(tmp_path / "headTrue")] == [2e-3] * 3
    with pytest.raises(ValueError, match="head_schedule"):
        TrainConfig(head_schedule="linear")


def test_bad_train_config() -> None:
    with pytest.raises(ValueError, match="arm"):
        TrainConfig(arm="magic")
    with pytest.raises(ValueError, match="preset"):
        TrainConfig(preset="nope")


def test_device_sampler_streams() -> None:
    """The device sampler's contract: float frames in [-1, 1] of the crop size, new streams flagged,
    a stream continues where it left off (a synthetic stream of one clip: consecutive windows differ
    but both come from the pool), real clips cropped and resized on the device."""
    import numpy as np

    from livetok.engine.device_data import DeviceStreamSampler

    rng = np.random.default_rng(0)
    real = [rng.integers(0, 256, (30, 48, 64, 3), dtype=np.uint8) for _ in range(2)]
    cfg = DataConfig(crop=32, synthetic_fraction=0.5, freeze_prob=0.5)
    s = DeviceStreamSampler(real, cfg, batch=4, lengths=(6, 6), device=torch.device("cpu"), seed=1, synthetic_pool=2)
    f1, new1 = s.next(3)
    assert f1.shape == (4, 3, 3, 32, 32) and f1.dtype == torch.float32
    assert float(f1.min()) >= -1.0 and float(f1.max()) <= 1.0
    assert new1.tolist() == [True] * 4
    f2, new2 = s.next(3)  # streams are 6 frames: the second window continues every stream
    assert new2.tolist() == [False] * 4
    def window(a: int, b: int) -> torch.Tensor:
        return s.buf[:, a:b].permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0

    # the two windows are frames 0..2 and 3..5 of the same streams
    assert torch.equal(window(0, 3), f1) and torch.equal(window(3, 6), f2)
    _, new3 = s.next(3)  # and the third starts new ones
    assert new3.tolist() == [True] * 4
    with pytest.raises(ValueError, match="longer than the longest stream"):
        s.next(7)


def test_train_stops_at_max_minutes_with_rate_term(tmp_path: Path) -> None:
    """A wall-time limit ends the run (annealed) before `steps`; the rate term logs its bits."""
    cfg = TrainConfig(preset="rt-tiny", arm="uniform", steps=10_000, batch=2, clip_frames=2, stream_frames=(3, 5),
                      log_every=1, head_steps=0, max_minutes=0.05, rate_weight=0.1, sampler="device", warmup_steps=1,
                      data=DataConfig(crop=32, synthetic_fraction=1.0))
    train(cfg, tmp_path, [], resume=False, progress=False)
    log = _log(tmp_path)
    assert 1 <= len(log) < 10_000
    assert all(r["bits"] > 0 for r in log)
    assert log[-1]["lr"] < 0.5 * cfg.lr  # the schedule followed the clock
    assert (tmp_path / "model.safetensors").exists()


def test_progress_to_a_log_file_is_one_line_per_logged_step(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Under pytest stderr is no terminal, as in `livetok train ... > log 2>&1`: a bar would print only when
    it stops, so the run says how it goes in plain lines instead, one per logged step."""
    cfg = TrainConfig(preset="tiny", arm="elbo", steps=4, batch=2, clip_frames=2, stream_frames=(3, 5),
                      log_every=2, checkpoint_every=4, head_steps=2,
                      data=DataConfig(crop=32, synthetic_fraction=1.0))
    train(cfg, tmp_path, [], resume=False, progress=True)
    err = capsys.readouterr().err.splitlines()
    steps = [line.split()[2] for line in err if line.startswith("train step ")]
    assert steps == ["2/4", "4/4"], err
    assert [line.split()[2] for line in err if line.startswith("head step ")] == ["2/2"], err


def test_cli_train_passes_the_data_options(tmp_path: Path) -> None:
    """`livetok train --scale-range` and `--crop` reach the run's DataConfig (train_config.json), and
    `--grown-lr-scale` its TrainConfig; a bad range is one line, exit code 2."""
    from livetok.cli import main

    out = tmp_path / "run"
    # `--data` with no paths: synthetic clips only, whatever the working directory holds
    assert main(["train", "--data", "--preset", "tiny", "--steps", "1", "--batch", "2", "--clip-frames", "2",
                 "--crop", "32", "--synthetic-fraction", "1.0", "--scale-range", "0.4", "0.9", "--head-steps", "0",
                 "--grown-lr-scale", "1.5", "-o", str(out)]) == 0
    saved = json.loads((out / "train_config.json").read_text())
    data = saved["data"]
    assert data["scale_range"] == [0.4, 0.9] and data["crop"] == 32
    assert saved["grown_lr_scale"] == 1.5
    assert main(["train", "--scale-range", "0.9", "0.4", "--steps", "1", "-o", str(tmp_path / "bad")]) == 2
