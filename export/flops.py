"""What one frame costs in arithmetic and memory traffic: every graph (export/graphs.py) run once
at a given size under torch's own FLOP counter (`torch.utils.flop_counter.FlopCounterMode`, which
counts convolutions and matrix products: 2 FLOPs per multiply-add; element-wise ops are not counted)
and a dispatch mode that adds up the bytes each operator reads and writes (the traffic of an
unfused eager run: an upper bound on what a fused runtime moves)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from livetok.engine.model import Tokenizer

from .graphs import DecoderStep, EncoderStep, RouterPass, example_inputs

# views and metadata ops move no data
_FREE = {"view", "_unsafe_view", "reshape", "expand", "permute", "transpose", "t", "unsqueeze", "squeeze",
         "slice", "select", "alias", "detach", "as_strided", "split", "split_with_sizes", "unbind", "flatten"}


@dataclass(frozen=True)
class GraphCost:
    """One graph run on one frame (batch 1)."""

    flops: int  # convolution + matmul FLOPs (2 per multiply-add)
    bytes: int  # bytes read + written by every operator, unfused
    by_op: dict[str, int]  # FLOPs per aten operator

    @property
    def gflops(self) -> float:
        return self.flops / 1e9


class _ByteCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # torch: TorchDispatchMode.__init__ is untyped
        self.bytes = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if func.__name__.split(".")[0] not in _FREE:
            ins, _ = tree_flatten((args, kwargs))
            outs, _ = tree_flatten(out)
            self.bytes += sum(t.numel() * t.element_size() for t in (*ins, *outs) if isinstance(t, Tensor))
        return out


def graph_cost(module: torch.nn.Module, inputs: tuple[Tensor, ...]) -> GraphCost:
    """Count one forward of `module` on `inputs` (run for real, on the inputs' device)."""
    counter = _ByteCounter()
    with torch.no_grad(), FlopCounterMode(display=False) as fc, counter:
        module(*inputs)
    by_op = {str(k): int(v) for k, v in fc.get_flop_counts().get("Global", {}).items()}
    return GraphCost(int(fc.get_total_flops()), counter.bytes, by_op)


def frame_costs(model: Tokenizer, height: int, width: int) -> dict[str, GraphCost]:
    """The cost of each graph on one frame of height x width (padded to the stride as the runtimes do):
    `encoder` (encoder + FSQ + budget head), `decoder` (one decode), `router` (InfoTok's router pass:
    a full-rate and a zero-token decode + the error maps)."""
    s = model.stride
    hp, wp = height + (-height) % s, width + (-width) % s
    p = next(model.parameters())
    ex = {k: v.to(p.device) for k, v in example_inputs(model, 1, hp, wp).items()}
    model = model.eval()
    return {
        "encoder": graph_cost(EncoderStep(model), (ex["frame"], ex["prev_recon"], ex["prev_hidden"])),
        "decoder": graph_cost(DecoderStep(model), (ex["indices"], ex["mask"], ex["prev_recon"], ex["prev_hidden"])),
        "router": graph_cost(RouterPass(model), (ex["frame"], ex["indices"], ex["prev_recon"], ex["prev_hidden"])),
    }


def encode_cost(costs: dict[str, GraphCost], decodes_per_frame: float) -> tuple[float, float]:
    """(FLOPs, bytes) of one encode+route step: the encoder graph + the decoder passes the router ran."""
    enc, dec = costs["encoder"], costs["decoder"]
    return enc.flops + decodes_per_frame * dec.flops, enc.bytes + decodes_per_frame * dec.bytes
