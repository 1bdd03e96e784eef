"""Pre-processing (export/preprocess.py): the numpy fallback is exactly the CPU pipeline's own steps;
the cupy path's maths, run with numpy as its array module, matches OpenCV within one 8-bit step;
nothing GPU-related happens at import."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from livetok.engine.errors import TokenizerError
from livetok.engine.frames import to_tensor
from livetok.export.preprocess import (
    PreprocessConfig,
    Preprocessor,
    area_weights,
    cupy_usable,
    preprocess_xp,
    resize_weights,
)
from livetok.stream.video_io import bgr_to_rgb

SIZES = [None, (256, 192), (128, 96), (200, 150), (131, 77), (320, 240), (300, 500)]


def _pipeline(frame: np.ndarray, size: tuple[int, int] | None) -> torch.Tensor:
    """The CPU pipeline as it is written elsewhere: capture (video_io), preprocess stage (pipeline.py),
    SenderSession.step (engine/frames.to_tensor)."""
    f = bgr_to_rgb(frame)
    if size is not None and (f.shape[1], f.shape[0]) != size:
        f = cv2.resize(f, size, interpolation=cv2.INTER_AREA)
    return to_tensor(np.ascontiguousarray(f))


@pytest.fixture(scope="module")
def captures(real_frames: np.ndarray) -> list[np.ndarray]:
    """Real frames as OpenCV delivers them: BGR at 256x192 and upscaled to 640x480, gray, BGRA, 16-bit."""
    bgr = np.ascontiguousarray(real_frames[0][..., ::-1])
    big = cv2.resize(bgr, (640, 480), interpolation=cv2.INTER_CUBIC)
    return [bgr, big, cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA),
            bgr.astype(np.uint16) * 257]


@pytest.mark.parametrize("size", SIZES)
def test_numpy_fallback_is_exactly_the_cpu_pipeline(captures: list[np.ndarray], size: tuple[int, int] | None) -> None:
    pre = Preprocessor(PreprocessConfig(size, "numpy"))
    assert pre.backend == "numpy"
    for f in captures:
        x = pre(f)
        assert x.dtype == torch.float32 and x.device.type == "cpu"
        assert torch.equal(x, _pipeline(f, size))


@pytest.mark.parametrize("size", SIZES)
def test_the_gpu_maths_matches_opencv_within_one_step(captures: list[np.ndarray], size: tuple[int, int] | None) -> None:
    for f in captures:
        ref = _pipeline(f, size).numpy()
        got = preprocess_xp(np, f, size)
        assert got.dtype == np.float32 and got.shape == ref.shape
        steps = np.abs(got - ref) * 127.5
        assert steps.max() <= 1.0 + 1e-4, (f.shape, size)
        # exact for no resize and for shrinking by a whole factor (OpenCV's own rounded box average)
        if size is None or (f.shape[1] % size[0] == 0 and f.shape[1] // size[0] == f.shape[0] // size[1]):
            assert steps.max() < 1e-4, (f.shape, size)
        else:
            assert (steps < 1e-4).mean() > 0.9, (f.shape, size)


def test_area_weights() -> None:
    m = area_weights(10, 4, shrink=True)  # 2.5 source pixels per output pixel
    np.testing.assert_allclose(m.sum(axis=1), 1.0)
    np.testing.assert_allclose(m[0, :3], [0.4, 0.4, 0.2])
    np.testing.assert_allclose(m[1, 2:5], [0.2, 0.4, 0.4])
    np.testing.assert_allclose(area_weights(6, 3, shrink=True)[1], [0, 0, 0.5, 0.5, 0, 0])
    up = area_weights(2, 4, shrink=False)
    np.testing.assert_allclose(up.sum(axis=1), 1.0)
    wy, wx = resize_weights((480, 640), (320, 240))
    assert wy.shape == (240, 480) and wx.shape == (320, 640) and wy.dtype == np.float32
    with pytest.raises(ValueError, match="cannot shrink"):
        area_weights(2, 4, shrink=True)


def test_backend_choice_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    if cupy_usable():
        pytest.skip("a usable cupy is present")
    assert Preprocessor(PreprocessConfig((64, 48))).backend == "numpy"  # auto falls back
    with pytest.raises(TokenizerError, match="cupy pre-processing needs cupy and a CUDA device"):
        Preprocessor(PreprocessConfig(None, "cupy"))
    with pytest.raises(ValueError, match="unknown pre-processing backend"):
        PreprocessConfig(None, "opencl")
    with pytest.raises(ValueError, match="width, height"):
        PreprocessConfig((0, 48))
    with pytest.raises(TokenizerError, match="a frame must be"):
        Preprocessor()(np.zeros((2, 4, 4, 3), np.uint8))


def test_nothing_gpu_related_happens_at_import() -> None:
    code = ("import sys, torch\n"
            "import livetok.export.preprocess, livetok.export.cuda_graphs, livetok.export.backends\n"
            "import livetok.export.peak, livetok.export.flops, livetok.bench.speed, livetok.cli\n"
            "assert 'cupy' not in sys.modules, 'cupy imported'\n"
            "assert 'onnxruntime' not in sys.modules, 'onnxruntime imported'\n"
            "assert not torch.cuda.is_initialized(), 'CUDA initialised'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not cupy_usable(), reason="needs cupy (pip install 'livetok[gpu]')")
@pytest.mark.parametrize("size", SIZES)
def test_cupy_path_matches_the_numpy_path(captures: list[np.ndarray], size: tuple[int, int] | None) -> None:
    import cupy as cp

    pre = Preprocessor(PreprocessConfig(size, "cupy"))
    assert pre.backend == "cupy"
    for f in captures:
        x = pre(f)
        assert x.is_cuda and x.dtype == torch.float32
        ref = torch.from_numpy(preprocess_xp(np, f, size))
        assert ((x.cpu() - ref).abs() * 127.5).max() <= 1.0 + 1e-4
        assert torch.equal(pre(cp.asarray(f)), x)  # a frame already on the GPU gives the same
