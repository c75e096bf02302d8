"""``astpresence doctor``: is Asterisk set up for what the configuration asks?

Logs in with the configured AMI credentials and runs one check per concern:
AMI reachable, login accepted, AMI permissions, modules loaded, users found
from hints, BLF mirror devices in hints. :func:`run_checks` returns plain
:class:`Check` values and prints nothing; the CLI formats them.

Every probe is free of side effects: nothing is written to Asterisk, no
member is paused, no variable is set. Asterisk facts relied on
(asterisk/asterisk, main/manager.c unless said otherwise):

- ``process_message()`` runs an action when ``(writeperm & authority) != 0``
  or the action's authority is 0; otherwise it answers ``Response: Error`` /
  ``Message: Permission denied`` *before* the action's handler runs. So an
  action sent without its required headers tells whether the user may run it
  without doing anything: the handler answers its "missing parameter" error.
- Authorities (the ``ast_manager_register_xml*`` calls): ``Setvar`` call;
  ``Getvar``, ``ExtensionState``, ``PresenceState`` call|reporting;
  ``ExtensionStateList`` call|reporting (main/extension_state.c);
  ``PresenceStateList`` call|reporting (res/res_manager_presencestate.c);
  ``DeviceStateList`` call|reporting (res/res_manager_devicestate.c);
  ``QueueStatus`` 0 and ``QueuePause`` agent (apps/app_queue.c);
  ``ModuleCheck`` system; ``Command`` command; ``Ping`` 0.
- Read classes decide which events a session gets: ``set_eventmask()`` sets
  ``send_events = readperm & mask`` and an event goes out only when
  ``(send_events & category) == category``. No action reports a session's
  read classes, so they are known only from ``manager show user <name>``
  (CLI command, prints ``read perm:`` / ``write perm:`` and never the secret,
  ``handle_showmanager()``) or from events actually received: the
  ``Privilege`` header of an event names its classes (``authority_to_str()``).
- ``action_login()`` writes ``Event: FullyBooted`` right after
  ``Authentication accepted`` when the session's events include ``system``
  (and Asterisk is fully booted); astpresence logs in with ``Events: on``,
  so that event is the evidence for ``read=system``.
- ``manager_modulecheck()`` answers ``Module not loaded`` or ``Response:
  Success``; ``ast_module_check()`` matches the name with or without ``.so``
  (main/loader.c ``resource_name_match()``).
- ``action_extensionstatelist()`` (main/extension_state.c) answers
  ``No dialplan hints are available`` when there are none.
"""
from __future__ import annotations

import asyncio
import logging

from collections.abc import Iterable
from dataclasses import replace

from astpresence.asterisk.ami.client import (
    ActionError,
    ActionTimeout,
    AMIClient,
    AMIConnectionError,
    AuthenticationError,
)
from astpresence.app.config import node_secret_var
from astpresence.app.settings import Config
from astpresence.asterisk.settings import AMIConfig
from astpresence.domain.model import DEFAULT_NODE
from astpresence.domain.logsafe import clip

from astpresence.cli.checks import (
    CHECK_FREEPBX,
    CHECK_LOGIN,
    CHECK_MIRROR,
    CHECK_MODULES,
    CHECK_NAMES,
    CHECK_REACHABLE,
    CHECK_USERS,
    CORE_MODULES,
    Check,
    KIT_MARKER,
    KIT_MODULES,
    NEEDS_LOGIN,
    NO_HINTS,
    PJSIP_MODULE,
    PJSIP_PRESENCE_MODULES,
    PROBE_DEVICE,
    PROBE_PRESENTITY,
    QUEUE_MODULE,
    _FIX_LOGIN_FIRST,
)
from astpresence.cli.permissions import _permissions_check, judge_permissions, required_permissions
from astpresence.cli.hints import AmpuserProbe, HintEntry, freepbx_check, mirror_check, users_check
from astpresence.cli.calls_check import calls_check
from astpresence.cli.probes import _Events, _Probes, _Reply, _ask, _ask_list, _probe_write
from astpresence.cli.services import _setting, ari_check, store_check
from astpresence.sources.registry import SOURCES

logger = logging.getLogger(__name__)

__all__ = [
    "run_checks",
]



# --- talking to Asterisk --------------------------------------------------------


async def _module_loaded(client: AMIClient, module: str) -> _Reply:
    return await _ask(client, "ModuleCheck", {"Module": module})


async def _check_modules(client: AMIClient, config: Config, probes: _Probes) -> Check:
    required = list(CORE_MODULES)
    if config.rules.queue_pause:
        required.append(QUEUE_MODULE)
    first = await _module_loaded(client, required[0])
    if first.denied:
        return await _check_modules_without_modulecheck(client, required, probes)
    notes = []
    if (await _module_loaded(client, PJSIP_MODULE)).ok:
        required += PJSIP_PRESENCE_MODULES
        notes.append(f"PJSIP loaded, checked {', '.join(PJSIP_PRESENCE_MODULES)}")
    else:
        notes.append("PJSIP not loaded, its presence modules not needed")
    if await _kit_loaded(client):
        required += KIT_MODULES
        notes.append("dialplan kit loaded, checked the modules it calls")
    else:
        notes.append("dialplan kit not loaded")
    replies = {required[0]: first}
    for module in required[1:]:
        replies[module] = await _module_loaded(client, module)
    missing = [m for m, r in replies.items() if not r.ok and r.message == "Module not loaded"]
    unclear = [f"{m} ({r.message or 'no message'})" for m, r in replies.items()
               if not r.ok and m not in missing]
    loaded = [m for m, r in replies.items() if r.ok]
    return _modules_result(loaded, missing, unclear, "; ".join(notes))


async def _kit_loaded(client: AMIClient) -> bool:
    """Getvar without a channel reads a global: the kit's [globals] define this one."""
    reply = await _ask(client, "Getvar", {"Variable": KIT_MARKER})
    return bool(reply.ok and reply.frame is not None and reply.frame.get("Value"))


def _verdict(loaded: bool, missing: bool) -> str | None:
    return "loaded" if loaded else "missing" if missing else None


#: Dialplan functions read with Getvar to tell whether their module is loaded.
PROBE_FUNCTIONS = {
    "func_presencestate": f"PRESENCE_STATE({PROBE_PRESENTITY},value)",
    "func_devstate": f"DEVICE_STATE({PROBE_DEVICE})",
}


def _function_verdict(reply: _Reply) -> str | None:
    # A loaded module reads "not_set" / "UNKNOWN" for an unused name; an
    # unregistered function reads as an empty value.
    if not reply.ok or reply.frame is None:
        return None
    return _verdict(bool(reply.frame.get("Value")), not reply.frame.get("Value"))


async def _check_modules_without_modulecheck(
    client: AMIClient, required: list[str], probes: _Probes
) -> Check:
    # ModuleCheck needs write=system, which astpresence itself never uses.
    # Judge by what each module registers instead: an action is found by
    # action_find() only while its module is loaded, and a dialplan function
    # that is not registered reads as an empty Value in Getvar.
    replies: dict[str, _Reply] = {}
    verdicts: dict[str, str | None] = {}  # "loaded", "missing" or None: unclear
    for module, action in (("res_manager_presencestate", "PresenceStateList"),
                           ("res_manager_devicestate", "DeviceStateList")):
        replies[module], _ = await _ask_list(client, action)
        verdicts[module] = _verdict(replies[module].ok or replies[module].answered,
                                    replies[module].unknown_action)
    for module, variable in PROBE_FUNCTIONS.items():
        replies[module] = await _ask(client, "Getvar", {"Variable": variable})
        verdicts[module] = _function_verdict(replies[module])
    queue = probes.queue_pause
    if QUEUE_MODULE in required and queue is not None:
        # The QueuePause probe: app_queue registers QueuePause, so
        # "Invalid/unknown command" means app_queue is not loaded.
        replies[QUEUE_MODULE] = queue
        verdicts[QUEUE_MODULE] = _verdict(queue.answered or queue.denied, queue.unknown_action)
    loaded = [m for m, v in verdicts.items() if v == "loaded"]
    missing = [m for m, v in verdicts.items() if v == "missing"]
    unclear = [f"{m} ({replies[m].message or 'no message'})"
               for m, v in verdicts.items() if v is None]
    note = ("ModuleCheck needs write=system (Permission denied): judged by the modules' "
            "AMI actions and dialplan functions; PJSIP presence modules not checked")
    if await _kit_loaded(client):
        note += ("; dialplan kit loaded but the modules it calls cannot be checked without "
                 "write=system: check them with 'module show like' ("
                 + ", ".join(KIT_MODULES) + ")")
    return _modules_result(loaded, missing, unclear, note)


def _modules_result(loaded: list[str], missing: list[str], unclear: list[str],
                    note: str) -> Check:
    if not missing and not unclear:
        return Check(CHECK_MODULES, True, f"loaded: {', '.join(loaded)}; {note}")
    parts = []
    if missing:
        parts.append(f"not loaded: {', '.join(missing)}")
    if unclear:
        parts.append(f"could not check: {', '.join(unclear)}")
    fix_parts = []
    if missing:
        loads = "; ".join(f"module load {m}.so" for m in missing)
        fix_parts.append(
            f"in the Asterisk CLI run '{loads}' and make sure modules.conf does not "
            f"noload {'them' if len(missing) > 1 else 'it'}"
        )
    if unclear:
        fix_parts.append("grant write=system to this AMI user so ModuleCheck can answer")
    return Check(CHECK_MODULES, False, f"{'; '.join(parts)}; {note}", "; ".join(fix_parts))


async def _list_hints(client: AMIClient, probes: _Probes) -> None:
    reply, items = await _ask_list(client, "ExtensionStateList")
    if reply.ok:
        probes.hints = [
            HintEntry(ev.get("Exten") or "", ev.get("Context") or "", ev.get("Hint") or "")
            for ev in items if ev.get("Hint")
        ]
    elif reply.message == NO_HINTS:
        probes.hints = []
    else:
        probes.hints_reply = reply


#: Hint extensions whose AMPUSER entry doctor asks for, at most.
AMPUSER_PROBES = 5


async def _probe_ampuser(client: AMIClient, probes: _Probes) -> None:
    """``DBGet AMPUSER <ext>/cidname`` for a few plain hint extensions (main/db.c)."""
    extens = sorted({h.exten for h in probes.hints or () if h.exten.isdigit()},
                    key=lambda e: (len(e), e))[:AMPUSER_PROBES]
    names, error = [], ""
    for exten in extens:
        try:
            items = await client.send_list_action("DBGet", {"Family": "AMPUSER",
                                                            "Key": f"{exten}/cidname"})
        except ActionError as exc:
            message = exc.response.get("Message") or ""
            if "not found" not in message.lower():
                error = message or "no message"
                break
            continue
        value = next((i.get("Val") or "" for i in items if i.event == "DBGetResponse"), "")
        names.append((exten, clip(value, 60)))
    probes.ampuser = AmpuserProbe(len(extens), tuple(names), error)


def _secret_var(ami: AMIConfig) -> str:
    return "ASTPRESENCE_AMI_SECRET" if ami.name == DEFAULT_NODE else node_secret_var(ami.name)


def _skipped(names: Iterable[str], detail: str = NEEDS_LOGIN) -> list[Check]:
    return [Check(name, False, detail, _FIX_LOGIN_FIRST) for name in names]


def _unreachable_fix(ami: AMIConfig) -> str:
    return (
        f"check {_setting(ami, 'host')}/{_setting(ami, 'port')} (now {ami.host}:{ami.port}), "
        "that Asterisk is "
        "running with manager.conf [general] enabled = yes and that port/bindaddr there "
        "match, and that no firewall is in the way"
    )


async def run_checks(config: Config) -> list[Check]:
    """Log in with ``config.ami`` and run every check; never raises for AMI trouble.

    Returns one :class:`Check` per name in :data:`CHECK_NAMES`, in that
    order. When the connection or the login fails, the checks that need a
    session are reported failed with ``skipped: needs a working login``.
    With several Asterisk servers (``[[asterisk]]``) the AMI checks run for
    each, side by side, named ``<server>: <check>``.
    """
    servers = config.asterisk_servers
    if len(servers) == 1:
        ami = await _ami_checks(config, servers[0])
    else:
        each = await asyncio.gather(*(_ami_checks(config, s) for s in servers))
        ami = [replace(c, name=f"{s.name}: {c.name}") for s, checks in zip(servers, each)
               for c in checks]
    return [*ami, await ari_check(config), await store_check(config),
            *await _source_checks(config)]


async def _source_checks(config: Config) -> list[Check]:
    """Each configured source's own checks (sources/plugin.py ``doctor``)."""
    out = []
    for plugin in SOURCES:
        settings = config.sources.get(plugin.name, plugin.default)
        if plugin.doctor is not None and plugin.configured(settings):
            out += [Check(c.name, c.ok, c.detail, c.fix) for c in await plugin.doctor(settings)]
    return out


async def _ami_checks(config: Config, ami: AMIConfig) -> list[Check]:
    where = f"{ami.host}:{ami.port}"
    events = _Events()
    client = AMIClient(
        ami.host, ami.port, ami.username, ami.secret.value, on_event=events,
        ping_interval=ami.ping_interval, action_timeout=ami.action_timeout,
        connect_timeout=ami.connect_timeout,
    )
    after_login = CHECK_NAMES[2:-2]  # ARI and the store are checked apart
    try:
        await client.connect()
    except AuthenticationError:
        await client.close()
        return [
            Check(CHECK_REACHABLE, True, f"{where} answered: {client.banner}"),
            Check(
                CHECK_LOGIN, False,
                f"Asterisk refused the login of user {ami.username!r}",
                f"make {_setting(ami, 'username')}/{_setting(ami, 'secret')} (or "
                f"{_secret_var(ami)}) match the "
                f"[{ami.username}] section of manager.conf and check its permit=/deny=; "
                "if astpresence is already running, manager.conf needs "
                "allowmultiplelogin = yes; then 'manager reload'",
            ),
            *_skipped(after_login),
        ]
    except AMIConnectionError as exc:
        await client.close()
        if client.banner is None:
            return [
                Check(CHECK_REACHABLE, False, str(exc), _unreachable_fix(ami)),
                Check(CHECK_LOGIN, False, "skipped: needs a reachable AMI", _FIX_LOGIN_FIRST),
                *_skipped(after_login),
            ]
        return [
            Check(CHECK_REACHABLE, True, f"{where} answered: {client.banner}"),
            Check(CHECK_LOGIN, False, str(exc),
                  "Asterisk accepted the connection but did not answer the login: check "
                  "that it is not overloaded or hung (ami.connect_timeout is "
                  f"{ami.connect_timeout:g} s)"),
            *_skipped(after_login),
        ]
    checks = [
        Check(CHECK_REACHABLE, True, f"{where} answered: {client.banner}"),
        Check(CHECK_LOGIN, True, f"logged in as {ami.username}"),
    ]
    probes = _Probes()
    try:
        await _probe_write(client, config, probes)
        probes.modules = await _check_modules(client, config, probes)
        await _list_hints(client, probes)
        await _probe_ampuser(client, probes)
        calls = await calls_check(client, config)
        # A barrier: every event written before this answer has been handed
        # to the handler (the client dispatches in wire order).
        await _ask(client, "Ping")
        await asyncio.sleep(0)
    except (AMIConnectionError, ActionTimeout) as exc:
        why = "the AMI link was lost" if isinstance(exc, AMIConnectionError) else (
            "Asterisk stopped answering")
        return [*checks, *[
            Check(name, False, f"skipped: {why} ({exc})",
                  "run doctor again; if it keeps happening, look at the Asterisk log "
                  "(logger.conf) for manager errors or a deadlock")
            for name in after_login
        ]]
    finally:
        await client.close()
    need_read, need_write = required_permissions(config)
    findings = judge_permissions(
        need_read, need_write, probed_write=probes.write, shown=probes.shown,
        seen_read=frozenset(events.classes), fully_booted=events.fully_booted,
    )
    checks.append(_permissions_check(findings, ami.username, need_read, need_write))
    assert probes.modules is not None
    checks.append(probes.modules)
    if probes.hints is None:
        reply = probes.hints_reply
        assert reply is not None
        fix = ("ExtensionStateList needs write=call or write=reporting (see permissions)"
               if reply.denied else "check the Asterisk log for why ExtensionStateList failed")
        checks.append(Check(CHECK_USERS, False,
                            f"ExtensionStateList failed: {reply.message or 'no message'}", fix))
        checks.append(Check(CHECK_MIRROR, False, "skipped: hints could not be listed",
                            _FIX_LOGIN_FIRST))
        checks.append(Check(CHECK_FREEPBX, False, "skipped: hints could not be listed",
                            _FIX_LOGIN_FIRST))
    else:
        checks.append(users_check(probes.hints, config.users))
        checks.append(mirror_check(config, probes.hints))
        checks.append(freepbx_check(config, probes.hints, probes.ampuser))
    checks.append(calls)
    logger.debug("doctor: %d checks, failed: %s", len(checks),
                 ", ".join(c.name for c in checks if not c.ok) or "none")
    return checks
