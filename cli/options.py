"""The options several commands share (the model, the sender's budget policy, a frame size) and their
conversion to the library's configs. Every conversion refuses a bad value with a ValueError naming it."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, TypeAlias

# the names the engine accepts (no torch is imported by them: `livetok --help` stays fast)
from livetok.engine.config import NORMALISERS, POLICIES, RANKINGS, SIGNALS

if TYPE_CHECKING:  # the commands import what they need when they run: `livetok --help` stays fast
    from livetok.engine.config import SenderConfig
    from livetok.engine.runtime import Runtime

    # what `ArgumentParser.add_subparsers` returns: each command group's `register` adds its parsers to it
    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


def add_model_args(p: argparse.ArgumentParser, backend: bool = True) -> None:
    p.add_argument("--weights", default=None, help="weights file (.safetensors); default: the shipped model")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, auto (default: cpu)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (default: 2, or fewer when this process may use fewer CPUs; "
                        "$OMP_NUM_THREADS when set). Idle threads spin only briefly before they sleep "
                        "(GOMP_SPINCOUNT=5000 unless it or OMP_WAIT_POLICY is set), so processes sharing the "
                        "CPU do not stall each other; on a machine of your own, --threads <cores> may run faster")
    if backend:
        p.add_argument("--backend", default="torch", choices=["torch", "onnx", "cuda-graph", "auto"],
                       help="run the model in torch (default), onnxruntime (CUDA EP when onnxruntime-gpu has "
                            "one, else CPU) or torch replaying CUDA graphs (needs a CUDA device: an error "
                            "without one); auto = cuda-graph with CUDA, else onnx when the onnx extra is "
                            "installed, else torch")
        p.add_argument("--onnx-dir", default=None,
                       help="ONNX export to run (--backend onnx); default: exported on first use into "
                            "$XDG_CACHE_HOME (~/.cache)/livetok/onnx/<model id>")


def add_sender_args(p: argparse.ArgumentParser, signal_flag: str = "--signal") -> None:
    p.add_argument("--policy", default="learned",
                   choices=POLICIES,
                   help="budget policy (default: learned, InfoTok's rule on the budget head's predicted gain: "
                        "no router decode); oracle and search are benchmark arms")
    p.add_argument("--rate", type=float, default=0.5,
                   help="InfoTok's beta as a fraction of the N positions (default 0.5): a frame whose information "
                        "equals the population mean stored with the weights keeps rate * N tokens; busier "
                        "frames keep more, quieter ones fewer, so a clip's kept fraction can be far from RATE "
                        "(an average, not a cap: exact only for --policy fixed). For a ceiling use --max-rate; "
                        "for a bit rate, --target-bps")
    p.add_argument("--max-rate", type=float, default=None,
                   help="hard ceiling: no frame, keyframes included, keeps more than floor(MAX_RATE * N) tokens "
                        "(applied after the policy and rate control; default: none)")
    p.add_argument("--target-bps", type=float, default=None,
                   help="rate control: scale beta to meet this many bits/s (whole packets over capture time: "
                        "README, kbit/s). A frame keeps at least the policy's floor of N/16 tokens, so a target "
                        "below that floor cannot be met: the stream runs at its floor and a warning says so")
    p.add_argument("--target-tokens", type=float, default=None,
                   help="rate control: scale beta to meet this mean number of tokens per frame")
    # the default is BudgetConfig.skip_fraction (not imported here: `livetok --help` stays fast)
    p.add_argument("--skip", type=float, default=1.0 / 24.0, metavar="FRACTION", dest="skip_fraction",
                   help="skip mode (infotok, learned): a frame whose tokens would buy less over repeating the "
                        "previous frame than FRACTION * N tokens' worth sends none, and the receiver repeats "
                        "its frame (default 1/24 ≈ 0.0417; 0: never skip, every frame keeps N/16)")
    p.add_argument("--normaliser", default="population", choices=NORMALISERS,
                   help="infotok normaliser: the population mean stored with the weights, or the stream's own EMA")
    p.add_argument("--keyframe-interval", type=int, default=300, help="frames between keyframes; 0 = first only")
    # `webrtc send` takes --signal for the signalling URL; its information signal is --router-signal
    p.add_argument(signal_flag, dest="signal", default="gain", choices=SIGNALS,
                   help="infotok's information signal: full-rate error (the paper), the gain of the tokens, or "
                        "bits: their code length under the entropy coder (no router decode; positions ranked by it)")
    p.add_argument("--ranking", default="gain", choices=RANKINGS,
                   help="which positions fill the budget (default: gain; error = InfoTok's)")
    p.add_argument("--wire", default="v3", choices=["v1", "v2", "v3"],
                   help="packet format: v3 entropy-codes the mask and tokens behind a header trimmed of what the "
                        "stream does not change (default), v2 the same with the full header on every packet, v1 "
                        "is fixed-length (docs/PACKET.md); receivers read all three")


def sender_config(a: argparse.Namespace) -> SenderConfig:
    """The sender options (add_sender_args) as a SenderConfig; its checks refuse bad values."""
    from livetok.engine.config import BudgetConfig, SenderConfig
    from livetok.engine.rate_control import RateControlConfig

    rc = None
    if a.target_bps is not None or a.target_tokens is not None:
        rc = RateControlConfig(target_bps=a.target_bps, target_tokens=a.target_tokens)
    return SenderConfig(
        budget=BudgetConfig(policy=a.policy, rate=a.rate, max_rate=a.max_rate, normaliser=a.normaliser,
                            signal=a.signal, skip_fraction=a.skip_fraction),
        keyframe_interval=a.keyframe_interval,
        ranking=a.ranking,
        rate_control=rc,
        wire=int(a.wire[1]),
    )


def open_model(a: argparse.Namespace) -> Runtime:
    """The runtime the model options (add_model_args) ask for, with torch's CPU threads set."""
    import torch

    from livetok.engine.threads import default_threads
    from livetok.export.backends import open_runtime

    threads = default_threads(a.threads)
    if threads:
        torch.set_num_threads(threads)
    return open_runtime(getattr(a, "backend", "torch"), a.weights, getattr(a, "onnx_dir", None), a.device,
                        threads)


def parse_size(s: str | None) -> tuple[int, int] | None:
    """`--size WIDTHxHEIGHT` (None when not given)."""
    if s is None:
        return None
    try:
        w, h = (int(v) for v in s.lower().split("x"))
    except ValueError:
        raise ValueError(f"bad --size {s!r}: use WIDTHxHEIGHT, e.g. 256x192") from None
    if w < 8 or h < 8:
        raise ValueError(f"bad --size {s!r}: both sides must be at least 8 pixels")
    return w, h


def required_size(s: str) -> tuple[int, int]:
    """A `--size` that has a default, so it is always there."""
    size = parse_size(s)
    assert size is not None
    return size
