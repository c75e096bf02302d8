"""The site's ``[calls]`` section: whether call handling is on, its default rules,
where forwards may go and how a forward is dialled. Pure: the config reads the
TOML table and hands it here.

```toml
[calls]
forward_dial = "Local/{to}@from-internal"   # how the kit dials a forward
forward_users = true                        # forward to any user astpresence knows
forward_allow = ["^0[1-9][0-9]{6,14}$"]     # and to numbers matching one of these
defaults = [                                # after each person's own rules
  { when = "dnd", action = "voicemail", greeting = "busy" },
]
show_presence = false                       # callers see "Alice Martin (In a meeting)"
```
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from astpresence.domain.calls import MAX_RULES, CallRule, ForwardPolicy, parse_rule
from astpresence.domain.model import InvalidInput

DEFAULT_DIAL = "Local/{to}@from-internal"
#: A dial string pattern: a channel technology's characters, and ``{to}`` once. No
#: comma, bar, semicolon, ``$``, brackets or spaces: it is stored in astdb between
#: commas and bars (asterisk/call_codec.py) and handed to Dial() as one argument.
_DIAL = re.compile(r"[A-Za-z0-9/@:._+*#&=-]*\{to\}[A-Za-z0-9/@:._+*#&=-]*")
_KEYS = frozenset({"forward_dial", "forward_users", "forward_allow", "defaults",
                   "show_presence"})
#: Patterns in forward_allow, at most, and each one's length.
MAX_PATTERNS, MAX_PATTERN = 32, 200


@dataclass(frozen=True)
class CallSettings:
    #: Off until the config has a ``[calls]`` section: nothing is written to astdb.
    enabled: bool = False
    defaults: tuple[CallRule, ...] = ()
    policy: ForwardPolicy = field(default_factory=ForwardPolicy)
    forward_dial: str = DEFAULT_DIAL
    #: Callers see the callee's name and presence on their display (each person may
    #: choose otherwise: ``show_presence`` in their call handling).
    show_presence: bool = False

    def dial(self, to: str) -> str:
        return self.forward_dial.replace("{to}", to)

    def json(self) -> dict[str, Any]:
        """As ``/v1/config`` and the API show it (nothing secret in it)."""
        return {"enabled": self.enabled, "forward_dial": self.forward_dial,
                "forward_users": self.policy.users,
                "forward_allow": [p.pattern for p in self.policy.allow],
                "defaults": [r.json() for r in self.defaults],
                "show_presence": self.show_presence}


def _pattern(raw: object, where: str) -> re.Pattern[str]:
    if not isinstance(raw, str) or not raw or len(raw) > MAX_PATTERN:
        raise InvalidInput(f"{where}: a pattern is a regular expression of 1 to "
                           f"{MAX_PATTERN} characters")
    try:
        return re.compile(raw)
    except re.error as exc:
        raise InvalidInput(f"{where}: not a regular expression ({exc})") from None


def _dial(dial: object, where: str) -> str:
    if not isinstance(dial, str) or len(dial) > 100 or not _DIAL.fullmatch(dial) \
            or dial.count("{to}") != 1:
        raise InvalidInput(f"{where} forward_dial: expected a dial string with {{to}} once, "
                           f"like {DEFAULT_DIAL!r} (letters, digits and / @ : . _ + * # & = -)")
    return dial


def parse_call_settings(raw: object, statuses: Iterable[str], where: str) -> CallSettings:
    """The ``[calls]`` table; InvalidInput naming the key otherwise."""
    if not isinstance(raw, Mapping):
        raise InvalidInput(f"{where}: [calls] must be a table")
    unknown = sorted(str(k) for k in raw if k not in _KEYS)
    if unknown:
        raise InvalidInput(f"{where}: unknown key(s) {', '.join(unknown)} "
                           f"(expected: {', '.join(sorted(_KEYS))})")
    dial = _dial(raw.get("forward_dial", DEFAULT_DIAL), where)
    users, show = raw.get("forward_users", True), raw.get("show_presence", False)
    if not isinstance(users, bool) or not isinstance(show, bool):
        raise InvalidInput(f"{where} forward_users, show_presence: expected true or false")
    allow = raw.get("forward_allow", [])
    if not isinstance(allow, list) or len(allow) > MAX_PATTERNS:
        raise InvalidInput(f"{where} forward_allow: expected a list of at most "
                           f"{MAX_PATTERNS} patterns")
    defaults = raw.get("defaults", [])
    if not isinstance(defaults, list) or len(defaults) > MAX_RULES:
        raise InvalidInput(f"{where} defaults: expected a list of at most {MAX_RULES} rules")
    names = tuple(statuses)
    policy = ForwardPolicy(users, tuple(_pattern(p, f"{where} forward_allow[{i}]")
                                        for i, p in enumerate(allow)))
    rules = tuple(parse_rule(r, names, f"{where} defaults[{i}]") for i, r in enumerate(defaults))
    return CallSettings(True, rules, policy, dial, show)
