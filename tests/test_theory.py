"""Exact numerical check of InfoTok (arXiv 2512.16975) Theorem 2.2 on its toy p = (1/2, 1/4, 1/8, 1/8), C = 2."""

from __future__ import annotations

import math

import pytest

from tests.theory import (
    elbo_lengths,
    elbo_loss,
    entropy,
    enumerate_prefix_codes,
    expected_length,
    huffman_lengths,
    minimizers,
    uniform_loss,
    uniform_optimum,
)

P = (0.5, 0.25, 0.125, 0.125)
H = 1.75


def _h2(q: float) -> float:
    return entropy((q, 1 - q))


def _geometric(m: int) -> tuple[float, ...]:
    """p_j = 2^-j for j < m, the last item takes the remaining 2^-(m-1); m = 4 is the toy."""
    return (*(2.0**-j for j in range(1, m)), 2.0 ** -(m - 1))


def _profiles(codes: list[tuple[str, ...]]) -> set[tuple[int, ...]]:
    return {tuple(len(w) for w in c) for c in codes}


def test_enumeration_counts() -> None:
    # Catalan(n-1) ordered tree shapes times n! leaf labellings, all distinct: 1, 2, 12, 120, 1680
    for n, count in [(1, 1), (2, 2), (3, 12), (4, 120), (5, 1680)]:
        codes = enumerate_prefix_codes(n)
        assert len(codes) == len(set(codes)) == count
    codes = enumerate_prefix_codes(4)
    assert sum(_profiles([c]) == {(2, 2, 2, 2)} for c in codes) == 24  # the rest (96) are depth-(1, 2, 3, 3) chains
    for c in codes:  # every one is a complete prefix code
        assert not any(a != b and b.startswith(a) for a in c for b in c)
        assert sum(2.0 ** -len(w) for w in c) == 1.0


def test_huffman_and_entropy() -> None:
    assert huffman_lengths((0.5, 0.25, 0.125, 0.125)) == (1, 2, 3, 3)
    assert entropy(P) == H
    assert elbo_lengths(P) == (1, 2, 3, 3)  # beta = H makes N_x = -log2 p(x) exactly


@pytest.mark.parametrize("n_max", [2, 3, 4, 5])
def test_uniform_minimizer_is_balanced(n_max: int) -> None:
    codes = enumerate_prefix_codes(4)
    best, argmin = minimizers(codes, lambda c: uniform_loss(c, P, n_max))
    # 16 minimizers: all lengths 2, the 1/2 item paired under the first token with a 1/8 item
    assert len(argmin) == 16
    assert _profiles(argmin) == {(2, 2, 2, 2)}
    assert {expected_length(c, P) for c in argmin} == {2.0}
    for c in argmin:
        assert c[0][0] != c[1][0] and {c[2][0], c[3][0]} == {"0", "1"}
    # L = H(X | first token) / n_max = (1.75 - h(5/8)) / n_max; 0.265189 at n_max = 3
    assert best == pytest.approx((H - _h2(5 / 8)) / n_max, abs=1e-12)
    # the best Huffman-shaped code loses (H(X|B1) + H(X|B1,B2)) / n_max = (0.75 + 0.25) / n_max, 1/3 at n_max = 3
    huff = min(uniform_loss(c, P, n_max) for c in codes if _profiles([c]) == {(1, 2, 3, 3)})
    assert huff == pytest.approx(1.0 / n_max, abs=1e-12)
    assert expected_length(argmin[0], P) / H == pytest.approx(8 / 7)  # kappa = 1.142857 on the toy


def test_uniform_degenerate_n_max_1() -> None:
    # N = 1 only: the loss sees the first split alone; {1/2} vs rest (1 bit) beats any balanced split, so the
    # 24 minimizers put the 1/2 item at depth 1 (0.75 bits), the Huffman code among them: no bias at n_max = 1
    best, argmin = minimizers(enumerate_prefix_codes(4), lambda c: uniform_loss(c, P, 1))
    assert best == pytest.approx(0.75)
    assert len(argmin) == 24
    assert {expected_length(c, P) for c in argmin} == {1.75, 1.875}


def test_elbo_minimizer_is_huffman() -> None:
    codes = enumerate_prefix_codes(4)
    lengths = elbo_lengths(P)
    best, argmin = minimizers(codes, lambda c: elbo_loss(c, P, lengths))
    # zero loss needs len(x) <= N_x; Kraft (sum 2^-N_x = 1) forces equality, so no tie-break is needed
    assert best == 0.0
    assert len(argmin) == 8
    assert _profiles(argmin) == {(1, 2, 3, 3)}
    assert {expected_length(c, P) for c in argmin} == {H}
    balanced = min(elbo_loss(c, P, lengths) for c in codes if _profiles([c]) == {(2, 2, 2, 2)})
    assert balanced == pytest.approx(0.5 * math.log2(5 / 4))  # 0.160964: the 1/2 item is cut short


@pytest.mark.parametrize("m", [4, 5])
def test_dp_matches_brute_force(m: int) -> None:
    p = _geometric(m)
    codes = enumerate_prefix_codes(m)
    best, argmin = minimizers(codes, lambda c: uniform_loss(c, p, m - 1))
    s, lo, hi = uniform_optimum(p)
    assert s / (m - 1) == pytest.approx(best, abs=1e-12)
    lens = [expected_length(c, p) for c in argmin]
    assert (min(lens), max(lens)) == (lo, hi)
    # the ELBO router recovers Huffman here too: expected length exactly H
    _, elbo_argmin = minimizers(codes, lambda c: elbo_loss(c, p, elbo_lengths(p)))
    assert {expected_length(c, p) for c in elbo_argmin} == {entropy(p)}
    assert _profiles(elbo_argmin) == {huffman_lengths(p)}


# expected length shared by all uniform minimizers (n_max >= every depth), for p = _geometric(m)
GEOMETRIC_UNIFORM_LENGTH = {
    3: 1.5,
    4: 2.0,
    5: 2.125,
    6: 2.25,
    7: 2.5,
    8: 3.0,
    9: 3.01953125,
    10: 3.02734375,
    11: 3.03125,
    12: 3.0625,
}


def test_geometric_uniform_bias_grows() -> None:
    ratios = {}
    for m, length in GEOMETRIC_UNIFORM_LENGTH.items():
        p = _geometric(m)
        h = entropy(p)
        assert h == pytest.approx(2 - 2.0 ** -(m - 2))  # bounded by 2 bits
        _, lo, hi = uniform_optimum(p)
        assert lo == hi == pytest.approx(length, abs=1e-12)
        ratios[m] = lo / h
    # E[N] / H: 1.0, 1.143, 1.133, 1.161, 1.270, 1.512, 1.516, 1.517, 1.517, 1.532 -- not monotone (m = 5 dips),
    # but non-decreasing from m = 5 on and above 1.5 from m = 8; a weak form of "E[N_x] >= kappa H" for growing kappa
    assert ratios[3] == 1.0 and ratios[5] < ratios[4]
    assert all(ratios[m + 1] >= ratios[m] for m in range(5, 12))
    assert ratios[12] > 1.53
