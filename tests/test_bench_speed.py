"""`livetok bench speed` (benchmarks/speed.py) with its FLOP counting (export/flops.py) and device
peak (export/peak.py): the CLI on the tiny model and a few frames, keys and sane numbers."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from livetok.bench.speed import SpeedConfig, bench_speed
from livetok.cli import main
from livetok.engine.model import Tokenizer
from livetok.export.flops import encode_cost, frame_costs, graph_cost
from livetok.export.peak import measure_peak

RESULT_KEYS = {"backend", "size", "streams", "encode_fps", "encode_ms_p50", "encode_ms_p99", "decode_fps",
               "decode_ms_p50", "decode_ms_p99", "gflops_per_frame"}  # DESIGN.md §6


def _cli(args: list[str]) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(args)
    return code, buf.getvalue()


def _check_result(r: dict[str, Any], streams: int) -> None:
    assert set(r) >= RESULT_KEYS
    assert r["streams"] == streams and len(r["runs"]) == r["repeats"]
    for phase in ("encode", "decode"):
        assert 0 < r[f"{phase}_ms_p50"] <= r[f"{phase}_ms_p99"] < 60_000
        # fps is frames over the summed step times: at least the rate of the p99 step. Both are rounded to
        # 0.01 (ms, fps): a 0.404 ms step reads 0.40 ms, which alone would claim 2,500 fps against 2,477
        assert 1e3 / (r[f"{phase}_ms_p99"] + 0.005) <= r[f"{phase}_fps"] + 0.005
        assert r[f"{phase}_fps_total"] == pytest.approx(streams * r[f"{phase}_fps"], rel=1e-3)
        assert r[f"{phase}_cpu_ms_p50"] > 0 and r[f"{phase}_cpu_fps"] > 0
    assert r["decodes_per_frame"] == 1.0  # the default `learned` policy: only the real decode
    assert r["gflops_per_frame"] > r["decode_gflops_per_frame"] > 0
    assert r["fraction_of_peak_flops"] is None and r["fraction_of_peak_bandwidth"] is None  # no GPU
    assert r["preprocess_backend"] == "numpy" and r["preprocess_ms_p50"] > 0


def test_cli_reports_every_size(tiny_weights: Path) -> None:
    code, out = _cli(["bench", "speed", "--weights", str(tiny_weights), "--backend", "torch",
                      "--size", "64x48", "96x64", "--streams", "2", "--frames", "3", "--warmup", "1",
                      "--repeats", "2", "--threads", "1", "--json"])
    assert code == 0
    res = json.loads(out)
    assert [(r["backend"], r["size"]) for r in res["results"]] == [("torch", "64x48"), ("torch", "96x64")]
    for r in res["results"]:
        _check_result(r, 2)
        assert r["repeats"] == 2
    g = res["graphs"]
    assert set(g) == {"64x48", "96x64"} and set(g["64x48"]) == {"encoder", "decoder", "router"}
    assert res["peak"] is None and res["machine"]["threads"] == 1 and res["config"]["policy"] == "learned"


@pytest.mark.slow
def test_cli_onnx_backend(tiny_weights: Path, tmp_path: Path) -> None:
    """The onnx backend through the same runner (slow: exports the model first, ~20-80 s on 2 cores)."""
    code, out = _cli(["bench", "speed", "--weights", str(tiny_weights), "--backend", "onnx", "--size", "64x48",
                      "--frames", "3", "--warmup", "1", "--threads", "1", "--onnx-dir", str(tmp_path / "onnx"),
                      "--json"])
    assert code == 0
    (r,) = json.loads(out)["results"]
    assert r["backend"] == "onnx"
    _check_result(r, 1)


def test_flops_are_counted_by_torch() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1)
    c = graph_cost(conv, (torch.zeros(1, 3, 16, 16),))
    assert c.flops == 2 * 3 * 8 * 9 * 16 * 16  # 2 FLOPs per multiply-add
    assert c.bytes >= 4 * (3 * 16 * 16 + 8 * 16 * 16 + 8 * 3 * 9)  # input, output and weights at least


def test_graph_costs_of_the_model(tiny_model: Tokenizer) -> None:
    small, big = frame_costs(tiny_model, 48, 64), frame_costs(tiny_model, 96, 128)
    for g in ("encoder", "decoder", "router"):
        assert small[g].flops > 0 and small[g].bytes > 0
        assert big[g].flops == 4 * small[g].flops  # every layer is a convolution: linear in pixels
    assert small["router"].flops == 2 * small["decoder"].flops  # a full-rate and a zero-token decode
    assert frame_costs(tiny_model, 42, 60)["encoder"].flops == small["encoder"].flops  # padded to 48x64
    flops, nbytes = encode_cost(small, 3.0)
    assert flops == small["encoder"].flops + 3 * small["decoder"].flops and nbytes > 0


def test_no_peak_without_a_gpu() -> None:
    assert measure_peak("cpu") is None


@pytest.mark.parametrize(("args", "message"), [
    (["--size", "4x4"], "at least 8 pixels"),
    (["--size", "wide"], "bad --size"),
    (["--frames", "1"], "frames >= 2"),
])
def test_bad_arguments_are_one_line_errors(tiny_weights: Path, capsys: pytest.CaptureFixture[str],
                                           args: list[str], message: str) -> None:
    code, _ = _cli(["bench", "speed", "--weights", str(tiny_weights), "--backend", "torch", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("livetok: error:") and message in err[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error shown without CUDA")
def test_cuda_graph_bench_without_cuda_is_an_error(tiny_weights: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = _cli(["bench", "speed", "--weights", str(tiny_weights), "--backend", "cuda-graph", "--size", "64x48"])
    assert code == 2 and "needs a CUDA device" in capsys.readouterr().err


@pytest.mark.gpu
def test_cuda_graph_bench_reports_the_fraction_of_peak(tiny_model: Tokenizer) -> None:
    model = Tokenizer(tiny_model.cfg)
    model.load_state_dict(tiny_model.state_dict())
    res = bench_speed(model, SpeedConfig(backends=("cuda-graph",), sizes=((256, 256),), streams=4, frames=10,
                                         warmup=3)).to_json()
    peak = res["peak"]
    assert peak is not None and peak["copy_gbps"] > 100 and peak["matmul_tflops"] > 1
    (r,) = res["results"]
    assert r["backend"] == "cuda-graph" and r["device"].startswith("cuda")
    # unfused bytes over-count what stays in L2, so only the FLOP fraction is bounded by 1
    assert 0 < r["fraction_of_peak_flops"] < 1 and r["fraction_of_peak_bandwidth"] > 0
