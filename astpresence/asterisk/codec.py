"""Codec between :class:`~astpresence.domain.model.Presence` and Asterisk's text forms.

Writing: ``PRESENCE_STATE(CustomPresence:<id>)`` takes ``state,subtype,message[,e]``
split on commas. We always use option ``e`` (base64 subtype and message), the
only form in which commas, quotes, backslashes and non-ASCII survive
(tests/support/captures/presence-set-list-query.txt, action ``set-3``).

Reading: ``PresenceStateChange`` carries subtype and message escaped with
Asterisk's ``ast_escape_c`` (main/utils.c), e.g. ``C:\\\\temp \\"quoted\\"``
(tests/support/captures/escaping-and-limits.txt, ``esc-1``); ``PresenceStatus`` and the
``PresenceState`` response carry them raw.
"""

from __future__ import annotations

import base64
import functools
import binascii

from astpresence.domain.model import InvalidInput, Presence, parse_presence

# main/utils.c: escape_sequences[] and escape_sequences_map[].
C_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    "'": "'",
    '"': '"',
    "?": "?",
}
def c_unescape(text: str) -> str:
    """Undo ``ast_escape_c``. A backslash before any other character is kept."""
    if "\\" not in text:
        return text
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n and text[i + 1] in C_ESCAPES:
            out.append(C_ESCAPES[text[i + 1]])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


@functools.lru_cache(maxsize=1024)
def encode_presence_value(presence: Presence) -> str:
    """The ``Value:`` of a Setvar on ``PRESENCE_STATE``, always with option ``e``.

    The presence is validated again here so that no caller can smuggle an
    unchecked value onto the wire. Cached: a site writes a few values over and
    over (a refused value raises, and exceptions are not cached).
    """
    checked = parse_presence(presence.state.value, presence.subtype, presence.message)
    return f"{checked.state.value},{_b64(checked.subtype)},{_b64(checked.message)},e"


def decode_presence_value(value: str) -> Presence:
    """Parse a ``state,subtype,message[,e]`` value the way func_presencestate does.

    Used by the fake server to interpret Setvar, and by anything reading a
    raw PRESENCE_STATE value.
    """
    parts = value.split(",")
    state = parts[0] if parts else ""
    subtype = parts[1] if len(parts) > 1 else ""
    message = parts[2] if len(parts) > 2 else ""
    options = parts[3] if len(parts) > 3 else ""
    if len(parts) > 4:
        raise InvalidInput("too many fields in presence value")
    if "e" in options:
        try:
            subtype = base64.b64decode(subtype, validate=True).decode("utf-8")
            message = base64.b64decode(message, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidInput(f"bad base64 in presence value: {exc}") from None
    return Presence(parse_presence(state).state, subtype, message)


def presence_from_change_event(status: str, subtype: str, message: str) -> Presence:
    """Presence carried by a ``PresenceStateChange`` event (escaped fields).

    The text is not length-checked here: whatever Asterisk holds is the truth
    we adopt, even if another tool stored something we would have refused.
    Control characters that survive unescaping are kept verbatim; they are
    never sent back to Asterisk because writes re-validate.
    """
    return Presence(parse_presence(status).state, c_unescape(subtype), c_unescape(message))
