"""Log lines that clients cannot forge or flood.

Text a client or Asterisk controls (URL paths, JSON keys, user ids, labels,
AMI header values) goes into a log line only through :func:`clip`: control
characters and line separators are escaped, so one record stays one line,
and the text is cut, so one request cannot write megabytes of log. The
entry point's :class:`OneLineFormatter` escapes whatever a call site missed.
"""

from __future__ import annotations

import logging
import unicodedata

#: Characters of client text kept in a log line; the rest is replaced by "...".
CLIP = 120


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _unsafe(ch: str) -> bool:
    # Cc: C0, DEL, C1; Cs: lone surrogates (not encodable); Zl/Zp: U+2028/9.
    return unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp")


def escape(text: str) -> str:
    """Control characters and line/paragraph separators as ``\\xNN``/``\\uNNNN``."""
    if text.isprintable():
        return text
    return "".join(_escape(ch) if _unsafe(ch) else ch for ch in text)


def clip(value: object, limit: int = CLIP) -> str:
    """``value`` as one short log-safe line (``None`` shows as ``-``)."""
    if value is None:
        return "-"
    text = str(value)
    if len(text) > limit:
        text = text[:limit] + f"...({len(text)} chars)"
    return escape(text)


class OneLineFormatter(logging.Formatter):
    """Escapes control characters in the message; tracebacks stay multi-line."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape(super().formatMessage(record))
