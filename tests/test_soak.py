"""`livetok bench soak` smoke test: a few seconds through a real mosquitto, every reported key present."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from livetok.bench.localbroker import Broker
from livetok.cli import main

pytestmark = pytest.mark.broker


def test_bench_soak_reports_windows_rss_and_fds(tiny_weights: Path, mosquitto: Broker,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "soak", "--minutes", "0.05", "--window", "1", "--size", "64x48", "--broker", mosquitto.url,
                 "--weights", str(tiny_weights), "--json"])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert res["frames_captured"] == 90  # 3 s at 30 fps
    assert res["frames_published"] + res["frames_dropped"] == 90 and res["frames_lost"] == 0
    assert res["frames_decoded"] == res["frames_published"]
    assert res["windows"] and {"t_s", "fps", "frames_dropped", "frames_lost", "latency_ms_p50", "latency_ms_p99",
                               "rss_mib", "open_fds"} <= set(res["windows"][0])
    assert res["start"]["rss_mib"] > 0 and res["end"]["open_fds"] > 0


def test_bench_soak_bad_minutes_is_one_line(tiny_weights: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "soak", "--minutes", "0", "--weights", str(tiny_weights)]) == 2
    assert capsys.readouterr().err.strip().startswith("livetok: error: --minutes and --window must be > 0")
