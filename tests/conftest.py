"""Shared fixtures: a seeded tiny model, real evaluation frames, temporary weights files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from livetok.engine.checkpoint import DEFAULT_WEIGHTS, save_weights
from livetok.engine.config import PRESETS
from livetok.engine.model import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
EVAL_DIR = SHARED / "data" / "eval"
TRAIN_DIR = SHARED / "data" / "train"


def eval_clips() -> list[Path]:
    return sorted(EVAL_DIR.glob("*.mkv"))


@pytest.fixture(scope="session")
def tiny_model() -> Tokenizer:
    torch.manual_seed(1234)
    return Tokenizer(PRESETS["tiny"]).eval()


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory, tiny_model: Tokenizer) -> Path:
    return save_weights(tiny_model, tmp_path_factory.mktemp("w") / "tiny.safetensors")


@pytest.fixture(scope="session")
def shipped_model() -> Tokenizer:
    if not DEFAULT_WEIGHTS.is_file():
        pytest.fail(f"the shipped weights are missing: {DEFAULT_WEIGHTS}")
    from livetok.engine.checkpoint import load_default

    return load_default()


@pytest.fixture(scope="session")
def real_frames() -> np.ndarray:
    """12 frames of a real evaluation clip, uint8 RGB [12, 192, 256, 3]."""
    from livetok.stream.video_io import read_video

    clips = eval_clips()
    if not clips:
        pytest.fail(f"no evaluation clips in {EVAL_DIR}")
    frames, _ = read_video(clips[0], max_frames=12)
    return frames
