"""Shared fixtures: a seeded tiny model, real evaluation frames, temporary weights files."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from livetok.bench.localbroker import INSTALL_HINT, Broker, find_mosquitto
from livetok.bench.nats_cluster import INSTALL_HINT as NATS_INSTALL_HINT
from livetok.bench.nats_cluster import NatsCluster, find_nats_server
from livetok.engine.checkpoint import DEFAULT_WEIGHTS, save_weights
from livetok.engine.config import PRESETS
from livetok.engine.model import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LIVETOK_DATA", ROOT.parent / "shared" / "data"))
EVAL_DIR = DATA / "eval"
TRAIN_DIR = DATA / "train"
BUNDLED_CLIP = ROOT / "stream" / "assets" / "demo.mp4"


def eval_clips() -> list[Path]:
    """The evaluation clips; the bundled demo clip (itself a held-out eval clip) if they are absent."""
    return sorted(EVAL_DIR.glob("*.mkv")) or [BUNDLED_CLIP]


_NETNS: dict[str, str | None] = {}


def pytest_configure(config: pytest.Config) -> None:
    # every test's network traffic stays on loopback: the session moves into a loopback-only network
    # namespace before any thread starts (threads and processes started later inherit it), so a
    # test that reached beyond loopback would fail here as it would in a sandbox. Needs root (CI
    # is); elsewhere, or with LIVETOK_TEST_HOST_NETWORK=1, the tests use the host's network.
    from tests.netns import enter_loopback_netns

    if os.environ.get("LIVETOK_TEST_HOST_NETWORK") == "1":
        _NETNS["why"] = "LIVETOK_TEST_HOST_NETWORK=1"
    else:
        _NETNS["why"] = enter_loopback_netns()


def pytest_report_header(config: pytest.Config) -> str:
    why = _NETNS.get("why")
    return "network: loopback-only namespace" if why is None else f"network: the host's ({why})"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # GPU tests run wherever a CUDA device is present, and are skipped (with the reason) elsewhere
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (none present)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def untrained(preset: str, seed: int) -> Tokenizer:
    """A seeded untrained model of a preset. At init the head's outputs sit near 0: every position
    would get the centre code. They are spread so the untrained model's tokens depend on its input
    (what the contract tests need)."""
    torch.manual_seed(seed)
    m = Tokenizer(PRESETS[preset]).eval()
    with torch.no_grad():
        m.encoder.head.weight.mul_(40.0)
    return m


@pytest.fixture(scope="session")
def tiny_model() -> Tokenizer:
    """An untrained `tiny` model: the shipped networks at width 24, one block each, 125 codes."""
    return untrained("tiny", 1234)


@pytest.fixture(scope="session")
def rt_model() -> Tokenizer:
    """An untrained `rt` model: the shipped networks with three decoder blocks and 1000 codes (a second,
    full-width size for the contract tests)."""
    return untrained("rt", 7)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory, tiny_model: Tokenizer) -> Path:
    return save_weights(tiny_model, tmp_path_factory.mktemp("w") / "tiny.safetensors")


@pytest.fixture(scope="session")
def shipped_model() -> Tokenizer:
    if not DEFAULT_WEIGHTS.is_file():
        pytest.fail(f"the shipped weights are missing: {DEFAULT_WEIGHTS}")
    from livetok.engine.checkpoint import load_default

    return load_default()


@pytest.fixture(scope="session")
def real_frames() -> np.ndarray:
    """12 frames of a real evaluation clip, uint8 RGB [12, 192, 256, 3]."""
    from livetok.stream.video_io import read_video

    frames, _ = read_video(eval_clips()[0], max_frames=12)
    return frames


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """Three fresh nats-server nodes (JetStream, MQTT on each, replicas 3) on loopback; fails (does not
    skip) when nats-server is missing: the cluster tests are part of the suite."""
    binary = find_nats_server()
    if binary is None:
        pytest.fail(NATS_INSTALL_HINT)
    cluster = NatsCluster(binary, tmp_path / "nats")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    """A real mosquitto on a free 127.0.0.1 port, with persistence; `.stop()`/`.start()` restart it.

    Fails (does not skip) when mosquitto is missing: the MQTT tests are part of the suite.
    """
    binary = find_mosquitto()
    if binary is None:
        pytest.fail(INSTALL_HINT)
    broker = Broker(binary, tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
