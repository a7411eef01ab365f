"""How numbers, parameters and durations read in what sweeper shows: pure text, for every
layer that writes some (progress, the CLI, the dry run)."""

from __future__ import annotations

import math
from typing import Any


def format_value(value: float) -> str:
    """A float in at most about 7 significant digits, still recognisable as a float."""
    if math.isinf(value) or math.isnan(value) or value == 0:
        return str(float(value))
    magnitude = abs(value)
    text = f"{value:.6g}" if 1e-3 <= magnitude < 1e6 else f"{value:.4e}"
    return text if any(c in text for c in ".e") else text + ".0"


def format_values(values: tuple[float, ...]) -> str:
    return ", ".join(format_value(v) for v in values)


def format_params(params: dict[str, Any], limit: int = 6) -> str:
    items = [f"{k}={format_param(v)}" for k, v in params.items()]
    if len(items) > limit:
        items = [*items[:limit], f"... (+{len(items) - limit})"]
    return " ".join(items)


def format_duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s"


def format_param(value: Any) -> str:
    """A parameter's value: a float as :func:`format_value` writes it, anything else as its
    ``repr``."""
    return format_value(value) if isinstance(value, float) else repr(value)
