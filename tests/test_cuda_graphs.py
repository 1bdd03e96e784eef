"""CUDA-graph runtime (export/cuda_graphs.py), multi-stream batching (benchmarks/batching.py) and backend
choice (export/backends.py). The graph plumbing (static buffers, keys, eviction, copies out) runs
eagerly on a CPU and is tested here everywhere; capture and replay are `gpu` tests."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from livetok.bench.batching import MultiStreamDecoder, MultiStreamEncoder
from livetok.cli import main
from livetok.engine.config import BudgetConfig, SenderConfig
from livetok.engine.errors import TokenizerError
from livetok.engine.model import Tokenizer
from livetok.engine.state import FrameTokens, StreamState
from livetok.export import backends
from livetok.export.cuda_graphs import CudaGraphTokenizer, GraphCache, GraphedStep, GraphKey

from .conftest import BUNDLED_CLIP

# the untrained tiny model's gain signal is ~1e-5 everywhere: rank by error so masks are not float ties
SENDERS = {
    "infotok": SenderConfig(budget=BudgetConfig(policy="infotok", signal="error"), ranking="error",
                            keyframe_interval=4),
    "learned": SenderConfig(budget=BudgetConfig(policy="learned", signal="error"), ranking="error"),
    "fixed-prefix": SenderConfig(budget=BudgetConfig(policy="fixed", rate=0.25), ranking="prefix"),
}


def _frames(n: int, batch: int, h: int, w: int, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(batch, 3, h, w, generator=g) * 2 - 1
    # a slowly changing scene: each frame is the last plus a little noise (budgets then vary)
    out = [base]
    for _ in range(n - 1):
        out.append((out[-1] + 0.1 * torch.randn(batch, 3, h, w, generator=g)).clamp(-1, 1))
    return torch.stack(out)


@pytest.mark.parametrize("policy", list(SENDERS))
def test_graph_runtime_equals_the_torch_model_on_cpu(tiny_model: Tokenizer, policy: str) -> None:
    """The eager fallback runs the export graphs through the static buffers: bit-identical to Tokenizer."""
    rt = CudaGraphTokenizer(tiny_model)
    assert not rt.captured
    sender = SENDERS[policy]
    x = _frames(6, 2, 60, 84)
    sa = sb = ra = rb = None
    for t in range(len(x)):
        ta, sa = tiny_model.encode_step(x[t], sa, sender)
        tb, sb = rt.encode_step(x[t], sb, sender)
        assert torch.equal(ta.indices, tb.indices) and torch.equal(ta.mask, tb.mask)
        assert torch.equal(ta.keyframe, tb.keyframe) and ta.decodes == tb.decodes
        assert torch.equal(sa.recon, sb.recon) and torch.equal(sa.hidden, sb.hidden)
        assert sa.budget == sb.budget
        fa, ra = tiny_model.decode_step(ta, ra)
        fb, rb = rt.decode_step(tb, rb)
        assert torch.equal(fa, fb)
        assert torch.equal(fb, sb.recon[..., :60, :84])  # closed loop: the receiver sees the sender's recon


def test_one_graph_per_frame_size_and_batch(tiny_model: Tokenizer) -> None:
    rt = CudaGraphTokenizer(tiny_model)
    sender = SENDERS["infotok"]
    for batch, h, w in [(2, 60, 84), (2, 60, 84), (1, 60, 84), (2, 40, 40), (2, 60, 84)]:
        rt.encode_step(_frames(1, batch, h, w)[0], None, sender)
    # 60x84 pads to 64x88; each (graph, batch, padded size) captured once, then replayed
    assert set(rt.graphs.keys) == {GraphKey(g, b, h, w) for g in ("encoder", "decoder")
                                   for b, h, w in [(2, 64, 88), (1, 64, 88), (2, 40, 40)]}
    assert rt.graphs.captures == 6
    assert GraphKey.of("decoder", torch.zeros(3, 3, 16, 24)) == GraphKey("decoder", 3, 16, 24)


def test_graph_cache_evicts_the_least_recently_used(tiny_model: Tokenizer) -> None:
    rt = CudaGraphTokenizer(tiny_model, max_graphs=2)
    sender = SENDERS["fixed-prefix"]  # one decode: the encoder and decoder graph of each size
    rt.encode_step(_frames(1, 1, 16, 16)[0], None, sender)
    rt.encode_step(_frames(1, 1, 24, 24)[0], None, sender)
    assert [k.height for k in rt.graphs.keys] == [24, 24]
    rt.encode_step(_frames(1, 1, 16, 16)[0], None, sender)
    assert [k.height for k in rt.graphs.keys] == [16, 16] and rt.graphs.captures == 6
    with pytest.raises(ValueError, match="max_graphs"):
        GraphCache({}, capture=False, max_graphs=0)


class _Affine(nn.Module):
    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return x * 2 + y, x - y


def test_graphed_step_copies_inputs_in_and_outputs_out() -> None:
    """The next call overwrites the static outputs: what a caller holds must not change with it."""
    x, y = torch.ones(2, 3), torch.zeros(2, 3)
    step = GraphedStep(_Affine(), (x, y), capture=False)
    first = step(x, y)
    second = step(x * 5, y + 1)
    assert torch.equal(first[0], torch.full((2, 3), 2.0)) and torch.equal(first[1], torch.ones(2, 3))
    assert torch.equal(second[0], torch.full((2, 3), 11.0)) and torch.equal(second[1], torch.full((2, 3), 4.0))
    assert step.replays == 2
    x.fill_(100)  # the static input is a copy: the caller's tensor is not the graph's buffer
    assert torch.equal(step(torch.ones(2, 3), torch.zeros(2, 3))[0], first[0])
    with pytest.raises(ValueError, match="captured signature"):
        step(torch.ones(3, 3), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="captured signature"):
        step(torch.ones(2, 3, dtype=torch.float64), torch.zeros(2, 3))


def _separate(model: Tokenizer, sender: SenderConfig, frames: dict[str, list[Tensor | None]],
              force: dict[int, set[str]]) -> dict[str, list[tuple[FrameTokens, StreamState]]]:
    out: dict[str, list[tuple[FrameTokens, StreamState]]] = {}
    for name, seq in frames.items():
        st: StreamState | None = None
        out[name] = []
        for t, f in enumerate(seq):
            if f is None:
                continue
            tok, st = model.encode_step(f[None], st, sender, name in force.get(t, set()))
            out[name].append((tok, st))
    return out


def test_batched_streams_equal_separate_streams(tiny_model: Tokenizer) -> None:
    """Three cameras, two sizes, a late joiner and a keyframe request: one batched step per size and
    frame, each stream's tokens and state as if it ran alone."""
    sender = SENDERS["infotok"]
    a, b = _frames(7, 1, 48, 64, seed=1)[:, 0], _frames(7, 1, 48, 64, seed=2)[:, 0]
    c = _frames(7, 1, 40, 56, seed=3)[:, 0]
    frames: dict[str, list[Tensor | None]] = {"a": list(a), "b": [None, None, *b[2:]], "c": list(c)}
    force = {3: {"a"}}
    ref = _separate(tiny_model, sender, frames, force)

    enc = MultiStreamEncoder(tiny_model, sender)
    dec = MultiStreamDecoder(tiny_model)
    got: dict[str, list[FrameTokens]] = {n: [] for n in frames}
    for t in range(7):
        now = {n: f for n, seq in frames.items() if (f := seq[t]) is not None}
        out = enc.encode(now, force_keyframe=force.get(t, set()))
        recon = dec.decode(out)
        for n, tok in out.items():
            got[n].append(tok)
            st = enc.states[n].stream
            assert st is not None and torch.equal(recon[n], st.recon[..., :tok.size[0], :tok.size[1]])
    assert enc.batches == 14 and dec.batches == 14  # two sizes x seven frames
    for n in frames:
        assert len(got[n]) == len(ref[n])
        for tok, (rtok, _) in zip(got[n], ref[n], strict=True):
            assert tok.frame_index == rtok.frame_index
            assert torch.equal(tok.keyframe, rtok.keyframe), (n, tok.frame_index)
            assert torch.equal(tok.indices, rtok.indices) and torch.equal(tok.mask, rtok.mask), (n, tok.frame_index)
        last = enc.states[n].stream
        assert last is not None and last.frame_index == ref[n][-1][1].frame_index
        torch.testing.assert_close(last.recon, ref[n][-1][1].recon, atol=1e-5, rtol=0)
        (bs,), (rs,) = last.budget, ref[n][-1][1].budget
        # a batched convolution sums in another order: float noise in the EMA, nothing more
        assert (bs.frames, bs.scale) == (rs.frames, rs.scale) and bs.ema_error == pytest.approx(rs.ema_error, rel=1e-6)
    # keyframes: every stream's first frame, the interval (4), and a's request at frame 3
    assert [bool(t.keyframe) for t in got["a"]] == [True, False, False, True, True, False, False]
    assert [bool(t.keyframe) for t in got["b"]] == [True, False, False, False, True]  # its own index 4


def test_batched_decoder_refuses_to_join_mid_stream(tiny_model: Tokenizer) -> None:
    enc = MultiStreamEncoder(tiny_model, SENDERS["fixed-prefix"])
    x = _frames(2, 1, 24, 32)[:, 0]
    enc.encode({"cam": x[0]})
    second = enc.encode({"cam": x[1]})
    with pytest.raises(TokenizerError, match=r"'cam'.*not a keyframe"):
        MultiStreamDecoder(tiny_model).decode(second)
    with pytest.raises(TokenizerError, match="must be"):
        enc.encode({"cam": x[:1, 0]})


def test_auto_and_explicit_backend_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "_cuda", lambda: True)
    monkeypatch.setattr(backends, "_onnx", lambda: True)
    assert backends.resolve_backend("auto") == "cuda-graph"
    assert backends.available_backends() == ["torch", "onnx", "cuda-graph"]
    monkeypatch.setattr(backends, "_cuda", lambda: False)
    assert backends.resolve_backend("auto") == "onnx"
    assert backends.available_backends() == ["torch", "onnx"]
    with pytest.raises(TokenizerError, match="cuda-graph needs a CUDA device"):
        backends.resolve_backend("cuda-graph")
    monkeypatch.setattr(backends, "_onnx", lambda: False)
    assert backends.resolve_backend("auto") == "torch"
    with pytest.raises(TokenizerError, match="unknown backend"):
        backends.resolve_backend("tensorrt")
    assert backends.cuda_device("cuda:1") == "cuda:1" and backends.cuda_device("cpu") == "cuda"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error shown without CUDA")
def test_cli_cuda_graph_without_cuda_is_a_one_line_error(tiny_weights: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["eval", str(BUNDLED_CLIP), "--weights", str(tiny_weights), "--backend", "cuda-graph",
                     "--max-frames", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.splitlines() == [err] and err.startswith("livetok: error: --backend cuda-graph needs a CUDA device")


# ---------------------------------------------------------------------------------------------
# on a GPU


@pytest.mark.gpu
@pytest.mark.parametrize("policy", list(SENDERS))
def test_cuda_graph_replay_equals_eager_cuda(tiny_model: Tokenizer, policy: str) -> None:
    model = Tokenizer(tiny_model.cfg)
    model.load_state_dict(tiny_model.state_dict())
    model = model.cuda().eval()
    rt = CudaGraphTokenizer(model)
    assert rt.captured
    sender = SENDERS[policy]
    x = _frames(8, 3, 60, 84).cuda()
    sa = sb = ra = None
    agree = total = 0
    for t in range(len(x)):
        ta, sa = model.encode_step(x[t], sa, sender)
        tb, sb = rt.encode_step(x[t], sb, sender)
        agree += int((ta.indices == tb.indices).sum())
        total += ta.indices.numel()
        torch.testing.assert_close(sb.recon, sa.recon, atol=1e-4, rtol=0)
        fb, ra = rt.decode_step(tb, ra)
        torch.testing.assert_close(fb, sb.recon[..., :60, :84], atol=1e-5, rtol=0)
    assert agree / total >= 0.999
    assert rt.graphs.captures == 2  # one encoder and one decoder graph, replayed every frame after
    assert all(k.batch == 3 for k in rt.graphs.keys)


@pytest.mark.gpu
def test_cuda_graph_batches_many_streams_into_one_replay(tiny_model: Tokenizer) -> None:
    model = Tokenizer(tiny_model.cfg)
    model.load_state_dict(tiny_model.state_dict())
    rt = CudaGraphTokenizer(model.cuda().eval())
    enc = MultiStreamEncoder(rt, SENDERS["learned"])
    x = _frames(4, 8, 48, 64).cuda()
    for t in range(4):
        out = enc.encode({f"cam{i}": x[t, i] for i in range(8)})
        assert len(out) == 8
    assert enc.batches == 4
    assert {k.batch for k in rt.graphs.keys} == {8}
    enc_step = next(s for k, s in rt.graphs._graphs.items() if k.graph == "encoder")
    assert enc_step.replays == 4
