"""doctor's call-handling check: the kit's astpresence-dial is loaded and reads the
rules, and astpresence's astdb family can be read (how many keys it holds)."""

from __future__ import annotations

from astpresence.app.settings import Config
from astpresence.asterisk.ami.client import ActionError, AMIClient
from astpresence.asterisk.call_codec import FAMILY
from astpresence.cli.checks import CHECK_CALLS, Check

ROUTING = "astpresence-dial"
_LOAD_KIT = ("install the kit ('astpresence dialplan kit --write DIR'), #include it from "
             "extensions.conf and run 'dialplan reload'")


async def calls_check(client: AMIClient, config: Config) -> Check:
    if not config.calls.enabled:
        return Check(CHECK_CALLS, True, "skipped: off (no [calls] section in the config)")
    try:
        steps = await client.send_list_action("ShowDialPlan", {"Context": ROUTING,
                                                               "Extension": "s"})
    except ActionError as exc:
        message = exc.response.get("Message") or str(exc)
        return Check(CHECK_CALLS, False, f"{ROUTING} is not loaded ({message}): calls are "
                     "not routed by the rules astpresence writes", _LOAD_KIT)
    if not any(f"{FAMILY}/" in (s.get("AppData") or "") for s in steps):
        return Check(CHECK_CALLS, False, f"the loaded {ROUTING} predates call handling: it "
                     "does not read the rules astpresence writes", _LOAD_KIT)
    try:
        keys = await client.send_list_action("DBGetTree", {"Family": FAMILY})
    except ActionError as exc:
        return Check(CHECK_CALLS, False, f"astdb {FAMILY} cannot be read: {exc}",
                     "DBGetTree needs read=system or reporting for the AMI user, and "
                     "Asterisk 16.28/18.14/19.6 or later")
    return Check(CHECK_CALLS, True, f"{ROUTING} loaded; astdb {FAMILY} holds {len(keys)} "
                 "rule(s) (written by the daemon while people's rules apply)")
