"""ONNX export and the onnxruntime backend: graphs, parity with torch, closed loop, cross-backend drift,
the sessions and the CLI. One export serves the whole file (an export takes ~20 s on a busy CPU)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from livetok.cli import get_parser, main
from livetok.cli.options import open_model
from livetok.engine.checkpoint import model_identity
from livetok.engine.config import BudgetConfig, SenderConfig, TokenizerConfig
from livetok.engine.errors import TokenizerError
from livetok.engine.frames import to_tensor, to_uint8
from livetok.engine.metrics import psnr
from livetok.engine.model import Tokenizer
from livetok.export.onnx_export import GRAPHS
from livetok.export.onnx_runtime import OnnxTokenizer, load_onnx
from livetok.export.verify import graph_parity, verify_frames
from livetok.stream.session import ReceiverSession, SenderSession, wire_roundtrip

from .conftest import BUNDLED_CLIP


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path) -> tuple[Path, dict[str, Any]]:
    """`livetok export onnx --verify --json` in-process on the tiny model's weights file. The untrained
    model's gain signal is ~1e-5 everywhere, so ranking by it breaks near-ties on float noise: verify
    on the error signal (the gain ranking is covered by the drift test, with a tolerance)."""
    out = tmp_path_factory.mktemp("onnx") / "tiny"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["export", "onnx", "-o", str(out), "--weights", str(tiny_weights), "--verify",
                     "--clips", str(BUNDLED_CLIP), "--max-frames", "4", "--signal", "error", "--ranking", "error",
                     "--json"])
    assert code == 0
    return out, json.loads(buf.getvalue())


@pytest.fixture(scope="module")
def ort_model(exported: tuple[Path, dict[str, Any]]) -> OnnxTokenizer:
    return load_onnx(exported[0], threads=1)


def test_export_writes_checked_graphs_and_sidecar(exported: tuple[Path, dict[str, Any]], tiny_model: Tokenizer) -> None:
    d, _ = exported
    meta = json.loads((d / "model.json").read_text())
    assert meta["model_id"] == model_identity(tiny_model).hex()
    assert TokenizerConfig.from_dict(meta["config"]) == tiny_model.cfg and meta["opset"] == 18
    assert meta["population"] == {"error": tiny_model.population("error"), "gain": tiny_model.population("gain")}
    for spec in GRAPHS:
        g = onnx.load(str(d / f"{spec.name}.onnx"))
        onnx.checker.check_model(g, full_check=True)
        assert meta["graphs"][spec.name]["exporter"] == "dynamo"
        assert [i.name for i in g.graph.input] == list(spec.inputs)
        assert [o.name for o in g.graph.output] == list(spec.outputs)
        for vi in (*g.graph.input, *g.graph.output):
            dims = [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
            # batch and the spatial axes are symbolic; only channel counts are fixed
            assert dims[0] == "batch", (vi.name, dims)
            assert dims[1:] in (["n"], [3, "height", "width"], [tiny_model.cfg.decoder.state_channels, "grid_h",
                                                                "grid_w"]), (vi.name, dims)
    assert model_identity(load_onnx(d)) == model_identity(tiny_model)


@pytest.mark.parametrize(("batch", "height", "width"), [(1, 192, 256), (3, 56, 40)])
def test_ort_matches_the_torch_wrappers_at_other_sizes(
    exported: tuple[Path, dict[str, Any]], tiny_model: Tokenizer, batch: int, height: int, width: int
) -> None:
    p = graph_parity(tiny_model, exported[0], batch, height, width).to_json()  # the export example was 2x3x64x96
    assert p["indices_equal"] == 1.0
    assert p["max_abs_diff"] < 1e-4, p
    assert p["providers"][0] == "CPUExecutionProvider" or torch.cuda.is_available()


def _stream(model: Any, frames: np.ndarray, sender: SenderConfig) -> tuple[list[torch.Tensor], list[float], bool]:
    """Frames through encode_step and a separate decode_step loop: indices, PSNRs, closed loop exact."""
    tx = rx = None
    indices, psnrs, exact = [], [], True
    for f in frames:
        tokens, tx = model.encode_step(to_tensor(f), tx, sender)
        out, rx = model.decode_step(tokens, rx)
        exact &= torch.equal(rx.recon, tx.recon) and torch.equal(rx.hidden, tx.hidden)
        indices.append(tokens.indices)
        psnrs.append(psnr(f, to_uint8(out[0])))
    return indices, psnrs, exact


# the untrained tiny model's gain signal is ~0, so the error signal (InfoTok's) is covered too
@pytest.mark.parametrize(("policy", "signal"), [("infotok", "gain"), ("infotok", "error"), ("fixed", "gain"),
                                                ("learned", "gain")])
def test_onnx_tokenizer_matches_torch(
    ort_model: OnnxTokenizer, tiny_model: Tokenizer, real_frames: np.ndarray, policy: str, signal: str
) -> None:
    sender = SenderConfig(budget=BudgetConfig(policy=policy, signal=signal, rate=0.5), ranking=signal)
    frames = real_frames[:8]
    idx_t, psnr_t, exact_t = _stream(tiny_model, frames, sender)
    idx_o, psnr_o, exact_o = _stream(ort_model, frames, sender)
    equal = np.mean([(a == b).float().mean().item() for a, b in zip(idx_t, idx_o, strict=True)])
    assert equal >= 0.999, equal
    assert abs(np.mean(psnr_o) - np.mean(psnr_t)) < 0.05
    assert exact_t and exact_o  # sender and receiver agree bitwise on each backend


def test_cross_backend_drift_is_bounded(
    ort_model: OnnxTokenizer, tiny_model: Tokenizer, real_frames: np.ndarray
) -> None:
    r = verify_frames(tiny_model, ort_model, real_frames[:12], SenderConfig(keyframe_interval=0),
                      transport=wire_roundtrip(tiny_model)).to_json()
    assert r["frames"] == 12 and r["closed_loop_exact"]
    for direction in ("torch_to_onnx", "onnx_to_torch"):
        assert abs(r[direction]["psnr_drift"]) < 0.1, r[direction]
    assert r["max_abs_pixel_diff"] <= 2


def test_sessions_run_on_onnx(ort_model: OnnxTokenizer, tiny_model: Tokenizer, real_frames: np.ndarray) -> None:
    tx, rx, rx_torch = SenderSession(ort_model), ReceiverSession(ort_model), ReceiverSession(tiny_model)
    assert tx.model_id == model_identity(tiny_model)
    for i, f in enumerate(real_frames[:3]):
        enc = tx.encode(f, timestamp_us=i * 33_333)
        assert np.array_equal(rx.decode(enc.data), enc.recon)
        # a torch receiver accepts the ORT sender's packets (same identity) and stays within a grey level
        assert np.abs(rx_torch.decode(enc.data).astype(int) - enc.recon.astype(int)).max() <= 2


def test_cli_export_verify_summary(exported: tuple[Path, dict[str, Any]]) -> None:
    _, res = exported
    assert set(res["exporters"].values()) == {"dynamo"}
    assert [p["size"] for p in res["parity"]] == ["1x3x192x256", "3x3x40x56"]
    v = res["verify"]
    clip = v["clips"][BUNDLED_CLIP.stem]
    assert clip["frames"] == 4 and clip["closed_loop_exact"]
    assert clip["indices_equal"] >= 0.999 and abs(clip["psnr_diff"]) < 0.05
    assert set(clip["torch_to_onnx"]) >= {"psnr", "psnr_drift", "max_abs_pixel_diff"}


def test_cli_backend_option(exported: tuple[Path, dict[str, Any]], tiny_weights: Path, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    d, _ = exported
    parse = get_parser().parse_args
    m = open_model(parse(["eval", "x.mp4", "--backend", "onnx", "--onnx-dir", str(d)]))
    assert isinstance(m, OnnxTokenizer)
    assert isinstance(open_model(parse(["eval", "x.mp4", "--weights", str(tiny_weights)])), Tokenizer)
    # auto with the extra installed: the cached export of the weights' identity, found without exporting
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    shutil.copytree(d, tmp_path / "livetok" / "onnx" / m.identity.hex())
    m2 = open_model(parse(["eval", "x.mp4", "--backend", "auto", "--weights", str(tiny_weights)]))
    assert isinstance(m2, OnnxTokenizer) and m2.identity == m.identity


def test_load_onnx_refuses_missing_and_corrupt_folders(exported: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="no ONNX export"):
        load_onnx(tmp_path / "nothing")
    bad = tmp_path / "bad"
    shutil.copytree(exported[0], bad)
    data = bytearray((bad / "decoder.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "decoder.onnx").write_bytes(bytes(data))
    with pytest.raises(TokenizerError, match="sha256"):
        load_onnx(bad)
    (bad / "model.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="corrupt"):
        load_onnx(bad)
    (bad / "model.json").unlink()
    with pytest.raises(TokenizerError, match=r"no model\.json"):
        load_onnx(bad)
