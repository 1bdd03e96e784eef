"""`export_onnx`: the encoder step, the decoder step and the router pass as ONNX graphs with dynamic
batch, height and width, plus a `model.json` sidecar (identity, config, population means, axes),
each graph checked in onnxruntime at a size and batch other than the export example's."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import torch
from torch import nn

from livetok.engine.errors import TokenizerError
from livetok.engine.model import Tokenizer

from .graphs import DecoderStep, EncoderStep, RouterPass, example_inputs

log = logging.getLogger(__name__)

FORMAT = "livetok-onnx"
FORMAT_VERSION = 1
SIDECAR = "model.json"
# example sizes for tracing: every dynamic dim >= 2 (torch.export silently fixes dims seen as 0 or 1)
EXAMPLE = {"batch": 2, "height": 64, "width": 96}
# sizes the exported graphs are run at after export: batch and size both unlike the example
CHECK_SIZES = ((1, 192, 256), (3, 40, 56))


@dataclass(frozen=True)
class GraphSpec:
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


GRAPHS = (
    GraphSpec("encoder", ("frame", "prev_recon", "prev_hidden"), ("indices", "pred_error", "pred_gain")),
    GraphSpec("decoder", ("indices", "mask", "prev_recon", "prev_hidden"), ("recon", "hidden")),
    GraphSpec("router", ("frame", "indices", "prev_recon", "prev_hidden"),
              ("error", "gain", "recon_full", "hidden_full")),
)

_IMAGE = {0: "batch", 2: "height", 3: "width"}  # [B, 3, H, W], H and W multiples of the stride
_GRID = {0: "batch", 2: "grid_h", 3: "grid_w"}  # [B, C, H/8, W/8]
_FLAT = {0: "batch", 1: "n"}  # [B, N], N = grid_h * grid_w
# the dynamic axes of every tensor any graph takes or returns, by name
AXES: dict[str, dict[int, str]] = {
    "frame": _IMAGE, "prev_recon": _IMAGE, "recon": _IMAGE, "recon_full": _IMAGE,
    "prev_hidden": _GRID, "hidden": _GRID, "hidden_full": _GRID,
    "indices": _FLAT, "mask": _FLAT, "pred_error": _FLAT, "pred_gain": _FLAT, "error": _FLAT, "gain": _FLAT,
}


def _module(spec: GraphSpec, model: Tokenizer) -> nn.Module:
    cls = {"encoder": EncoderStep, "decoder": DecoderStep, "router": RouterPass}[spec.name]
    return cls(model).eval()


def _dynamic_shapes(spec: GraphSpec, stride: int) -> dict[str, dict[int, Any]]:
    from torch.export import Dim

    batch, gh, gw = Dim("batch", min=1, max=4096), Dim("grid_h", min=1, max=4096), Dim("grid_w", min=1, max=4096)
    # H = 8 * grid_h: a derived dim tells torch.export that pixel_unshuffle by 8 always divides
    dims: dict[str, Any] = {"batch": batch, "grid_h": gh, "grid_w": gw, "height": stride * gh, "width": stride * gw,
                            "n": Dim.AUTO}  # N = grid_h * grid_w is not linear: let torch.export infer it
    return {name: {ax: dims[label] for ax, label in AXES[name].items()} for name in spec.inputs}


@contextlib.contextmanager
def _quiet() -> Iterator[list[warnings.WarningMessage]]:
    """The exporters warn about internals (pytree deprecations, unused axis names, torchvision ops
    not installed); collect the warnings for the log instead of raising them under `-W error`."""
    # the optimizer passes log every rewrite at INFO (what `livetok -v` shows)
    noisy = {"torch.onnx._internal.exporter._registration": logging.ERROR, "onnxscript": logging.WARNING,
             "onnx_ir": logging.WARNING}
    levels = {name: logging.getLogger(name).level for name in noisy}
    for name, level in noisy.items():
        logging.getLogger(name).setLevel(level)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield caught
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _export_one(module: nn.Module, spec: GraphSpec, args: tuple[torch.Tensor, ...], path: Path, opset: int,
                stride: int) -> str:
    """Export one graph to `path`; returns the exporter that worked ('dynamo' or 'legacy')."""
    try:
        with _quiet() as caught:
            torch.onnx.export(module, args, str(path), dynamo=True, opset_version=opset, verbose=False,
                              input_names=list(spec.inputs), output_names=list(spec.outputs),
                              dynamic_shapes=_dynamic_shapes(spec, stride), external_data=False)
        for w in caught:
            log.debug("%s export: %s: %s", spec.name, w.category.__name__, w.message)
        return "dynamo"
    except Exception as e:  # the dynamo exporter fails in many ways (missing onnxscript, unsupported ops)
        log.warning("dynamo export of %s failed (%s: %s); falling back to the legacy TorchScript exporter",
                    spec.name, type(e).__name__, str(e).splitlines()[0] if str(e) else "")
    with _quiet():
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=opset,
                          input_names=list(spec.inputs), output_names=list(spec.outputs),
                          dynamic_axes={n: AXES[n] for n in (*spec.inputs, *spec.outputs)})
    return "legacy"


def _name_axes(path: Path, spec: GraphSpec) -> None:
    """Give the dynamic dims of the graph's inputs and outputs the names of `AXES` (the exporter
    invents some, e.g. 's5' for N), and fail if an axis meant to be dynamic came out fixed."""
    import onnx

    m = onnx.load(str(path))
    rename: dict[str, str] = {}
    for vi in (*m.graph.input, *m.graph.output):
        dims = vi.type.tensor_type.shape.dim
        for ax, label in AXES[vi.name].items():
            d = dims[ax]
            if not d.dim_param:
                raise TokenizerError(f"export of {spec.name}: axis {ax} ({label}) of {vi.name!r} came out fixed "
                                     f"at {d.dim_value}; the graph would only run at that size")
            rename[d.dim_param] = label
    for vi in (*m.graph.input, *m.graph.output, *m.graph.value_info):
        for d in vi.type.tensor_type.shape.dim:
            if d.dim_param in rename:
                d.dim_param = rename[d.dim_param]
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))


def _versions() -> dict[str, str]:
    out: dict[str, str] = {"torch": str(torch.__version__)}
    for pkg in ("onnx", "onnxscript", "onnxruntime"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "absent"
    return out


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class GraphEntry(TypedDict):
    """One graph in model.json."""

    file: str
    exporter: str  # "dynamo" or "torchscript"
    sha256: str
    inputs: list[str]
    outputs: list[str]
    dynamic_axes: dict[str, dict[str, str]]


class Sidecar(TypedDict):
    """model.json, the export folder's description (a file format, read back by `read_sidecar`); `parity` with
    the export's check, `seconds` only in what `export_onnx` returns."""

    format: str
    format_version: int
    model_id: str
    config: dict[str, Any]  # TokenizerConfig.to_dict()
    population: dict[str, float]
    stride: int
    opset: int
    example: dict[str, int]
    graphs: dict[str, GraphEntry]
    versions: dict[str, str]
    parity: NotRequired[list[dict[str, Any]]]  # GraphParity documents
    seconds: NotRequired[float]


def export_onnx(model: Tokenizer, out_dir: str | os.PathLike[str], opset: int = 18,
                check: bool = True) -> Sidecar:
    """Write encoder.onnx, decoder.onnx, router.onnx and model.json into `out_dir`.

    Every graph takes and returns the stream state explicitly; batch, height and width are dynamic
    (height and width multiples of the stride). With `check`, each graph is then run in
    onnxruntime at `CHECK_SIZES` and compared with the torch wrappers (a failure raises).
    The files are written to a temporary folder next to `out_dir` and moved in at the end, so a
    crash never leaves a half-exported folder behind; other files in `out_dir` are left alone.

    Returns:
        the sidecar's contents (also in `out_dir/model.json`), plus `seconds`.
    """
    try:
        import onnx  # noqa: F401  (both exporters need it)
    except ImportError as e:
        raise TokenizerError("ONNX export needs the onnx extra: pip install 'livetok[onnx]'") from e
    t0 = time.perf_counter()
    out = Path(out_dir).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    cpu = Tokenizer(model.cfg).eval()  # a CPU float32 copy: the export never moves the caller's model
    cpu.load_state_dict({k: v.detach().to("cpu", torch.float32) for k, v in model.state_dict().items()})
    ex = example_inputs(cpu, **EXAMPLE)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        graphs: dict[str, GraphEntry] = {}
        for spec in GRAPHS:
            path = tmp / f"{spec.name}.onnx"
            exporter = _export_one(_module(spec, cpu), spec, tuple(ex[n] for n in spec.inputs), path, opset,
                                   cpu.stride)
            _name_axes(path, spec)
            graphs[spec.name] = {
                "file": path.name, "exporter": exporter, "sha256": file_sha256(path),
                "inputs": list(spec.inputs), "outputs": list(spec.outputs),
                "dynamic_axes": {n: {str(a): lbl for a, lbl in AXES[n].items()} for n in (*spec.inputs, *spec.outputs)},
            }
            log.info("exported %s with the %s exporter", spec.name, exporter)
        meta: Sidecar = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model_id": cpu.identity.hex(),
            "config": cpu.cfg.to_dict(),
            "population": {"error": cpu.population("error"), "gain": cpu.population("gain")},
            "stride": cpu.stride,
            "opset": opset,
            "example": dict(EXAMPLE),
            "graphs": graphs,
            "versions": _versions(),
        }
        (tmp / SIDECAR).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if check:
            from .verify import graph_parity

            parity = [graph_parity(cpu, tmp, b, h, w) for b, h, w in CHECK_SIZES]
            meta["parity"] = [p.to_json() for p in parity]
            for p in parity:
                if p.max_abs_diff > 1e-3 or p.indices_equal < 0.999:
                    raise TokenizerError(f"the exported graphs disagree with torch at {p.size}: {p.to_json()}")
            (tmp / SIDECAR).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        # move the files in, the sidecar last: a reader never sees a model.json with missing graphs
        # (and files of an older export fail their sha256 check); nothing else in out_dir is touched
        out.mkdir(parents=True, exist_ok=True)
        (out / SIDECAR).unlink(missing_ok=True)
        for spec in GRAPHS:
            os.replace(tmp / f"{spec.name}.onnx", out / f"{spec.name}.onnx")
        os.replace(tmp / SIDECAR, out / SIDECAR)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    meta["seconds"] = time.perf_counter() - t0
    return meta
