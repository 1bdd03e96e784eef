from __future__ import annotations

from pathlib import Path

import pytest
import torch

from livetok.engine.checkpoint import load_weights, model_identity, read_metadata, save_weights
from livetok.engine.config import PRESETS
from livetok.engine.errors import TokenizerError
from livetok.engine.model import Tokenizer


def test_round_trip_keeps_identity_and_outputs(tiny_model: Tokenizer, tmp_path: Path) -> None:
    p = save_weights(tiny_model, tmp_path / "m.safetensors", {"note": "test"})
    meta = read_metadata(p)
    assert meta["model_id"] == model_identity(tiny_model).hex() and len(bytes.fromhex(meta["model_id"])) == 8
    m2 = load_weights(p)
    assert model_identity(m2) == model_identity(tiny_model)
    assert float(m2.population_error) == float(tiny_model.population_error)
    x = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    t1, s1 = tiny_model.encode_step(x, None)
    t2, s2 = m2.encode_step(x, None)
    assert torch.equal(t1.indices, t2.indices) and torch.equal(s1.recon, s2.recon)


def test_identity_changes_with_any_weight_or_the_normaliser(tiny_model: Tokenizer) -> None:
    m = Tokenizer(PRESETS["tiny"])
    m.load_state_dict(tiny_model.state_dict())
    base = model_identity(m)
    with torch.no_grad():
        m.decoder.to_rgb.bias[0] += 1e-6
    assert model_identity(m) != base
    m.load_state_dict(tiny_model.state_dict())
    assert model_identity(m) == base
    m.population_error.fill_(0.123)
    assert model_identity(m) != base


def test_mismatches_and_bad_files_are_clear_errors(tiny_weights: Path, tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="trained for preset 'tiny'"):
        load_weights(tiny_weights, config=PRESETS["default"])
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(TokenizerError, match="not a safetensors weights file"):
        load_weights(junk)
    with pytest.raises(TokenizerError, match="no weights file"):
        load_weights(tmp_path / "missing.safetensors")
    # a flipped weight byte is caught by the stored identity
    data = bytearray(tiny_weights.read_bytes())
    data[-5] ^= 0xFF
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(TokenizerError, match="corrupted"):
        load_weights(bad)
