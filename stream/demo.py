"""`livetok demo`: tokenize a clip live, write a side-by-side video (original | reconstruction |
token heat-map) and a plot of tokens and PSNR per frame, and summarise."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from livetok.engine.config import SenderConfig
from livetok.engine.runtime import Runtime

from .evaluate import FrameRecord, Metrics, run_frames, summarize
from .heatmap import token_heatmap
from .session import EncodedFrame
from .sources import open_source
from .video_io import Mp4Writer
from .wire import LtkWriter

ASSETS = Path(__file__).parent / "assets"
DEMO_CLIP = ASSETS / "demo.mp4"
LIVE_FRAMES = 150  # frames of a source other than the bundled clip, unless told


def demo_source(source: str | None, max_frames: int | None) -> tuple[str, int | None]:
    """The source the demo opens and its frame limit: the bundled clip whole by default, 150
    frames of any other source unless `max_frames` says otherwise."""
    limit = max_frames if max_frames is not None else (None if source is None else LIVE_FRAMES)
    return source or str(DEMO_CLIP), limit


@dataclass(frozen=True, kw_only=True)
class DemoSummary(Metrics):
    """The demo's metric set M, what it read and the files it wrote (video, plot, token file)."""

    source: str
    outputs: list[str]


def run_demo(
    model: Runtime,
    source: str | None,
    out_dir: str | os.PathLike[str],
    sender: SenderConfig,
    max_frames: int | None = None,
    progress: Any = None,
) -> DemoSummary:
    """Run the demo; returns the metric set M plus `outputs` (paths written) and `source`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec, limit = demo_source(source, max_frames)
    src = open_source(spec, limit)
    video_path, plot_path, ltk_path = out / "demo.mp4", out / "demo.png", out / "demo.ltk"

    writer = Mp4Writer(video_path, src.fps)
    ltk: LtkWriter | None = None

    def on_frame(frame: np.ndarray, enc: EncodedFrame, decoded: np.ndarray, rec: FrameRecord) -> None:
        nonlocal ltk
        if ltk is None:
            h, w = frame.shape[:2]
            ltk = LtkWriter(ltk_path, {"model_id": model.identity.hex(), "fps": src.fps, "width": w,
                                       "height": h, "preset": model.cfg.name, "source": src.name,
                                       "wire": sender.wire, "fsq_levels": list(model.cfg.fsq.levels)})
            ltk.__enter__()
        ltk.write(enc.data)
        err = enc.tokens.error[0].cpu().numpy() if enc.tokens.error is not None else None
        heat = token_heatmap(decoded, enc.packet.mask, enc.tokens.grid, err)
        writer.write(np.concatenate([frame, decoded, heat], axis=1))
        if progress is not None:
            progress(rec)

    try:
        records = run_frames(model, src.frames, sender, src.fps, on_frame)
    finally:
        writer.close()
        if ltk is not None:
            ltk.__exit__(None, None, None)
    b = sender.budget
    title = f"livetok demo: {src.name} ({b.policy}, rate {b.rate}{'' if b.max_rate is None else f', max {b.max_rate}'})"
    plot_records(records, plot_path, title=title)
    return DemoSummary.extending(summarize(records), source=src.name,
                                 outputs=[str(video_path), str(plot_path), str(ltk_path)])


def plot_records(records: list[FrameRecord], path: Path, title: str) -> None:
    """Tokens per frame (with the keyframes marked) and PSNR per frame, one PNG."""
    import matplotlib.pyplot as plt

    fig = records_figure(records, title)
    fig.savefig(path)
    plt.close(fig)


def records_figure(records: list[FrameRecord], title: str) -> Any:
    """The demo plot as a matplotlib Figure; its legend sits in a row above the plot area, so it
    covers no frame's bar, and names every line (the dashed ones are keyframes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = [r.index for r in records]
    # constrained layout keeps the title, the legend row above the axes and the labels in the figure
    fig, ax1 = plt.subplots(figsize=(9, 3.8), dpi=110, layout="constrained")
    ax1.bar(idx, [r.k for r in records], color="#e8743b", width=0.85, label="tokens/frame")
    ax1.axhline(records[0].n, color="#e8743b", lw=0.8, ls=":", label=f"N = {records[0].n}")
    ax1.set_xlabel("frame")
    ax1.set_ylabel("tokens / frame", color="#c2571a")
    ax2 = ax1.twinx()
    ax2.plot(idx, [r.psnr for r in records], color="#1f5fa8", lw=1.6, label="PSNR")
    ax2.set_ylabel("PSNR (dB)", color="#1f5fa8")
    keyframes = [r.index for r in records if r.keyframe]
    for i, k in enumerate(keyframes):
        ax1.axvline(k, color="gray", lw=0.8, ls="--", label="keyframe" if i == 0 else None)
    ax1.set_title(title, fontsize=10)
    h1, l1 = ax1.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    fig.legend(h1 + h2, l1 + l2, loc="outside upper center", ncols=len(l1 + l2), fontsize=8, frameon=False)
    return fig
