"""The effective configuration as ``/v1/config`` shows it: every setting, nothing
secret."""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import timedelta
from typing import Any

from astpresence.app.settings import Config
from astpresence.domain.model import Presence, Secret
from astpresence.sources.registry import SOURCES


def read_batching(cfg: Config) -> str:
    """For the start line: how the AMI links are read, when not at once."""
    ms, answers = cfg.read_batch_ms, cfg.answers_ms
    parts = ([f"read in batches: at most once every {ms} ms"] if ms else []) + (
        [f"answers to writes read at most once every {answers} ms"] if answers else [])
    return f" ({'; '.join(parts)})" if parts else ""


def config_json(cfg: Config) -> dict[str, Any]:
    """The effective configuration as JSON (``/v1/config``), generated from :class:`Config`.

    Every setting appears, so nothing can be forgotten here; a :class:`Secret`
    shows only whether it is set.
    """
    out = _jsonable(replace(cfg, sources={}))
    assert isinstance(out, dict)
    # as they apply: their defaults follow the number of servers
    out["ami_read_batch_ms"], out["ami_answers_ms"] = cfg.read_batch_ms, cfg.answers_ms
    # Each source shows its own settings (a feed's URL often holds its secret).
    out["sources"] = {plugin.name: _jsonable(plugin.show(cfg.sources.get(plugin.name,
                                                                          plugin.default)))
                      for plugin in SOURCES}
    return out


#: Values shown other than as themselves in /v1/config, by type.
_SHOWN: tuple[tuple[type, Callable[[Any], Any]], ...] = (
    (Secret, lambda v: {"set": bool(v.value)}),
    (enum.Enum, lambda v: v.value),
    (timedelta, lambda v: v.total_seconds()),
    (Presence, lambda v: v.as_dict()),
    (re.Pattern, lambda v: v.pattern),
)


def _fields(value: Any) -> dict[str, Any]:
    return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}


def _jsonable(value: Any) -> Any:
    for kind, show in _SHOWN:
        if isinstance(value, kind):
            return show(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _fields(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted(_jsonable(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
