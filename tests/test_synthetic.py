"""Synthetic video generator: shapes, determinism, and that the density knobs do what they say."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import numpy as np
import pytest

from livetok.engine.synthetic import (
    PRESETS,
    SyntheticConfig,
    generate_clip,
    generate_clip_with_info,
    synthetic_frames,
)


def _pair_diffs(clip: np.ndarray) -> np.ndarray:
    """Mean absolute difference of each consecutive frame pair; entry i compares frames i and i+1."""
    return np.abs(np.diff(clip.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))


def test_presets_exist() -> None:
    assert {"static", "calm", "busy", "cuts", "mixed"} <= set(PRESETS)
    assert all(isinstance(cfg, SyntheticConfig) for cfg in PRESETS.values())


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_shape_and_dtype_for_odd_size(name: str) -> None:
    cfg = dataclasses.replace(PRESETS[name], height=217, width=333, frames=5)
    clip = generate_clip(cfg, np.random.default_rng(3))
    assert clip.shape == (5, 217, 333, 3)
    assert clip.dtype == np.uint8
    assert clip.flags.c_contiguous


def test_tiny_frames_work() -> None:
    cfg = dataclasses.replace(PRESETS["busy"], height=16, width=24, frames=3)
    assert generate_clip(cfg, np.random.default_rng(0)).shape == (3, 16, 24, 3)


def test_deterministic_per_seed() -> None:
    cfg = dataclasses.replace(PRESETS["mixed"], frames=8)
    a = generate_clip(cfg, np.random.default_rng(7))
    b = generate_clip(cfg, np.random.default_rng(7))
    c = generate_clip(cfg, np.random.default_rng(8))
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()
    assert np.abs(a.astype(np.int16) - c).mean() > 5.0  # different scenes, not just different noise


def test_static_preset_repeats_frame_zero() -> None:
    for seed in range(3):
        clip, info = generate_clip_with_info(PRESETS["static"], np.random.default_rng(seed))
        assert int(np.abs(clip.astype(np.int16) - clip[0]).max()) == 0
        assert clip[0].std() > 5.0  # identical but not blank: there is a scene to look at
        assert info == {"cuts": [], "static": list(range(1, len(clip)))}


def test_busy_moves_much_more_than_calm() -> None:
    def motion(name: str) -> float:
        return float(np.mean([_pair_diffs(generate_clip(PRESETS[name], np.random.default_rng(s))).mean()
                              for s in range(4)]))

    calm, busy = motion("calm"), motion("busy")
    assert calm > 0.0
    assert busy >= 3.0 * calm, (busy, calm)


def test_cut_is_a_spike_and_is_reported() -> None:
    for seed in range(50):
        clip, info = generate_clip_with_info(PRESETS["cuts"], np.random.default_rng(seed))
        if info["cuts"]:
            break
    else:
        pytest.fail("no cut in 50 clips of the cuts preset")
    diffs = _pair_diffs(clip)
    spike = int(np.argmax(diffs))
    assert diffs[spike] > 5.0 * np.median(diffs), diffs
    assert spike + 1 in info["cuts"]  # pair (t-1, t) spikes where frame t opens the new scene
    assert all(1 <= t < len(clip) for t in info["cuts"])


def test_no_cuts_when_cut_prob_zero() -> None:
    cfg = dataclasses.replace(PRESETS["busy"], frames=12, cut_prob=0.0)
    _, info = generate_clip_with_info(cfg, np.random.default_rng(0))
    assert info["cuts"] == []


def test_frozen_stretches_are_identical_and_reported() -> None:
    cfg = SyntheticConfig(frames=40, static_prob=0.3, static_len=(2, 5), noise=2.0)
    clip, info = generate_clip_with_info(cfg, np.random.default_rng(1))
    assert info["static"], "static_prob=0.3 over 40 frames should freeze something"
    diffs = _pair_diffs(clip)
    for t in range(1, len(clip)):
        if t in info["static"]:
            assert diffs[t - 1] == 0.0
        else:
            assert diffs[t - 1] > 0.0  # fresh sensor noise makes every rendered frame differ


def test_zero_texture_and_no_shapes_is_flat_colour() -> None:
    cfg = SyntheticConfig(frames=2, n_shapes=(0, 0), texture=0.0, pan_speed=0.0)
    clip = generate_clip(cfg, np.random.default_rng(5))
    assert int(np.ptp(clip.reshape(-1, 3), axis=0).max()) == 0


def test_texture_adds_detail() -> None:
    def detail(texture: float) -> float:
        cfg = SyntheticConfig(frames=1, n_shapes=(0, 0), texture=texture, pan_speed=0.0)
        frame = generate_clip(cfg, np.random.default_rng(2))[0].astype(np.int16)
        return float(np.abs(np.diff(frame, axis=1)).mean())

    assert detail(1.0) > 3.0 * detail(0.1) > 0.0


def test_synthetic_frames_is_endless_and_matches_generate_clip() -> None:
    cfg = dataclasses.replace(PRESETS["mixed"], height=48, width=64, frames=6)
    frames = list(itertools.islice(synthetic_frames(cfg, seed=11), 20))
    assert len(frames) == 20
    assert all(f.shape == (48, 64, 3) and f.dtype == np.uint8 for f in frames)
    assert len({id(f) for f in frames}) == 20  # fresh arrays, safe to keep
    assert np.array_equal(np.stack(frames[:6]), generate_clip(cfg, np.random.default_rng(11)))


def test_synthetic_frames_can_chain_clips() -> None:
    cfg = dataclasses.replace(PRESETS["calm"], height=32, width=40, frames=4)
    frames = np.stack(list(itertools.islice(synthetic_frames(cfg, seed=2, chain_clips=True), 8)))
    rng = np.random.default_rng(2)
    assert np.array_equal(frames, np.concatenate([generate_clip(cfg, rng), generate_clip(cfg, rng)]))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("height", 8),
        ("width", 2.5),
        ("frames", 0),
        ("n_shapes", (5, 2)),
        ("n_shapes", (1,)),
        ("shape_speed", (-1.0, 2.0)),
        ("spin", 90.0),
        ("texture", 1.5),
        ("pan_speed", float("nan")),
        ("cut_prob", -0.1),
        ("static_prob", 1.01),
        ("static_len", (0, 3)),
        ("noise", float("inf")),
        ("blur", -1.0),
        ("drift", 0.5),
        ("height", True),
    ],
)
def test_invalid_config_names_the_field(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=rf"SyntheticConfig\.{field}\b"):
        SyntheticConfig(**{field: value})


def test_values_are_normalised_to_python_numbers() -> None:
    cfg = SyntheticConfig(height=np.int64(40), width=48, frames=2, n_shapes=[1, 2],  # type: ignore[arg-type]
                          texture=np.float32(0.5), spin=1)
    assert cfg.n_shapes == (1, 2) and type(cfg.height) is int and type(cfg.texture) is float
    assert type(cfg.spin) is float
    hash(cfg)
    assert generate_clip(cfg, np.random.default_rng(0)).shape == (2, 40, 48, 3)
