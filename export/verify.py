"""Parity of the exported graphs with PyTorch: graph by graph on random inputs, and whole clips
through sender -> packet bytes -> receiver on both backends and across them (the drift of the
recurrent state when sender and receiver run different backends, DESIGN.md §2)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from livetok.engine.config import SenderConfig
from livetok.engine.errors import TokenizerError
from livetok.engine.frames import to_tensor, to_uint8
from livetok.engine.metrics import mean_psnr
from livetok.engine.model import Tokenizer
from livetok.engine.results import JsonResult, optional
from livetok.engine.runtime import Runtime
from livetok.engine.sender import SenderState, encode_streams
from livetok.engine.state import FrameTokens, StreamState

from .graphs import DecoderStep, EncoderStep, RouterPass, example_inputs
from .onnx_export import CHECK_SIZES, GRAPHS
from .onnx_runtime import OnnxTokenizer


@dataclass(frozen=True, kw_only=True)
class GraphParity(JsonResult):
    """Every graph in ORT against its torch wrapper at one size."""

    size: str  # BATCHx3xHEIGHTxWIDTH
    indices_equal: float  # share of equal encoder indices
    max_abs_diff: float  # over every float output of every graph
    max_abs_diff_per_graph: dict[str, float]
    providers: list[str]  # what ORT ran on


@dataclass(frozen=True, kw_only=True)
class CrossBackend(JsonResult):
    """A receiver on the other backend than its sender: its PSNR, the drift from the same-backend PSNR, and
    the pixel difference from the sender's reconstruction over the clip and at its last frame (growth = drift)."""

    psnr: float
    psnr_drift: float
    max_abs_pixel_diff: int
    last_frame_max_abs_pixel_diff: int


@dataclass(frozen=True)
class BackendTimes(JsonResult):
    """Median ms per frame on each backend."""

    torch: float
    onnx: float


@dataclass(frozen=True, kw_only=True)
class ClipParity(JsonResult):
    """One clip on torch, on ORT and across them (`verify_frames`)."""

    frames: int
    indices_equal: float  # share of equal token indices (all N positions)
    mask_equal: float  # share of equal keep-mask bits
    psnr_torch: float  # vs the original frames
    psnr_onnx: float
    psnr_diff: float  # onnx - torch
    max_abs_pixel_diff: int  # uint8 reconstructions, torch vs ORT
    closed_loop_exact: bool  # each receiver equals its sender
    torch_to_onnx: CrossBackend
    onnx_to_torch: CrossBackend
    encode_ms: BackendTimes
    decode_ms: BackendTimes


@dataclass(frozen=True, kw_only=True)
class OverallParity(JsonResult):
    """The worst case over the clips."""

    indices_equal: float
    max_abs_psnr_diff: float
    max_abs_pixel_diff: int
    max_abs_psnr_drift: float
    closed_loop_exact: bool


@dataclass(frozen=True, kw_only=True)
class Verification(JsonResult):
    """`export onnx --verify`: the graph parity at two sizes and whole clips through torch and ORT."""

    model_id: str
    providers: list[str]
    graphs: list[GraphParity]
    clips: dict[str, ClipParity]
    overall: OverallParity | None = optional()  # with at least one clip


def graph_parity(model: Tokenizer, onnx_dir: str | os.PathLike[str], batch: int, height: int, width: int,
                 seed: int = 1) -> GraphParity:
    """Run every graph in ORT and its torch wrapper on the same random inputs of one size."""
    ort = OnnxTokenizer(onnx_dir, threads=1)
    ex = example_inputs(model, batch, height, width, seed)
    mods = {"encoder": EncoderStep(model), "decoder": DecoderStep(model), "router": RouterPass(model)}
    per_graph: dict[str, float] = {}
    equal = 1.0
    for spec in GRAPHS:
        with torch.no_grad():
            want = mods[spec.name].eval()(*(ex[n] for n in spec.inputs))
        got = ort.run(spec.name, **{n: ex[n] for n in spec.inputs})
        diff = 0.0
        for name, w, g in zip(spec.outputs, want, got, strict=True):
            if tuple(g.shape) != tuple(w.shape):
                raise TokenizerError(f"{spec.name}.onnx output {name!r} has shape {g.shape}, torch {tuple(w.shape)} "
                                     f"at batch {batch}, {height}x{width}")
            if name == "indices":
                equal = float((torch.from_numpy(g) == w).float().mean())
            else:
                diff = max(diff, float((torch.from_numpy(g) - w).abs().max()))
        per_graph[spec.name] = diff
    return GraphParity(size=f"{batch}x3x{height}x{width}", indices_equal=equal, max_abs_diff=max(per_graph.values()),
                       max_abs_diff_per_graph=per_graph, providers=list(ort.providers))


Transport = Callable[[FrameTokens], FrameTokens]


@dataclass
class _Run:
    """One clip's run: what the sender made (when it ran) and what the receiver decoded, per frame."""

    sent: list[FrameTokens] = field(default_factory=list)
    indices: list[np.ndarray] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    recons: list[np.ndarray] = field(default_factory=list)
    decoded: list[np.ndarray] = field(default_factory=list)
    encode_ms: list[float] = field(default_factory=list)
    decode_ms: list[float] = field(default_factory=list)


def _run(tx_model: Runtime | None, rx_model: Runtime, frames: np.ndarray, sender: SenderConfig,
         transport: Transport, sent: list[FrameTokens] | None = None) -> _Run:
    """One clip through a sender (unless the `sent` tokens are given) and a receiver; every frame's
    tokens cross `transport` (e.g. packet bytes and back) on their way to the receiver."""
    out = _Run()
    tx = SenderState() if tx_model is not None else None
    rx: StreamState | None = None
    for i, frame in enumerate(frames):
        if tx_model is not None and tx is not None:
            t0 = time.perf_counter()
            x = to_tensor(frame, tx_model.device)
            (tokens,), (tx,) = encode_streams(tx_model, x, [tx], sender)
            assert tx.stream is not None
            h, w = tokens.size
            out.recons.append(to_uint8(tx.stream.recon[0, :, :h, :w]))
            out.encode_ms.append((time.perf_counter() - t0) * 1e3)
            out.sent.append(tokens)
            out.indices.append(tokens.indices[0].cpu().numpy())
            out.masks.append(tokens.mask[0].cpu().numpy())
        else:
            assert sent is not None
            tokens = sent[i]
        t0 = time.perf_counter()
        frame_out, rx = rx_model.decode_step(transport(tokens), rx)
        out.decoded.append(to_uint8(frame_out[0]))
        out.decode_ms.append((time.perf_counter() - t0) * 1e3)
    return out


def _same(tokens: FrameTokens) -> FrameTokens:
    return tokens


def _max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> list[int]:
    return [int(np.abs(x.astype(np.int16) - y.astype(np.int16)).max()) for x, y in zip(a, b, strict=True)]


def verify_frames(model: Tokenizer, ort: OnnxTokenizer, frames: np.ndarray, sender: SenderConfig | None = None,
                  transport: Transport = _same) -> ClipParity:
    """One clip (uint8 RGB [T, H, W, 3]) on torch, on ORT, and across them; every frame's tokens
    cross `transport` to their receiver (the stream layer passes packet bytes and back)."""
    sender = sender or SenderConfig()
    th = _run(model, model, frames, sender, transport)
    on = _run(ort, ort, frames, sender, transport)
    t2o = _run(None, ort, frames, sender, transport, th.sent)
    o2t = _run(None, model, frames, sender, transport, on.sent)
    idx_eq = float(np.mean([np.mean(a == b) for a, b in zip(th.indices, on.indices, strict=True)]))
    mask_eq = float(np.mean([np.mean(a == b) for a, b in zip(th.masks, on.masks, strict=True)]))
    p_t, p_o = mean_psnr(frames, th.decoded), mean_psnr(frames, on.decoded)
    diffs = _max_diff(th.decoded, on.decoded)

    def cross(run: _Run, same: _Run, same_psnr: float) -> CrossBackend:
        p = mean_psnr(frames, run.decoded)
        d = _max_diff(run.decoded, same.recons)  # vs the sender's own reconstruction
        return CrossBackend(psnr=p, psnr_drift=p - same_psnr, max_abs_pixel_diff=max(d),
                            last_frame_max_abs_pixel_diff=d[-1])

    def med(xs: list[float]) -> float:
        return float(np.median(xs))

    return ClipParity(
        frames=len(frames),
        indices_equal=idx_eq,
        mask_equal=mask_eq,
        psnr_torch=p_t,
        psnr_onnx=p_o,
        psnr_diff=p_o - p_t,
        max_abs_pixel_diff=max(diffs),
        closed_loop_exact=bool(all(np.array_equal(a, b) for a, b in zip(th.decoded, th.recons, strict=True))
                               and all(np.array_equal(a, b) for a, b in zip(on.decoded, on.recons, strict=True))),
        torch_to_onnx=cross(t2o, th, p_t),
        onnx_to_torch=cross(o2t, on, p_o),
        encode_ms=BackendTimes(med(th.encode_ms), med(on.encode_ms)),
        decode_ms=BackendTimes(med(th.decode_ms), med(on.decode_ms)),
    )


def verify(model: Tokenizer, onnx_dir: str | os.PathLike[str], clips: Mapping[str, np.ndarray],
           sender: SenderConfig | None = None, transport: Transport = _same) -> Verification:
    """Whole clips (name -> uint8 RGB [T, H, W, 3]) through torch and ORT (see `verify_frames`), plus
    the graph parity at two sizes; `overall` the worst case over the clips."""
    ort = OnnxTokenizer(onnx_dir)
    if ort.identity != model.identity:
        raise TokenizerError(f"{onnx_dir} was exported from model {ort.identity.hex()}, not from the model under "
                             f"test ({model.identity.hex()})")
    graphs = [graph_parity(model, onnx_dir, b, h, w) for b, h, w in CHECK_SIZES]
    per_clip: dict[str, ClipParity] = {}
    for name, frames in clips.items():
        if len(frames) == 0:
            raise TokenizerError(f"{name}: no frames")
        per_clip[name] = verify_frames(model, ort, frames, sender, transport)
    cs = list(per_clip.values())
    overall = OverallParity(
        indices_equal=min(c.indices_equal for c in cs),
        max_abs_psnr_diff=max(abs(c.psnr_diff) for c in cs),
        max_abs_pixel_diff=max(c.max_abs_pixel_diff for c in cs),
        max_abs_psnr_drift=max(max(abs(c.torch_to_onnx.psnr_drift), abs(c.onnx_to_torch.psnr_drift)) for c in cs),
        closed_loop_exact=all(c.closed_loop_exact for c in cs),
    ) if cs else None
    return Verification(model_id=ort.identity.hex(), providers=list(ort.providers), graphs=graphs, clips=per_clip,
                        overall=overall)
