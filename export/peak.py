"""The device's measured peak, to state how much of it a runtime achieves: a large device-to-device
copy (memory bandwidth) and a large matrix product (arithmetic), timed with CUDA events after
warm-up. Only on a CUDA device; on a CPU there is no peak to report (None)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from livetok.engine.results import JsonResult

COPY_BYTES = 1 << 30  # 1 GiB: far beyond any cache, long enough to time
MATMUL_N = 8192  # 8192^3 * 2 = 1.1 TFLOP per product


@dataclass(frozen=True)
class DevicePeak(JsonResult):
    device: str
    copy_gbps: float  # GB/s (1e9 bytes) read + written by a device-to-device copy
    matmul_tflops: float  # TFLOP/s of an N x N x N product in `matmul_dtype`
    matmul_dtype: str  # float32 with TF32 when cuDNN's convolutions use TF32 too (torch's default)
    matmul_n: int


def _time_ms(fn: Any, iters: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    end.synchronize()
    return float(start.elapsed_time(end)) / iters


def _copy_ms(dev: torch.device, nbytes: int, iters: int, warmup: int) -> float:
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=dev)
    dst = torch.empty_like(src)
    return _time_ms(lambda: dst.copy_(src), iters, warmup)


def _matmul_ms(dev: torch.device, n: int, iters: int, warmup: int) -> float:
    a = torch.randn(n, n, device=dev)
    b = torch.randn(n, n, device=dev)
    return _time_ms(lambda: torch.mm(a, b), iters, warmup)


def measure_peak(device: str | torch.device = "cuda", copy_bytes: int = COPY_BYTES, matmul_n: int = MATMUL_N,
                 iters: int = 20, warmup: int = 3) -> DevicePeak | None:
    """The measured peak of a CUDA device, or None when `device` is not one (a CPU has no reported peak).

    The product runs in float32 with the TF32 setting of cuDNN's convolutions (the model is made of
    convolutions, so that is the arithmetic it can reach); the setting is restored afterwards.
    """
    dev = torch.device(device)
    if dev.type != "cuda" or not torch.cuda.is_available():
        return None
    copy_ms = _copy_ms(dev, copy_bytes, iters, warmup)
    tf32 = bool(torch.backends.cudnn.allow_tf32)
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        mm_ms = _matmul_ms(dev, matmul_n, iters, warmup)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    torch.cuda.empty_cache()  # the 2 GiB of buffers go back before the model runs
    return DevicePeak(
        device=torch.cuda.get_device_name(dev),
        copy_gbps=2 * copy_bytes / (copy_ms * 1e-3) / 1e9,
        matmul_tflops=2 * matmul_n**3 / (mm_ms * 1e-3) / 1e12,
        matmul_dtype="tf32" if tf32 else "float32",
        matmul_n=matmul_n,
    )
