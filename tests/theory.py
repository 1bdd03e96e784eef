"""Exact toy check of InfoTok (arXiv 2512.16975) Theorem 2.2: a data-agnostic (uniform) length sampler
biases the loss minimizer towards balanced codes, while the ELBO router (Eq. 4) recovers Huffman lengths.

A "tokenizer" with codebook C = 2 is a binary prefix code: a full binary tree with one item per leaf.
Decoding from the first N tokens of x's codeword gives the posterior over the items sharing that prefix,
so loss(x, N) = -log2(p(x) / P(prefix_N(x))), which is 0 once N >= len(codeword(x)).

- Uniform sampler (ElasticTok): N ~ Uniform{1..n_max} independent of x; L = sum_x p(x) mean_N loss(x, N).
- ELBO router: N_x = beta * (-log2 p(x)) / E[-log2 p]; with beta = H this is N_x = -log2 p(x).
  Non-integer N_x is rounded up (the budget is never below the target). L = sum_x p(x) loss(x, N_x).

With n_max >= every codeword length, sum_N H(X | prefix_N) = sum_v depth(v) P(v) h(v) over internal
nodes v (h = entropy of the split at v): the paper's "L(T) = sum_d d f_d". A subtree's total
sum_v P(v) h(v) = P(A) H(X | X in A) does not depend on its shape, which gives the subset dynamic
programme in `uniform_optimum` (exact for larger M, 3^M work).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Sequence

Code = tuple[str, ...]  # codeword of item i at position i


def _shapes(n: int) -> list[list[str]]:
    """All ordered full binary trees with n leaves, as left-to-right leaf codewords (Catalan(n-1) of them)."""
    if n == 1:
        return [[""]]
    return [
        ["0" + w for w in left] + ["1" + w for w in right]
        for k in range(1, n)
        for left in _shapes(k)
        for right in _shapes(n - k)
    ]


def enumerate_prefix_codes(n_items: int) -> list[Code]:
    """Every full binary prefix code on n_items labelled items: Catalan(n-1) * n! distinct codeword tuples."""
    codes: list[Code] = []
    for leaves in _shapes(n_items):
        for perm in itertools.permutations(range(n_items)):
            code = [""] * n_items
            for leaf, item in zip(leaves, perm, strict=True):
                code[item] = leaf
            codes.append(tuple(code))
    return codes


def entropy(p: Sequence[float]) -> float:
    """Shannon entropy in bits (C = 2)."""
    return -sum(q * math.log2(q) for q in p if q > 0)


def expected_length(code: Code, p: Sequence[float]) -> float:
    return sum(q * len(w) for q, w in zip(p, code, strict=True))


def prefix_loss(code: Code, p: Sequence[float], x: int, n: int) -> float:
    """-log2 P(x | first n tokens of x's codeword); 0 once n >= len(codeword(x))."""
    prefix = code[x][:n]
    mass = sum(q for q, w in zip(p, code, strict=True) if w.startswith(prefix))
    return -math.log2(p[x] / mass) if mass > p[x] else 0.0


def uniform_loss(code: Code, p: Sequence[float], n_max: int) -> float:
    """ElasticTok objective: N ~ Uniform{1..n_max}, independent of x."""
    return sum(q * sum(prefix_loss(code, p, x, n) for n in range(1, n_max + 1)) / n_max for x, q in enumerate(p))


def elbo_lengths(p: Sequence[float], beta: float | None = None) -> tuple[int, ...]:
    """InfoTok Eq. 4 with the exact ELBO -log2 p(x): N_x = ceil(beta * -log2 p(x) / H); beta defaults to H."""
    h = entropy(p)
    b = h if beta is None else beta
    return tuple(math.ceil(b * -math.log2(q) / h - 1e-9) for q in p)


def elbo_loss(code: Code, p: Sequence[float], lengths: Sequence[int]) -> float:
    """Router objective: each item x is decoded from exactly its routed length N_x."""
    return sum(q * prefix_loss(code, p, x, n) for x, (q, n) in enumerate(zip(p, lengths, strict=True)))


def minimizers(
    codes: Sequence[Code], objective: Callable[[Code], float], tol: float = 1e-12
) -> tuple[float, list[Code]]:
    """The minimum of objective over codes and every code attaining it (within tol)."""
    values = [objective(c) for c in codes]
    best = min(values)
    return best, [c for c, v in zip(codes, values, strict=True) if v <= best + tol]


def huffman_lengths(p: Sequence[float]) -> tuple[int, ...]:
    """Binary Huffman codeword lengths (ties broken by insertion order, deterministic)."""
    heap: list[tuple[float, int, list[int]]] = [(q, i, [i]) for i, q in enumerate(p)]
    heapq.heapify(heap)
    lengths = [0] * len(p)
    counter = len(p)
    while len(heap) > 1:
        q1, _, a = heapq.heappop(heap)
        q2, _, b = heapq.heappop(heap)
        for i in a + b:
            lengths[i] += 1
        heapq.heappush(heap, (q1 + q2, counter, a + b))
        counter += 1
    return tuple(lengths)


def uniform_optimum(p: Sequence[float], tol: float = 1e-12) -> tuple[float, float, float]:
    """Exact min over all codes of S(T) = sum_v depth(v) P(v) h(v) = n_max * uniform_loss (n_max >= depth),
    with the smallest and largest expected length among the minimizers. Subset DP, 3^len(p) work."""
    m = len(p)
    mass = [sum(p[i] for i in range(m) if s >> i & 1) for s in range(1 << m)]
    info = [sum(-p[i] * math.log2(p[i] / mass[s]) for i in range(m) if s >> i & 1) for s in range(1 << m)]
    best: list[tuple[float, float, float]] = [(0.0, 0.0, 0.0)] * (1 << m)  # (S, min E[len], max E[len]) per subset
    for s in range(1, 1 << m):
        if s & (s - 1) == 0:
            continue
        cands = []
        sub = (s - 1) & s
        while sub:
            if sub < s ^ sub:  # each unordered split once
                a, b = best[sub], best[s ^ sub]
                cost = info[sub] + info[s ^ sub] + a[0] + b[0]  # children one level deeper: + P(A) H(A) each
                cands.append((cost, a[1] + b[1] + mass[s], a[2] + b[2] + mass[s]))
            sub = (sub - 1) & s
        low = min(c[0] for c in cands)
        tied = [c for c in cands if c[0] <= low + tol]
        best[s] = (low, min(c[1] for c in tied), max(c[2] for c in tied))
    return best[(1 << m) - 1]
