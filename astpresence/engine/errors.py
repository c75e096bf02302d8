"""The engine's errors that callers answer (the API: 404)."""

from __future__ import annotations


class UnknownUser(LookupError):
    def __init__(self, uid: str) -> None:
        super().__init__(f"unknown user {uid!r}")
        self.uid = uid


class UnknownSource(LookupError):
    def __init__(self, uid: str, name: str) -> None:
        super().__init__(f"user {uid!r} has no source {name!r}")
        self.uid = uid
        self.name = name
