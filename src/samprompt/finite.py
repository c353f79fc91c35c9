"""Where a nested JSON-like value holds a non-finite number (records are never written or read
with one)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["first_non_finite"]


def first_non_finite(value: Any, where: str = "") -> str | None:
    """The path (``config.lr``, ``sweep[2].f1_mean``) of the first non-finite float in ``value``,
    or None when every number is finite.

    Examples
    --------
    >>> first_non_finite({"a": [1.0, {"b": float("nan")}]})
    'a[1].b'
    >>> first_non_finite({"a": 1}) is None
    True
    """
    if isinstance(value, float) and not math.isfinite(value):
        return where or "(top level)"
    if isinstance(value, Mapping):
        items = ((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
    elif isinstance(value, list | tuple):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for path, item in items:
        found = first_non_finite(item, path)
        if found is not None:
            return found
    return None
