from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from livetok.stream.errors import VideoError
from livetok.stream.sources import open_source
from livetok.stream.video_io import Mp4Writer, VideoReader, bgr_to_rgb, read_video

from .conftest import eval_clips


def test_read_eval_clip() -> None:
    frames, fps = read_video(eval_clips()[0])
    assert frames.shape == (48, 192, 256, 3) and frames.dtype == np.uint8
    assert fps == pytest.approx(30.0)


def test_mp4_round_trip_odd_size(tmp_path: Path, real_frames: np.ndarray) -> None:
    src = real_frames[:6, :97, :131]
    with Mp4Writer(tmp_path / "x.mp4", 30.0) as w:
        for f in src:
            w.write(f)
    back, fps = read_video(tmp_path / "x.mp4")
    assert back.shape == (6, 98, 132, 3) and fps == pytest.approx(30.0)
    err = np.abs(back[:, :97, :131].astype(int) - src.astype(int)).mean()
    assert err < 4.0  # H.264 at CRF 18


@pytest.mark.parametrize(
    "content,msg", [(None, "no such file"), (b"", "empty"), (b"hello, not a video\n" * 50, "cannot open")]
)
def test_bad_inputs_are_one_line_errors(tmp_path: Path, content: bytes | None, msg: str) -> None:
    p = tmp_path / "v.mp4"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(VideoError, match=msg):
        VideoReader(p)


def test_sources(tmp_path: Path) -> None:
    s = open_source("synthetic:busy", max_frames=5, size=(64, 48))
    frames = list(s.frames)
    assert len(frames) == 5 and frames[0].shape == (48, 64, 3) and s.live
    with pytest.raises(VideoError, match="webcam:N"):
        open_source("webcam:x")
    with pytest.raises(VideoError, match="no camera at index 99"):
        list(open_source("webcam:99").frames)
    with pytest.raises(VideoError, match="unknown synthetic preset"):
        open_source("synthetic:nope")


def test_frame_conversions() -> None:
    gray = np.full((4, 5), 200, np.uint8)
    assert bgr_to_rgb(gray).shape == (4, 5, 3) and int(bgr_to_rgb(gray)[0, 0, 0]) == 200
    deep = np.full((4, 5, 3), 0xABCD, np.uint16)
    assert int(bgr_to_rgb(deep)[0, 0, 0]) == 0xAB
    bgr = np.zeros((2, 2, 3), np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV order
    assert bgr_to_rgb(bgr)[0, 0].tolist() == [0, 0, 255]
