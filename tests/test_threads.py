"""The default CPU thread count (engine/threads.py): it must not collapse when the CPU is shared."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from livetok.engine.threads import DEFAULT_MAX_THREADS, default_threads, usable_cpus

from .conftest import eval_clips


def test_default_threads_rules() -> None:
    assert default_threads(3, {}) == 3  # --threads N wins
    assert default_threads(0, {"OMP_NUM_THREADS": "4"}) is None  # torch follows the user's variable
    assert default_threads(0, {}) == min(DEFAULT_MAX_THREADS, usable_cpus()) == min(2, len(os.sched_getaffinity(0)))
    with pytest.raises(ValueError, match="--threads must be >= 0"):
        default_threads(-1, {})


def _encode_s(tmp_path: Path, *extra: str) -> float:
    """Wall time of `livetok encode` of 12 frames in a fresh process (OpenMP reads its settings at load)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "MKL_", "GOMP_"))}
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "livetok.cli", "encode", str(eval_clips()[0]), "-o",
                        str(tmp_path / "x.ltk"), "--max-frames", "12", *extra], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return time.monotonic() - t0


def test_default_threads_beside_busy_cores(tmp_path: Path) -> None:
    """Every usable core busy with another process: torch's own default (one spinning thread per core)
    took 25x as long as one thread here (issue 24); the default may cost a little over one thread, never
    a collapse."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(usable_cpus())]
    try:
        one = _encode_s(tmp_path, "--threads", "1")
        default = _encode_s(tmp_path)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    assert default < 2.5 * one, f"default threads {default:.1f} s vs one thread {one:.1f} s"
