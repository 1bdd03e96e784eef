from __future__ import annotations

import math

import numpy as np
import pytest

from livetok.engine.rate_control import RateControlConfig, RateState, rate_update, retarget


def test_first_frames_exact() -> None:
    cfg = RateControlConfig(target_bps=30_000, window_s=0.5, fps=30)  # 1000 bits per frame
    s = rate_update(cfg, RateState(), used=2000, now_s=0.0)
    budget = 30_000 * 0.5
    assert s.debt == pytest.approx(1000.0)  # spent 2000 against 1000
    assert s.log_base == pytest.approx(-(1000 / budget) * (1 / 30) / 0.5)
    assert s.scale == pytest.approx(math.exp(s.log_base - 1000 / budget))
    s2 = rate_update(cfg, s, used=0, now_s=0.1)  # 0.1 s later, nothing spent: 3000 bits of budget accrued
    assert s2.debt == pytest.approx(1000 - 3000)
    assert s2.scale > s.scale


def test_token_targets_count_frames_not_clock() -> None:
    cfg = RateControlConfig(target_tokens=100, window_s=0.5, fps=30)
    s = RateState()
    for i in range(10):
        s = rate_update(cfg, s, used=100, now_s=1000.0 + i * 7.3)  # the clock does not matter
    assert s.debt == pytest.approx(0.0) and s.scale == pytest.approx(1.0)


def simulate(cfg: RateControlConfig, natural: np.ndarray, cap: float) -> np.ndarray:
    """A stream whose frames would cost `natural` at scale 1 (capped at N tokens' worth)."""
    s, used = RateState(), []
    for i, u in enumerate(natural):
        x = min(cap, s.scale * u)
        used.append(x)
        s = rate_update(cfg, s, x, i / cfg.fps)
    return np.array(used)


@pytest.mark.parametrize("pattern", ["square", "ramp", "keyframes"])
def test_every_ten_second_window_within_five_percent(pattern: str) -> None:
    fps, target = 30, 1500.0
    t = np.arange(60 * fps) / fps
    natural = {
        "square": np.where((t // 15) % 2 == 0, 3000.0, 900.0),  # busy and quiet scenes, 15 s each
        "ramp": 400.0 + 100.0 * t,  # ever busier
        "keyframes": np.where(np.arange(len(t)) % 300 == 0, 8000.0, 1200.0),  # a keyframe every 10 s
    }[pattern]
    cfg = RateControlConfig(target_bps=target * fps, fps=fps)
    used = simulate(cfg, natural, cap=8000.0)
    windows = [used[s : s + 10 * fps].mean() / target - 1 for s in range(0, len(used) - 10 * fps + 1, fps)]
    assert max(abs(w) for w in windows) <= 0.05, max(windows, key=abs)
    assert abs(used.mean() / target - 1) < 0.01


def test_unreachable_target_saturates_instead_of_diverging() -> None:
    cfg = RateControlConfig(target_tokens=10, fps=30)
    s = RateState()
    for i in range(3000):
        s = rate_update(cfg, s, used=500, now_s=i / 30)  # the stream cannot go below 500 (a floor)
    assert s.scale == pytest.approx(cfg.min_scale)
    assert abs(s.debt) <= cfg.max_debt_windows * cfg.per_second * cfg.window_s + 1e-6


def test_bad_configs() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        RateControlConfig()
    with pytest.raises(ValueError, match="exactly one"):
        RateControlConfig(target_bps=1, target_tokens=1)
    with pytest.raises(ValueError, match="> 0"):
        RateControlConfig(target_bps=0)
    with pytest.raises(ValueError, match="cannot cost"):
        rate_update(RateControlConfig(target_bps=1), RateState(), -1, 0)


def test_retarget_drops_the_old_targets_credit() -> None:
    """A stream far under a generous target banks credit (debt at its negative bound, scale at its
    maximum); at a tight new target that credit would keep it overspending. `retarget` drops it: the
    scale falls below 1 within a few frames."""
    loose = RateControlConfig(target_bps=40_000, fps=10)
    st = RateState()
    for i in range(50):  # 700 bits a frame at 10 fps: 7 kbit/s under a 40 kbit/s target
        st = rate_update(loose, st, 700, i / 10)
    assert st.scale == loose.max_scale and st.debt < 0
    tight = RateControlConfig(target_bps=2_000, fps=10)

    def frames_to_fall(s: RateState) -> int:
        for j in range(1, 100):
            s = rate_update(tight, s, 700, 5.0 + j / 10)
            if s.scale < 1.0:
                return j
        return 100

    kept, reset = frames_to_fall(st), frames_to_fall(retarget(st))
    assert retarget(st).debt == 0.0 and retarget(st).scale == st.scale
    assert reset <= 6 and reset < kept, (reset, kept)
