"""`livetok bench arms`: the training arms of issue #4 on one backbone, one seed, the same data and steps.

Arms (engine/train.py; InfoTok arXiv 2512.16975 §3 and Thm 2.2):
- `fixed`:   one model per rate (0.25, 0.5, 0.75), served at its own rate by the fixed policy;
- `uniform`: ElasticTok's data-agnostic per-frame budget sampler;
- `elbo`:    InfoTok's router budgets with beta drawn from {1/4, 1/2, 3/4, 1} * N.
`uniform` and `elbo` are single models served at every rate, by the fixed policy and by the infotok
policy, after calibrating their population means on the training clips (as the shipped weights
are: `calibrate_file`). Checkpoints go to OUT/<model>/ and are reused when their configuration
matches, so a second run only evaluates. The summary reads the curves the way `bench rd` does:
tokens each arm+policy saves at the PSNR the fixed arm's 0.75 model reaches.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from livetok.engine.calibrate import calibrate_file
from livetok.engine.checkpoint import load_weights, read_metadata
from livetok.engine.config import BudgetConfig, Policy, SenderConfig
from livetok.engine.data import DataConfig, find_videos
from livetok.engine.results import JsonResult, optional
from livetok.engine.train import TrainConfig, train
from livetok.stream.evaluate import clip_name, evaluate_files
from livetok.stream.video_io import VideoReader

from .rd import RdPoint, _interp, _point, _tokens_at_psnr

# (task, done, total or None when unknown, a short note): drives the CLI's progress display
Progress = Callable[[str, float, float | None, str], None]

ARMS = ("fixed", "uniform", "elbo")
# files train() writes into a run folder; removed before a run with another configuration
_RUN_FILES = ("model.safetensors", "train_state.pt", "train_state.tmp", "log.jsonl", "train_config.json", "arm.json")


@dataclass(frozen=True)
class ArmsConfig:
    """What every arm shares. Training settings are `livetok train`'s defaults on the tiny preset,
    except `head_steps` = 0 (the budget head serves only the learned/rdo/prior policies, not
    compared here) and a warm-up scaled to the short run."""

    steps: int = 250
    seed: int = 0
    preset: str = "tiny"
    batch: int = 8
    crop: int = 64  # livetok train: 96; 64 buys ~2x the steps in the same time
    clip_frames: int = 8
    stream_frames: tuple[int, int] = (24, 120)
    lr: float = 2e-3
    warmup_steps: int | None = None  # None: steps // 10, at most 200 (livetok train's default)
    synthetic_fraction: float = 0.3
    freeze_prob: float = 0.3
    zero_k_prob: float = 0.1
    # TrainConfig's default: the elbo arm's signal, the ranking, infotok's signal
    router_signal: Literal["error", "gain"] = "gain"
    fixed_rates: tuple[float, ...] = (0.25, 0.5, 0.75)  # one fixed-arm model each
    rates: tuple[float, ...] = (0.25, 0.5, 0.75)  # operating points of the uniform and elbo models
    calib_frames: int = 8  # per training clip (the shipped weights: 32; 4x cheaper, same procedure)
    calib_rate: float = 0.5
    threads: int = 0  # torch threads; 0 = torch's default
    device: str = "auto"  # training device, as livetok train (evaluation runs on the CPU)

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if 0.75 not in self.fixed_rates:
            raise ValueError(f"fixed_rates must contain 0.75 (the summary's reference), got {self.fixed_rates}")
        for r in (*self.fixed_rates, *self.rates, self.calib_rate):
            if not 0.0 < r <= 1.0:
                raise ValueError(f"rates must be in (0, 1], got {r}")
        if self.calib_frames < 2:
            raise ValueError(f"calib_frames must be >= 2, got {self.calib_frames}")

    def train_config(self, arm: str, fixed_rate: float = 1.0, real_data: bool = True) -> TrainConfig:
        warmup = self.warmup_steps if self.warmup_steps is not None else max(1, min(200, self.steps // 10))
        return TrainConfig(
            preset=self.preset, arm=arm, fixed_rate=fixed_rate, steps=self.steps, batch=self.batch,
            clip_frames=self.clip_frames, stream_frames=self.stream_frames, lr=self.lr, warmup_steps=warmup,
            seed=self.seed, threads=self.threads, device=self.device, router_signal=self.router_signal,
            zero_k_prob=self.zero_k_prob, head_steps=0, checkpoint_every=max(self.steps, 1),
            # without real clips train() would switch to synthetic-only itself; say so up front, so
            # the stored configuration is the one that ran and a re-run recognises it
            data=DataConfig(crop=self.crop, synthetic_fraction=self.synthetic_fraction if real_data else 1.0,
                            freeze_prob=self.freeze_prob),
        )


def model_names(cfg: ArmsConfig) -> dict[str, tuple[str, float]]:
    """Model name -> (arm, fixed rate): fixed-0.25, fixed-0.5, fixed-0.75, uniform, elbo."""
    out = {f"fixed-{r:g}": ("fixed", r) for r in cfg.fixed_rates}
    return {**out, "uniform": ("uniform", 1.0), "elbo": ("elbo", 1.0)}


# ---------------------------------------------------------------------------------------------
# training and calibration (reused when the stored configuration matches)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


@dataclass(frozen=True, kw_only=True)
class TrainResult(JsonResult):
    """One model's training (or the reuse of the one in its folder)."""

    path: str
    steps: int
    train_s: float
    frames_per_s: float
    final_loss: float
    final_train_psnr: float
    reused: bool


@dataclass(frozen=True, kw_only=True)
class Calibration(JsonResult):
    """A model's population means (the weights file's `calibration` metadata, engine/calibrate.py)."""

    population: dict[str, float]
    rate: float
    clips: int
    frames_per_clip: int
    calibrate_s: float | None = optional()  # when it ran now
    reused: bool


@dataclass(frozen=True, kw_only=True)
class ModelInfo(JsonResult):
    arm: str
    train: TrainResult
    calibration: Calibration | None = optional()  # the uniform and elbo arms


@dataclass(frozen=True)
class ArmsReference(JsonResult):
    arm: str
    rate: float
    psnr: float
    tokens_per_frame: float


@dataclass(frozen=True, kw_only=True)
class ArmsSummary(JsonResult):
    """Tokens saved vs the fixed arm at the PSNR its 0.75 model reaches, per arm and policy; the PSNR gained
    at equal mean tokens; the best arm and policy (when any curve reaches the reference)."""

    reference: ArmsReference
    tokens_saved_vs_fixed: dict[str, dict[str, float]]
    tokens_saved_vs_fixed_by_arm: dict[str, float]
    psnr_gain_vs_fixed_at_equal_tokens_db: dict[str, dict[str, dict[str, float]]]
    best: str | None = optional()
    best_tokens_saved_vs_fixed: float | None = optional()
    best_arm: str | None = optional()
    best_policy: str | None = optional()


@dataclass(frozen=True, kw_only=True)
class ArmsBench(JsonResult):
    """`livetok bench arms`: every arm's curves ({arm: {policy: [point per rate]}}), the models, the summary."""

    arms: dict[str, dict[str, list[RdPoint]]]
    models: dict[str, ModelInfo]
    summary: ArmsSummary
    config: dict[str, Any]  # ArmsConfig as JSON
    positions: int
    clips: list[str]
    train_data_files: int
    wall_s: float


def train_model(name: str, tcfg: TrainConfig, run_dir: Path, data: list[Path],
                progress: Progress | None = None) -> TrainResult:
    """Train one model into `run_dir` (or reuse the one there); returns what the JSON reports."""
    weights, sidecar = run_dir / "model.safetensors", run_dir / "arm.json"
    want = {"train": _jsonable(asdict(tcfg)), "data": sorted(str(p.resolve()) for p in data)}
    have = _read_json(sidecar) if sidecar.is_file() else None
    resume = have is not None and have.get("config") == want
    if have is not None and resume and weights.is_file() and "result" in have:
        extra = json.loads(read_metadata(weights).get("extra", "{}"))
        if extra.get("step") == tcfg.steps:
            if progress:
                progress(f"train {name}", tcfg.steps, tcfg.steps, "reused")
            return TrainResult(**have["result"], reused=True)
    if not resume:  # another configuration (or none we know) ran here: start over rather than resume it
        for f in _RUN_FILES:
            (run_dir / f).unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    sidecar.write_text(json.dumps({"config": want}, indent=2))  # an interrupted run resumes only this config
    last: dict[str, float] = {}

    def on_step(step: int, stats: dict[str, float]) -> None:
        last.update(stats)
        if progress:
            progress(f"train {name}", step, tcfg.steps, f"loss {stats['loss']:.4f} {stats['frames_per_s']:.0f} fr/s")

    t0 = time.perf_counter()
    train(tcfg, run_dir, [str(p) for p in data], resume=resume, progress=False, on_step=on_step)
    seconds = time.perf_counter() - t0
    result = TrainResult(path=str(weights), steps=tcfg.steps, train_s=seconds,
                         frames_per_s=last.get("frames_per_s", math.nan), final_loss=last.get("loss", math.nan),
                         final_train_psnr=last.get("psnr", math.nan), reused=False)
    stored = {k: v for k, v in result.to_json().items() if k != "reused"}
    sidecar.write_text(json.dumps({"config": want, "result": stored}, indent=2))
    return result


def calibrate_model(name: str, weights: Path, data: list[Path], cfg: ArmsConfig,
                    progress: Progress | None = None) -> Calibration:
    """Population means on the training clips (`calibrate_file`, in place), unless already done alike."""
    extra = json.loads(read_metadata(weights).get("extra", "{}"))
    cal = extra.get("calibration")
    if cal and cal.get("rate") == cfg.calib_rate and cal.get("frames_per_clip") == cfg.calib_frames \
            and cal.get("clips") == len(data):
        if progress:
            progress(f"calibrate {name}", 1, 1, "reused")
        return Calibration(**cal, reused=True)
    if progress:
        progress(f"calibrate {name}", 0, 1, f"{len(data)} training clips x {cfg.calib_frames} frames")
    t0 = time.perf_counter()
    means = calibrate_file(weights, [str(p) for p in data], frames=cfg.calib_frames, rate=cfg.calib_rate)
    seconds = time.perf_counter() - t0
    if progress:
        progress(f"calibrate {name}", 1, 1, f"error {means['error']:.5f} gain {means['gain']:.5f}")
    cal = json.loads(read_metadata(weights).get("extra", "{}"))["calibration"]
    return Calibration(**cal, calibrate_s=seconds, reused=False)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# evaluation


def _sender(policy: Policy, rate: float, signal: Literal["error", "gain"]) -> SenderConfig:
    # as bench rd: one keyframe per clip, positions ranked by the same signal the model trained with; no
    # skips: the arms are compared on InfoTok's budgets (N/16 to N), which briefly trained models would
    # otherwise trade for repeats
    return SenderConfig(budget=BudgetConfig(policy=policy, rate=rate, signal=signal, skip_fraction=0.0),
                        ranking=signal, keyframe_interval=0)


def _frames_in(clips: list[str | os.PathLike[str]], max_frames: int | None) -> int | None:
    total = 0
    for c in clips:
        with VideoReader(c) as r:
            if r.frame_count <= 0:
                return None
            total += min(r.frame_count, max_frames) if max_frames else r.frame_count
    return total


# ---------------------------------------------------------------------------------------------
# summary


def summarize_arms(arms: dict[str, dict[str, list[RdPoint]]]) -> ArmsSummary:
    """Tokens saved vs the fixed arm at the PSNR its 0.75 model reaches, per arm and policy.

    A saved fraction is NaN exactly when that PSNR lies outside the PSNR range of the arm+policy's
    curve (nothing to interpolate: the curve never reaches it, or only passes it above its top rate).
    """
    fixed = arms["fixed"]["fixed"]
    ref = min(fixed, key=lambda p: abs(p.setting_rate - 0.75))
    target, ref_tokens = ref.psnr, ref.tokens_per_frame
    saved: dict[str, dict[str, float]] = {}
    gain_db: dict[str, dict[str, dict[str, float]]] = {}
    fx_tokens, fx_psnr = [p.tokens_per_frame for p in fixed], [p.psnr for p in fixed]
    for arm, policies in arms.items():
        for policy, pts in policies.items():
            t = _tokens_at_psnr(pts, target)
            saved.setdefault(arm, {})[policy] = 1.0 - t / ref_tokens if not math.isnan(t) else math.nan
            # the other reading of the same curves: PSNR over the fixed arm at equal mean tokens
            gain_db.setdefault(arm, {})[policy] = {
                f"{p.setting_rate:g}": p.psnr - _interp(fx_tokens, fx_psnr, p.tokens_per_frame) for p in pts}
    cands = {f"{a}/{p}": v for a, d in saved.items() for p, v in d.items() if not math.isnan(v)}
    by_arm = {a: max((v for v in d.values() if not math.isnan(v)), default=math.nan) for a, d in saved.items()}
    s = ArmsSummary(reference=ArmsReference("fixed", ref.setting_rate, target, ref_tokens),
                    tokens_saved_vs_fixed=saved, tokens_saved_vs_fixed_by_arm=by_arm,
                    psnr_gain_vs_fixed_at_equal_tokens_db=gain_db)
    if cands:
        best = max(cands, key=lambda k: cands[k])
        best_arm, best_policy = best.split("/")
        s = dataclasses.replace(s, best=best, best_tokens_saved_vs_fixed=cands[best], best_arm=best_arm,
                                best_policy=best_policy)
    return s


# ---------------------------------------------------------------------------------------------
# the bench


def bench_arms(
    clips: list[str | os.PathLike[str]],
    cfg: ArmsConfig,
    out_dir: str | os.PathLike[str] = "runs/arms",
    train_data: list[str | os.PathLike[str]] | None = None,
    max_frames: int | None = None,
    progress: Progress | None = None,
) -> ArmsBench:
    """Train (or reuse) every arm's models, calibrate, evaluate on `clips`.

    Args:
        clips: evaluation clips (never trained or calibrated on).
        cfg: shared training and evaluation settings.
        out_dir: checkpoints go to out_dir/<model name>/.
        train_data: training clip files/folders (also the calibration clips); empty = synthetic only.
        max_frames: evaluate only the first frames of each clip.
    """
    import torch

    t_start = time.perf_counter()
    if not clips:
        raise ValueError("bench arms needs at least one evaluation clip")
    data = find_videos(train_data or [])  # refuses folders named eval
    if not data:
        raise ValueError("bench arms needs training clips (train_data): they are also the calibration clips")
    eval_set = {Path(c).resolve() for c in clips}
    leak = [str(p) for p in data if p.resolve() in eval_set]
    if leak:
        raise ValueError(f"evaluation clips are among the training/calibration clips: {', '.join(leak)}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(out_dir)
    models: dict[str, ModelInfo] = {}
    for name, (arm, rate) in model_names(cfg).items():
        tcfg = cfg.train_config(arm, rate, real_data=bool(data))
        models[name] = ModelInfo(arm=arm, train=train_model(name, tcfg, out / name, data, progress))
    for name in ("uniform", "elbo"):  # population means on the training clips, never the eval clips
        cal = calibrate_model(name, Path(models[name].train.path), data, cfg, progress)
        models[name] = dataclasses.replace(models[name], calibration=cal)

    sig = cfg.router_signal
    runs: list[tuple[str, str, Policy, float]] = [("fixed", f"fixed-{r:g}", "fixed", r) for r in cfg.fixed_rates]
    for arm in ("uniform", "elbo"):
        runs += [(arm, arm, policy, r) for policy in ("fixed", "infotok") for r in cfg.rates]
    per_run = _frames_in(clips, max_frames)
    total = per_run * len(runs) if per_run else None
    done = 0
    arms: dict[str, dict[str, list[RdPoint]]] = {}
    loaded: dict[str, Any] = {}
    for arm, name, policy, rate in runs:
        if name not in loaded:
            loaded.clear()  # one model in memory at a time
            loaded[name] = load_weights(models[name].train.path).eval()
        model = loaded[name]
        sender = _sender(policy, rate, sig)
        label = f"{name} {policy} {rate:g}"

        def tick(_clip: str, n: int, label: str = label) -> None:
            nonlocal done
            done += n
            if progress:
                progress("evaluate", done, total, label)

        run = evaluate_files(model, list(clips), sender, max_frames=max_frames, progress=tick)
        point = dataclasses.replace(_point(rate, run, policy, sender.budget), model=name)
        arms.setdefault(arm, {}).setdefault(policy, []).append(point)
        if progress:
            progress(f"eval {label}", 1, 1, f"{point.psnr:.2f} dB {point.tokens_per_frame:.1f} tok "
                                            f"{point.bits_per_frame:.0f} bit/frame")
    n = arms["fixed"]["fixed"][0].positions
    return ArmsBench(
        arms=arms,
        models=models,
        summary=summarize_arms(arms),
        config=_jsonable(asdict(cfg)),
        positions=n,
        clips=[clip_name(c) for c in clips],
        train_data_files=len(data),
        wall_s=time.perf_counter() - t_start,
    )


def markdown_table(result: ArmsBench) -> str:
    """One row per arm, policy and rate (what docs/BENCHMARKS.md shows)."""
    rows = ["| arm | policy | rate | PSNR (dB) | SSIM | tokens/frame | bits/frame |",
            "|---|---|---|---|---|---|---|"]
    for arm, policies in result.arms.items():
        for policy, pts in policies.items():
            for p in pts:
                rows.append(f"| {arm} | {policy} | {p.setting_rate:g} | {p.psnr:.2f} | {p.ssim:.4f} | "
                            f"{p.tokens_per_frame:.1f} | {p.bits_per_frame:.0f} |")
    return "\n".join(rows)


def summary_lines(result: ArmsBench) -> list[str]:
    """bench_arms' result for people: the table, then the tokens each arm and policy saves."""
    s = result.summary
    saved = ", ".join(f"{arm}/{pol} {v:+.1%}" for arm, d in s.tokens_saved_vs_fixed.items()
                      for pol, v in d.items() if arm != "fixed")
    return [markdown_table(result),
            f"tokens saved vs the fixed arm at {s.reference.psnr:.2f} dB (its 0.75 model): {saved}"
            f"; best {s.best}  ({result.wall_s:.0f} s)"]
