"""The engine's errors that callers answer (the API: 404)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(eq=False)
class UnknownUser(LookupError):
    uid: str

    def __str__(self) -> str:
        return f"unknown user {self.uid!r}"


@dataclass(eq=False)
class UnknownSource(LookupError):
    uid: str
    name: str

    def __str__(self) -> str:
        return f"user {self.uid!r} has no source {self.name!r}"
