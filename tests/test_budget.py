from __future__ import annotations

import pytest

from livetok.engine.budget import BudgetState, frame_budget, initial_budget_state, k_min
from livetok.engine.config import BudgetConfig

N = 768  # 256 x 192 at stride 8


def test_fixed_policy_is_rate_times_n() -> None:
    st = initial_budget_state(0.03)
    k, st2 = frame_budget(BudgetConfig(policy="fixed", rate=0.5), N, st, mean_error=None,
                          population_error=0.03, keyframe=False)
    assert k == 384
    assert st2.frames == 1 and st2.ema_error == 0.03
    k, _ = frame_budget(BudgetConfig(policy="fixed", rate=0.0001), N, st, mean_error=None,
                        population_error=0.03, keyframe=False)
    assert k == 1  # never zero tokens


def test_infotok_population_normaliser_exact_values() -> None:
    cfg = BudgetConfig(policy="infotok", rate=0.5, normaliser="population")
    st = initial_budget_state(0.04)
    # an average frame gets beta = rate * N
    assert frame_budget(cfg, N, st, mean_error=0.02, population_error=0.02, keyframe=False)[0] == 384
    # twice the information: twice the tokens
    assert frame_budget(cfg, N, st, mean_error=0.015, population_error=0.02, keyframe=False)[0] == 288
    # capped at N, floored at N/16
    assert frame_budget(cfg, N, st, mean_error=0.1, population_error=0.02, keyframe=False)[0] == N
    assert frame_budget(cfg, N, st, mean_error=0.0, population_error=0.02, keyframe=False)[0] == 48
    assert k_min(cfg, N) == 48


def test_infotok_ema_state_updates_only_on_predicted_frames() -> None:
    cfg = BudgetConfig(policy="infotok", rate=0.5, normaliser="ema", ema_decay=0.75)
    st = BudgetState(ema_error=0.02)
    k, st1 = frame_budget(cfg, N, st, mean_error=0.04, population_error=99.0, keyframe=False)
    assert k == 768  # 384 * 0.04 / 0.02, the population value is ignored
    assert st1.ema_error == pytest.approx(0.75 * 0.02 + 0.25 * 0.04)
    k, st2 = frame_budget(cfg, N, st1, mean_error=1.0, population_error=99.0, keyframe=True)
    assert k == N and st2.ema_error == st1.ema_error  # keyframes do not enter the EMA
    assert st2.frames == 2


def test_quiet_stream_spends_less_with_population_but_not_with_ema() -> None:
    """The issue's point about normalisers, in numbers: a stream whose frames all carry half the
    population's information gets half the tokens under `population`, and about beta under `ema`."""
    pop = BudgetConfig(policy="infotok", rate=0.5, normaliser="population")
    ema = BudgetConfig(policy="infotok", rate=0.5, normaliser="ema", ema_decay=0.5)
    sp, se = initial_budget_state(0.02), initial_budget_state(0.02)
    kp, ke = [], []
    for _ in range(20):
        k, sp = frame_budget(pop, N, sp, mean_error=0.01, population_error=0.02, keyframe=False)
        kp.append(k)
        k, se = frame_budget(ema, N, se, mean_error=0.01, population_error=0.02, keyframe=False)
        ke.append(k)
    assert kp == [192] * 20
    assert ke[0] == 192 and ke[-1] == 384  # the EMA forgets the population: rate control in disguise


def test_bad_arguments() -> None:
    cfg = BudgetConfig(policy="infotok")
    with pytest.raises(ValueError, match="mean full-rate error"):
        frame_budget(cfg, N, initial_budget_state(0.02), mean_error=None, population_error=0.02, keyframe=False)
    with pytest.raises(ValueError, match="at least one position"):
        frame_budget(cfg, 0, initial_budget_state(0.02), mean_error=0.1, population_error=0.02, keyframe=False)
    with pytest.raises(ValueError, match="unknown budget policy"):
        BudgetConfig(policy="magic")
    with pytest.raises(ValueError, match="rate"):
        BudgetConfig(rate=1.5)


def test_max_rate_is_a_hard_ceiling_after_the_policy() -> None:
    """`rate` is beta (an average over the population); `max_rate` caps every frame, keyframes too."""
    from livetok.engine.budget import k_max, prior_budget

    st = initial_budget_state(0.02)
    cap = BudgetConfig(policy="infotok", rate=0.5, max_rate=0.3)
    assert k_max(cap, N) == 230 and k_max(BudgetConfig(), N) == N  # floor(0.3 * 768); no cap by default
    # twice the population's information would get 768 tokens; the cap holds it at 230
    assert frame_budget(cap, N, st, mean_error=0.04, population_error=0.02, keyframe=False)[0] == 230
    assert frame_budget(cap, N, st, mean_error=0.01, population_error=0.02, keyframe=False)[0] == 192  # below it
    fixed = BudgetConfig(policy="fixed", rate=0.5, max_rate=0.25)
    assert frame_budget(fixed, N, st, mean_error=None, population_error=0.02, keyframe=False)[0] == 192
    prior = BudgetConfig(policy="prior", rate=0.5, max_rate=0.3)
    assert prior_budget(prior, N, st, population_error=0.02, keyframe=True) == 230  # a keyframe is capped too
    # the ceiling beats InfoTok's floor N/16 = 48
    low = BudgetConfig(policy="infotok", rate=0.5, max_rate=0.05)
    assert frame_budget(low, N, st, mean_error=0.0, population_error=0.02, keyframe=False)[0] == 38
    with pytest.raises(ValueError, match=r"max_rate must be in \(0, 1\], got 1.5"):
        BudgetConfig(max_rate=1.5)
    with pytest.raises(ValueError, match="not the benchmark arm 'oracle'"):
        BudgetConfig(policy="oracle", max_rate=0.5)


def test_skip_rule_exact_threshold() -> None:
    """Skip when beta * repeat_gain / population_gain < skip_fraction * N: with rate 0.5 and N/24 that is a
    repeat gain under 1/12 of the population gain; keyframes, NaN, fixed and a zero fraction never skip."""
    from livetok.cli import get_parser
    from livetok.engine.budget import skip_frame

    cfg = BudgetConfig(policy="infotok", rate=0.5, skip_fraction=1 / 24)
    st = initial_budget_state(0.02)
    assert cfg.skip_fraction == BudgetConfig().skip_fraction  # the default
    cli = get_parser().parse_args(["eval", "x.mkv"])
    assert cli.skip_fraction == BudgetConfig().skip_fraction  # the CLI's default is the same

    def skip(c: BudgetConfig, gain: float, key: bool = False, s: BudgetState = st) -> bool:
        return skip_frame(c, N, s, repeat_gain=gain, population_gain=0.016, keyframe=key)

    assert skip(cfg, 0.00133) and not skip(cfg, 0.00134)  # the line is 0.016 / 12 = 0.001333
    assert skip(cfg, -0.5)  # a repeat better than a full-rate decode: nothing to send
    assert skip(BudgetConfig(policy="learned", rate=0.5), 0.0)
    assert not skip(cfg, 0.0, key=True)
    assert not skip(cfg, float("nan"))  # unknown (no frame shown yet): send
    assert not skip(BudgetConfig(policy="fixed"), 0.0) and not skip(BudgetConfig(policy="rdo"), 0.0)
    assert not skip(BudgetConfig(policy="infotok", skip_fraction=0.0), 0.0)
    # rate control's scale leaves the line where it is (credit or debt alike)
    for scale in (1 / 32, 8.0):
        assert skip(cfg, 0.00133, s=BudgetState(ema_error=0.02, scale=scale))
        assert not skip(cfg, 0.00134, s=BudgetState(ema_error=0.02, scale=scale))
    with pytest.raises(ValueError, match=r"skip_fraction must be in \[0, 1\], got 2"):
        BudgetConfig(skip_fraction=2)
