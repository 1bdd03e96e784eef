"""Which runtime runs the model (`--backend`): torch eager, onnxruntime, or torch behind CUDA graphs.

`auto` picks the fastest one this machine has: cuda-graph when a CUDA device is present, else onnx
when the onnx extra is installed, else torch. Asking for cuda-graph without a CUDA device is an
error, not a silent fallback: whoever names a GPU runtime (a benchmark above all) must not get CPU
figures labelled as GPU ones.
"""

from __future__ import annotations

import os
from pathlib import Path

from livetok.engine.errors import TokenizerError
from livetok.engine.model import Tokenizer
from livetok.engine.runtime import Runtime

BACKENDS = ("torch", "onnx", "cuda-graph")
CHOICES = (*BACKENDS, "auto")


def _cuda() -> bool:
    from .cuda_graphs import cuda_available

    return cuda_available()


def _onnx() -> bool:
    from .onnx_runtime import onnx_available

    return onnx_available()


def available_backends() -> list[str]:
    """The backends this machine can run, in BACKENDS order."""
    return [b for b, ok in (("torch", True), ("onnx", _onnx()), ("cuda-graph", _cuda())) if ok]


def resolve_backend(requested: str) -> str:
    """A --backend value -> the backend to run; TokenizerError (one line) when it cannot run here."""
    if requested == "auto":
        return "cuda-graph" if _cuda() else "onnx" if _onnx() else "torch"
    if requested not in BACKENDS:
        raise TokenizerError(f"unknown backend {requested!r}; choose one of {', '.join(CHOICES)}")
    if requested == "cuda-graph" and not _cuda():
        raise TokenizerError("--backend cuda-graph needs a CUDA device and none is present "
                             "(use --backend torch or onnx, or auto to pick what this machine has)")
    if requested == "onnx" and not _onnx():
        raise TokenizerError("--backend onnx needs onnxruntime, onnx and onnxscript: pip install 'livetok[onnx]'")
    return requested


def cuda_device(device: str | None) -> str:
    """The CUDA device a cuda-graph runtime uses: --device when it names one, else cuda (device 0)."""
    return device if device is not None and device.startswith("cuda") else "cuda"


def build_runtime(backend: str, model: Tokenizer, onnx_dir: str | os.PathLike[str] | None = None,
                  device: str | None = None, threads: int | None = None) -> Runtime:
    """`model` (a torch Tokenizer) behind `backend` (already resolved): itself for torch, its ONNX
    export on onnxruntime (exported on first use), or a CUDA-graph runtime on `cuda_device(device)`."""
    if backend == "torch":
        return model
    if backend == "onnx":
        from .onnx_runtime import ensure_onnx

        return ensure_onnx(model, onnx_dir, threads=threads)
    if backend == "cuda-graph":
        from .cuda_graphs import cuda_graph_tokenizer

        resolve_backend("cuda-graph")
        return cuda_graph_tokenizer(model, cuda_device(device))
    raise TokenizerError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def open_runtime(backend: str = "torch", weights: str | os.PathLike[str] | None = None,
                 onnx_dir: str | os.PathLike[str] | None = None, device: str = "cpu",
                 threads: int | None = None) -> Runtime:
    """The model of a weights file (default: the shipped one) behind `backend` (any of CHOICES): what
    `--backend/--weights/--onnx-dir/--device` ask for. TokenizerError (one line) when it cannot run here.

    An existing ONNX export named without weights runs as it is (it needs no torch weights)."""
    import torch

    from livetok.engine.checkpoint import load_default, load_weights

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TokenizerError(f"--device {device}: no CUDA device is available (use --device cpu)")
    resolved = resolve_backend(backend)
    if resolved == "onnx" and onnx_dir is not None and weights is None and Path(onnx_dir, "model.json").is_file():
        from .onnx_runtime import load_onnx

        return load_onnx(onnx_dir, threads=threads)
    # the onnx and cuda-graph runtimes place the model themselves
    home = device if resolved == "torch" else "cpu"
    model = load_weights(Path(weights), device=home) if weights is not None else load_default(device=home)
    return build_runtime(resolved, model, onnx_dir, device, threads)
