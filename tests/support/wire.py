"""What only the fake Asterisk writes: server frames and C-escaped text."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Union

from astpresence.asterisk.codec import C_ESCAPES

_C_ESCAPE_OF = {v: "\\" + k for k, v in C_ESCAPES.items()}

HeaderInput = Union[Mapping[str, str], Iterable[tuple[str, str]]]


def c_escape(text: str) -> str:
    """What ``ast_escape_c`` (main/utils.c) does to PresenceStateChange text."""
    return "".join(_C_ESCAPE_OF.get(ch, ch) for ch in text)


def encode_message(headers: HeaderInput) -> bytes:
    """Serialise a server-side frame: ``Key: Value`` lines and an empty line."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    body = "".join(f"{k}: {v}\r\n" for k, v in pairs)
    return (body + "\r\n").encode("utf-8")
