"""An FSQ token index as a mixed-radix number: digit d (0..levels[d]-1) has place value basis[d], with
basis[0] = 1 and basis[d] = levels[0] * ... * levels[d-1].

The one copy of this arithmetic: FSQ (engine/fsq.py, and through it the export graphs) and the packet's
entropy coder (stream/wire/entropy.py, numpy) call it. No torch import, so the wire format stays free of
torch; the functions take Python ints, numpy arrays and torch tensors alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, Self, TypeVar, cast

__all__ = ["digit_basis", "digits_to_index", "index_to_digits"]


class _Integers(Protocol):
    """What the arithmetic needs: an int, an integer numpy array or an integer tensor."""

    def __floordiv__(self, other: int, /) -> Any: ...
    def __mod__(self, other: int, /) -> Any: ...
    def __mul__(self, other: int, /) -> Any: ...
    def __add__(self, other: Self, /) -> Any: ...


N = TypeVar("N", bound=_Integers)


def digit_basis(levels: Sequence[int]) -> tuple[int, ...]:
    """Place values of the digits: ``index = sum(digit[d] * basis[d])``, ``basis[0] = 1``."""
    basis, b = [], 1
    for lv in levels:
        basis.append(b)
        b *= int(lv)
    return tuple(basis)


def index_to_digits(index: N, levels: Sequence[int]) -> list[N]:
    """The digits of ``index`` (any shape), one per level, each of ``index``'s shape and type."""
    return [cast(N, (index // b) % int(lv)) for b, lv in zip(digit_basis(levels), levels, strict=True)]


def digits_to_index(digits: Sequence[N], levels: Sequence[int]) -> N:
    """The inverse of `index_to_digits`: ``sum(digits[d] * basis[d])``."""
    if len(digits) != len(levels):
        raise ValueError(f"{len(digits)} digits for {len(levels)} FSQ levels")
    basis = digit_basis(levels)
    index = cast(N, digits[0] * basis[0])
    for digit, b in zip(digits[1:], basis[1:], strict=True):
        index = cast(N, index + digit * b)
    return index
