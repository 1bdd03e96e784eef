from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from livetok.engine.data import ClipSampler, DataConfig, find_videos, load_clips

from .conftest import EVAL_DIR, TRAIN_DIR


def test_eval_clips_are_refused_for_training() -> None:
    with pytest.raises(ValueError, match="eval"):
        find_videos([EVAL_DIR])
    with pytest.raises(ValueError, match="eval"):
        find_videos([EVAL_DIR / "asl-no.mkv"])


def test_find_and_sample_real_clips(tmp_path: Path) -> None:
    files = find_videos([TRAIN_DIR / "asl"])
    assert len(files) == 16 and all(f.suffix == ".mkv" for f in files)
    cfg = DataConfig(cache_short_side=96, max_frames_per_clip=20, crop=32, synthetic_fraction=0.25)
    clips = load_clips(files[:2], cfg, cache_dir=tmp_path)
    assert len(clips) == 2 and clips[0].shape[1:] == (96, 128, 3) and len(clips[0]) == 20
    assert len(list(tmp_path.glob("*.npy"))) == 2  # cached for the next run
    s = ClipSampler(clips, cfg, seed=3)
    b = s.batch(4, 5)
    assert b.shape == (4, 5, 32, 32, 3) and b.dtype == np.uint8
    b2 = ClipSampler(clips, cfg, seed=3).batch(4, 5)
    assert np.array_equal(b, b2)  # seeded


def test_data_config_validation() -> None:
    with pytest.raises(ValueError, match="crop"):
        DataConfig(crop=30)
    with pytest.raises(ValueError, match="synthetic_fraction"):
        DataConfig(synthetic_fraction=2.0)


def test_frozen_stretches(tmp_path: Path) -> None:
    files = find_videos([TRAIN_DIR / "asl"])[:1]
    cfg = DataConfig(cache_short_side=96, max_frames_per_clip=40, crop=32, synthetic_fraction=0.0,
                     freeze_prob=1.0, freeze_frames=(10, 10))
    s = ClipSampler(load_clips(files, cfg, cache_dir=tmp_path), cfg, seed=1).stream(30, min_length=30)
    same = [np.array_equal(s[i], s[i + 1]) for i in range(len(s) - 1)]
    assert len(s) == 30
    # exactly one held stretch of 10 repeats (the stream ends inside it if it started late)
    run, best = 0, 0
    for v in same:
        run = run + 1 if v else 0
        best = max(best, run)
    assert best == min(10, sum(same))
    assert sum(same) <= 10
