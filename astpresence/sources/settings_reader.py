"""Reading a source's config table: typed values with errors that name the key, and
secrets by reference (an environment variable or a file), never by value."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from astpresence.domain.model import InvalidInput

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


@dataclass(frozen=True)
class Credential:
    """A secret by reference: the name of an environment variable or a file's path.
    Read when needed (so it can be rotated), never kept in the config or shown."""

    env: str = ""
    file: str = ""

    @property
    def set(self) -> bool:
        return bool(self.env or self.file)

    def read(self) -> str:
        """The secret, or InvalidInput naming the reference (never the value)."""
        if self.env:
            value = os.environ.get(self.env)
            if not value:
                raise InvalidInput(f"environment variable {self.env} is not set")
            return value
        if self.file:
            try:
                with open(self.file, encoding="utf-8") as f:
                    return f.read().strip()
            except OSError as exc:
                raise InvalidInput(f"cannot read {self.file}: {exc.strerror or exc}") from None
        return ""


def section(raw: object, where: str, name: str, keys: set[str]) -> Mapping[str, Any]:
    """A source's top-level table, its keys all known (else InvalidInput naming them)."""
    if not isinstance(raw, Mapping):
        raise InvalidInput(f"{where} [{name}]: expected a table")
    unknown = sorted(str(k) for k in raw if k not in keys)
    if unknown:
        raise InvalidInput(f"{where} [{name}]: unknown key(s) {', '.join(unknown)}")
    return raw


class Reader:
    """One table of the config; each getter names ``where.key`` in its error."""

    def __init__(self, table: Mapping[str, Any], where: str) -> None:
        self.table, self.where = table, where

    def text(self, key: str, default: str | None) -> str:
        if key not in self.table:
            if default is None:
                raise InvalidInput(f"{self.where}: missing '{key}'")
            return default
        raw = self.table[key]
        if not isinstance(raw, str) or not raw or not raw.isprintable() or len(raw) > 2000:
            raise InvalidInput(f"{self.where}.{key}: expected a non-empty single-line string")
        return raw

    def url(self, key: str, default: str) -> str:
        text = self.text(key, default)
        if not text.startswith(("http://", "https://")):
            raise InvalidInput(f"{self.where}.{key}: expected an http(s) URL")
        return text

    def flag(self, key: str, default: bool) -> bool:
        raw = self.table.get(key, default)
        if not isinstance(raw, bool):
            raise InvalidInput(f"{self.where}.{key}: expected true or false, got {raw!r}")
        return raw

    def number(self, key: str, default: float, low: float, high: float, *,
               integer: bool = False) -> float:
        raw = self.table.get(key, default)
        kinds = (int,) if integer else (int, float)
        if isinstance(raw, bool) or not isinstance(raw, kinds) or not low <= raw <= high:
            raise InvalidInput(f"{self.where}.{key}: expected a number {low:g}-{high:g}, "
                               f"got {raw!r}")
        return float(raw)

    def credential(self, prefix: str) -> Credential:
        env, file = self.table.get(f"{prefix}_env"), self.table.get(f"{prefix}_file")
        if env is not None and file is not None:
            raise InvalidInput(f"{self.where}: {prefix}_env or {prefix}_file, not both")
        if env is not None and (not isinstance(env, str) or not _ENV_NAME.fullmatch(env)):
            raise InvalidInput(f"{self.where}.{prefix}_env: expected an environment "
                               "variable's name")
        if file is not None and (not isinstance(file, str) or not file or "\0" in file):
            raise InvalidInput(f"{self.where}.{prefix}_file: expected a file's path")
        return Credential(env or "", file or "")
