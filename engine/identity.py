"""The model identity packets carry: 8 bytes that two processes agree on exactly when they would
compute the same tokens (a hash of the config, the population means and every weight)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from .config import TokenizerConfig


def weights_identity(cfg: TokenizerConfig, population: Callable[[str], float], state: Mapping[str, Tensor]) -> bytes:
    """8 bytes hashed from the config JSON, the population means (rounded: float noise in a stored
    constant must not split identities) and every tensor of `state` but the population buffers."""
    h = hashlib.sha256(cfg.to_json().encode())
    for sig in ("error", "gain"):
        h.update(repr(round(population(sig), 9)).encode())
    for name in sorted(state):
        if name.startswith("population_"):
            continue
        t = state[name].detach().to("cpu", torch.float32).contiguous()
        h.update(name.encode())
        h.update(t.numpy().tobytes())
    return h.digest()[:8]
