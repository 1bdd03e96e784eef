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

With the `bits` signal (the code length of each position's token under the entropy coder's models),
infotok, learned and prior run InfoTok's rule on those lengths, with no router decode.

Each policy is one function of (context, counted decoder) -> Routing; `POLICY_ROUTES` maps a policy's
name to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from . import budget as budget_lib
from .budget import BudgetState
from .config import BudgetConfig, Policy, SenderConfig
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
    r = POLICY_ROUTES[ctx.sender.budget.policy](ctx, _Decoder(decode))
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


def _budgets(ctx: RouteContext, signal: Tensor | None) -> tuple[list[int], tuple[BudgetState, ...]]:
    """Each row's budget under its policy's rule (engine/budget.py `frame_budget`) from a [B, N] signal
    map (None: the policy reads none)."""
    bud = ctx.sender.budget
    mean = signal.mean(dim=1).tolist() if signal is not None else [None] * ctx.batch
    out = [budget_lib.frame_budget(bud, ctx.n, ctx.states[i], mean_error=mean[i],
                                   population_error=ctx.population(bud.signal), keyframe=bool(ctx.key[i]))
           for i in range(ctx.batch)]
    return [k for k, _ in out], tuple(s for _, s in out)


class _RouterPass:
    """The router pass: one full-rate decode gives the per-position error map (InfoTok's ELBO proxy);
    the zero-token pass (gain and surprise) runs on first need."""

    def __init__(self, ctx: RouteContext, dec: _Decoder) -> None:
        self.ctx, self.dec = ctx, dec
        self.full = torch.ones(ctx.batch, ctx.n, dtype=torch.bool, device=ctx.x.device)
        self.recon, self.hidden = dec(self.full)
        self.error = position_error(ctx.x, self.recon, ctx.stride)
        self.gain: Tensor | None = None
        self.surprise: Tensor | None = None

    def zero_token_pass(self) -> tuple[Tensor, Tensor]:
        """(gain, surprise) [B, N] each, decoding once with no tokens."""
        if self.gain is None or self.surprise is None:
            # the frame's surprise given the past: the error of a decode with no tokens at all
            self.surprise = position_error(self.ctx.x, self.dec(~self.full)[0], self.ctx.stride)
            self.gain = (self.surprise - self.error).clamp_min(0.0)  # what the tokens buy, per position
        return self.gain, self.surprise

    def scores(self) -> Tensor:
        """[B, N] the sender's ranking of positions (higher is kept first)."""
        ranking = self.ctx.sender.ranking
        if ranking == "error":
            return self.error
        if ranking == "prefix":
            return prefix_scores(self.ctx.batch, self.ctx.n, self.ctx.x.device)
        gain, surprise = self.zero_token_pass()
        return gain if ranking == "gain" else surprise

    def keep(self, ks: list[int], new: tuple[BudgetState, ...]) -> Routing:
        """The frame at budgets `ks`: the full-rate pass itself when every row keeps all N."""
        ctx, dec = self.ctx, self.dec
        k = torch.tensor(ks, device=ctx.x.device)
        if bool((k == ctx.n).all()):
            return Routing(self.full, self.recon, self.hidden, new, self.error, self.gain, dec.count)
        mask = keep_mask(self.scores(), k)
        recon, hidden = _decode_or_hold(ctx, dec, mask)
        return Routing(mask, recon, hidden, new, self.error, self.gain, dec.count)


# -- the policies ------------------------------------------------------------------------------------


def _fixed(ctx: RouteContext, dec: _Decoder) -> Routing:
    """k = rate * N, positions by the sender's ranking."""
    if ctx.sender.ranking == "prefix":
        # ElasticTok's order with a fixed budget needs no router pass: a single decode
        ks, new = _budgets(ctx, None)
        mask = keep_mask(prefix_scores(ctx.batch, ctx.n, ctx.x.device), torch.tensor(ks, device=ctx.x.device))
        recon, hidden = dec(mask)
        return Routing(mask, recon, hidden, new, None, None, dec.count)
    rp = _RouterPass(ctx, dec)
    return rp.keep(*_budgets(ctx, rp.error))


def _infotok(ctx: RouteContext, dec: _Decoder) -> Routing:
    """InfoTok's rule on the measured signal (the router pass), with the skip mode on the measured
    repeat gain."""
    if ctx.sender.budget.signal == "bits":
        return _on_code_bits(ctx, dec)
    rp = _RouterPass(ctx, dec)
    ks, new = _budgets(ctx, rp.zero_token_pass()[0] if ctx.sender.budget.signal == "gain" else rp.error)
    rep = _repeat_error(ctx)  # measured: what the tokens buy over a repeat
    ks = _skips(ctx, ks, None if rep is None else rep - rp.error.mean(dim=1))
    return rp.keep(ks, new)


def _oracle(ctx: RouteContext, dec: _Decoder) -> Routing:
    """Decode at ORACLE_GRID's budgets (and N), keep per row the k minimising MSE(k) + lambda k/N."""
    rp = _RouterPass(ctx, dec)
    scores = rp.scores()
    b, n, x = ctx.batch, ctx.n, ctx.x
    lam_eff = torch.tensor([ctx.sender.budget.lam / max(s.scale, 1e-9) for s in ctx.states],
                           device=x.device)  # rate control
    best_cost = frame_mse(x, rp.recon, ctx.size) + lam_eff
    best_mask, best_recon, best_hidden = rp.full.clone(), rp.recon.clone(), rp.hidden.clone()
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
    return Routing(best_mask, best_recon, best_hidden, new, rp.error, rp.gain, dec.count)


def _search(ctx: RouteContext, dec: _Decoder) -> Routing:
    """Smallest k with MSE <= tau (tau / scale under rate control); full rate if none meets it."""
    rp = _RouterPass(ctx, dec)
    scores = rp.scores()
    b, n, x, bud = ctx.batch, ctx.n, ctx.x, ctx.sender.budget
    tau = torch.tensor([bud.tau / max(s.scale, 1e-9) for s in ctx.states], device=x.device)
    lo = torch.full((b,), budget_lib.k_min(bud, n), device=x.device)
    hi = torch.full((b,), n, device=x.device)  # hi always meets tau (or is N)
    best_recon, best_hidden = rp.recon.clone(), rp.hidden.clone()
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
    return Routing(mask, best_recon, best_hidden, new, rp.error, rp.gain, dec.count)


def _head(ctx: RouteContext, dec: _Decoder) -> Routing:
    """learned / rdo / prior: on the budget head's maps (learned and prior: on the code lengths with
    the bits signal)."""
    bud = ctx.sender.budget
    if bud.signal == "bits" and bud.policy != "rdo":
        return _on_code_bits(ctx, dec)
    if ctx.predicted is None:
        raise ValueError(f"policy {bud.policy!r} needs the budget head's predictions")
    return _predicted(ctx, ctx.predicted, dec)


def _on_code_bits(ctx: RouteContext, dec: _Decoder) -> Routing:
    """InfoTok's rule on the code length itself: no router decode, positions ranked by their bits
    (infotok then runs as learned on the lengths)."""
    if ctx.code_bits is None:
        raise ValueError("the bits signal needs the frame's code lengths (a sender with a coder state)")
    bud = ctx.sender.budget
    policy: Policy = "learned" if bud.policy == "infotok" else bud.policy
    bits_ctx = replace(ctx, sender=replace(ctx.sender, budget=replace(bud, policy=policy)))
    return _predicted(bits_ctx, (ctx.code_bits, ctx.code_bits), dec)


def _learned_budget(ctx: RouteContext, i: int, mean: float, row: Tensor) -> tuple[int, BudgetState]:
    """infotok's rule on the predicted signal's mean."""
    bud = ctx.sender.budget
    return budget_lib.frame_budget(replace(bud, policy="infotok"), ctx.n, ctx.states[i], mean_error=mean,
                                   population_error=ctx.population(bud.signal), keyframe=bool(ctx.key[i]))


def _prior_budget(ctx: RouteContext, i: int, mean: float, row: Tensor) -> tuple[int, BudgetState]:
    """From the stream's past alone; this frame's mean only enters the EMA for the next."""
    bud, key = ctx.sender.budget, bool(ctx.key[i])
    k = budget_lib.prior_budget(bud, ctx.n, ctx.states[i], population_error=ctx.population(bud.signal), keyframe=key)
    return k, budget_lib.observe(bud, ctx.states[i], mean_error=mean, keyframe=key)


def _rdo_budget(ctx: RouteContext, i: int, mean: float, row: Tensor) -> tuple[int, BudgetState]:
    """Every position worth its cost (predicted gain over threshold / scale), at least the floor."""
    bud, n, state = ctx.sender.budget, ctx.n, ctx.states[i]
    thr = bud.threshold / max(state.scale, 1e-9)
    k = n if bool(ctx.key[i]) else max(budget_lib.k_min(bud, n), int((row > thr).sum()))
    return min(k, budget_lib.k_max(bud, n)), replace(state, frames=state.frames + 1)


# (context, row i, the row's mean signal, its [N] signal map) -> (k, the row's next router state)
_HEAD_BUDGETS: dict[Policy, Callable[[RouteContext, int, float, Tensor], tuple[int, BudgetState]]] = {
    "learned": _learned_budget, "prior": _prior_budget, "rdo": _rdo_budget,
}


def _predicted(ctx: RouteContext, predicted: tuple[Tensor, Tensor], dec: _Decoder) -> Routing:
    """Route on per-position maps (error, gain) with no router decode: the only decoder pass is the
    real one."""
    bud = ctx.sender.budget
    sig = predicted[1] if bud.signal in ("gain", "bits") else predicted[0]
    b, n = sig.shape[0], ctx.n
    mean = sig.mean(dim=1).tolist()
    row_budget = _HEAD_BUDGETS[bud.policy]
    ks: list[int] = []
    new: list[BudgetState] = []
    for i in range(b):
        k, st = row_budget(ctx, i, mean[i], sig[i])
        ks.append(k)
        new.append(st)
    rep = _repeat_error(ctx) if _estimates_skips(bud) else None
    if rep is not None:
        # estimated, with no decode: what the scene changed since the shown frame (its repeat error
        # minus the error it had) plus what the head says tokens would buy over the shown frame
        before = torch.tensor([s.shown_error for s in ctx.states], device=rep.device, dtype=rep.dtype)
        ks = _skips(ctx, ks, (rep - before).clamp_min(0.0) + predicted[1].mean(dim=1))
    k_t = torch.tensor(ks, device=sig.device)
    mask = keep_mask(prefix_scores(b, n, sig.device) if ctx.sender.ranking == "prefix" else sig, k_t)
    recon, hidden = _decode_or_hold(ctx, dec, mask)
    return Routing(mask, recon, hidden, tuple(new), predicted[0], predicted[1], dec.count)


# policy name -> the function that routes a frame under it
POLICY_ROUTES: dict[Policy, Callable[[RouteContext, _Decoder], Routing]] = {
    "fixed": _fixed,
    "infotok": _infotok,
    "oracle": _oracle,
    "search": _search,
    "learned": _head,
    "rdo": _head,
    "prior": _head,
}
