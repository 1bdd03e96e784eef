"""The CLI called in-process (`main([...])`): outputs, JSON keys, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from livetok.cli import main
from livetok.stream.video_io import read_video
from livetok.stream.wire import LtkReader, read_ltk

from .conftest import eval_clips

M_KEYS = {"psnr", "ssim", "tokens_per_frame", "bits_per_frame", "encode_ms", "decode_ms", "decodes_per_frame", "frames"}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_encode_decode_round_trip(tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = str(eval_clips()[0])
    ltk = tmp_path / "x.ltk"
    code, out, _ = run(capsys, "encode", clip, "-o", str(ltk), "--weights", str(tiny_weights), "--max-frames", "6",
                       "--policy", "fixed", "--rate", "0.25", "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["frames"] == 6 and summary["tokens_per_frame"] == 192  # 0.25 * 768
    meta, packets, err = read_ltk(ltk)
    assert err is None and len(packets) == 6 and meta["width"] == 256 and meta["height"] == 192
    assert [p.k for p in packets] == [192] * 6 and packets[0].keyframe and not packets[1].keyframe
    # bits per frame in the summary are the real packet bytes: v3 (entropy-coded) by default, below
    # the same tokens as fixed-length v1 packets
    with LtkReader(ltk) as r:
        raw = list(r.iter_raw())
    assert len(raw) == 6 and [d[0] for d in raw] == [0xF1] + [0xF0] * 5  # version 3: 0xf0 | flags
    assert summary["bits_per_frame"] == pytest.approx(np.mean([8 * len(d) for d in raw]))
    assert summary["bits_per_frame"] < 0.8 * np.mean([8 * len(p.pack()) for p in packets])
    mp4 = tmp_path / "x.mp4"
    code, _, _ = run(capsys, "decode", str(ltk), "-o", str(mp4), "--weights", str(tiny_weights), "--heatmap")
    assert code == 0
    frames, _ = read_video(mp4)
    assert frames.shape == (6, 192, 512, 3)  # reconstruction | heat-map


def test_eval_json_contract(tiny_weights: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clips = [str(p) for p in eval_clips()[:2]]
    code, out, err = run(capsys, "eval", *clips, "--weights", str(tiny_weights), "--max-frames", "3", "--json")
    assert code == 0
    res = json.loads(out)
    assert set(res["clips"]) == {Path(c).stem for c in clips}
    for m in [res["overall"], *res["clips"].values()]:
        assert set(m) >= M_KEYS
    assert res["overall"]["frames"] == 6
    assert "overall" in err  # the human summary goes to stderr


def test_demo_writes_video_plot_and_tokens(
    tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "demo", "--weights", str(tiny_weights), "--out", str(tmp_path), "--frames", "5",
                       "--json")
    assert code == 0
    res = json.loads(out)
    assert set(res) >= M_KEYS and res["frames"] == 5
    assert sorted(Path(p).name for p in res["outputs"]) == ["demo.ltk", "demo.mp4", "demo.png"]
    frames, _ = read_video(tmp_path / "demo.mp4")
    assert frames.shape == (5, 192, 768, 3)  # original | reconstruction | heat-map
    assert (tmp_path / "demo.png").stat().st_size > 10_000


def test_demo_synthetic_source(tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "demo", "--weights", str(tiny_weights), "--source", "synthetic", "--out",
                       str(tmp_path), "--frames", "3", "--json")
    assert code == 0 and json.loads(out)["frames"] == 3


@pytest.mark.parametrize("argv,fragment", [
    (["eval", "/nonexistent/clip.mp4"], "no such file"),
    (["demo", "--source", "webcam:7"], "no camera at index 7"),
    (["decode", "/etc/hostname", "-o", "x.mp4"], "not a livetok .ltk file"),
    (["eval", "README.md", "--rate", "3"], "rate must be in (0, 1]"),
])
def test_bad_input_is_one_clear_line(tiny_weights: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                     fragment: str) -> None:
    code, out, err = run(capsys, *argv, "--weights", str(tiny_weights))
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("livetok: error:") and fragment in lines[0]


def test_decode_refuses_another_models_file(
    tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    from livetok.engine.checkpoint import load_weights, model_identity, save_weights

    other = load_weights(tiny_weights)
    with torch.no_grad():
        other.decoder.to_rgb.bias.add_(0.01)
    other_path = save_weights(other, tmp_path / "other.safetensors")
    ltk = tmp_path / "x.ltk"
    assert run(capsys, "encode", str(eval_clips()[0]), "-o", str(ltk), "--weights", str(tiny_weights),
               "--max-frames", "2")[0] == 0
    code, _, err = run(capsys, "decode", str(ltk), "-o", str(tmp_path / "y.mp4"), "--weights", str(other_path))
    assert code == 2
    assert model_identity(load_weights(tiny_weights)).hex() in err and model_identity(other).hex() in err
    assert "preset 'tiny'" in err and "--weights" in err and len(err.strip().splitlines()) == 1


def test_bench_rd_json_contract(tiny_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clips = [str(p) for p in eval_clips()[:2]]
    plot = tmp_path / "rd.png"
    code, out, _ = run(capsys, "bench", "rd", *clips, "--weights", str(tiny_weights), "--max-frames", "3",
                       "--policies", "infotok", "search", "oracle", "learned", "--codecs", "x264",
                       "--plot", str(plot), "--json")
    assert code == 0
    res = json.loads(out)
    assert set(res["policies"]) == {"fixed", "infotok", "search", "oracle", "learned"}
    for name, pts in res["policies"].items():
        assert len(pts) == (4 if name == "search" else 3) and all(M_KEYS | {"rate"} <= set(p) for p in pts)
    assert [round(p["rate"], 3) for p in res["policies"]["fixed"]] == [0.25, 0.5, 0.75]
    assert res["codecs"]["x264"] and {"bits_per_frame", "psnr"} <= set(res["codecs"]["x264"][0])
    s = res["summary"]
    assert s["router_decodes_per_frame"]["learned"] == 0 and s["router_decodes_per_frame"]["oracle"] >= 8
    for key in ("tokens_saved_vs_fixed", "oracle_tokens_saved_vs_fixed", "bits_ratio_search_vs_infotok",
                "psnr_gap_vs_x264_db"):
        assert key in s
    assert plot.stat().st_size > 10_000


def test_max_rate_caps_every_frame_of_a_real_clip(capsys: pytest.CaptureFixture[str]) -> None:
    """`--rate` is InfoTok's beta (a population average: a clip may keep more); `--max-rate` is a hard
    per-frame ceiling. The shipped model on a real clip; `eval --json` names the requested rate
    `rate_target` and the achieved one `kept_fraction`."""
    clip = str(eval_clips()[0])
    common = ["eval", clip, "--max-frames", "6", "--rate", "0.5", "--per-frame", "--json", "--threads", "1"]

    def kept(*extra: str) -> tuple[dict[str, Any], list[int]]:
        code, out, _ = run(capsys, *common, *extra)
        assert code == 0
        res = json.loads(out)
        return res, [r["k"] for r in res["clips"][Path(clip).stem]["per_frame"]]

    free, k_free = kept()
    capped, k_cap = kept("--max-rate", "0.3")
    n = capped["overall"]["positions"]
    assert n == 768 and max(k_free) > 0.3 * n  # without the cap some frame keeps more than 30%
    assert all(k <= 0.3 * n for k in k_cap) and max(k_cap) == 230  # floor(0.3 * 768)
    # the JSON keys: requested vs achieved, never one name for both
    assert (free["rate_target"], free["max_rate"], capped["rate_target"], capped["max_rate"]) == (0.5, None, 0.5, 0.3)
    for m in [capped["overall"], *capped["clips"].values()]:
        assert "rate" not in m and m["kept_fraction"] == pytest.approx(np.mean(k_cap) / n)
    assert "rate" not in capped
