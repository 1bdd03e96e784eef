"""The networks (DCVC-RT's shape, issue 13): the config and its JSON, grown and depth-2 models,
shapes, the closed loop through packet bytes (causality and streaming == offline are in
tests/test_model.py) and ONNX parity."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from livetok.engine.checkpoint import load_weights, save_weights
from livetok.engine.config import PRESETS, BudgetConfig, DecoderConfig, SenderConfig, TokenizerConfig, get_preset
from livetok.engine.frames import to_tensor
from livetok.engine.model import Tokenizer
from livetok.engine.train import _load_tolerating_head, depth_mask, run_clip
from livetok.stream.session import ReceiverSession, SenderSession

from .conftest import untrained

FIXED_HALF = SenderConfig(budget=BudgetConfig(policy="fixed", rate=0.5), keyframe_interval=0)


@pytest.fixture(scope="module")
def tiny() -> Tokenizer:
    return untrained("tiny", 8)


# -- config ---------------------------------------------------------------------------------------


def test_presets_round_trip_and_name_what_ships() -> None:
    for name in PRESETS:
        cfg = get_preset(name)
        assert TokenizerConfig.from_dict(json.loads(cfg.to_json())) == cfg
    # `default` is the shipped architecture (tests/test_checkpoint.py: equal to the shipped file's config)
    assert get_preset("default") == get_preset("rt-fsq6-d5") == TokenizerConfig()
    assert get_preset("rt-fsq6").fsq.levels == (8, 8, 8, 5, 5, 5) and get_preset("rt").fsq.levels == (8, 5, 5, 5)
    assert get_preset("rt-tiny") == get_preset("tiny")
    assert sum(p.numel() for p in Tokenizer(get_preset("tiny")).parameters()) < 60_000
    with pytest.raises(ValueError, match="unknown preset 'paper-fsq'"):
        get_preset("paper-fsq")  # it was the v1 backbone


def test_the_json_keeps_the_keys_of_the_removed_v1_architecture() -> None:
    """The identity hashes the config JSON: it still carries "arch": "rt" and the two v1 fields with
    the values every rt model wrote, so the shipped weights keep their identity; a v1 model's JSON
    (no "arch", or other v1 fields) is refused, not silently built as something else."""
    d = json.loads(get_preset("tiny").to_json())
    assert d["arch"] == "rt" and d["encoder"]["stem_channels"] == [32, 64, 96]
    assert d["decoder"]["up_channels"] == [48, 24]
    v1 = {k: v for k, v in d.items() if k != "arch"}
    with pytest.raises(ValueError, match="arch 'v1'"):
        TokenizerConfig.from_dict(v1)
    with pytest.raises(ValueError, match="arch 'v3'"):
        TokenizerConfig.from_dict({**d, "arch": "v3"})
    odd = json.loads(json.dumps(d))
    odd["decoder"]["up_channels"] = [16, 8]  # the old v1 `tiny`'s
    with pytest.raises(ValueError, match="up_channels"):
        TokenizerConfig.from_dict(odd)


def test_refinement_keys_only_in_the_json_of_models_that_have_it() -> None:
    # models made before the refinement existed keep their JSON, and so their identity
    assert "refine_width" not in json.loads(get_preset("rt-fsq6").to_json())["decoder"]
    r = json.loads(get_preset("rt-fsq6-r").to_json())["decoder"]
    assert (r["refine_width"], r["refine_blocks"]) == (24, 1)
    with pytest.raises(ValueError, match="both be 0 or both positive"):
        DecoderConfig(refine_width=8, refine_blocks=0)
    with pytest.raises(ValueError, match="multiple of 4"):
        DecoderConfig(width=30, refine_width=8, refine_blocks=1)


def _grown(base: Tokenizer, **decoder: int) -> Tokenizer:
    cfg = dataclasses.replace(base.cfg, decoder=dataclasses.replace(base.cfg.decoder, **decoder))
    m = Tokenizer(cfg)
    _load_tolerating_head(m, base.state_dict())
    return m.eval()


def test_grown_decoder_starts_as_the_checkpoint(tiny: Tokenizer) -> None:
    """Training may grow a checkpoint (a stride-4 refinement, more decoder blocks): the grown model
    decodes exactly as the checkpoint did, so a run starts from the checkpoint's quality."""
    torch.manual_seed(1)
    for p in tiny.parameters():  # make every residual branch non-zero, unlike a fresh init
        p.data.add_(torch.randn_like(p) * 0.05)
    g, gh, gw = tiny.cfg.fsq.dim, 6, 8
    codes, mask = torch.rand(2, g, gh, gw) * 2 - 1, torch.rand(2, gh * gw) < 0.6
    prev, hid = torch.rand(2, 3, 8 * gh, 8 * gw) * 2 - 1, torch.rand(2, tiny.cfg.decoder.state_channels, gh, gw)
    with torch.no_grad():
        want = tiny.eval().decoder(codes, mask, prev, hid)
        for extra in ({"refine_width": 8, "refine_blocks": 2}, {"blocks": 3}, {"blocks": 2, "refine_width": 4,
                                                                                 "refine_blocks": 1},
                      {"mlp_ratio": 3}, {"blocks": 2, "mlp_ratio": 2}):
            grown = _grown(tiny, **extra)
            assert sum(p.numel() for p in grown.parameters()) > sum(p.numel() for p in tiny.parameters())
            got = grown.decoder(codes, mask, prev, hid)
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), extra
    # a checkpoint that does not fit is still refused: a wider decoder, or a block missing in the middle
    with pytest.raises(RuntimeError, match="does not fit"):
        _grown(tiny, width=28)
    three = _grown(tiny, blocks=3)
    sd = {k: v for k, v in three.state_dict().items() if not k.startswith("decoder.blocks.1.")}
    with pytest.raises(RuntimeError, match="does not fit"):
        _load_tolerating_head(Tokenizer(three.cfg), sd)


def test_grown_encoder_starts_as_the_checkpoint(tiny: Tokenizer) -> None:
    """More encoder blocks (preset rt-fsq6-d5e4 over rt-fsq6-d5) grow at the stack's end as the identity:
    the grown encoder gives the checkpoint's latents bit for bit; a block missing in the middle is refused."""
    torch.manual_seed(2)
    for p in tiny.parameters():
        p.data.add_(torch.randn_like(p) * 0.05)
    gh, gw = 6, 8
    x, prev = torch.rand(2, 3, 8 * gh, 8 * gw) * 2 - 1, torch.rand(2, 3, 8 * gh, 8 * gw) * 2 - 1
    hid = torch.rand(2, tiny.cfg.decoder.state_channels, gh, gw)
    cfg = dataclasses.replace(tiny.cfg, encoder=dataclasses.replace(tiny.cfg.encoder, blocks=3))
    grown = Tokenizer(cfg)
    assert _load_tolerating_head(grown, tiny.state_dict()) == ["encoder.blocks.1", "encoder.blocks.2"]
    with torch.no_grad():
        want, got = tiny.eval().encoder(x, prev, hid), grown.eval().encoder(x, prev, hid)
    assert want[0].shape == (2, tiny.cfg.fsq.dim, gh, gw)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    sd = {k: v for k, v in grown.state_dict().items() if not k.startswith("encoder.blocks.1.")}
    with pytest.raises(RuntimeError, match="does not fit"):
        _load_tolerating_head(Tokenizer(cfg), sd)
    assert get_preset("rt-fsq6-d5e4").encoder.blocks == 4 and get_preset("rt-fsq6-d5e4").decoder.blocks == 5


def test_depth_two_grows_from_one_stage_and_keeps_old_identities(tiny: Tokenizer,
                                                                   real_frames: np.ndarray) -> None:
    """Residual token depth (issue 23): depth is left out of one-stage JSON (identities unchanged); a
    depth-2 model grown from a one-stage checkpoint decodes exactly as it did, whatever share of
    positions carries a second token, until training moves the second stage's embedding off zero."""
    assert "depth" not in json.loads(get_preset("rt-fsq6-d5").to_json())
    d2 = get_preset("rt-fsq6-d5r2")
    assert d2.depth == 2 and TokenizerConfig.from_dict(json.loads(d2.to_json())) == d2
    with pytest.raises(ValueError, match="depth"):
        TokenizerConfig(depth=3)
    grown = Tokenizer(dataclasses.replace(tiny.cfg, depth=2))
    assert _load_tolerating_head(grown, tiny.state_dict()) == ["decoder.embed2", "encoder.head2"]
    grown.eval()
    x = to_tensor(real_frames[:3, :64, :64])[None]
    with torch.no_grad():
        want: list[tuple[torch.Tensor, torch.Tensor]] = []
        run_clip(tiny, x, lambda err, t: torch.tensor([40]), collect=want)
        for frac in (0.0, 0.5, 1.0):
            got: list[tuple[torch.Tensor, torch.Tensor]] = []
            _, stats, _ = run_clip(grown, x, lambda err, t: torch.tensor([40]), collect=got,
                                   depth_fn=lambda t, f=frac: torch.tensor([f]))
            assert all(torch.equal(a[0], b[0]) for a, b in zip(got, want, strict=True))
            assert stats["depth2"] == pytest.approx(round(40 * frac) / 64)  # of 64 positions
        # once the embedding moves, the second tokens change the picture
        grown.decoder.embed2.weight.data.normal_(0, 0.5)  # type: ignore[union-attr]
        moved: list[tuple[torch.Tensor, torch.Tensor]] = []
        run_clip(grown, x, lambda err, t: torch.tensor([40]), collect=moved)
        assert float((moved[1][0] - want[1][0]).abs().max()) > 0.01


def test_depth_mask_takes_the_top_ranked_kept_positions() -> None:
    scores = torch.tensor([[0.9, 0.1, 0.8, 0.7, 0.2, 0.3]])
    mask = torch.tensor([[False, True, True, True, True, False]])
    # 4 kept; half of them (2) get a second token: the two best-scored kept positions, 2 and 3
    got = depth_mask(scores, mask, torch.tensor([0.5]))
    assert got.tolist() == [[False, False, True, True, False, False]]
    assert int(depth_mask(scores, mask, torch.tensor([1.0])).sum()) == 4
    assert not bool(depth_mask(scores, mask, torch.tensor([0.0])).any())


def test_rt_has_no_convolution_above_stride_8() -> None:
    m = Tokenizer(PRESETS["rt"]).eval()
    sizes: list[tuple[int, int]] = []
    hooks = [mod.register_forward_hook(lambda mod, inp, out: sizes.append(tuple(inp[0].shape[-2:])))
             for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)]
    m.encode_step(torch.zeros(1, 3, 64, 96), None, FIXED_HALF)
    for h in hooks:
        h.remove()
    assert sizes and set(sizes) == {(8, 12)}
    # with the refinement: stride 8, and stride 4 for its narrow blocks; still nothing at full size
    m = Tokenizer(PRESETS["rt-fsq6-r"]).eval()
    sizes.clear()
    hooks = [mod.register_forward_hook(lambda mod, inp, out: sizes.append(tuple(inp[0].shape[-2:])))
             for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)]
    m.encode_step(torch.zeros(1, 3, 64, 96), None, FIXED_HALF)
    for h in hooks:
        h.remove()
    assert set(sizes) == {(8, 12), (16, 24)}


def test_rt_weights_file_round_trip(tmp_path: Path, tiny: Tokenizer) -> None:
    path = save_weights(tiny, tmp_path / "rt.safetensors")
    back = load_weights(path)
    assert back.cfg == tiny.cfg
    assert back.identity == tiny.identity


# -- the contracts ------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["rt", "rt-fsq6", "rt-fsq6-r"])
@pytest.mark.parametrize(("height", "width"), [(192, 256), (40, 56), (50, 70)])
def test_shapes(preset: str, height: int, width: int) -> None:
    torch.manual_seed(0)
    m = Tokenizer(PRESETS[preset]).eval()
    hp, wp = height + (-height) % 8, width + (-width) % 8
    gh, gw = hp // 8, wp // 8
    cs = m.cfg.decoder.state_channels
    # the networks' signatures and shapes
    x = torch.rand(2, 3, hp, wp) * 2 - 1
    hid = torch.zeros(2, cs, gh, gw)
    with torch.no_grad():
        z, f = m.encoder(x, torch.zeros_like(x), hid)
        assert z.shape == (2, m.cfg.fsq.dim, gh, gw) and f.shape == (2, m.cfg.encoder.width, gh, gw)
        codes, _ = m.fsq(z)
        recon, hidden = m.decoder(codes, torch.rand(2, gh * gw) < 0.5, x, hid)
    assert recon.shape == x.shape and hidden.shape == hid.shape
    assert float(recon.abs().max()) <= 1.0 and float(hidden.abs().max()) <= 1.0
    # the step API pads and crops
    frame = torch.rand(1, 3, height, width) * 2 - 1
    tok, state = m.encode_step(frame, None, FIXED_HALF)
    assert tok.grid == (gh, gw) and tok.size == (height, width)
    assert tok.indices.shape == (1, gh * gw) and int(tok.indices.max()) < m.fsq.codebook_size
    assert state.recon.shape == (1, 3, hp, wp) and state.hidden.shape == (1, cs, gh, gw)
    out, _ = m.decode_step(tok, None)
    assert out.shape == (1, 3, height, width)


def test_full_rate_training_pass_skips_the_router(tiny: Tokenizer, real_frames: np.ndarray) -> None:
    """run_clip(router=False) (the full-rate fixed arm) is the same pass as the full-rate budget."""
    x = to_tensor(real_frames[:3, :64, :64])[None]
    n = 64
    with torch.no_grad():
        a, _, (ra, ha, _, _) = run_clip(tiny, x, lambda err, t: torch.tensor([n]), mse_weight=1.0)
        b, stats, (rb, hb, _, _) = run_clip(tiny, x, lambda err, t: torch.tensor([0]), mse_weight=1.0,
                                         router=False)
    assert torch.equal(a, b) and torch.equal(ra, rb) and torch.equal(ha, hb)
    assert stats["rate"] == 1.0


def test_no_worse_term_pays_only_for_held_frames_that_get_worse(tiny: Tokenizer, real_frames: np.ndarray) -> None:
    """The hinge adds w * max(0, MSE(t) - MSE(frame t-1's reconstruction, frame t)) on rows whose frame repeats
    the last, and nothing on moving rows."""
    held = to_tensor(real_frames[[0, 1, 1, 1], :64, :64])  # frames 2 and 3 repeat frame 1
    moving = to_tensor(real_frames[:4, :64, :64])
    x = torch.stack([held, moving])
    w = 7.0
    with torch.no_grad():
        base, _, _ = run_clip(tiny, x, lambda err, t: torch.tensor([16, 16]), mse_weight=1.0, collect=(got := []))
        hinged, _, _ = run_clip(tiny, x, lambda err, t: torch.tensor([16, 16]), mse_weight=1.0, no_worse_weight=w)
        moved, _, _ = run_clip(tiny, x[1:], lambda err, t: torch.tensor([16]), mse_weight=1.0)
        moved_w, _, _ = run_clip(tiny, x[1:], lambda err, t: torch.tensor([16]), mse_weight=1.0, no_worse_weight=w)
    assert torch.equal(moved, moved_w)  # no held row: no term
    want = 0.0
    for t in (2, 3):  # row 0's held frames, against the reconstruction shown before each
        now = float((got[t][0][0] - x[0, t]).pow(2).mean())
        shown = float((got[t - 1][0][0] - x[0, t]).pow(2).mean())
        want += max(0.0, now - shown) * w / 2  # averaged over the 2 rows, then over the 4 frames
    assert want > 0 and float(hinged - base) == pytest.approx(want / 4, rel=2e-3)  # fp32 sums of a loss ~1e3 larger


@pytest.mark.parametrize("wire", [1, 2, 3])
def test_closed_loop_through_packet_bytes(rt_model: Tokenizer, real_frames: np.ndarray, wire: int) -> None:
    sender = SenderConfig(budget=BudgetConfig(policy="infotok", rate=0.5), keyframe_interval=4, wire=wire)
    tx, rx = SenderSession(rt_model, sender), ReceiverSession(rt_model)
    for t in range(7):
        enc = tx.encode(real_frames[t], timestamp_us=t * 33_333)
        out = rx.decode(enc.data)
        assert np.array_equal(out, enc.recon), f"frame {t} drifted"
    assert tx.state.stream is not None and rx.state is not None
    assert torch.equal(rx.state.hidden, tx.state.stream.hidden)


def test_static_scene_keeps_the_previous_reconstruction_with_no_tokens(rt_model: Tokenizer,
                                                                       real_frames: np.ndarray) -> None:
    """The reconstruction is a residual on the previous one: the decoder's output with no tokens is
    the previous frame plus a correction (not a fresh image)."""
    x = to_tensor(real_frames[:1])
    tok, st = rt_model.encode_step(x, None, SenderConfig(budget=BudgetConfig(policy="fixed", rate=1.0)))
    with torch.no_grad():
        none = torch.zeros_like(tok.mask)
        recon, _ = rt_model.run_decoder(tok.indices, none, st.recon, st.hidden)
    # untrained, the correction is small (to_rgb starts scaled down): the frame is mostly held
    assert float((recon - st.recon).abs().mean()) < 0.1


# -- ONNX ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_onnx_export_and_onnxruntime_parity(tmp_path: Path, rt_model: Tokenizer, real_frames: np.ndarray) -> None:
    pytest.importorskip("onnxruntime")
    from livetok.export.onnx_export import export_onnx
    from livetok.export.onnx_runtime import load_onnx
    from livetok.export.verify import graph_parity, verify_frames
    from livetok.stream.session import wire_roundtrip

    meta = export_onnx(rt_model, tmp_path / "rt")  # checks every graph in ORT at CHECK_SIZES
    assert TokenizerConfig.from_dict(meta["config"]) == rt_model.cfg
    ort = load_onnx(tmp_path / "rt", threads=1)
    assert ort.identity == rt_model.identity and ort.cfg == rt_model.cfg
    for batch, height, width in [(1, 192, 256), (2, 56, 40)]:
        p = graph_parity(rt_model, tmp_path / "rt", batch, height, width).to_json()
        assert p["indices_equal"] == 1.0 and p["max_abs_diff"] < 1e-4, p
    # error ranking: the untrained model's gain map is near-tied everywhere (see tests/test_export.py)
    sender = SenderConfig(budget=BudgetConfig(policy="infotok", rate=0.5, signal="error"), ranking="error",
                          keyframe_interval=0)
    r = verify_frames(rt_model, ort, real_frames[:6], sender, transport=wire_roundtrip(rt_model)).to_json()
    assert r["closed_loop_exact"], r
    assert r["indices_equal"] > 0.999 and r["mask_equal"] > 0.999, r
    assert r["max_abs_pixel_diff"] <= 2, r
