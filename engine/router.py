"""Routing one frame: how many tokens (the budget policy) and which positions (the ranking).

Every decoder pass the sender runs is counted (`decodes`), so the router's cost is measured, not
claimed. Policies:

- fixed:   k = rate * N.
- infotok: k = clip(beta * s_t / E[s], N/16, N) (InfoTok Eq. 4, causal): s_t the frame's router
           signal, the full-rate error (the paper) or the gain of the tokens over none (livetok).
- oracle:  decode at a grid of budgets, keep the k minimising MSE(k) + lambda * k/N (an upper
           bound for the benchmark, like the paper's "Optimal" row; ~10 decodes).
- search:  ElasticTok's inference: binary search for the smallest k whose frame MSE <= tau
           (about log2 N + 1 decodes).

infotok and learned also skip: a frame whose repeat gain (error of repeating the previous frame minus
its full-rate error) is under the skip threshold sends no tokens and is not decoded at all; the
runtime then keeps the previous reconstruction and state (engine/budget.py `skip_frame`).

With the budget head's predicted maps (engine/budget_head.py), zero extra decodes:
- learned: infotok's rule on the predicted signal, positions ranked by it.
- rdo:     the Lagrangian choice on the predicted gains: keep every position whose predicted gain
           exceeds `threshold` (D(k) + lambda k is minimised by exactly that set when gains add up).
- prior:   the budget from the stream's past alone (EMA of past signals), decided before the frame
           is seen; positions ranked by the predicted map.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from . import budget as budget_lib
from .budget import BudgetState
from .config import BudgetConfig, SenderConfig
from .selection import keep_mask, position_error, prefix_scores
from .step import hold_where, skipped

DecodeFn = Callable[[Tensor], tuple[Tensor, Tensor]]

# budgets the oracle tries, as fractions of N (N itself is the full-rate pass, already decoded)
ORACLE_GRID = (1 / 16, 1 / 8, 1 / 4, 3 / 8, 1 / 2, 5 / 8, 3 / 4, 7 / 8)


@dataclass
class Routing:
    mask: Tensor  # [B, N] bool
    recon: Tensor  # [B, 3, H, W] the decode with `mask`
    hidden: Tensor
    budgets: tuple[BudgetState, ...]
    error: Tensor | None  # [B, N] full-rate error, when computed
    gain: Tensor | None  # [B, N] zero-token error minus full-rate error, when computed
    decodes: int


def frame_mse(x: Tensor, recon: Tensor, size: tuple[int, int]) -> Tensor:
    """[B] mean squared error in 0-255 units over the frame's real pixels (padding excluded)."""
    h, w = size
    return ((x[..., :h, :w] - recon[..., :h, :w]) * 127.5).pow(2).mean(dim=(1, 2, 3))


class _Decoder:
    """The frame's decoder passes, counted."""

    def __init__(self, decode: DecodeFn) -> None:
        self._decode = decode
        self.count = 0

    def __call__(self, mask: Tensor) -> tuple[Tensor, Tensor]:
        self.count += 1
        return self._decode(mask)


@dataclass(frozen=True)
class RouteContext:
    """Everything the router reads about one frame, besides its decoder.

    Attributes:
        x: [B, 3, Hp, Wp] padded frame in [-1, 1].
        size: (height, width) before padding.
        stride: pixels per latent position along a side.
        sender: policy, rate, ranking.
        states: one router state per stream.
        key: [B] bool keyframes.
        population: signal name -> its population mean stored with the weights.
        predicted: the budget head's (error, gain) maps, [B, N] each (needed by learned/rdo/prior).
        code_bits: [B, N] code length (bits) of each position's token under the entropy coder's
            models, were it kept (needed by the `bits` signal).
        prev: the (reconstruction, hidden) state the frame is coded from (after keyframe resets):
            what a skipped frame repeats. None: no skips.
    """

    x: Tensor
    size: tuple[int, int]
    stride: int
    sender: SenderConfig
    states: tuple[BudgetState, ...]
    key: Tensor
    population: Callable[[str], float]
    predicted: tuple[Tensor, Tensor] | None = None
    code_bits: Tensor | None = None
    prev: tuple[Tensor, Tensor] | None = None

    @property
    def batch(self) -> int:
        return int(self.x.shape[0])

    @property
    def n(self) -> int:
        """Latent positions of the frame."""
        return (self.x.shape[-2] // self.stride) * (self.x.shape[-1] // self.stride)


@dataclass(frozen=True)
class _FullRate:
    """The router pass: the full-rate decode and the per-position signals it gave."""

    mask: Tensor
    recon: Tensor
    hidden: Tensor
    error: Tensor
    gain: Tensor | None


def _repeat_error(ctx: RouteContext) -> Tensor | None:
    """[B] mean position error of repeating the previous reconstruction on this frame (None: no state)."""
    return None if ctx.prev is None else position_error(ctx.x, ctx.prev[0], ctx.stride).mean(dim=1)


def _skips(ctx: RouteContext, ks: list[int], repeat_gain: Tensor | None) -> list[int]:
    """`ks` with 0 for every frame the skip mode drops; `repeat_gain` [B] measured or estimated."""
    if repeat_gain is None:
        return ks
    gain, pop, bud = repeat_gain.tolist(), ctx.population("gain"), ctx.sender.budget
    return [0 if budget_lib.skip_frame(bud, ctx.n, ctx.states[i], repeat_gain=gain[i], population_gain=pop,
                                       keyframe=bool(ctx.key[i])) else k for i, k in enumerate(ks)]


def _estimates_skips(bud: BudgetConfig) -> bool:
    """Whether the skip rule runs on the learned estimate, the one reader of `BudgetState.shown_error`
    (the head's gain map is in its units; the error and bits signals are not)."""
    return bud.policy == "learned" and bud.signal == "gain" and bud.skip_fraction > 0


def _decode_or_hold(ctx: RouteContext, dec: _Decoder, mask: Tensor) -> tuple[Tensor, Tensor]:
    """The frame's decode, or none when every row is skipped (`route` keeps their state)."""
    if ctx.prev is not None and bool(skipped(mask, ctx.key).all()):
        return ctx.prev
    return dec(mask)


def route(ctx: RouteContext, decode: DecodeFn) -> Routing:
    """Choose the keep-mask of one frame and decode it; `decode`: mask [B, N] -> (recon, hidden), the
    decoder on this frame's codes and state. The returned state is the one the frame leaves: a skipped
    row keeps `ctx.prev` (engine/step.py `hold_where`)."""
    r = _route(ctx, decode)
    if ctx.prev is None:
        return r
    skip = skipped(r.mask, ctx.key)
    if bool(skip.any()):
        recon, hidden = hold_where(skip, ctx.prev, (r.recon, r.hidden))
        r = replace(r, recon=recon, hidden=hidden)
    if _estimates_skips(ctx.sender.budget):
        # what each receiver now shows, against this frame: the next frame's skip estimate reads it
        shown = position_error(ctx.x, r.recon, ctx.stride).mean(dim=1).tolist()
        r = replace(r, budgets=tuple(replace(s, shown_error=e) for s, e in zip(r.budgets, shown, strict=True)))
    return r


def _route(ctx: RouteContext, decode: DecodeFn) -> Routing:
    b, n, dev = ctx.batch, ctx.n, ctx.x.device
    x, sender, states, key, stride = ctx.x, ctx.sender, ctx.states, ctx.key, ctx.stride
    dec = _Decoder(decode)
    bud = sender.budget
    full = torch.ones(b, n, dtype=torch.bool, device=dev)

    def budgets(signal: Tensor | None) -> tuple[list[int], tuple[BudgetState, ...]]:
        mean = signal.mean(dim=1).tolist() if signal is not None else [None] * b
        out = [budget_lib.frame_budget(bud, n, states[i], mean_error=mean[i],
                                       population_error=ctx.population(bud.signal), keyframe=bool(key[i]))
               for i in range(b)]
        return [k for k, _ in out], tuple(s for _, s in out)

    if bud.signal == "bits" and bud.policy in ("infotok", "learned", "prior"):
        # InfoTok's rule on the code length itself: no router decode, positions ranked by their bits
        if ctx.code_bits is None:
            raise ValueError("the bits signal needs the frame's code lengths (a sender with a coder state)")
        policy = "learned" if bud.policy == "infotok" else bud.policy
        bits_ctx = replace(ctx, sender=replace(sender, budget=replace(bud, policy=policy)))
        return _predicted(bits_ctx, (ctx.code_bits, ctx.code_bits), dec)

    if bud.policy in ("learned", "rdo", "prior"):
        if ctx.predicted is None:
            raise ValueError(f"policy {bud.policy!r} needs the budget head's predictions")
        return _predicted(ctx, ctx.predicted, dec)

    if bud.policy == "fixed" and sender.ranking == "prefix":
        # ElasticTok's order with a fixed budget needs no router pass: a single decode
        ks, new = budgets(None)
        mask = keep_mask(prefix_scores(b, n, dev), torch.tensor(ks, device=dev))
        recon, hidden = dec(mask)
        return Routing(mask, recon, hidden, new, None, None, dec.count)

    # the router pass: one full-rate decode gives the per-position error map (InfoTok's ELBO proxy)
    recon_full, hidden_full = dec(full)
    err = position_error(x, recon_full, stride)
    gain: Tensor | None = None
    surprise: Tensor | None = None

    def zero_token_pass() -> None:
        nonlocal gain, surprise
        if surprise is None:
            # the frame's surprise given the past: the error of a decode with no tokens at all
            surprise = position_error(x, dec(~full)[0], stride)
            gain = (surprise - err).clamp_min(0.0)  # what the tokens buy, per position

    def scores() -> Tensor:
        if sender.ranking == "error":
            return err
        if sender.ranking == "prefix":
            return prefix_scores(b, n, dev)
        zero_token_pass()
        assert gain is not None and surprise is not None
        return gain if sender.ranking == "gain" else surprise

    if bud.policy in ("fixed", "infotok"):
        if bud.policy == "infotok" and bud.signal == "gain":
            zero_token_pass()
        ks, new = budgets(gain if bud.policy == "infotok" and bud.signal == "gain" else err)
        if bud.policy == "infotok":
            rep = _repeat_error(ctx)  # measured: what the tokens buy over a repeat
            ks = _skips(ctx, ks, None if rep is None else rep - err.mean(dim=1))
        k = torch.tensor(ks, device=dev)
        if bool((k == n).all()):
            return Routing(full, recon_full, hidden_full, new, err, gain, dec.count)
        mask = keep_mask(scores(), k)
        recon, hidden = _decode_or_hold(ctx, dec, mask)
        return Routing(mask, recon, hidden, new, err, gain, dec.count)

    if bud.policy in ("oracle", "search"):
        ranked = scores()
        first = _FullRate(full, recon_full, hidden_full, err, gain)
        return _oracle(ctx, dec, ranked, first) if bud.policy == "oracle" else _search(ctx, dec, ranked, first)
    raise ValueError(f"unknown budget policy {bud.policy!r}")


def _oracle(ctx: RouteContext, dec: _Decoder, scores: Tensor, first: _FullRate) -> Routing:
    b, n, x = ctx.batch, ctx.n, ctx.x
    lam_eff = torch.tensor([ctx.sender.budget.lam / max(s.scale, 1e-9) for s in ctx.states],
                           device=x.device)  # rate control
    best_cost = frame_mse(x, first.recon, ctx.size) + lam_eff
    best_mask, best_recon, best_hidden = first.mask.clone(), first.recon.clone(), first.hidden.clone()
    for frac in ORACLE_GRID:
        k = max(1, round(frac * n))
        if k >= n:
            continue
        mask = keep_mask(scores, torch.full((b,), k, device=x.device))
        recon, hidden = dec(mask)
        cost = frame_mse(x, recon, ctx.size) + lam_eff * (k / n)
        better = cost < best_cost
        best_cost = torch.where(better, cost, best_cost)
        best_mask[better] = mask[better]
        best_recon[better] = recon[better]
        best_hidden[better] = hidden[better]
    new = tuple(replace(s, frames=s.frames + 1) for s in ctx.states)
    return Routing(best_mask, best_recon, best_hidden, new, first.error, first.gain, dec.count)


def _search(ctx: RouteContext, dec: _Decoder, scores: Tensor, first: _FullRate) -> Routing:
    """Smallest k with MSE <= tau (tau / scale under rate control); full rate if none meets it."""
    b, n, x, bud = ctx.batch, ctx.n, ctx.x, ctx.sender.budget
    tau = torch.tensor([bud.tau / max(s.scale, 1e-9) for s in ctx.states], device=x.device)
    lo = torch.full((b,), budget_lib.k_min(bud, n), device=x.device)
    hi = torch.full((b,), n, device=x.device)  # hi always meets tau (or is N)
    best_recon, best_hidden = first.recon.clone(), first.hidden.clone()
    while bool((lo < hi).any()):
        mid = torch.where(lo < hi, (lo + hi) // 2, hi)
        mask = keep_mask(scores, mid)
        recon, hidden = dec(mask)
        ok = (frame_mse(x, recon, ctx.size) <= tau) & (lo < hi)
        best_recon[ok], best_hidden[ok] = recon[ok], hidden[ok]
        hi = torch.where(ok, mid, hi)
        lo = torch.where(~ok & (lo < hi), mid + 1, lo)
    mask = keep_mask(scores, hi)
    # rows whose answer is a probed k already hold its decode; hi = N rows hold the full-rate pass
    new = tuple(replace(s, frames=s.frames + 1) for s in ctx.states)
    return Routing(mask, best_recon, best_hidden, new, first.error, first.gain, dec.count)


def _predicted(ctx: RouteContext, predicted: tuple[Tensor, Tensor], dec: _Decoder) -> Routing:
    """learned / rdo / prior: route on the head's maps; the only decoder pass is the real one."""
    sender, states, key, n = ctx.sender, ctx.states, ctx.key, ctx.n
    bud = sender.budget
    pop = ctx.population(bud.signal)
    sig = predicted[1] if bud.signal in ("gain", "bits") else predicted[0]
    b = sig.shape[0]
    mean = sig.mean(dim=1).tolist()
    ks: list[int] = []
    new: list[BudgetState] = []
    for i in range(b):
        if bud.policy == "learned":
            k, st = budget_lib.frame_budget(replace(bud, policy="infotok"), n, states[i], mean_error=mean[i],
                                            population_error=pop, keyframe=bool(key[i]))
        elif bud.policy == "prior":
            k = budget_lib.prior_budget(bud, n, states[i], population_error=pop, keyframe=bool(key[i]))
            st = budget_lib.observe(bud, states[i], mean_error=mean[i], keyframe=bool(key[i]))
        else:  # rdo: every position worth its cost, at least the floor
            thr = bud.threshold / max(states[i].scale, 1e-9)
            k = n if bool(key[i]) else max(budget_lib.k_min(bud, n), int((sig[i] > thr).sum()))
            k = min(k, budget_lib.k_max(bud, n))
            st = replace(states[i], frames=states[i].frames + 1)
        ks.append(k)
        new.append(st)
    rep = _repeat_error(ctx) if _estimates_skips(bud) else None
    if rep is not None:
        # estimated, with no decode: what the scene changed since the shown frame (its repeat error
        # minus the error it had) plus what the head says tokens would buy over the shown frame
        before = torch.tensor([s.shown_error for s in states], device=rep.device, dtype=rep.dtype)
        ks = _skips(ctx, ks, (rep - before).clamp_min(0.0) + predicted[1].mean(dim=1))
    k_t = torch.tensor(ks, device=sig.device)
    mask = keep_mask(prefix_scores(b, n, sig.device) if sender.ranking == "prefix" else sig, k_t)
    recon, hidden = _decode_or_hold(ctx, dec, mask)
    return Routing(mask, recon, hidden, tuple(new), predicted[0], predicted[1], dec.count)
