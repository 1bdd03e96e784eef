"""Frozen configuration dataclasses for every engine component, and the named presets.

The model config (`TokenizerConfig`) defines the weights; the sender config (`SenderConfig`) is a
run-time choice (budget policy, rate, keyframe interval) and never changes the model identity.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from .rate_control import RateControlConfig

# the names a sender config takes (engine/router.py: what each does)
Policy = Literal["fixed", "infotok", "oracle", "search", "learned", "rdo", "prior"]  # how many tokens
Signal = Literal["error", "gain", "bits"]  # a frame's information proxy
Ranking = Literal["error", "gain", "surprise", "prefix"]  # which positions fill the budget
Normaliser = Literal["population", "ema"]  # what an average frame's signal is
POLICIES: tuple[Policy, ...] = get_args(Policy)
SIGNALS: tuple[Signal, ...] = get_args(Signal)
RANKINGS: tuple[Ranking, ...] = get_args(Ranking)
NORMALISERS: tuple[Normaliser, ...] = get_args(Normaliser)


@dataclass(frozen=True)
class FSQConfig:
    """Finite scalar quantization: one code per latent position, `prod(levels)` codes."""

    levels: tuple[int, ...] = (8, 8, 8, 5, 5, 5)  # the shipped model's: 64,000 codes

    def __post_init__(self) -> None:
        if not self.levels or any(int(lv) < 2 for lv in self.levels):
            raise ValueError(f"FSQConfig.levels must be a non-empty tuple of ints >= 2, got {self.levels}")
        object.__setattr__(self, "levels", tuple(int(lv) for lv in self.levels))

    @property
    def dim(self) -> int:
        return len(self.levels)

    @property
    def codebook_size(self) -> int:
        return math.prod(self.levels)

    @property
    def bits_per_index(self) -> int:
        """Bits of one packed token index (what the packet spends per kept position)."""
        return max(1, math.ceil(math.log2(self.codebook_size)))


@dataclass(frozen=True)
class EncoderConfig:
    """Frame and previous reconstruction pixel-unshuffled to stride 8, then depthwise-separable blocks
    (engine/encoder.py). The defaults are the shipped model's."""

    width: int = 96  # channels at stride 8
    blocks: int = 2
    kernel: int = 3  # depthwise kernel of the blocks
    mlp_ratio: int = 2  # hidden width of the gated feed-forward, in multiples of `width`

    def __post_init__(self) -> None:
        _positive(self, "width", "blocks", "kernel", "mlp_ratio")
        if self.kernel % 2 == 0:
            raise ValueError(f"EncoderConfig.kernel must be odd, got {self.kernel}")


@dataclass(frozen=True)
class DecoderConfig:
    """Token embedding + state fusion at stride 8, blocks, pixel-shuffle out (engine/decoder.py). The
    defaults are the shipped model's."""

    width: int = 96
    blocks: int = 5
    kernel: int = 3
    mlp_ratio: int = 2
    state_channels: int = 64  # the recurrent hidden state kept at stride 8 (the temporal context)
    # a stride-4 refinement after the stride-8 output (0 = none). Left out of the JSON when 0, so the
    # identities of models made before it existed stay as they were.
    refine_width: int = 0
    refine_blocks: int = 0

    def __post_init__(self) -> None:
        _positive(self, "width", "blocks", "kernel", "mlp_ratio", "state_channels")
        if self.refine_width < 0 or self.refine_blocks < 0 or (self.refine_width == 0) != (self.refine_blocks == 0):
            raise ValueError(f"DecoderConfig.refine_width and refine_blocks must both be 0 or both positive, "
                             f"got {self.refine_width} and {self.refine_blocks}")
        if self.refine_width and self.width % 4:
            raise ValueError(f"DecoderConfig.width must be a multiple of 4 for the stride-4 refinement, "
                             f"got {self.width}")
        if self.kernel % 2 == 0:
            raise ValueError(f"DecoderConfig.kernel must be odd, got {self.kernel}")


# Keys every model's JSON carries, with these fixed values, from the time a second architecture
# ("v1": a strided conv stem and an upsampler, removed in issue 26) existed: the model identity hashes
# the JSON, so the shipped weights and every packet made with them keep theirs only if it stays
# byte for byte the same. They configure nothing.
LEGACY_KEYS: dict[str, Any] = {"arch": "rt"}
LEGACY_ENCODER_KEYS: dict[str, Any] = {"stem_channels": [32, 64, 96]}
LEGACY_DECODER_KEYS: dict[str, Any] = {"up_channels": [48, 24]}


@dataclass(frozen=True)
class TokenizerConfig:
    """Everything that defines the weights. Its JSON is part of the model identity.

    The defaults are the shipped model's architecture (preset `default`, alias of `rt-fsq6-d5`).
    """

    name: str = "rt-fsq6-d5"
    stride: int = 8  # pixels per latent position along each axis (one pixel-unshuffle by 8)
    fsq: FSQConfig = field(default_factory=FSQConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    head_width: int = 32  # channels of the budget head (engine/budget_head.py)
    # tokens a position may carry (issue 23): 2 adds a second FSQ stage coding what the first leaves.
    # Left out of the JSON when 1, so the identities of one-stage models stay as they were.
    depth: int = 1

    def __post_init__(self) -> None:
        if self.head_width < 1:
            raise ValueError(f"TokenizerConfig.head_width must be >= 1, got {self.head_width}")
        if self.stride != 8:
            raise ValueError(f"TokenizerConfig.stride must be 8, got {self.stride}")
        if self.depth not in (1, 2):
            raise ValueError(f"TokenizerConfig.depth must be 1 or 2, got {self.depth}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(LEGACY_KEYS)
        d["encoder"].update(LEGACY_ENCODER_KEYS)
        d["decoder"].update(LEGACY_DECODER_KEYS)
        if not d["decoder"]["refine_width"]:  # the JSON of models without the refinement predates it
            del d["decoder"]["refine_width"], d["decoder"]["refine_blocks"]
        if d["depth"] == 1:  # nor those of one-stage models
            del d["depth"]
        return d

    def to_json(self) -> str:
        # sort_keys: the identity hash must not depend on field order
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TokenizerConfig:
        if d.get("arch") != LEGACY_KEYS["arch"]:
            # JSON with no "arch" is a v1 model's (livetok v5 and before): its networks are gone
            raise ValueError(f"not a model this livetok builds: arch {d.get('arch', 'v1')!r} (only 'rt' remains)")
        try:
            encoder, decoder = dict(d["encoder"]), dict(d["decoder"])
            for part, legacy in ((encoder, LEGACY_ENCODER_KEYS), (decoder, LEGACY_DECODER_KEYS)):
                for key, value in legacy.items():
                    got = part.pop(key, value)
                    if list(got) != value:  # a v1 field with a v1 value: configured nothing here
                        raise ValueError(f"{key} {got!r} is not {value}: a v1 model's config")
            return cls(
                name=str(d["name"]),
                stride=int(d["stride"]),
                fsq=FSQConfig(levels=tuple(d["fsq"]["levels"])),
                encoder=EncoderConfig(**encoder),
                decoder=DecoderConfig(**decoder),
                head_width=int(d.get("head_width", 32)),
                depth=int(d.get("depth", 1)),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a valid TokenizerConfig dict: {e}") from e


@dataclass(frozen=True)
class BudgetConfig:
    """How many tokens each frame gets (see engine/budget.py for the formulas).

    `rate` sets beta = rate * N: the mean budget of an average frame. `signal` is the frame's
    information proxy: `error`, the full-rate reconstruction error (InfoTok's -ELBO without its KL
    term, as in the paper), `gain`, the error with no tokens minus the full-rate error (what
    the tokens buy given the receiver's state: a conditional stand-in for the KL term, which
    vanishes on a static scene while the error does not), or `bits`, the code length of the frame's
    tokens under the entropy coder's models (the rate term of the ELBO, measured: no decoder pass
    at all; positions are then ranked by it). `normaliser` picks what "average"
    means: the population mean of the signal stored with the weights (InfoTok's E[ELBO]: a quiet
    stream spends less than a busy one) or the stream's own EMA over past frames (every stream
    then averages about rate * N: rate control in disguise).

    `rate` is therefore a population average, not a cap: with the population normaliser a busy
    clip keeps more than rate * N tokens per frame and a quiet one fewer. `max_rate` is the cap:
    no frame (keyframes included) keeps more than floor(max_rate * N) tokens, applied after the
    policy and after rate control's scale.

    `skip_fraction` is the codec's skip mode for the InfoTok family (`infotok`, `learned`): a
    non-keyframe whose *repeat gain* — the error of repeating the previous frame minus the frame's
    full-rate error (measured, or the budget head's estimate) — would buy fewer than skip_fraction * N
    tokens under InfoTok's rule sends none; the receiver then repeats its previous frame and its state
    does not change (engine/step.py). A still scene sharpens for a few frames and then costs a header a
    frame. 0 turns it off (every frame keeps at least the N/16 floor).
    """

    policy: Policy = "learned"  # the budget head: no router decode (bench rd: 5 points below the oracle)
    rate: float = 0.5
    max_rate: float | None = None  # hard per-frame ceiling on the kept fraction; None = no ceiling
    k_min_fraction: float = 1.0 / 16.0  # InfoTok's floor N/16
    # below this budget of repeat gain a frame is skipped (0: never). Between this line and the N/16
    # floor a frame is sent at the floor; N/24 keeps that band narrow (BENCHMARKS.md, "Static vs busy")
    skip_fraction: float = 1.0 / 24.0
    normaliser: Normaliser = "population"
    ema_decay: float = 0.9  # EMA normaliser: weight of the past
    signal: Signal = "gain"
    lam: float = 20.0  # oracle: MSE (0-255 units) one frame's worth of all N tokens is worth
    tau: float = 40.0  # search: the frame MSE (0-255 units) a frame must reach; 40 = 32.1 dB
    threshold: float = 0.01  # rdo: keep a position when its predicted gain (0-1 L1) exceeds this
    # the `bits` signal's population mean: code length per position (bits) of a frame's tokens under
    # the packet-v2 coder's models, over the training clips (shipped v6 weights streamed with the
    # default sender: 5.25 over 805 frames of 35 clips; v5 gave 4.66; `python -m livetok.bench.entropy
    # --population --frames 24 $(find ../shared/data/train -type f)`, docs/BENCHMARKS.md)
    population_bits: float = 5.25

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"unknown budget policy {self.policy!r}; choose one of {', '.join(POLICIES)}")
        if self.signal not in SIGNALS:
            raise ValueError(f"unknown signal {self.signal!r}; choose one of {', '.join(SIGNALS)}")
        if self.normaliser not in NORMALISERS:
            raise ValueError(f"unknown normaliser {self.normaliser!r}; choose one of {', '.join(NORMALISERS)}")
        if not 0.0 < self.rate <= 1.0:
            raise ValueError(f"rate must be in (0, 1], got {self.rate}")
        if self.max_rate is not None:
            if not 0.0 < self.max_rate <= 1.0:
                raise ValueError(f"max_rate must be in (0, 1], got {self.max_rate}")
            if self.policy in ("oracle", "search"):
                # their decode grids pick k themselves; a cap would silently change what they measure
                raise ValueError(f"max_rate caps the fixed, infotok, learned, rdo and prior policies, "
                                 f"not the benchmark arm {self.policy!r}")
        if not 0.0 <= self.k_min_fraction <= 1.0:
            raise ValueError(f"k_min_fraction must be in [0, 1], got {self.k_min_fraction}")
        if not 0.0 <= self.skip_fraction <= 1.0:
            raise ValueError(f"skip_fraction must be in [0, 1], got {self.skip_fraction}")
        if self.lam < 0 or self.tau <= 0 or self.threshold < 0:
            raise ValueError(f"lam and threshold must be >= 0 and tau > 0, got lam={self.lam}, tau={self.tau}, "
                             f"threshold={self.threshold}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclass(frozen=True)
class SenderConfig:
    """Run-time choices of the encoding side; the receiver needs none of them."""

    budget: BudgetConfig = field(default_factory=BudgetConfig)
    keyframe_interval: int = 300  # frames; 0 = only the first frame (and on request)
    # rate control (engine/rate_control.py): scales beta to meet a target; None = open loop
    rate_control: RateControlConfig | None = None
    # which positions fill the budget: highest full-rate error (InfoTok), highest gain, highest
    # zero-token error (surprise), or the first k in raster order (ElasticTok's prefix)
    ranking: Ranking = "gain"
    # packet format version: 3 is version 2's entropy-coded mask and tokens behind a header trimmed of what the
    # stream does not change (docs/PACKET.md §7), 2 repeats it in every packet (§6), 1 is the fixed-length
    # format. The engine never makes bytes: the stream layer's packetizer reads this
    wire: int = 3

    def __post_init__(self) -> None:
        if self.wire not in (1, 2, 3):
            raise ValueError(f"unknown packet version {self.wire!r}; choose 1, 2 or 3")
        if self.keyframe_interval < 0:
            raise ValueError(f"keyframe_interval must be >= 0, got {self.keyframe_interval}")
        if self.ranking not in RANKINGS:
            raise ValueError(f"unknown ranking {self.ranking!r}; choose one of {', '.join(RANKINGS)}")


def _positive(obj: object, *names: str) -> None:
    for n in names:
        v = getattr(obj, n)
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{type(obj).__name__}.{n} must be a positive int, got {v!r}")


# ---------------------------------------------------------------------------------------------
# presets

PRESETS: dict[str, TokenizerConfig] = {
    # DCVC-RT's shape (issue 13): pixel-unshuffle straight to stride 8, 1x1 -> depthwise 3x3 -> 1x1
    # blocks with a gated feed-forward, the decoder's stride-8 feature as the temporal context; the
    # 1000-code FSQ of the first models
    "rt": TokenizerConfig(name="rt", fsq=FSQConfig(levels=(8, 5, 5, 5)), decoder=DecoderConfig(blocks=3)),
    # the same with 6 FSQ dimensions (64000 codes, 16 bits per token)
    "rt-fsq6": TokenizerConfig(name="rt-fsq6", decoder=DecoderConfig(blocks=3)),
    # tiny: for unit tests and quick experiments (seconds on a CPU)
    "tiny": TokenizerConfig(
        name="tiny",
        fsq=FSQConfig(levels=(5, 5, 5)),
        encoder=EncoderConfig(width=24, blocks=1, kernel=3, mlp_ratio=1),
        decoder=DecoderConfig(width=24, blocks=1, kernel=3, mlp_ratio=1, state_channels=16),
        head_width=8,
    ),
}


# rt-fsq6 grown (engine/train.py grows rt-fsq6 weights into these, each new module starting as the identity):
# "-r" adds a stride-4 refinement after the stride-8 output (a cheap nonlinear upsampler: the stride-8
# output alone is a linear function of a 96-channel feature per 8x8 cell), "-d5" two more decoder blocks,
# "-d5f4" those five blocks with feed-forwards twice as wide (hidden 4x the width instead of 2x)
def _grown(base: str, name: str, **decoder: Any) -> TokenizerConfig:
    cfg = PRESETS[base]
    return dataclasses.replace(cfg, name=name, decoder=dataclasses.replace(cfg.decoder, **decoder))


PRESETS["rt-fsq6-r"] = _grown("rt-fsq6", "rt-fsq6-r", refine_width=24, refine_blocks=1)
PRESETS["rt-fsq6-d5"] = _grown("rt-fsq6", "rt-fsq6-d5", blocks=5)
PRESETS["rt-fsq6-d5f4"] = _grown("rt-fsq6", "rt-fsq6-d5f4", blocks=5, mlp_ratio=4)
# "-d5r2": rt-fsq6-d5 with residual token depth 2 (a second FSQ stage per position; issue 23). Grown
# from rt-fsq6-d5 weights, the second stage's embedding starts at zero: depth 2 decodes as depth 1.
PRESETS["rt-fsq6-d5r2"] = dataclasses.replace(PRESETS["rt-fsq6-d5"], name="rt-fsq6-d5r2", depth=2)
# "-d5e4": rt-fsq6-d5 with two more encoder blocks (4): the encoder is what turns a frame into the codes
# the decoder can use best (issue 23, fifteenth session: free codes hold a still frame ~1.3 dB above the
# encoder's). Grown from rt-fsq6-d5 weights, the new blocks start as the identity.
PRESETS["rt-fsq6-d5e4"] = dataclasses.replace(
    PRESETS["rt-fsq6-d5"], name="rt-fsq6-d5e4", encoder=dataclasses.replace(PRESETS["rt-fsq6-d5"].encoder, blocks=4))
# aliases: `default` is what ships (docs/MODEL_CARD.md; also `TokenizerConfig()`), `rt-tiny` the old
# name of `tiny`
PRESETS["default"] = PRESETS["rt-fsq6-d5"]
PRESETS["rt-tiny"] = PRESETS["tiny"]


def get_preset(name: str) -> TokenizerConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
