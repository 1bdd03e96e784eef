"""Weights on disk: one safetensors file whose metadata carries the config JSON and the population
error, so a file alone rebuilds its model (no pickle), and the model identity that packets carry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .config import TokenizerConfig
from .errors import TokenizerError
from .model import Tokenizer
from .runtime import Runtime

FORMAT_VERSION = "1"
WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "default.safetensors"


def model_identity(model: Runtime) -> bytes:
    """The 8-byte identity packets carry (`Runtime.identity`: a hash of config, population means and
    weights; an exported runtime carries the identity of the weights it came from)."""
    return model.identity


def save_weights(model: Tokenizer, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write the model to `path` (.safetensors); `extra` goes into the metadata as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {
        "livetok_format": FORMAT_VERSION,
        "config": model.cfg.to_json(),
        "population_error": repr(model.population("error")),
        "population_gain": repr(model.population("gain")),
        "model_id": model_identity(model).hex(),
        "extra": json.dumps(extra or {}, sort_keys=True),
    }
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)  # atomic: a crash never leaves half a weights file
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    path = Path(path)
    if not path.is_file():
        raise TokenizerError(f"no weights file at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise TokenizerError(f"{path} is not a safetensors weights file: {e}") from e
    if meta.get("livetok_format") != FORMAT_VERSION:
        raise TokenizerError(
            f"{path} is not a livetok weights file of format {FORMAT_VERSION} "
            f"(found livetok_format={meta.get('livetok_format')!r})"
        )
    return meta


def load_weights(
    path: str | Path = DEFAULT_WEIGHTS,
    config: TokenizerConfig | None = None,
    device: str | torch.device = "cpu",
    allow_missing_head: bool = False,
) -> Tokenizer:
    """Rebuild a model from a weights file.

    Args:
        path: the .safetensors file.
        config: if given, the weights must fit this config exactly (else a TokenizerError says why).
        device: where to put the model.
        allow_missing_head: accept a file written before the budget head existed (for training
            it); its head starts untrained and the file's stored identity is not checked.
    """
    meta = read_metadata(path)
    stored = TokenizerConfig.from_dict(json.loads(meta["config"]))
    cfg = config or stored
    if config is not None and config != stored:
        raise TokenizerError(
            f"weights {path} were trained for preset {stored.name!r} ({stored.to_json()}), "
            f"not for {config.name!r} ({config.to_json()})"
        )
    model = Tokenizer(cfg)
    try:
        sd = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise TokenizerError(f"cannot read tensors from {path}: {e}") from e
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if allow_missing_head:
        missing = [k for k in missing if not k.startswith("budget_head.")]
    if missing or unexpected:
        raise TokenizerError(f"weights {path} do not fit config {cfg.name!r}: missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]}")
    model.eval()
    if not allow_missing_head and meta.get("model_id") and meta["model_id"] != model_identity(model).hex():
        raise TokenizerError(f"weights {path} are corrupted: stored identity {meta['model_id']} does not match")
    return model.to(device)


def load_default(device: str | torch.device = "cpu") -> Tokenizer:
    """The shipped weights (trained by `livetok train`, see docs/MODEL_CARD.md)."""
    if not DEFAULT_WEIGHTS.is_file():
        raise TokenizerError(
            f"the shipped weights are missing ({DEFAULT_WEIGHTS}); reinstall livetok or train some with "
            "`livetok train -o DIR` and pass --weights DIR/model.safetensors"
        )
    return load_weights(DEFAULT_WEIGHTS, device=device)
