"""Typed results: the frozen dataclasses that functions return instead of `dict[str, Any]`, and the
one path from them to the JSON documents the commands print (`--json`) and the benchmarks write.

A result's `to_json()` gives the keys and values the dict used to have: each field is a key (in field
order), nested results, lists and dicts are converted the same way, and a field made with `optional()`
is left out while it is None (a key the dict only had sometimes), or while another field is. Several kinds
of one result extend a base with `kw_only=True` (`extending` builds one from its base), so their JSON keys
stay flat.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Self

__all__ = ["JsonResult", "optional", "to_json"]

_OMIT_NONE = "omit_none"
_PRESENT_WITH = "present_with"


def optional(default: Any = None, *, present_with: str | None = None) -> Any:
    """A field that is not in the JSON document while it is None; with `present_with`, one that is there
    (None as null) exactly when that other field is not None."""
    if present_with is not None:
        return dataclasses.field(default=default, metadata={_PRESENT_WITH: present_with})
    return dataclasses.field(default=default, metadata={_OMIT_NONE: True})


class JsonResult:
    """Base of the result dataclasses (each one `@dataclass(frozen=True)`)."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def to_json(self) -> dict[str, Any]:
        """The JSON document: a dict of str keys and JSON values (lists, dicts, numbers, strings, None)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.metadata.get(_OMIT_NONE):
                continue
            if _PRESENT_WITH in f.metadata and getattr(self, f.metadata[_PRESENT_WITH]) is None:
                continue
            out[f.name] = to_json(value)
        return out

    @classmethod
    def extending(cls, base: JsonResult, **more: Any) -> Self:
        """A result of this class (which extends `base`'s class) with `base`'s fields and `more`."""
        return cls(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)}, **more)


def to_json(value: Any) -> Any:
    """`value` with every result in it (at any depth of lists, tuples and dicts) as its JSON document."""
    if isinstance(value, JsonResult):
        return value.to_json()
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value
