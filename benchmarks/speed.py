"""`livetok bench speed`: frames/s and per-frame latency (median, p99) of encode+route and of decode,
per backend, frame size and stream count; the FLOPs (and unfused bytes) per frame of each graph;
on a GPU, the fraction of the device's measured peak that this achieves (export/peak.py).

A run plays one real clip (the bundled one by default), resized to each size, through
`MultiStreamEncoder` (S streams, each at its own offset in the clip, batched into one step per
frame) and the resulting tokens through `MultiStreamDecoder`. Frames are placed on the runtime's
device before timing: the figures are the model's, not the upload's; pre-processing is timed apart.

Each step is timed twice: wall clock (the latency a user sees: `*_ms_p50`, `*_fps`) and this
process's CPU time (`*_cpu_ms_p50`, `*_cpu_fps`). On an idle machine with one thread the two agree;
when other work shares the cores, wall time measures the scheduler as much as the model, while CPU
time still measures the model's own cost (an estimate of its uncontended speed, per core).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from livetok.engine.config import SenderConfig
from livetok.engine.frames import to_tensor
from livetok.engine.model import Tokenizer
from livetok.engine.results import JsonResult
from livetok.engine.state import FrameTokens
from livetok.export.backends import available_backends, build_runtime, resolve_backend
from livetok.export.flops import GraphCost, encode_cost, frame_costs
from livetok.export.peak import DevicePeak, measure_peak
from livetok.export.preprocess import PreprocessConfig, Preprocessor
from livetok.stream.session import SenderSession
from livetok.stream.video_io import read_video
from livetok.stream.wire import CoderState, TokenPacket

from .batching import MultiStreamDecoder, MultiStreamEncoder

log = logging.getLogger(__name__)

DEFAULT_SIZES = ((256, 192), (640, 480))


@dataclass(frozen=True)
class SpeedConfig:
    """What `bench speed` measures. sizes are (width, height); backends empty = every one available."""

    backends: tuple[str, ...] = ()
    sizes: tuple[tuple[int, int], ...] = DEFAULT_SIZES
    streams: int = 1
    frames: int = 60  # timed frames per run (per stream)
    warmup: int = 5  # untimed frames first (graph capture, allocator, ORT's first runs)
    repeats: int = 1  # runs per (backend, size); figures are the median over runs
    source: str | None = None  # clip to play; default: the bundled demo clip
    sender: SenderConfig = field(default_factory=SenderConfig)
    threads: int | None = None  # torch and onnxruntime CPU threads (None: torch's choice)
    device: str | None = None  # torch backend's device (cpu unless given); cuda-graph uses CUDA
    onnx_dir: str | None = None

    def __post_init__(self) -> None:
        if self.streams < 1 or self.frames < 2 or self.warmup < 1 or self.repeats < 1:
            raise ValueError(f"need streams >= 1, frames >= 2, warmup >= 1 and repeats >= 1, got streams="
                             f"{self.streams}, frames={self.frames}, warmup={self.warmup}, repeats={self.repeats}")
        if not self.sizes:
            raise ValueError("give at least one --size")
        for w, h in self.sizes:
            if w < 8 or h < 8:
                raise ValueError(f"size {w}x{h}: both sides must be at least 8 pixels")


def _clip_frames(source: str | None, count: int) -> np.ndarray:
    """`count` uint8 RGB frames of the clip, played forwards then backwards when it is shorter
    (no cut back to frame 0: a cut would be a scene change the clip does not have)."""
    from livetok.stream.demo import DEMO_CLIP

    path = Path(source) if source else DEMO_CLIP
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    frames, _ = read_video(path, max_frames=count)
    if len(frames) >= count:
        return frames[:count]
    cycle = np.concatenate([frames, frames[-2:0:-1]]) if len(frames) > 2 else frames
    reps = -(-count // len(cycle))
    return np.concatenate([cycle] * reps)[:count]


@dataclass(frozen=True)
class _Stats:
    fps: float
    ms_p50: float
    ms_p99: float


def _stats(ms: list[float]) -> _Stats:
    a = np.asarray(ms)
    return _Stats(round(1e3 * len(a) / max(float(a.sum()), 1e-9), 2), round(float(np.median(a)), 2),
                  round(float(np.percentile(a, 99)), 2))


@dataclass(frozen=True, kw_only=True)
class RunFigures(JsonResult):
    """One run (or the median of several): encode+route and decode, wall clock and this process's CPU time."""

    encode_fps: float
    encode_ms_p50: float
    encode_ms_p99: float
    encode_cpu_fps: float
    encode_cpu_ms_p50: float
    decode_fps: float
    decode_ms_p50: float
    decode_ms_p99: float
    decode_cpu_fps: float
    decode_cpu_ms_p50: float
    decodes_per_frame: float
    tokens_per_frame: float


@dataclass(frozen=True, kw_only=True)
class CoderFigures(JsonResult):
    """Packet v2's entropy coder per frame, apart from the model (ms)."""

    coder_encode_ms_p50: float
    coder_decode_ms_p50: float
    coder_encode_ms_p99: float
    coder_decode_ms_p99: float


@dataclass(frozen=True, kw_only=True)
class SpeedResult(JsonResult):
    """One backend at one size: the median run's figures (the keys DESIGN.md §6 names), the graphs' cost per
    frame, pre-processing and the coder, the share of the device's peak on a GPU, and every run."""

    backend: str
    size: str
    streams: int
    frames: int
    repeats: int
    device: str
    encode_fps: float
    encode_ms_p50: float
    encode_ms_p99: float
    encode_cpu_fps: float
    encode_cpu_ms_p50: float
    decode_fps: float
    decode_ms_p50: float
    decode_ms_p99: float
    decode_cpu_fps: float
    decode_cpu_ms_p50: float
    decodes_per_frame: float
    tokens_per_frame: float
    encode_fps_total: float
    decode_fps_total: float
    gflops_per_frame: float  # encode+route, per stream frame
    decode_gflops_per_frame: float
    preprocess_ms_p50: float
    preprocess_backend: str
    coder_encode_ms_p50: float  # packet v2's coder, on the CPU whatever the backend
    coder_decode_ms_p50: float
    coder_encode_ms_p99: float
    coder_decode_ms_p99: float
    encode_tflops: float
    fraction_of_peak_flops: float | None  # on a GPU
    fraction_of_peak_bandwidth: float | None
    runs: list[RunFigures]


@dataclass(frozen=True)
class GraphFigures(JsonResult):
    gflops: float
    mbytes_unfused: float


@dataclass(frozen=True)
class PreprocessFigures(JsonResult):
    backend: str
    ms_p50: float


@dataclass(frozen=True, kw_only=True)
class MachineInfo(JsonResult):
    platform: str
    processor: str
    cpu_count: int | None
    torch: str
    threads: int
    cuda: str | None
    onnxruntime: str | None


@dataclass(frozen=True, kw_only=True)
class SpeedSettings(JsonResult):
    """What a `bench speed` run measured (`SpeedConfig` as it ran)."""

    backends: list[str]
    sizes: list[str]
    streams: int
    frames: int
    warmup: int
    repeats: int
    source: str
    policy: str
    ranking: str
    signal: str


@dataclass(frozen=True, kw_only=True)
class SpeedBench(JsonResult):
    """`livetok bench speed`: every (backend, size) result; per size the graphs' cost, pre-processing and the
    coder; the device's peak (GPU only), the machine and the settings."""

    results: list[SpeedResult]
    graphs: dict[str, dict[str, GraphFigures]]
    preprocess: dict[str, PreprocessFigures]
    coder: dict[str, CoderFigures]
    peak: DevicePeak | None
    machine: MachineInfo
    config: SpeedSettings


class _Timer:
    """Wall-clock and process CPU time of each timed step, in ms."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def step(self, fn: Callable[[], Any], keep: bool) -> Any:
        _sync(self.device)
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        _sync(self.device)
        if keep:
            self.wall.append((time.perf_counter() - w0) * 1e3)
            self.cpu.append((time.process_time() - c0) * 1e3)
        return out

    def report(self) -> tuple[_Stats, _Stats]:
        """(wall clock, CPU time)."""
        return _stats(self.wall), _stats(self.cpu)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _run_once(rt: Any, clips: list[list[torch.Tensor]], cfg: SpeedConfig) -> RunFigures:
    """One stream run: warm-up + timed encode+route of every frame, then decode of all its tokens."""
    device = torch.device(getattr(rt, "device", "cpu"))
    names = [f"s{i}" for i in range(len(clips))]
    enc = MultiStreamEncoder(rt, cfg.sender)
    enc_t, dec_t = _Timer(device), _Timer(device)
    tokens: list[dict[str, FrameTokens]] = []
    decodes: list[int] = []
    kept: list[float] = []
    for t in range(cfg.warmup + cfg.frames):
        now = {n: clips[i][t] for i, n in enumerate(names)}
        out = enc_t.step(functools.partial(enc.encode, now), t >= cfg.warmup)
        tokens.append(out)
        if t >= cfg.warmup:
            decodes.append(next(iter(out.values())).decodes)
            kept.extend(float(tk.k.float().mean()) for tk in out.values())
    dec = MultiStreamDecoder(rt)
    for t, out in enumerate(tokens):
        dec_t.step(functools.partial(dec.decode, out), t >= cfg.warmup)
    (ew, ec), (dw, dc) = enc_t.report(), dec_t.report()
    return RunFigures(encode_fps=ew.fps, encode_ms_p50=ew.ms_p50, encode_ms_p99=ew.ms_p99, encode_cpu_fps=ec.fps,
                      encode_cpu_ms_p50=ec.ms_p50, decode_fps=dw.fps, decode_ms_p50=dw.ms_p50,
                      decode_ms_p99=dw.ms_p99, decode_cpu_fps=dc.fps, decode_cpu_ms_p50=dc.ms_p50,
                      decodes_per_frame=round(statistics.mean(decodes), 3),
                      tokens_per_frame=round(statistics.mean(kept), 1))


def _median_runs(runs: list[RunFigures]) -> RunFigures:
    return RunFigures(**{f.name: round(float(statistics.median(getattr(r, f.name) for r in runs)), 3)
                         for f in dataclasses.fields(RunFigures)})


def _preprocess_ms(frames: np.ndarray, size: tuple[int, int], backend: str) -> tuple[str, float]:
    """Median time of one capture-size BGR frame -> model tensor at `size`."""
    pre = Preprocessor(PreprocessConfig(size, backend))
    bgr = [np.ascontiguousarray(f[..., ::-1]) for f in frames]
    ms = []
    for i, f in enumerate(bgr):
        t0 = time.perf_counter()
        x = pre(f)
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        if i > 0:  # the first call builds the resize weights
            ms.append((time.perf_counter() - t0) * 1e3)
    return pre.backend, round(float(np.median(ms)), 3)


def _coder_ms(model: Tokenizer, frames: list[np.ndarray], sender: SenderConfig) -> CoderFigures:
    """The entropy coder's cost apart from the model (packet v2, docs/PACKET.md §6): the clip's
    packets are made once, then coded and decoded in stream order; medians per frame, in ms."""
    tx = SenderSession(model, dataclasses.replace(sender, wire=1))
    packets = [tx.encode(f, timestamp_us=i).packet for i, f in enumerate(frames)]
    levels = model.cfg.fsq.levels
    enc, dec = CoderState.empty(levels), CoderState.empty(levels)
    enc_ms, dec_ms = [], []
    for p in packets:
        t0 = time.perf_counter()
        data, enc = p.pack_v2(enc)
        t1 = time.perf_counter()
        _, dec = TokenPacket.unpack_v2(data, dec)
        t2 = time.perf_counter()
        enc_ms.append((t1 - t0) * 1e3)
        dec_ms.append((t2 - t1) * 1e3)
    return CoderFigures(coder_encode_ms_p50=round(float(np.median(enc_ms[1:])), 3),
                        coder_decode_ms_p50=round(float(np.median(dec_ms[1:])), 3),
                        coder_encode_ms_p99=round(float(np.percentile(enc_ms[1:], 99)), 3),
                        coder_decode_ms_p99=round(float(np.percentile(dec_ms[1:], 99)), 3))


def machine_info(threads: int) -> MachineInfo:
    import os

    try:
        import onnxruntime

        ort: str | None = onnxruntime.__version__
    except ImportError:
        ort = None
    return MachineInfo(platform=platform.platform(), processor=platform.processor() or platform.machine(),
                       cpu_count=os.cpu_count(), torch=torch.__version__, threads=threads,
                       cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, onnxruntime=ort)


def _cost_figures(c: GraphCost) -> GraphFigures:
    return GraphFigures(round(c.gflops, 4), round(c.bytes / 1e6, 2))


def bench_speed(model: Tokenizer, cfg: SpeedConfig,
                progress: Callable[[str], None] | None = None) -> SpeedBench:
    """Measure every (backend, size) of `cfg` on `model` (a torch Tokenizer on the CPU)."""
    say = progress or (lambda m: None)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    threads = torch.get_num_threads()
    backends = [resolve_backend(b) for b in cfg.backends] if cfg.backends else available_backends()
    backends = list(dict.fromkeys(backends))  # auto may repeat a named one
    model = model.eval()
    frames = _clip_frames(cfg.source, cfg.warmup + cfg.frames + cfg.streams * 7)
    graphs: dict[str, dict[str, GraphCost]] = {}
    pre: dict[str, PreprocessFigures] = {}
    coder: dict[str, CoderFigures] = {}
    for w, h in cfg.sizes:
        graphs[f"{w}x{h}"] = frame_costs(model, h, w)
        say(f"entropy coder at {w}x{h}")
        coder[f"{w}x{h}"] = _coder_ms(model, [cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA)
                                              for f in frames[:24]], cfg.sender)
        backend, ms = _preprocess_ms(frames[:12], (w, h), "auto")
        pre[f"{w}x{h}"] = PreprocessFigures(backend, ms)
    peak: DevicePeak | None = None
    named = cfg.device or "cpu"
    if "cuda-graph" in backends or named.startswith("cuda"):
        say("measuring the device's peak (copy bandwidth, matmul)")
        peak = measure_peak(named if named.startswith("cuda") else "cuda")
    results = []
    for backend in backends:
        dev = cfg.device if backend == "torch" and cfg.device else "cpu"
        rt = build_runtime(backend, model.to(dev) if backend == "torch" else model.to("cpu"), cfg.onnx_dir,
                           cfg.device, cfg.threads)
        rt_dev = rt.device
        for w, h in cfg.sizes:
            key = f"{w}x{h}"
            rgb = [cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames]
            # stream i starts 7 frames after stream i-1: different content in every row of the batch
            clips = [[to_tensor(f, rt_dev) for f in rgb[7 * i:7 * i + cfg.warmup + cfg.frames]]
                     for i in range(cfg.streams)]
            runs = []
            for r in range(cfg.repeats):
                say(f"{backend} {key} x{cfg.streams} stream(s): run {r + 1}/{cfg.repeats}")
                runs.append(_run_once(rt, clips, cfg))
            med = _median_runs(runs)
            encode_fps_total = round(med.encode_fps * cfg.streams, 2)
            flops, nbytes = encode_cost(graphs[key], med.decodes_per_frame)
            on_gpu = peak is not None and rt_dev.type == "cuda"
            encode_tflops = round(flops * encode_fps_total / 1e12, 4)
            results.append(SpeedResult(
                backend=backend, size=key, streams=cfg.streams, frames=cfg.frames, repeats=cfg.repeats,
                device=str(rt_dev), **dataclasses.asdict(med), encode_fps_total=encode_fps_total,
                decode_fps_total=round(med.decode_fps * cfg.streams, 2), gflops_per_frame=round(flops / 1e9, 4),
                decode_gflops_per_frame=round(graphs[key]["decoder"].gflops, 4),
                preprocess_ms_p50=pre[key].ms_p50, preprocess_backend=pre[key].backend,
                **dataclasses.asdict(coder[key]), encode_tflops=encode_tflops,
                fraction_of_peak_flops=(round(encode_tflops / peak.matmul_tflops, 4)
                                        if on_gpu and peak is not None else None),
                fraction_of_peak_bandwidth=(round(nbytes * encode_fps_total / 1e9 / peak.copy_gbps, 4)
                                            if on_gpu and peak is not None else None),
                runs=runs))
        del rt
    return SpeedBench(
        results=results,
        graphs={k: {g: _cost_figures(c) for g, c in v.items()} for k, v in graphs.items()},
        preprocess=pre,
        coder=coder,
        peak=peak,
        machine=machine_info(threads),
        config=SpeedSettings(backends=backends, sizes=[f"{w}x{h}" for w, h in cfg.sizes], streams=cfg.streams,
                             frames=cfg.frames, warmup=cfg.warmup, repeats=cfg.repeats,
                             source=cfg.source or "bundled demo clip", policy=cfg.sender.budget.policy,
                             ranking=cfg.sender.ranking, signal=cfg.sender.budget.signal),
    )


def summary_lines(res: SpeedBench) -> list[str]:
    """bench_speed's result for people (rich console markup), one line per backend and size."""
    return [f"[bold]{r.backend:10s}[/] {r.size:>8s} x{r.streams}: "
            f"encode+route {r.encode_fps:.1f} fps "
            f"(p50 {r.encode_ms_p50:.1f} ms, p99 {r.encode_ms_p99:.1f} ms, {r.decodes_per_frame:.2f} "
            f"decodes), decode {r.decode_fps:.1f} fps (p50 {r.decode_ms_p50:.1f} ms, p99 "
            f"{r.decode_ms_p99:.1f} ms), {r.gflops_per_frame:.2f} GFLOP/frame"
            + (f", {r.fraction_of_peak_flops:.1%} of peak FLOP/s" if r.fraction_of_peak_flops is not None
               else "")
            for r in res.results]
