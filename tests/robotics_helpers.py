"""Shared by the robotics tests: a short small clip (fast encodes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from livetok.stream.video_io import Mp4Writer, read_video

from .conftest import eval_clips

SMALL_FRAMES = 8


@pytest.fixture(scope="module", name="small_clip")
def small_clip_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 frames of a real eval clip at 128x96 (fast to encode)."""
    import cv2

    frames, fps = read_video(eval_clips()[0], max_frames=SMALL_FRAMES)
    path = tmp_path_factory.mktemp("clip") / "small.mp4"
    with Mp4Writer(path, fps) as w:
        for f in frames:
            w.write(cv2.resize(f, (128, 96), interpolation=cv2.INTER_AREA))
    return path

