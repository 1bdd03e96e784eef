"""`livetok bench perception`: does a robot's perception still work on what arrives? (In the manner of MPEG's
video coding for machines: task scores against bits, not PSNR.)

Detectors that need no downloaded weights run on the original frames (the reference), then on livetok's
decoded frames at several rates and on x264's (zerolatency, benchmarks/codecs.py) at several CRFs:

* ``hog-people`` — OpenCV's HOG + linear SVM person detector (Dalal-Triggs; frames upsampled 2x, its window is
  64x128): F1 of its boxes against its boxes on the original frame (IoU >= 0.5).
* ``haar-face`` / ``haar-upperbody`` — the Haar cascades shipped in ``cv2.data``: F1 the same way.
* ``aruco`` — four ArUco markers (DICT_4X4_50, 40 px) rendered moving into the first clip: the fraction of
  (frame, marker) pairs detected with the right id (ground truth known; the reference scores ~1).
* ``orb`` — ORB keypoints (500 per frame): repeatability, the fraction of the original frame's keypoints with
  a decoded-frame keypoint within 3 px (a proxy for what visual odometry can track).

OpenCV 5 moved HOG and the Haar cascades out of the main package (to contrib's xobjdetect), so the project pins
opencv-python-headless < 5 (pyproject.toml); where an OpenCV without them is installed all the same, those
detectors are reported as unavailable with the reason, never faked.

Per detector the result holds the score at each rate for livetok and x264, and, at each livetok point, the
bits x264 needs for the same score (log-linear interpolation on its curve) and the ratio livetok/x264.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from livetok.engine.config import BudgetConfig, SenderConfig
from livetok.engine.results import JsonResult
from livetok.engine.runtime import Runtime
from livetok.stream.evaluate import run_frames
from livetok.stream.video_io import read_video

from .codecs import encode_decode

RATES = (0.125, 0.25, 0.5, 0.75, 1.0)  # livetok's beta (tokens of an average frame / N)
CRFS = (24, 32, 40, 46, 51)  # x264 CRF: ~8 kbit/frame down to its floor (51) at 256x192
IOU_MATCH = 0.5
ORB_RADIUS_PX = 3.0
ARUCO_IDS = (0, 1, 2, 3)
ARUCO_PX = 40  # marker side; a white quiet zone of ARUCO_PX / 5 around it

Box = tuple[int, int, int, int]  # x, y, w, h


# --- detectors ------------------------------------------------------------------------------------------------


@dataclass
class Detector:
    name: str
    kind: str  # "boxes" (F1 vs the reference), "aruco" (detection rate), "orb" (repeatability)
    run: Callable[[np.ndarray], Any]  # uint8 RGB frame -> boxes / ids / keypoints
    metric: str


def available_detectors() -> tuple[list[Detector], dict[str, str]]:
    """The detectors this OpenCV can run, and the reason for each one it cannot."""
    import cv2

    dets: list[Detector] = []
    missing: dict[str, str] = {}
    if hasattr(cv2, "HOGDescriptor"):
        hog = cv2.HOGDescriptor()
        hog.setSVMDetector(np.asarray(cv2.HOGDescriptor.getDefaultPeopleDetector(), np.float32))

        def people(frame: np.ndarray) -> list[Box]:
            big = cv2.resize(frame, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
            rects, _ = hog.detectMultiScale(cv2.cvtColor(big, cv2.COLOR_RGB2GRAY), winStride=(8, 8),
                                            padding=(8, 8), scale=1.05)
            return [(int(x) // 2, int(y) // 2, int(w) // 2, int(h) // 2) for x, y, w, h in rects]

        dets.append(Detector("hog-people", "boxes", people, "F1 vs original"))
    else:
        missing["hog-people"] = f"OpenCV {cv2.__version__} has no HOGDescriptor (OpenCV 5 moved it to contrib)"
    cascades = getattr(getattr(cv2, "data", None), "haarcascades", None)
    for name, xml in (("haar-face", "haarcascade_frontalface_default.xml"),
                      ("haar-upperbody", "haarcascade_upperbody.xml")):
        path = Path(cascades or "") / xml
        if not hasattr(cv2, "CascadeClassifier") or not cascades or not path.is_file():
            missing[name] = f"OpenCV {cv2.__version__} ships no CascadeClassifier / {xml} (OpenCV 5 moved them)"
            continue
        cc = cv2.CascadeClassifier(str(path))

        def haar(frame: np.ndarray, cc: Any = cc) -> list[Box]:
            gray = cv2.equalizeHist(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
            return [(int(x), int(y), int(w), int(h))
                    for x, y, w, h in cc.detectMultiScale(gray, 1.1, 4, minSize=(20, 20))]

        dets.append(Detector(name, "boxes", haar, "F1 vs original"))
    if hasattr(cv2, "aruco"):
        det = cv2.aruco.ArucoDetector(cv2.aruco.getPredefinedDictionary(cv2.aruco.DICT_4X4_50),
                                      cv2.aruco.DetectorParameters())

        def aruco(frame: np.ndarray) -> set[int]:
            _, ids, _ = det.detectMarkers(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
            return set() if ids is None else {int(i) for i in ids.ravel()}

        dets.append(Detector("aruco", "aruco", aruco, "markers detected (fraction)"))
    else:
        missing["aruco"] = f"OpenCV {cv2.__version__} has no aruco module"
    orb = cv2.ORB.create(nfeatures=500)

    def keypoints(frame: np.ndarray) -> np.ndarray:
        kps = orb.detect(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), None)
        return np.array([k.pt for k in kps], np.float32).reshape(-1, 2)

    dets.append(Detector("orb", "orb", keypoints, "keypoint repeatability"))
    return dets, missing


def render_markers(frames: np.ndarray) -> np.ndarray:
    """The clip with ArUco markers ARUCO_IDS drawn in, each drifting a few pixels a frame (so the coder sees
    motion), on a white quiet zone."""
    import cv2

    out = frames.copy()
    t, h, w = frames.shape[:3]
    dictionary = cv2.aruco.getPredefinedDictionary(cv2.aruco.DICT_4X4_50)
    q = ARUCO_PX // 5
    side = ARUCO_PX + 2 * q
    for n, mid in enumerate(ARUCO_IDS):
        mark = cv2.aruco.generateImageMarker(dictionary, mid, ARUCO_PX)
        tile = np.full((side, side), 255, np.uint8)
        tile[q:q + ARUCO_PX, q:q + ARUCO_PX] = mark
        x0, y0 = (8 + (n % 2) * (w - side - 40), 8 + (n // 2) * (h - side - 24))
        for i in range(t):
            x = int(x0 + (i % 16) * (1 if n % 2 == 0 else -1))
            y = int(y0 + (i % 8))
            x, y = min(max(x, 0), w - side), min(max(y, 0), h - side)
            out[i, y:y + side, x:x + side] = tile[..., None]
    return out


# --- scores ---------------------------------------------------------------------------------------------------


def _iou(a: Box, b: Box) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def match_boxes(ref: Sequence[Box], got: Sequence[Box]) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives): greedy one-to-one matching at IoU >= IOU_MATCH."""
    pairs = sorted(((_iou(r, g), i, j) for i, r in enumerate(ref) for j, g in enumerate(got)), reverse=True)
    used_r: set[int] = set()
    used_g: set[int] = set()
    tp = 0
    for iou, i, j in pairs:
        if iou < IOU_MATCH:
            break
        if i in used_r or j in used_g:
            continue
        used_r.add(i)
        used_g.add(j)
        tp += 1
    return tp, len(got) - tp, len(ref) - tp


def repeatability(ref: np.ndarray, got: np.ndarray, radius: float = ORB_RADIUS_PX) -> float:
    """Fraction of `ref` keypoints [K, 2] with a `got` keypoint within `radius` px (1.0 when ref is empty)."""
    if len(ref) == 0:
        return 1.0
    if len(got) == 0:
        return 0.0
    d2 = ((ref[:, None, :] - got[None, :, :]) ** 2).sum(-1)
    return float((d2.min(1) <= radius * radius).mean())


@dataclass
class ScoreAcc:
    """Accumulates one detector's score over frames (and clips)."""

    kind: str
    tp: int = 0
    fp: int = 0
    fn: int = 0
    hits: float = 0.0
    count: int = 0

    def add(self, ref: Any, got: Any) -> None:
        if self.kind == "boxes":
            tp, fp, fn = match_boxes(ref, got)
            self.tp, self.fp, self.fn = self.tp + tp, self.fp + fp, self.fn + fn
        elif self.kind == "aruco":
            self.hits += len(set(ARUCO_IDS) & got)
            self.count += len(ARUCO_IDS)
        else:
            self.hits += repeatability(ref, got)
            self.count += 1

    def score(self) -> float:
        if self.kind == "boxes":
            d = 2 * self.tp + self.fp + self.fn
            return 2 * self.tp / d if d else math.nan  # nothing found on the originals either: no score
        return self.hits / self.count if self.count else math.nan


# --- the benchmark --------------------------------------------------------------------------------------------


def _livetok(model: Runtime, frames: np.ndarray, fps: float, rate: float) -> tuple[np.ndarray, float]:
    sender = SenderConfig(budget=BudgetConfig(policy="learned", rate=rate))
    out: list[np.ndarray] = []
    recs = run_frames(model, list(frames), sender, fps, on_frame=lambda o, e, d, r: out.append(d), receiver=False)
    return np.stack(out), float(np.mean([r.bits for r in recs]))


def _x264(frames: np.ndarray, fps: float, crf: int) -> tuple[np.ndarray, float]:
    out, sizes = encode_decode(frames, fps, "x264", crf)
    return out, 8.0 * sum(sizes) / len(frames)


@dataclass(frozen=True)
class ScorePoint(JsonResult):
    """One codec setting (livetok's rate, x264's CRF): its bits per frame and the detector's score."""

    setting: float
    bits_per_frame: float
    score: float  # nan: nothing found on the originals


@dataclass(frozen=True)
class BitsRatio(JsonResult):
    """At one livetok point: the bits x264 needs for the same score, and livetok / x264."""

    score: float
    livetok_bits: float
    x264_bits: float
    # x264's cheapest point already scores higher, so the ratio is at least this
    x264_bits_is_upper_bound: bool
    ratio: float


@dataclass(frozen=True, kw_only=True)
class DetectorResult(JsonResult):
    metric: str
    reference: float  # the score on the originals
    reference_detections: int
    livetok: list[ScorePoint]  # by bits
    x264: list[ScorePoint]
    bits_ratio: list[BitsRatio]  # at each livetok point


@dataclass(frozen=True, kw_only=True)
class Perception(JsonResult):
    """`livetok bench perception`: each detector's scores, the detectors this OpenCV cannot run and why."""

    detectors: dict[str, DetectorResult]
    unavailable: dict[str, str]
    clips: list[str]
    frames: int
    opencv: str
    rates: list[float]
    crfs: list[int]


def bits_at_score(curve: Sequence[ScorePoint], score: float) -> tuple[float, bool]:
    """The bits/frame at which `curve` (points with bits_per_frame, score) first reaches `score`, interpolated
    linearly in log(bits) between its points sorted by bits, and whether that is only an upper bound (the
    curve's cheapest point already reaches it: fewer bits would too, by how much is not measured). nan when
    the curve never reaches it."""
    pts = sorted((p.bits_per_frame, p.score) for p in curve if not math.isnan(p.score))
    if not pts or math.isnan(score):
        return math.nan, False
    if pts[0][1] >= score:
        return pts[0][0], pts[0][1] > score
    for (b0, s0), (b1, s1) in itertools.pairwise(pts):
        if s0 < score <= s1:
            f = (score - s0) / (s1 - s0)
            return float(math.exp(math.log(b0) + f * (math.log(b1) - math.log(b0)))), False
    return math.nan, False


def bits_ratios(reference_detections: int, livetok: list[ScorePoint], x264: list[ScorePoint]) -> list[BitsRatio]:
    """At each livetok point, the bits x264 needs for its score and livetok / x264. nan where the comparison
    means nothing: the detector found nothing on the originals (no score), or the livetok point scores 0 (any
    rate does that)."""
    out = []
    for pt in livetok:
        xb, bound = (math.nan, False)
        if reference_detections > 0 and pt.score > 0:
            xb, bound = bits_at_score(x264, pt.score)
        out.append(BitsRatio(pt.score, pt.bits_per_frame, xb, bound,
                             pt.bits_per_frame / xb if xb and not math.isnan(xb) else math.nan))
    return out


def bench_perception(model: Runtime, clips: Sequence[str | os.PathLike[str]], max_frames: int = 24,
                     rates: Sequence[float] = RATES, crfs: Sequence[int] = CRFS,
                     progress: Callable[[str], None] | None = None,
                     detectors: Sequence[str] | None = None) -> Perception:
    """Run every available detector (or only those named in `detectors`) on the originals, livetok's decoded
    frames (policy learned at each rate) and x264's (each CRF)."""
    import cv2

    def say(msg: str) -> None:
        if progress is not None:
            progress(msg)

    dets, missing = available_detectors()
    if detectors is not None:
        unknown = set(detectors) - {d.name for d in dets} - set(missing)
        if unknown:
            raise ValueError(f"unknown detector(s) {sorted(unknown)}: choose from "
                             f"{sorted({d.name for d in dets} | set(missing))}")
        dets = [d for d in dets if d.name in detectors]
        missing = {k: v for k, v in missing.items() if k in detectors}
    if not clips:
        raise ValueError("bench perception needs at least one clip")
    # every variant of every clip: (codec, setting) -> (frames per clip, bits per clip)
    variants: dict[tuple[str, float], list[tuple[np.ndarray, float]]] = {}
    originals: list[np.ndarray] = []
    marker_clip: np.ndarray | None = None
    names = []
    inputs: list[tuple[str, np.ndarray, float]] = []
    for p in clips:
        frames, fps = read_video(p, max_frames=max_frames)
        inputs.append((Path(p).stem, frames, fps))
    if any(d.kind == "aruco" for d in dets):
        name, frames, fps = inputs[0]
        marker_clip = render_markers(frames)
        inputs.append((f"{name}+aruco", marker_clip, fps))
    for name, frames, fps in inputs:
        names.append(name)
        originals.append(frames)
        for r in rates:
            say(f"{name}: livetok rate {r}")
            variants.setdefault(("livetok", r), []).append(_livetok(model, frames, fps, r))
        for c in crfs:
            variants.setdefault(("x264", c), []).append(_x264(frames, fps, c))
    marker_index = len(inputs) - 1 if marker_clip is not None else None

    results: dict[str, DetectorResult] = {}
    for d in dets:
        say(f"detector {d.name}")
        # which clips a detector runs on: ArUco on the marked clip only; the others on the unmarked clips
        if marker_index is None:
            use = list(range(len(inputs)))
        elif d.kind == "aruco":
            use = [marker_index]
        else:
            use = [i for i in range(len(inputs)) if i != marker_index]
        refs = {i: [d.run(f) for f in originals[i]] for i in use}
        ref_acc = ScoreAcc(d.kind)
        for i in use:
            for r in refs[i]:
                ref_acc.add(r, r)
        reference = ref_acc.score()
        detections = int(sum(len(r) for i in use for r in refs[i]))
        if d.kind == "aruco":
            acc = ScoreAcc("aruco")
            for i in use:
                for r in refs[i]:
                    acc.add(None, r)
            reference = acc.score()
        curves: dict[str, list[ScorePoint]] = {"livetok": [], "x264": []}
        for (codec, setting), per_clip in variants.items():
            acc = ScoreAcc(d.kind)
            bits, n = 0.0, 0
            for i in use:
                frames, b = per_clip[i]
                for ref, f in zip(refs[i], frames, strict=True):
                    acc.add(ref, d.run(f))
                bits += b * len(frames)
                n += len(frames)
            curves[codec].append(ScorePoint(setting, bits / n, acc.score()))
        livetok, x264 = (sorted(curves[c], key=lambda q: q.bits_per_frame) for c in ("livetok", "x264"))
        results[d.name] = DetectorResult(metric=d.metric, reference=reference, reference_detections=detections,
                                         livetok=livetok, x264=x264,
                                         bits_ratio=bits_ratios(detections, livetok, x264))
    return Perception(detectors=results, unavailable=missing, clips=names,
                      frames=int(sum(len(f) for f in originals)), opencv=cv2.__version__, rates=list(rates),
                      crfs=list(crfs))


def markdown_table(res: Perception) -> str:
    """One table per detector: score per rate for livetok and x264, and the bits ratio at equal score."""
    lines = []
    for name, e in res.detectors.items():
        ref = "nothing found: no score" if not e.reference_detections else f"{e.reference:.3f}"
        lines.append(f"**{name}** ({e.metric}; on the originals: {ref}, {e.reference_detections} detections)")
        lines.append("")
        lines.append("| livetok rate | bits/frame | score | x264 bits at that score | livetok / x264 |")
        lines.append("|---|---|---|---|---|")
        for pt, br in zip(e.livetok, e.bits_ratio, strict=True):
            le, ge = ("≤ ", "≥ ") if br.x264_bits_is_upper_bound else ("", "")
            xb = f"{le}{br.x264_bits:.0f}"
            if math.isnan(br.x264_bits):
                xb = "never reaches it" if e.reference_detections and br.score > 0 else "—"
            ratio = "—" if math.isnan(br.ratio) else f"{ge}{br.ratio:.2f}"
            lines.append(f"| {pt.setting} | {pt.bits_per_frame:.0f} | {pt.score:.3f} | {xb} | {ratio} |")
        lines.append("")
        lines.append("| x264 CRF | " + " | ".join(str(p.setting) for p in e.x264) + " |")
        lines.append("|---|" + "---|" * len(e.x264))
        lines.append("| bits/frame | " + " | ".join(f"{p.bits_per_frame:.0f}" for p in e.x264) + " |")
        lines.append("| score | " + " | ".join(f"{p.score:.3f}" for p in e.x264) + " |")
        lines.append("")
    for name, why in res.unavailable.items():
        lines.append(f"- {name}: not run: {why}")
    return "\n".join(lines)


def summary_lines(res: Perception) -> list[str]:
    """bench_perception's result for people: the tables of markdown_table."""
    return [markdown_table(res)]


def plot_perception(res: Perception, path: str | os.PathLike[str]) -> None:
    """Score vs bits/frame per detector: livetok and x264, the originals' score as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    names = list(res.detectors)
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), dpi=120, squeeze=False)
    for ax, name in zip(axes.ravel(), names, strict=False):
        e = res.detectors[name]
        scored = False
        for codec, style, curve in (("livetok", "o-", e.livetok), ("x264", "s--", e.x264)):
            pts = [p for p in curve if not math.isnan(p.score)]  # nan: nothing found on the originals
            if pts:
                ax.plot([p.bits_per_frame for p in pts], [p.score for p in pts], style, label=codec, ms=4)
                scored = True
        if not scored:  # an empty log axis cannot be drawn
            ax.text(0.5, 0.5, "no score", ha="center", va="center", transform=ax.transAxes, fontsize=9)
            ax.set_title(f"{name} (nothing found on the originals)", fontsize=9)
            continue
        ax.axhline(e.reference, color="gray", lw=0.8, ls=":", label="original")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on a short decade
        ax.set_title(name if e.reference_detections else f"{name} (nothing found on the originals)", fontsize=9)
        ax.set_xlabel("bits / frame", fontsize=8)
        ax.set_ylabel(e.metric, fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    fig.suptitle(f"perception on decoded frames: livetok vs x264 ({len(res.clips)} clips, {res.frames} frames)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
