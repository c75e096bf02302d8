"""Result rows, percentiles and the printed table."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Row:
    """One figure: ``value`` in ``unit``, optionally against a target and a baseline.

    ``target`` is a human string (``">= 100000"``); ``ok`` is None when the
    row has no target. ``baseline`` is the same quantity measured for the
    baseline in the same run; ``ratio`` is value / baseline.
    """

    scenario: str
    metric: str
    value: float
    unit: str
    target: str = ""
    ok: bool | None = None
    baseline: float | None = None
    ratio: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def at_least(value: float, limit: float) -> tuple[str, bool]:
    return f">= {_fmt(limit)}", value >= limit


def at_most(value: float, limit: float) -> tuple[str, bool]:
    return f"<= {_fmt(limit)}", value <= limit


def ratio(value: float, baseline: float | None) -> float | None:
    if baseline is None or baseline == 0 or math.isnan(baseline):
        return None
    return value / baseline


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of ``values``; NaN if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _fmt(x: float | None) -> str:
    if x is None:
        return ""
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}" if abs(x) >= 0.1 or x == 0 else f"{x:.3g}"


def table(rows: Sequence[Row]) -> str:
    head = ["scenario", "metric", "value", "unit", "target", "result", "baseline", "ratio"]
    body = [
        [
            r.scenario,
            r.metric,
            _fmt(r.value),
            r.unit,
            r.target,
            "" if r.ok is None else ("PASS" if r.ok else "MISS"),
            _fmt(r.baseline),
            "" if r.ratio is None else f"{r.ratio:.2f}x",
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(line[i]) for line in body)) if body else len(h)
              for i, h in enumerate(head)]
    right = {2, 6, 7}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [line(head), line(["-" * w for w in widths])]
    out += [line(b) for b in body]
    notes = [(r.scenario, r.metric, r.note) for r in rows if r.note]
    if notes:
        out.append("")
        out += [f"- {s} / {m}: {n}" for s, m, n in notes]
    return "\n".join(out)
