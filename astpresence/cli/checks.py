"""What every doctor check is: its names, the modules it looks for, the result type.
"""

from __future__ import annotations

import logging

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from astpresence.sources.plugin import DoctorCheck



logger = logging.getLogger(__name__)


CHECK_REACHABLE = "ami reachable"
CHECK_LOGIN = "login"
CHECK_PERMISSIONS = "permissions"
CHECK_MODULES = "modules"
CHECK_USERS = "users from hints"
CHECK_MIRROR = "mirror in hints"
CHECK_FREEPBX = "freepbx"
CHECK_CALLS = "call handling"
CHECK_ARI = "ari"
CHECK_STORE = "store"
#: Every check, in the order they are reported.
CHECK_NAMES = (CHECK_REACHABLE, CHECK_LOGIN, CHECK_PERMISSIONS, CHECK_MODULES, CHECK_USERS,
               CHECK_MIRROR, CHECK_FREEPBX, CHECK_CALLS, CHECK_ARI, CHECK_STORE)

NEEDS_LOGIN = "skipped: needs a working login"

#: Modules astpresence cannot work without: the PRESENCE_STATE and
#: DEVICE_STATE functions it writes, and the two modules that turn presence
#: and device state changes into AMI events and list actions.
CORE_MODULES = (
    "res_manager_presencestate",
    "res_manager_devicestate",
    "func_presencestate",
    "func_devstate",
)
#: Checked only when res_pjsip is loaded: SUBSCRIBE to a hint
#: (res_pjsip_exten_state), PIDF bodies, and the ``digium_presence`` element,
#: the only way presence itself reaches a phone (docs/asterisk.md,
#: "Hints and what phones see").
PJSIP_PRESENCE_MODULES = (
    "res_pjsip_exten_state",
    "res_pjsip_pidf_body_generator",
    "res_pjsip_pidf_digium_body_supplement",
)
#: Modules the dialplan kit (astpresence/app/kit/extensions_astpresence.conf) calls. A
#: missing one fails only at call time (docs/asterisk.md, "Dialplan modules").
KIT_MODULES = (
    "func_cut",          # CUT: the digit of *37N
    "app_playtones",     # Playtones / StopPlaytones: the confirmation tones
    "func_strings",      # REGEX, TOLOWER, LEN
    "func_db",           # DB(astpresence-calls/...): call handling in astpresence-dial
    "func_callerid",     # CALLERID(num): internal or external caller
    "app_exec",          # ExecIf in astpresence-dial
    "func_logic",        # IF, EXISTS
    "func_channel",      # CHANNEL(endpoint): who pressed the code
    "func_global",       # GLOBAL(ASTPRESENCE_USER)
    "app_stack",         # GoSub/Return of astpresence-set and astpresence-dial
    "app_voicemail",     # VoiceMail, VM_INFO in astpresence-dial
)
#: A global the kit defines in [globals]: non-empty when the kit is loaded.
KIT_MARKER = "ASTPRESENCE_CODE_DND_TOGGLE"
PJSIP_MODULE = "res_pjsip"
QUEUE_MODULE = "app_queue"

EXAMPLE_HINT = "exten => 2000,hint,PJSIP/2000,CustomPresence:2000"

PERMISSION_DENIED = "Permission denied"
UNKNOWN_COMMAND = "Invalid/unknown command"
NO_HINTS = "No dialplan hints are available"
#: Throw-away names for read-only function probes; nothing is ever written.
PROBE_PRESENTITY = "CustomPresence:astpresence-doctor"
PROBE_DEVICE = "Custom:astpresence-doctor"

#: Shown after "fix:" for checks that could not run.
_FIX_LOGIN_FIRST = "fix the failed check above first"


@dataclass(frozen=True)
class Check(DoctorCheck):
    """The outcome of one check (name, ok, detail, fix: what to do when ``ok`` is false);
    a source's own checks are the same values."""

    @property
    def status(self) -> Literal["ok", "fail", "skip"]:
        """``skip``: the check did not run (not needed, or an earlier check failed)."""
        if self.detail.startswith("skipped"):
            return "skip"
        return "ok" if self.ok else "fail"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "status": self.status,
                "detail": self.detail, "fix": self.fix}


_MARK = {"ok": "[ OK ]", "fail": "[FAIL]", "skip": "[SKIP]"}


def format_check(check: Check) -> str:
    """``[ OK ] name: detail``, ``[SKIP] name: skipped: ...`` or ``[FAIL] ... — fix: ...``."""
    line = f"{_MARK[check.status]} {check.name}: {check.detail}"
    return f"{line} — fix: {check.fix}" if check.fix and check.status == "fail" else line


def checks_as_json(checks: Sequence[Check]) -> dict[str, Any]:
    return {"ok": all(c.ok for c in checks), "checks": [c.as_dict() for c in checks]}
