"""`livetok bench perception`: the scores (box matching, keypoint repeatability, marker detection), the bits
interpolation, and a small run on real frames with markers rendered in."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from livetok.bench.perception import (
    ARUCO_IDS,
    ScorePoint,
    available_detectors,
    bench_perception,
    bits_at_score,
    match_boxes,
    plot_perception,
    render_markers,
    repeatability,
)
from livetok.cli import main
from livetok.engine.model import Tokenizer

from .conftest import BUNDLED_CLIP, EVAL_DIR, eval_clips

ALL = {"hog-people", "haar-face", "haar-upperbody", "aruco", "orb"}


def test_box_matching_counts() -> None:
    ref = [(0, 0, 10, 10), (50, 50, 10, 10)]
    got = [(1, 1, 10, 10), (100, 100, 5, 5), (0, 0, 10, 10)]  # a hit (IoU 0.68), a stray, a duplicate
    assert match_boxes(ref, got) == (1, 2, 1)
    assert match_boxes([], []) == (0, 0, 0)


def test_repeatability_counts_keypoints_within_the_radius() -> None:
    ref = np.array([[0, 0], [10, 10], [20, 20], [30, 30]], np.float32)
    got = np.array([[1, 1], [10, 13.5], [40, 40]], np.float32)  # 1.41 px: kept; 3.5 px: not
    assert repeatability(ref, got) == 0.25
    assert repeatability(ref, got, radius=4.0) == 0.5
    assert repeatability(ref[:0], got) == 1.0 and repeatability(ref, got[:0]) == 0.0


def test_bits_at_score_interpolates_in_log_bits() -> None:
    curve = [ScorePoint(24, 1000.0, 0.5), ScorePoint(18, 4000.0, 0.9)]
    b, bound = bits_at_score(curve, 0.7)
    assert b == pytest.approx(2000.0) and not bound  # halfway in score: the geometric mean of the bits
    assert bits_at_score(curve, 0.95)[0] != bits_at_score(curve, 0.95)[0]  # never reached: nan
    assert bits_at_score(curve, 0.3) == (1000.0, True)  # reached below the cheapest point: an upper bound


def test_markers_are_found_on_the_rendered_clip(real_frames: np.ndarray) -> None:
    marked = render_markers(real_frames[:4])
    aruco = next(d for d in available_detectors()[0] if d.name == "aruco")
    assert all(aruco.run(f) == set(ARUCO_IDS) for f in marked)
    assert all(aruco.run(f) == set() for f in real_frames[:4])


def test_opencv_runs_every_detector() -> None:
    """The project pins OpenCV < 5 (pyproject.toml): 5.x has no HOG people detector and no Haar cascades, and
    the benchmark would report them as not run. Every detector is there and runs."""
    import cv2

    dets, missing = available_detectors()
    assert missing == {} and {d.name for d in dets} == ALL, (cv2.__version__, missing)
    assert int(cv2.__version__.split(".")[0]) == 4
    blank = np.full((96, 128, 3), 128, np.uint8)
    upper = next(d for d in dets if d.name == "haar-upperbody")
    assert upper.run(blank) == []  # runs (it finds nothing at 256x192 on the eval clips: no score there)


def test_hog_and_haar_scores_on_people_and_faces(tmp_path: Path, tiny_model: Tokenizer) -> None:
    """HOG people and Haar faces score numbers on decoded frames: F1 against their boxes on the originals.
    The bundled clip has a face in every frame; asl-please (the eval set, where present) a person HOG finds."""
    people = EVAL_DIR / "asl-please.mkv"
    clips = [str(people), str(BUNDLED_CLIP)] if people.is_file() else [str(BUNDLED_CLIP)]
    result = bench_perception(tiny_model, clips, max_frames=2, rates=(0.5,), crfs=(24, 51),
                              detectors=("hog-people", "haar-face"))
    res = result.to_json()
    assert res["unavailable"] == {} and set(res["detectors"]) == {"hog-people", "haar-face"}
    assert res["frames"] == 2 * len(clips)  # no marker clip: ArUco not asked for
    checked = ["haar-face", *(["hog-people"] if people.is_file() else [])]
    for name in checked:
        e = res["detectors"][name]
        assert e["reference"] == 1.0 and e["reference_detections"] >= 2, (name, e)
        for pt in e["livetok"] + e["x264"]:  # a number in [0, 1] at every point, not "not run" / nan
            assert 0.0 <= pt["score"] <= 1.0, (name, pt)
        crf24 = next(pt for pt in e["x264"] if pt["setting"] == 24)
        assert crf24["score"] >= 0.5, (name, e["x264"])  # x264 at ~15 kbit/frame keeps the boxes
    plot = tmp_path / "p.png"
    plot_perception(result, plot)  # also with a detector that found nothing (no score): drawn, not an error
    assert plot.stat().st_size > 5_000


def test_bench_perception_small_run(tmp_path: Path, tiny_model: Tokenizer, tiny_weights: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    clip = str(eval_clips()[0])
    result = bench_perception(tiny_model, [clip], max_frames=3, rates=(0.25, 1.0), crfs=(24, 51),
                              detectors=("aruco", "orb"))  # HOG and Haar: the test above
    res = result.to_json()
    assert set(res["detectors"]) == {"aruco", "orb"} and res["unavailable"] == {}
    assert res["frames"] == 6 and res["clips"] == [Path(clip).stem, f"{Path(clip).stem}+aruco"]
    for e in res["detectors"].values():
        assert [p["setting"] for p in sorted(e["x264"], key=lambda p: -p["bits_per_frame"])] == [24, 51]
        assert len(e["livetok"]) == 2 and len(e["bits_ratio"]) == 2
        for p in e["livetok"] + e["x264"]:
            assert math.isnan(p["score"]) or 0.0 <= p["score"] <= 1.0
    aruco, orb = res["detectors"]["aruco"], res["detectors"]["orb"]
    assert aruco["reference"] == 1.0 and aruco["reference_detections"] == 3 * len(ARUCO_IDS)
    best_x264 = max(aruco["x264"], key=lambda p: p["bits_per_frame"])
    assert best_x264["score"] == 1.0  # x264 at CRF 24 keeps 40 px markers readable
    assert orb["reference"] == 1.0 and orb["reference_detections"] > 100
    assert max(p["score"] for p in orb["x264"]) > 0.5
    plot = tmp_path / "p.png"
    plot_perception(result, plot)
    assert plot.stat().st_size > 10_000

    # the command: the same keys on stdout
    code = main(["bench", "perception", clip, "--max-frames", "1", "--rates", "0.5", "--crfs", "40",
                 "--weights", str(tiny_weights), "--threads", "1", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and set(out["detectors"]) == ALL and out["unavailable"] == {} and out["frames"] == 2

