"""`bench stream --find-max`: replayed streams into one receiver, and the search for the most it keeps up with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from livetok.bench.capacity import CapacityConfig, encode_clip, measure_streams
from livetok.bench.localbroker import Broker
from livetok.engine.config import SenderConfig
from livetok.engine.model import Tokenizer

pytestmark = pytest.mark.broker


def test_replayed_streams_all_arrive(mosquitto: Broker, tiny_model: Tokenizer) -> None:
    payloads = encode_clip(tiny_model, "synthetic", (64, 48), SenderConfig(), 10)
    # a p99 bound no CI machine misses: this checks the plumbing, not the speed
    r = measure_streams(tiny_model, mosquitto.url, 2, payloads, CapacityConfig(seconds=1.0, max_p99_ms=60_000))
    assert r.streams == 2 and r.frames_per_stream == 30
    assert r.frames_decoded == 60 and r.frames_lost == 0  # every replayed frame decoded (loops at keyframes)
    assert r.latency_ms_p99 is not None and r.send_wall_s > 0.5


def test_find_max_cli_reports_trials(mosquitto: Broker, tiny_weights: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from livetok.cli import main

    code = main(["bench", "stream", "--find-max", "--max-streams", "1", "--seconds", "1", "--size", "64x48",
                 "--broker", mosquitto.url, "--weights", str(tiny_weights), "--json"])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert res["max_streams"] in (0, 1) and [t["streams"] for t in res["trials"]] == [1]
    assert res["capped"] == (res["max_streams"] == 1)
