"""What people read off livetok's pictures and terminal (issue 14, item 5): the heat-map's colour
scale, the demo plot's legend and keyframe line, the live stats table at 80 columns, and progress
bars that know their totals."""

from __future__ import annotations

import dataclasses
import re
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np
import pytest

from livetok.cli import main
from livetok.stream.evaluate import FrameRecord
from livetok.stream.heatmap import token_heatmap

from .conftest import eval_clips

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
BAR_HEIGHT = 12  # the heat-map's scale strip: its bottom rows (stream/heatmap.py)


def inferno(level: int) -> tuple[int, int, int]:
    """OpenCV's inferno colour at a 0-255 level, RGB."""
    b, g, r = cv2.applyColorMap(np.array([[level]], np.uint8), cv2.COLORMAP_INFERNO)[0, 0]
    return int(r), int(g), int(b)


def colours(row: np.ndarray) -> list[tuple[int, int, int]]:
    return [tuple(int(c) for c in px) for px in row]


def test_heatmap_has_a_colour_scale_with_labelled_ends() -> None:
    """A mid-gray frame with every cell dropped: without a scale the bottom rows would be the dimmed
    image (gray 44); with one they hold the colour map's range from a zero-error kept cell (level
    0.25) to a saturated one (1.0), with white labels at both ends."""
    frame = np.full((192, 256, 3), 128, np.uint8)
    heat = token_heatmap(frame, np.zeros(768, bool), (24, 32), np.zeros(768, np.float32))
    assert heat.shape == frame.shape
    strip = heat[-BAR_HEIGHT:]
    row = colours(strip[BAR_HEIGHT // 2])
    lo, hi = inferno(63), inferno(255)  # int(0.25 * 255), 255
    assert lo in row and hi in row
    first, last = row.index(lo), len(row) - 1 - row[::-1].index(hi)
    assert last - first > 128  # the gradient runs across most of the width
    luma = [0.299 * r + 0.587 * g + 0.114 * b for r, g, b in row[first:last + 1]]
    assert all(b >= a - 1 for a, b in pairwise(luma))  # dark to bright, left to right
    text = strip.min(axis=2) > 100  # the labels: white (anti-aliased) on the black strip
    assert text[:, :first].sum() > 10 and text[:, last + 1:].sum() > 10  # "err 0" ... "0.08+"
    assert (heat[:-BAR_HEIGHT] == 44).all()  # the image above is untouched: dimmed gray
    # a packet's mask alone (no error): a "dropped" and a "kept" swatch, each labelled
    plain = token_heatmap(frame, np.zeros(768, bool), (24, 32))[-BAR_HEIGHT:]
    assert hi in colours(plain[BAR_HEIGHT // 2]) and (plain.min(axis=2) > 100).sum() > 20


def test_demo_plot_legend_is_outside_the_plot_and_names_the_keyframe_line() -> None:
    from livetok.stream.demo import records_figure

    recs = [FrameRecord(index=i, keyframe=i in (0, 30), k=700 if i > 50 else 300, n=768, bits=1, bits_v1=1,
                        psnr=30.0, ssim=0.9, encode_ms=1.0, decode_ms=1.0, decodes=1) for i in range(60)]
    fig = records_figure(recs, "livetok demo: clip (learned, rate 0.5)")
    fig.canvas.draw()
    (legend,) = fig.legends
    assert sorted(t.get_text() for t in legend.get_texts()) == ["N = 768", "PSNR", "keyframe", "tokens/frame"]
    box = legend.get_window_extent()
    assert all(not box.overlaps(ax.get_window_extent()) for ax in fig.axes)  # covers no bar (the last are tall)
    assert box.y0 > fig.axes[0].get_window_extent().y1 and box.y1 <= fig.bbox.y1  # above the plot, in the figure
    assert not box.overlaps(fig.axes[0].title.get_window_extent())
    dashed = [ln for ln in fig.axes[0].get_lines() if ln.get_linestyle() == "--"]
    # one legend entry for all keyframe lines: the first is labelled, the rest are hidden ("_...")
    assert dashed[0].get_label() == "keyframe" and all(ln.get_label().startswith("_") for ln in dashed[1:])
    assert [ln.get_xdata()[0] for ln in dashed] == [0, 30]


def tty(monkeypatch: pytest.MonkeyPatch, columns: int) -> None:
    """Make rich believe stderr is an interactive terminal of `columns` (what a user sees)."""
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("TTY_INTERACTIVE", "1")
    monkeypatch.setenv("COLUMNS", str(columns))


def test_live_table_fits_80_columns_with_distinct_p50_and_p99(monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from livetok.cli.output import LiveTable
    from livetok.stream.pipeline import PipelineStats

    tty(monkeypatch, 80)
    st = PipelineStats()
    for i, s in enumerate(st.stages.values()):
        for j in range(20000):
            s.record(100.0 + i + j % 7 * 33.3, 1000.0 + j / 30)
    st.stages["capture"].dropped = 12345
    d = dataclasses.replace(st.snapshot(1000.0 + 20000 / 30), bits_per_s=1_234_567.0)
    table = LiveTable()
    table.update(d)
    table.stop()
    lines = [ANSI.sub("", ln).rstrip() for ln in capsys.readouterr().err.replace("\r", "\n").splitlines()]
    lines = [ln for ln in lines if ln]
    assert lines and max(len(ln) for ln in lines) <= 80
    header = next(ln for ln in lines if "stage" in ln)
    cells = [c.strip() for c in re.split(r"[┃│|]", header) if c.strip()]
    assert cells == ["stage", "frames", "fps", "p50 ms", "p99 ms", "queue", "dropped"]
    row = next(ln for ln in lines if "capture" in ln)
    assert "20000" in row and "12345" in row and "…" not in row  # whole numbers, nothing cut


@pytest.mark.parametrize("command", ["encode", "eval", "demo", "decode"])
def test_progress_bars_know_their_totals(command: str, tmp_path: Path, tiny_weights: Path,
                                         monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    clips = [str(p) for p in eval_clips()[:2]]
    w = ["--weights", str(tiny_weights)]
    ltk = tmp_path / "x.ltk"
    if command == "decode":
        assert main(["encode", clips[0], "-o", str(ltk), "--max-frames", "4", *w]) == 0
    argv = {
        "encode": ["encode", clips[0], "-o", str(ltk), "--max-frames", "4"],
        "eval": ["eval", *clips, "--max-frames", "2"],  # 2 frames of each clip
        "demo": ["demo", "--out", str(tmp_path), "--frames", "4"],
        "decode": ["decode", str(ltk), "-o", str(tmp_path / "x.mp4")],
    }[command]
    capsys.readouterr()
    tty(monkeypatch, 120)
    assert main([*argv, *w]) == 0
    err = ANSI.sub("", capsys.readouterr().err)
    counts = re.findall(r"[━╺╸]\s+(\d+)/(\d+|\?)", err)  # the bar, then done/total
    n = str(2 * len(clips)) if command == "eval" else "4"
    assert counts and (n, n) in counts and all(total == n for _, total in counts), counts
