"""CUDA-graph runtime for the torch backend: the encoder step and the decoder step (export/graphs.py)
captured once per (graph, batch, frame size) in CUDA graphs and replayed on static input buffers.

The budget decision (engine/router.py: how many tokens, which positions) depends on the data, so it
stays outside the graphs: the host reads the encoder's outputs, picks the mask, and replays the
decoder graph with it. Several streams share one replay by stacking them on the batch axis
(engine/sender.py). On a CPU the same buffers run eagerly, so the plumbing is testable anywhere;
nothing touches CUDA before a runtime is built on a CUDA model.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from livetok.engine.config import TokenizerConfig
from livetok.engine.errors import TokenizerError
from livetok.engine.model import Tokenizer
from livetok.engine.runtime import StepRuntime

from .graphs import DecoderStep, EncoderStep

log = logging.getLogger(__name__)

# make_graphed_callables' default: enough to initialise cuBLAS/cuDNN handles and autotuning
WARMUP_ITERS = 3
# graphs kept at once (each holds its own memory pool); a stream that changes size often evicts the oldest
MAX_GRAPHS = 16


def cuda_available() -> bool:
    """Whether a CUDA device can run here (asked at run time, never at import)."""
    return bool(torch.cuda.is_available())


@dataclass(frozen=True)
class GraphKey:
    """What a captured graph is specialised to: a graph replays fixed shapes and addresses only."""

    graph: str  # "encoder" or "decoder"
    batch: int
    height: int  # padded frame size (multiples of the stride)
    width: int

    @classmethod
    def of(cls, graph: str, prev_recon: Tensor) -> GraphKey:
        """The key of a call, read off its [B, 3, H, W] previous reconstruction (both graphs take one)."""
        b, _, h, w = prev_recon.shape
        return cls(graph, int(b), int(h), int(w))


class GraphedStep:
    """One tensor-only module at one input signature: static input buffers, one CUDA graph.

    On CUDA: warm-up on a side stream, capture, then every call copies its inputs into the static
    buffers and replays. On a CPU (capture=False) the module runs eagerly on the same buffers.
    Either way the outputs are cloned: the next call overwrites the static outputs, and the router
    calls the decoder several times per frame while it still holds earlier results.
    """

    def __init__(self, module: nn.Module, example: tuple[Tensor, ...], capture: bool,
                 warmup: int = WARMUP_ITERS) -> None:
        self.module = module
        # allocated once, outside the graph: the graph reads these addresses on every replay
        self.static_in = tuple(t.detach().clone() for t in example)
        self.graph: torch.cuda.CUDAGraph | None = None
        with torch.no_grad():
            if capture:
                dev = self.static_in[0].device
                side = torch.cuda.Stream(dev)
                side.wait_stream(torch.cuda.current_stream(dev))
                with torch.cuda.stream(side):
                    for _ in range(warmup):
                        module(*self.static_in)
                torch.cuda.current_stream(dev).wait_stream(side)
                self.graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self.graph):
                    self.static_out: tuple[Tensor, ...] = tuple(module(*self.static_in))
            else:
                self.static_out = tuple(o.clone() for o in module(*self.static_in))
        self.replays = 0

    def signature(self) -> tuple[tuple[tuple[int, ...], torch.dtype, torch.device], ...]:
        return tuple((tuple(t.shape), t.dtype, t.device) for t in self.static_in)

    def __call__(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        sig = tuple((tuple(t.shape), t.dtype, t.device) for t in inputs)
        if sig != self.signature():
            # a replay with other shapes would read out of bounds: the cache must pick another graph
            raise ValueError(f"graph inputs {sig} do not match the captured signature {self.signature()}")
        with torch.no_grad():
            for buf, x in zip(self.static_in, inputs, strict=True):
                buf.copy_(x)
            if self.graph is not None:
                self.graph.replay()
            else:
                for buf, y in zip(self.static_out, self.module(*self.static_in), strict=True):
                    buf.copy_(y)
        self.replays += 1
        return tuple(o.clone() for o in self.static_out)


class GraphCache:
    """Captured graphs by `GraphKey`, least recently used evicted beyond `max_graphs`."""

    def __init__(self, modules: dict[str, nn.Module], capture: bool, max_graphs: int = MAX_GRAPHS,
                 warmup: int = WARMUP_ITERS) -> None:
        if max_graphs < 1:
            raise ValueError(f"max_graphs must be >= 1, got {max_graphs}")
        self.modules = modules
        self.capture = capture
        self.max_graphs = max_graphs
        self.warmup = warmup
        self._graphs: OrderedDict[GraphKey, GraphedStep] = OrderedDict()
        self.captures = 0  # graphs built so far (evicted ones included): a capture costs warm-up + capture

    @property
    def keys(self) -> list[GraphKey]:
        return list(self._graphs)

    def run(self, key: GraphKey, *inputs: Tensor) -> tuple[Tensor, ...]:
        step = self._graphs.get(key)
        if step is None:
            log.info("capturing %s graph for batch %d at %dx%d", key.graph, key.batch, key.width, key.height)
            step = GraphedStep(self.modules[key.graph], inputs, self.capture, self.warmup)
            self._graphs[key] = step
            self.captures += 1
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
        return step(*inputs)


class CudaGraphTokenizer(StepRuntime):
    """A torch `Tokenizer` whose two networks replay CUDA graphs: a `Runtime` (engine/runtime.py).

    Built on a CUDA model it captures graphs; on a CPU model it runs the same static-buffer path
    eagerly (for tests; `--backend cuda-graph` itself refuses to start without CUDA).

    Attributes:
        graphs: the captured graphs.
    """

    def __init__(self, model: Tokenizer, max_graphs: int = MAX_GRAPHS, warmup: int = WARMUP_ITERS) -> None:
        self.model = model.eval()
        self.cfg: TokenizerConfig = model.cfg
        self._identity = model.identity  # hashed once: every weight is read
        self._device = model.device
        self._dtype = model.dtype
        modules: dict[str, nn.Module] = {"encoder": EncoderStep(model).eval(), "decoder": DecoderStep(model).eval()}
        self.graphs = GraphCache(modules, capture=self.device.type == "cuda", max_graphs=max_graphs, warmup=warmup)

    # -- the Runtime interface (engine/runtime.py runs the frame around the two graphs) ----------

    @property
    def captured(self) -> bool:
        return self.graphs.capture

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def identity(self) -> bytes:
        return self._identity

    def population(self, signal: str) -> float:
        return float(self.model.population(signal))

    def eval(self) -> CudaGraphTokenizer:
        return self

    def run_encoder(self, x: Tensor, prev_recon: Tensor, prev_hidden: Tensor,
                    predict: bool) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        # the data-dependent routing runs on the host between this replay and the decoder's
        indices, pred_error, pred_gain = self.graphs.run(GraphKey.of("encoder", prev_recon), x, prev_recon,
                                                         prev_hidden)
        return indices, ((pred_error, pred_gain) if predict else None)

    def run_decoder(self, indices: Tensor, mask: Tensor, prev_recon: Tensor,
                    prev_hidden: Tensor) -> tuple[Tensor, Tensor]:
        recon, hidden = self.graphs.run(GraphKey.of("decoder", prev_recon), indices, mask, prev_recon, prev_hidden)
        return recon, hidden

    def __repr__(self) -> str:
        mode = "CUDA graphs" if self.captured else "eager (no CUDA)"
        return f"CudaGraphTokenizer(model {self.identity.hex()}, {self.device}, {mode}, {len(self.graphs.keys)} graphs)"


def cuda_graph_tokenizer(model: Tokenizer, device: str | torch.device = "cuda") -> CudaGraphTokenizer:
    """`model` on `device` behind CUDA graphs; TokenizerError (one line) when no CUDA device is present."""
    dev = torch.device(device)
    if dev.type != "cuda":
        raise TokenizerError(f"the cuda-graph backend runs on a CUDA device, not {dev}")
    if not cuda_available():
        raise TokenizerError("--backend cuda-graph needs a CUDA device and none is present "
                             "(use --backend torch or onnx, or auto to pick what this machine has)")
    return CudaGraphTokenizer(model.to(dev))


__all__ = ["MAX_GRAPHS", "CudaGraphTokenizer", "GraphCache", "GraphKey", "GraphedStep", "cuda_available",
           "cuda_graph_tokenizer"]
