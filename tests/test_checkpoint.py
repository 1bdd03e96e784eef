from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from livetok.engine.checkpoint import DEFAULT_WEIGHTS, load_weights, model_identity, read_metadata, save_weights
from livetok.engine.config import PRESETS
from livetok.engine.errors import TokenizerError
from livetok.engine.frames import to_tensor, to_uint8
from livetok.engine.model import Tokenizer

# what the shipped weights computed when they shipped (tests/data/make_shipped_fixture.py)
SHIPPED = Path(__file__).parent / "data" / "shipped_v23.npz"
SHIPPED_IDENTITY = "16802af157862480"  # docs/MODEL_CARD.md


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


def test_shipped_weights_keep_their_identity_and_their_frames(shipped_model: Tokenizer) -> None:
    """The shipped file loads unchanged: same config JSON bytes (the v1 keys included), same identity
    (every packet names it), and the same tokens and decoded frames as the day it shipped."""
    stored = read_metadata(DEFAULT_WEIGHTS)["config"]
    assert shipped_model.cfg.to_json() == stored
    assert json.loads(stored)["arch"] == "rt"
    assert shipped_model.cfg == PRESETS["default"]  # `--preset default` trains what ships
    assert model_identity(shipped_model).hex() == SHIPPED_IDENTITY
    golden = np.load(SHIPPED)
    assert str(golden["model_id"]) == SHIPPED_IDENTITY
    x = to_tensor(golden["frames"])
    tx, rx = None, None
    with torch.no_grad():
        for t in range(x.shape[0]):
            tok, tx = shipped_model.encode_step(x[t : t + 1], tx)  # the default sender
            assert np.array_equal(tok.indices[0].numpy(), golden["indices"][t]), f"frame {t}: indices"
            assert np.array_equal(tok.mask[0].numpy(), golden["masks"][t]), f"frame {t}: keep-mask"
            out, rx = shipped_model.decode_step(tok, rx)
            # bit-identical on the machine that made the fixture; on another CPU the float sums may
            # differ in the last places and a pixel may round the other way, nothing more
            got = (float(out.double().sum()), float(out.double().square().sum()))
            np.testing.assert_allclose(got, golden["recon_sums"][t], rtol=1e-6, atol=0)
            diff = np.abs(to_uint8(out[0]).astype(np.int16) - golden["recon"][t].astype(np.int16))
            assert int(diff.max()) <= 1 and float((diff == 0).mean()) > 0.999, f"frame {t}: decoded frame"
    assert golden["masks"][2:].sum() < golden["masks"][2:].size  # the fixture has non-full keep-masks
