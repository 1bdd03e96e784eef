"""`OnnxTokenizer`: the exported graphs in onnxruntime behind the engine's `Runtime` interface
(engine/runtime.py), so every budget policy runs on ORT exactly as on torch (the same per-frame
code and router, encoder.onnx and decoder.onnx as its two networks)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from livetok.engine.config import TokenizerConfig
from livetok.engine.errors import TokenizerError
from livetok.engine.model import Tokenizer
from livetok.engine.runtime import StepRuntime

from .onnx_export import FORMAT, FORMAT_VERSION, GRAPHS, SIDECAR, Sidecar, export_onnx, file_sha256

log = logging.getLogger(__name__)

CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"


def requested_providers() -> list[str]:
    """CUDA first when this onnxruntime build has it (onnxruntime-gpu), the CPU EP always."""
    import onnxruntime as ort

    return [CUDA_EP, CPU_EP] if CUDA_EP in ort.get_available_providers() else [CPU_EP]


def read_sidecar(onnx_dir: str | os.PathLike[str]) -> Sidecar:
    """model.json of an export folder, checked (format, files present, sha256); TokenizerError if not."""
    d = Path(onnx_dir)
    path = d / SIDECAR
    if not d.is_dir():
        raise TokenizerError(f"no ONNX export at {d} (create one with `livetok export onnx -o {d}`)")
    if not path.is_file():
        raise TokenizerError(f"{d} has no {SIDECAR}: not a livetok ONNX export (or an interrupted one); "
                             f"export again with `livetok export onnx -o {d}`")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TokenizerError(f"{path} is corrupt: {e}") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise TokenizerError(f"{path} is not a {FORMAT} sidecar of version {FORMAT_VERSION}")
    for spec in GRAPHS:
        g = meta.get("graphs", {}).get(spec.name)
        f = d / f"{spec.name}.onnx"
        if g is None or not f.is_file():
            raise TokenizerError(f"{d} lacks the {spec.name} graph ({f.name}); export again")
        if file_sha256(f) != g.get("sha256"):
            raise TokenizerError(f"{f} does not match its sha256 in {SIDECAR} (corrupt, or from another export)")
    return cast(Sidecar, meta)  # a JSON document, its format and graphs checked above


class OnnxTokenizer(StepRuntime):
    """The tokenizer on onnxruntime: a `Runtime` whose two networks are encoder.onnx and decoder.onnx.

    Tensors in and out are CPU torch tensors (ORT copies to the GPU itself under the CUDA EP).

    Attributes:
        cfg: the model config the graphs were exported from.
        providers: the execution providers the sessions really run on, best first.
    """

    def __init__(self, onnx_dir: str | os.PathLike[str], threads: int | None = None,
                 providers: list[str] | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise TokenizerError("the onnx backend needs onnxruntime: pip install 'livetok[onnx]'") from e
        self.dir = Path(onnx_dir)
        self.meta = read_sidecar(self.dir)
        try:
            self.cfg: TokenizerConfig = TokenizerConfig.from_dict(self.meta["config"])
            self._identity = bytes.fromhex(self.meta["model_id"])
            self._population = {s: float(self.meta["population"][s]) for s in ("error", "gain")}
        except (KeyError, TypeError, ValueError) as e:
            raise TokenizerError(f"{self.dir / SIDECAR} is incomplete: {e}") from e
        self._ort = ort
        self._options = ort.SessionOptions()
        # ORT's own thread pool, sized like torch's (OMP_NUM_THREADS / --threads reach both)
        self._options.intra_op_num_threads = threads or torch.get_num_threads()
        self._options.inter_op_num_threads = 1
        # no spin-waiting between runs: the router's torch ops run between the graphs in this same
        # process, and spinning ORT workers take the cores from torch's threads (measured on 2 cores,
        # 2 threads, 320x240 infotok: encode+route 243 ms with spinning, 131 ms without)
        self._options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._providers = providers or requested_providers()
        self._sessions: dict[str, Any] = {}
        self._session("encoder")
        self._session("decoder")  # the router graph loads on first use (only parity checks need it)
        self.providers: list[str] = list(self._sessions["encoder"].get_providers())
        if self._providers[0] != self.providers[0]:
            # e.g. onnxruntime-gpu without a usable CUDA runtime: ORT falls back to the CPU on its own
            log.warning("asked onnxruntime for %s, running on %s", self._providers[0], self.providers[0])

    def _session(self, name: str) -> Any:
        s = self._sessions.get(name)
        if s is None:
            try:
                s = self._ort.InferenceSession(str(self.dir / f"{name}.onnx"), self._options,
                                               providers=self._providers)
            except Exception as e:  # ORT raises its own exception types for unreadable graphs
                raise TokenizerError(f"onnxruntime cannot load {self.dir / f'{name}.onnx'}: {e}") from e
            self._sessions[name] = s
        return s

    def run(self, graph: str, **inputs: Tensor | np.ndarray) -> list[np.ndarray]:
        """Run one graph ('encoder', 'decoder', 'router') on named inputs; outputs in graph order."""
        feeds = {k: (v.detach().cpu().contiguous().numpy() if isinstance(v, Tensor) else v)
                 for k, v in inputs.items()}
        return list(self._session(graph).run(None, feeds))

    # -- the Runtime interface (engine/runtime.py runs the frame around the two graphs) ----------

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")  # ORT copies to the GPU itself under the CUDA EP

    @property
    def identity(self) -> bytes:
        return self._identity

    def population(self, signal: str) -> float:
        """The population mean of a router signal ('error' or 'gain') stored with the weights."""
        return self._population["error" if signal == "error" else "gain"]

    def eval(self) -> OnnxTokenizer:
        return self

    def run_encoder(self, x: Tensor, prev_recon: Tensor, prev_hidden: Tensor,
                    predict: bool) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        idx, pred_error, pred_gain = self.run("encoder", frame=x, prev_recon=prev_recon, prev_hidden=prev_hidden)
        predicted = (torch.from_numpy(pred_error), torch.from_numpy(pred_gain)) if predict else None
        return torch.from_numpy(idx), predicted

    def run_decoder(self, indices: Tensor, mask: Tensor, prev_recon: Tensor,
                    prev_hidden: Tensor) -> tuple[Tensor, Tensor]:
        recon, hidden = self.run("decoder", indices=indices, mask=mask, prev_recon=prev_recon, prev_hidden=prev_hidden)
        return torch.from_numpy(recon), torch.from_numpy(hidden)

    def __repr__(self) -> str:
        return f"OnnxTokenizer({str(self.dir)!r}, model {self.identity.hex()}, {self.providers[0]})"



def load_onnx(onnx_dir: str | os.PathLike[str], threads: int | None = None) -> OnnxTokenizer:
    """An `OnnxTokenizer` on an export folder; TokenizerError if it is missing or corrupt."""
    return OnnxTokenizer(onnx_dir, threads=threads)


def onnx_available() -> bool:
    """Whether the onnx extra is installed (onnxruntime to run, onnx + onnxscript to export)."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx", "onnxscript"))


def cache_dir(model_id: str) -> Path:
    """Where on-the-fly exports live: $XDG_CACHE_HOME (default ~/.cache)/livetok/onnx/<model id>."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "livetok" / "onnx" / model_id


def ensure_onnx(model: Tokenizer, onnx_dir: str | os.PathLike[str] | None = None,
                threads: int | None = None) -> OnnxTokenizer:
    """`model` on onnxruntime: load its export from `onnx_dir` (default: the cache folder of its
    identity), exporting it there first when the folder has none. A folder holding another model's
    export is an error; a broken cache folder is exported again."""
    ident = model.identity
    d = Path(onnx_dir) if onnx_dir is not None else cache_dir(ident.hex())
    if not (d / SIDECAR).is_file() or onnx_dir is None:
        try:
            read_sidecar(d)
        except TokenizerError:
            log.warning("exporting model %s to ONNX in %s (once; takes a while)", ident.hex(), d)
            export_onnx(model, d)
    ort = OnnxTokenizer(d, threads=threads)
    if ort.identity != ident:
        raise TokenizerError(f"{d} holds the ONNX export of model {ort.identity.hex()}, not of model {ident.hex()} "
                             "(export it again, or pass another --onnx-dir)")
    return ort
