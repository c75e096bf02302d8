"""astpresence doctor against the fake Asterisk over real TCP, and as a CLI subprocess.

The fake has no manager.conf permission model, so :class:`PermissionedAsterisk`
below adds one, following main/manager.c:

- an action runs when ``(writeperm & authority) != 0`` or its authority is 0,
  otherwise ``Response: Error`` / ``Message: Permission denied``
  (``process_message()``); authorities are those of the
  ``ast_manager_register_xml*`` calls (listed in ``AUTHORITY``);
- events reach a session only for its read classes: ``set_eventmask()`` makes
  ``send_events = readperm & mask``, so FullyBooted follows the login only
  with ``system`` in read=;
- ``manager show user <name>`` prints ``read perm:`` / ``write perm:`` the way
  ``handle_showmanager()`` and ``user_authority_to_str()`` do;
- an action or dialplan function whose module is not loaded does not exist:
  ``Invalid/unknown command`` for the action, an empty ``Value`` from Getvar.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable

import pytest
from aiohttp import web

from astpresence.asterisk.ami.frames import Message
from astpresence.asterisk.ari import basic_auth
from astpresence.app.settings import AriConfig, Config, FreepbxConfig
from astpresence.asterisk.settings import AMIConfig
from astpresence.domain.model import Secret
from astpresence.cli.checks import (
    CHECK_ARI,
    CHECK_FREEPBX,
    CHECK_LOGIN,
    CHECK_MIRROR,
    CHECK_MODULES,
    CHECK_CALLS,
    CHECK_NAMES,
    CHECK_PERMISSIONS,
    CHECK_REACHABLE,
    CHECK_STORE,
    CHECK_USERS,
    CORE_MODULES,
    Check,
    EXAMPLE_HINT,
    KIT_MARKER,
    KIT_MODULES,
    NEEDS_LOGIN,
    PJSIP_PRESENCE_MODULES,
    checks_as_json,
    format_check,
)
from astpresence.cli.doctor import run_checks
from astpresence.cli.permissions import (
    PermissionFinding,
    judge_permissions,
    parse_manager_show_user,
    privilege_classes,
)
from astpresence.domain.rules import RuleConfig
from astpresence.domain.records import UserRecord
from tests.support.fakeami import FakeAsterisk, Hint, QueueMember, _error, _event_mask, _head, _Session

SECRET = "Sup3r-s3cret-never-shown"

# -- a fake with manager.conf permissions --------------------------------------

#: manager.c perms[] order, used by user_authority_to_str().
PERM_ORDER = ("system", "call", "log", "verbose", "command", "agent", "user", "config", "dtmf",
              "reporting", "cdr", "dialplan", "originate", "agi", "cc", "aoc", "test",
              "security", "message")
CALL_OR_REPORTING = frozenset({"call", "reporting"})
#: Authority of each action the fake knows; absent = 0 (anyone logged in).
AUTHORITY = {
    "setvar": frozenset({"call"}),                    # manager.c
    "getvar": CALL_OR_REPORTING,                      # manager.c
    "presencestate": CALL_OR_REPORTING,               # manager.c
    "extensionstate": CALL_OR_REPORTING,              # manager.c
    "extensionstatelist": CALL_OR_REPORTING,          # main/extension_state.c
    "presencestatelist": CALL_OR_REPORTING,           # res/res_manager_presencestate.c
    "devicestatelist": CALL_OR_REPORTING,             # res/res_manager_devicestate.c
    "queuepause": frozenset({"agent"}),               # apps/app_queue.c (QueueStatus: 0)
    "modulecheck": frozenset({"system"}),             # manager.c
    "command": frozenset({"command"}),                # manager.c
}
#: Actions registered by a module: they exist only while it is loaded.
ACTION_MODULE = {
    "presencestatelist": "res_manager_presencestate",
    "devicestatelist": "res_manager_devicestate",
    "queuestatus": "app_queue",
    "queuepause": "app_queue",
}
FUNCTION_MODULE = {"PRESENCE_STATE(": "func_presencestate", "DEVICE_STATE(": "func_devstate"}

Handler = Callable[[_Session, Message], Awaitable[bool]]
Fakes = Callable[..., Awaitable["PermissionedAsterisk"]]


def _classes(spec: str) -> frozenset[str]:
    parts = {p.strip().lower() for p in spec.split(",") if p.strip()}
    return frozenset(PERM_ORDER) if "all" in parts else frozenset(parts)


class PermissionedAsterisk(FakeAsterisk):
    """FakeAsterisk whose AMI user has manager.conf ``read=`` and ``write=`` classes."""

    def __init__(self, *, read: str = "all", write: str = "all", secret: str = SECRET,
                 login_events: Iterable[list[tuple[str, str]]] = ()) -> None:
        super().__init__(secret=secret)
        self.read = _classes(read)
        self.write = _classes(write)
        #: Events broadcast right after each successful login (activity on the PBX).
        self.login_events = list(login_events)

    def _handlers(self) -> dict[str, Handler]:
        modules = {m.lower() for m in self.modules}
        out: dict[str, Handler] = {}
        for name, handler in super()._handlers().items():
            module = ACTION_MODULE.get(name)
            if module is not None and module not in modules:
                continue  # unregistered: "Invalid/unknown command"
            out[name] = self._guard(name, handler)
        return out

    def _guard(self, name: str, handler: Handler) -> Handler:
        authority = AUTHORITY.get(name, frozenset())

        async def run(session: _Session, m: Message) -> bool:
            if authority and not authority & self.write:
                await self._reply(session, _error(m, "Permission denied"))
                return True
            return await handler(session, m)

        return run

    async def _login(self, session: _Session, m: Message) -> bool:
        # set_eventmask(): send_events = readperm & requested mask.
        requested = _event_mask(m.get("Events"))
        effective = self.read if requested is None else self.read & requested
        events = ",".join(sorted(effective)) or "off"
        headers = [(k, v) for k, v in m.headers if k.lower() != "events"]
        keep = await super()._login(session, Message([*headers, ("Events", events)]))
        if keep and session.authenticated and self.login_events:
            await self._broadcast(self.login_events)
        return keep

    async def _getvar(self, session: _Session, m: Message) -> bool:
        variable = (m.get("Variable") or "").upper()
        modules = {x.lower() for x in self.modules}
        for prefix, module in FUNCTION_MODULE.items():
            if variable.startswith(prefix) and module not in modules:
                # ast_func_read() of an unregistered function leaves the
                # workspace empty; action_getvar() still answers Success.
                await self._reply(session, [*_head(m, "Success"),
                                            ("Variable", m.get("Variable") or ""), ("Value", "")])
                return True
        return await super()._getvar(session, m)

    async def _command(self, session: _Session, m: Message) -> bool:
        words = (m.get("Command") or "").split()
        if [w.lower() for w in words[:3]] != ["manager", "show", "user"] or len(words) != 4:
            return await super()._command(session, m)
        if words[3] != self.username:
            lines = [f"There is no manager called {words[3]}"]
        else:
            lines = [
                "",
                f"          username: {self.username}",
                "            secret: <Set>",
                "               ACL: no",
                f"         read perm: {self._perm_text(self.read)}",
                f"        write perm: {self._perm_text(self.write)}",
                "   displayconnects: yes",
                "allowmultiplelogin: yes",
                "         Variables: ",
            ]
        await self._reply(session, [*_head(m, "Success"), ("Message", "Command output follows"),
                                    *(("Output", line) for line in lines)])
        return True

    @staticmethod
    def _perm_text(classes: frozenset[str]) -> str:
        text = ",".join(c for c in PERM_ORDER if c in classes)
        if classes >= frozenset(PERM_ORDER):
            text += ",all"
        return text or "<none>"


# -- fixtures and helpers -----------------------------------------------------

MIRROR_RULES = RuleConfig(mirror=True)
QUEUE_RULES = RuleConfig(queue_pause=True)
HINTS = [
    Hint("2000", "internal", ["PJSIP/2000", "Custom:presence-2000"], "CustomPresence:2000"),
    Hint("2001", "internal", ["PJSIP/2001", "Custom:presence-2001"], "CustomPresence:2001"),
]
GOOD_READ = "system,call,reporting,agent"
GOOD_WRITE = "system,call,agent,command"


def seed(fake: FakeAsterisk) -> None:
    """Two hinted users with their BLF mirror devices and one queue member."""
    fake.hints[:] = [replace(h, devices=list(h.devices)) for h in HINTS]
    fake.devices.update({"PJSIP/2000": "UNAVAILABLE", "PJSIP/2001": "NOT_INUSE",
                         "Custom:presence-2000": "INVALID", "Custom:presence-2001": "INVALID"})
    fake.queue_members[:] = [QueueMember("support", "Alice", "PJSIP/2000")]


def config_for(fake: FakeAsterisk | None = None, *, port: int | None = None,
               rules: RuleConfig = RuleConfig(), users: tuple[UserRecord, ...] = (),
               timeout: float = 2.0) -> Config:
    if port is None:
        assert fake is not None
        port = fake.port
    return Config(
        ami=AMIConfig(host="127.0.0.1", port=port, username="astpresence",
                      secret=Secret(fake.secret if fake else SECRET),
                      action_timeout=timeout, connect_timeout=timeout),
        rules=rules,
        users=users,
    )


async def started(fake: FakeAsterisk) -> FakeAsterisk:
    seed(fake)
    await asyncio.wait_for(fake.start(), 5.0)
    return fake


@pytest.fixture
async def fakes() -> AsyncIterator[Fakes]:
    """Start PermissionedAsterisk servers (seeded); all stopped after the test."""
    running: list[FakeAsterisk] = []

    async def make(**kwargs: object) -> PermissionedAsterisk:
        fake = PermissionedAsterisk(**kwargs)  # type: ignore[arg-type]
        running.append(fake)
        await started(fake)
        return fake

    yield make
    for fake in running:
        await asyncio.wait_for(fake.stop(), 5.0)


@pytest.fixture
async def plain(fake_ami: FakeAsterisk) -> FakeAsterisk:
    """The shared fake, as is (no permission model), seeded."""
    seed(fake_ami)
    return fake_ami


def by_name(checks: list[Check]) -> dict[str, Check]:
    assert [c.name for c in checks] == list(CHECK_NAMES)
    return {c.name: c for c in checks}


def failed(checks: list[Check]) -> list[str]:
    return [c.name for c in checks if not c.ok]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- all good ---------------------------------------------------------------------


async def test_all_checks_pass_on_a_well_configured_fake(plain: FakeAsterisk) -> None:
    checks = await run_checks(config_for(plain, rules=RuleConfig(mirror=True, queue_pause=True)))
    assert failed(checks) == [], [format_check(c) for c in checks]
    c = by_name(checks)
    assert c[CHECK_REACHABLE].detail.endswith("answered: Asterisk Call Manager/13.0.0")
    assert c[CHECK_LOGIN].detail == "logged in as astpresence"
    # The plain fake has no 'manager show user': read=call is not provable
    # without an event, which is said but not counted as a failure.
    perms = c[CHECK_PERMISSIONS].detail
    assert "write=call (Setvar without a variable allowed)" in perms
    assert "write=agent (QueuePause without an interface allowed)" in perms
    assert "read=system (FullyBooted after login)" in perms
    assert "unverified read=call, read=agent, read=reporting" in perms
    assert c[CHECK_MODULES].detail.startswith(
        "loaded: res_manager_presencestate, res_manager_devicestate, func_presencestate, "
        "func_devstate, app_queue; PJSIP not loaded")
    assert c[CHECK_USERS].detail == "2 user(s) in 2 hint(s): 2000, 2001"
    assert "every user's hint has its Custom:presence-<user> device (2 user(s))" in (
        c[CHECK_MIRROR].detail)
    await asyncio.sleep(0.05)
    assert plain.connections == 0  # logged off and closed


async def test_all_pass_with_permissions_read_from_manager_show_user(fakes: Fakes) -> None:
    fake = await fakes(read=GOOD_READ, write=GOOD_WRITE)
    checks = await run_checks(config_for(fake, rules=RuleConfig(mirror=True, queue_pause=True)))
    assert failed(checks) == [], [format_check(c) for c in checks]
    perms = by_name(checks)[CHECK_PERMISSIONS].detail
    assert "unverified" not in perms
    for label in ("read=call", "read=reporting", "read=agent"):
        assert f"{label} (manager show user)" in perms
    commands = [m.get("Command") for m in fake.actions if m.get("Action") == "Command"]
    assert commands == ["manager show user astpresence"]


async def test_probes_have_no_side_effects(fakes: Fakes) -> None:
    fake = await fakes(read=GOOD_READ, write=GOOD_WRITE)
    fake.modules.add("res_pjsip")
    fake.modules.update(PJSIP_PRESENCE_MODULES)
    devices, members = dict(fake.devices), [replace(m) for m in fake.queue_members]
    await run_checks(config_for(fake, rules=RuleConfig(mirror=True, queue_pause=True)))
    assert fake.variables == {} and fake.presences == {}
    assert fake.devices == devices
    assert fake.queue_members == members
    for m in fake.actions:
        action = (m.get("Action") or "").lower()
        assert action not in ("setvar", "queuepause") or not (
            m.get("Variable") or m.get("Interface")), m.headers
    # Read-only probes only, and ModuleCheck names without ".so".
    assert {(m.get("Action") or "") for m in fake.actions} <= {
        "Login", "Setvar", "QueuePause", "Command", "ModuleCheck", "ExtensionStateList",
        "Ping", "Logoff", "Getvar", "DBGet"}


async def test_pjsip_presence_modules_are_checked_when_pjsip_is_loaded(plain: FakeAsterisk) -> None:
    plain.modules.add("res_pjsip")
    plain.modules.update(PJSIP_PRESENCE_MODULES)
    checks = await run_checks(config_for(plain))
    modules = by_name(checks)[CHECK_MODULES]
    assert modules.ok, modules
    assert f"PJSIP loaded, checked {', '.join(PJSIP_PRESENCE_MODULES)}" in modules.detail


async def test_every_asterisk_server_is_checked(plain: FakeAsterisk) -> None:
    port = free_port()
    one = config_for(plain)
    config = replace(one, nodes=(replace(one.ami, name="east"),
                                 replace(one.ami, name="west", port=port)))
    checks = await run_checks(config)
    ami_names = list(CHECK_NAMES[:-2])
    assert [c.name for c in checks] == [
        *(f"east: {n}" for n in ami_names), *(f"west: {n}" for n in ami_names),
        *CHECK_NAMES[-2:]]
    assert failed(checks) == [f"west: {n}" for n in ami_names]
    west = {c.name: c for c in checks}[f"west: {CHECK_REACHABLE}"]
    assert f"cannot connect to AMI at 127.0.0.1:{port}" in west.detail
    assert "host of [[asterisk]] 'west'/port of [[asterisk]] 'west'" in west.fix


# -- connection and login ---------------------------------------------------------------


async def test_unreachable_port_fails_and_skips_the_rest() -> None:
    port = free_port()
    checks = await run_checks(config_for(port=port))
    c = by_name(checks)
    assert failed(checks) == list(CHECK_NAMES[:-2])  # ari: not used, skipped
    assert f"cannot connect to AMI at 127.0.0.1:{port}" in c[CHECK_REACHABLE].detail
    assert f"ami.host/ami.port (now 127.0.0.1:{port})" in c[CHECK_REACHABLE].fix
    assert c[CHECK_LOGIN].detail == "skipped: needs a reachable AMI"
    for name in CHECK_NAMES[2:-2]:
        assert c[name].detail == NEEDS_LOGIN
        assert c[name].fix


async def test_refused_login_fails_and_skips_the_rest(plain: FakeAsterisk) -> None:
    plain.refuse_logins = True
    checks = await run_checks(config_for(plain))
    c = by_name(checks)
    assert failed(checks) == list(CHECK_NAMES[1:-2])
    assert c[CHECK_REACHABLE].ok
    assert c[CHECK_LOGIN].detail == "Asterisk refused the login of user 'astpresence'"
    assert "[astpresence] section of manager.conf" in c[CHECK_LOGIN].fix
    assert all(c[n].detail == NEEDS_LOGIN for n in CHECK_NAMES[2:-2])


async def test_wrong_secret_is_a_refused_login(plain: FakeAsterisk) -> None:
    config = config_for(plain)
    config = replace(config, ami=replace(config.ami, secret=Secret("wrong")))
    checks = await run_checks(config)
    assert failed(checks) == list(CHECK_NAMES[1:-2])
    assert all("wrong" not in format_check(c) for c in checks)


async def test_login_never_answered_is_a_failed_login(plain: FakeAsterisk) -> None:
    plain.stall()  # the banner comes, the Login is never answered
    checks = await run_checks(config_for(plain, timeout=0.3))
    c = by_name(checks)
    assert c[CHECK_REACHABLE].ok
    assert not c[CHECK_LOGIN].ok
    assert "could not log in to 127.0.0.1" in c[CHECK_LOGIN].detail


class DropsOnModuleCheck(PermissionedAsterisk):
    async def _modulecheck(self, session: _Session, m: Message) -> bool:
        session.writer.transport.abort()
        return False


class HangsAfterLogin(PermissionedAsterisk):
    async def _login(self, session: _Session, m: Message) -> bool:
        keep = await super()._login(session, m)
        self.stall()
        return keep


async def test_link_lost_during_the_checks() -> None:
    fake = await started(DropsOnModuleCheck())
    try:
        checks = await run_checks(config_for(fake))
    finally:
        await fake.stop()
    c = by_name(checks)
    assert failed(checks) == list(CHECK_NAMES[2:-2])
    assert c[CHECK_MODULES].detail.startswith("skipped: the AMI link was lost (link lost:")
    assert "run doctor again" in c[CHECK_MODULES].fix


async def test_asterisk_hanging_after_login_does_not_wait_for_every_probe() -> None:
    fake = await started(HangsAfterLogin())
    loop = asyncio.get_running_loop()
    begin = loop.time()
    try:
        checks = await run_checks(config_for(fake, timeout=0.3))
    finally:
        await fake.stop()
    assert loop.time() - begin < 2.0
    c = by_name(checks)
    assert failed(checks) == list(CHECK_NAMES[2:-2])
    assert c[CHECK_PERMISSIONS].detail == (
        "skipped: Asterisk stopped answering (Setvar got no response within 0.3 s)")


# -- modules ------------------------------------------------------------------------------

MODULE_CASES = [
    *[(m, RuleConfig(), set()) for m in CORE_MODULES],
    ("app_queue", QUEUE_RULES, set()),
    *[(m, RuleConfig(), {"res_pjsip", *PJSIP_PRESENCE_MODULES}) for m in PJSIP_PRESENCE_MODULES],
]


@pytest.mark.parametrize(("module", "rules", "extra"), MODULE_CASES,
                         ids=[case[0] for case in MODULE_CASES])
async def test_missing_module_fails(plain: FakeAsterisk, module: str, rules: RuleConfig,
                                    extra: set[str]) -> None:
    plain.modules |= extra
    plain.modules.discard(module)
    checks = await run_checks(config_for(plain, rules=rules))
    assert failed(checks) == [CHECK_MODULES]
    modules = by_name(checks)[CHECK_MODULES]
    assert modules.detail.startswith(f"not loaded: {module};")
    assert f"module load {module}.so" in modules.fix


async def test_app_queue_is_not_needed_without_queue_pause(plain: FakeAsterisk) -> None:
    plain.modules.discard("app_queue")
    assert failed(await run_checks(config_for(plain))) == []


async def test_pjsip_modules_not_needed_without_pjsip(plain: FakeAsterisk) -> None:
    plain.modules -= set(PJSIP_PRESENCE_MODULES)
    checks = await run_checks(config_for(plain))
    assert failed(checks) == []
    assert "PJSIP not loaded" in by_name(checks)[CHECK_MODULES].detail


async def test_without_write_system_modules_are_judged_by_their_actions(fakes: Fakes) -> None:
    fake = await fakes(read=GOOD_READ, write="call,agent")
    checks = await run_checks(config_for(fake, rules=QUEUE_RULES))
    assert failed(checks) == [], [format_check(c) for c in checks]
    modules = by_name(checks)[CHECK_MODULES]
    assert "ModuleCheck needs write=system (Permission denied)" in modules.detail
    assert "app_queue" in modules.detail


@pytest.mark.parametrize("module", [*CORE_MODULES, "app_queue"])
async def test_without_write_system_a_missing_module_still_fails(fakes: Fakes, module: str) -> None:
    fake = await fakes(read=GOOD_READ, write="call,agent")
    fake.modules.discard(module)
    checks = await run_checks(config_for(fake, rules=QUEUE_RULES))
    assert failed(checks) == [CHECK_MODULES]
    assert by_name(checks)[CHECK_MODULES].detail.startswith(f"not loaded: {module};")


# -- permissions --------------------------------------------------------------------------


async def test_missing_write_call_fails(fakes: Fakes) -> None:
    fake = await fakes(read=GOOD_READ, write="system,command")
    checks = await run_checks(config_for(fake))
    c = by_name(checks)
    assert not c[CHECK_PERMISSIONS].ok
    assert ("missing write=call (Setvar without a variable answered Permission denied)"
            in c[CHECK_PERMISSIONS].detail)
    assert "[astpresence] add call to write=" in c[CHECK_PERMISSIONS].fix
    assert "manager reload" in c[CHECK_PERMISSIONS].fix
    # ExtensionStateList needs call or reporting as well.
    assert c[CHECK_USERS].detail == "ExtensionStateList failed: Permission denied"
    assert "write=call or write=reporting" in c[CHECK_USERS].fix
    assert not c[CHECK_MIRROR].ok


async def test_write_reporting_is_enough_to_list_hints(fakes: Fakes) -> None:
    fake = await fakes(read=GOOD_READ, write="system,reporting")
    checks = await run_checks(config_for(fake))
    assert failed(checks) == [CHECK_PERMISSIONS]


async def test_missing_read_system_fails_without_fully_booted(fakes: Fakes) -> None:
    fake = await fakes(read="call,reporting", write="system,call")
    checks = await run_checks(config_for(fake))
    perms = by_name(checks)[CHECK_PERMISSIONS]
    assert failed(checks) == [CHECK_PERMISSIONS]
    assert "missing read=system (no FullyBooted after login)" in perms.detail
    assert "add system to read=" in perms.fix


async def test_missing_read_call_is_found_with_manager_show_user(fakes: Fakes) -> None:
    fake = await fakes(read="system,reporting", write="system,call,command")
    checks = await run_checks(config_for(fake))
    perms = by_name(checks)[CHECK_PERMISSIONS]
    assert failed(checks) == [CHECK_PERMISSIONS]
    assert "missing read=call (manager show user)" in perms.detail
    assert "add call to read=" in perms.fix


async def test_read_call_confirmed_by_an_event(fakes: Fakes) -> None:
    event = [("Event", "DeviceStateChange"), ("Device", "PJSIP/2001"), ("State", "INUSE")]
    fake = await fakes(read="system,call", write="system,call", login_events=[event])
    checks = await run_checks(config_for(fake))
    perms = by_name(checks)[CHECK_PERMISSIONS]
    assert perms.ok
    assert "read=call (a call event arrived)" in perms.detail
    assert "unverified read=reporting" in perms.detail


async def test_an_event_outside_read_classes_is_no_evidence(fakes: Fakes) -> None:
    event = [("Event", "DeviceStateChange"), ("Device", "PJSIP/2001"), ("State", "INUSE")]
    fake = await fakes(read="system", write="system,call", login_events=[event])
    perms = by_name(await run_checks(config_for(fake)))[CHECK_PERMISSIONS]
    assert "unverified read=call, read=reporting" in perms.detail


async def test_missing_agent_fails_when_queue_pause_is_on(fakes: Fakes) -> None:
    fake = await fakes(read=GOOD_READ, write="system,call")
    checks = await run_checks(config_for(fake, rules=QUEUE_RULES))
    perms = by_name(checks)[CHECK_PERMISSIONS]
    assert failed(checks) == [CHECK_PERMISSIONS]
    assert ("missing write=agent (QueuePause without an interface answered Permission denied)"
            in perms.detail)
    assert "add agent to write=" in perms.fix
    assert "write = call,agent" in perms.fix


async def test_missing_read_agent_fails_when_queue_pause_is_on(fakes: Fakes) -> None:
    fake = await fakes(read="system,call,reporting", write="system,call,agent,command")
    checks = await run_checks(config_for(fake, rules=QUEUE_RULES))
    perms = by_name(checks)[CHECK_PERMISSIONS]
    assert failed(checks) == [CHECK_PERMISSIONS]
    assert "missing read=agent (manager show user)" in perms.detail


async def test_agent_not_needed_without_queue_pause(fakes: Fakes) -> None:
    fake = await fakes(read="system,call,reporting", write="system,call,command")
    checks = await run_checks(config_for(fake))
    assert failed(checks) == []
    assert "agent" not in by_name(checks)[CHECK_PERMISSIONS].detail
    assert not [m for m in fake.actions if m.get("Action") == "QueuePause"]


# -- users and mirror ---------------------------------------------------------------


async def test_no_hints_fails_with_an_example_hint(plain: FakeAsterisk) -> None:
    plain.hints.clear()  # ExtensionStateList: "No dialplan hints are available"
    checks = await run_checks(config_for(plain))
    users = by_name(checks)[CHECK_USERS]
    assert failed(checks) == [CHECK_USERS]
    assert users.detail.startswith("no hint names CustomPresence: (0 hint(s) listed)")
    assert EXAMPLE_HINT in users.fix


async def test_hints_without_presence_provider_fail(plain: FakeAsterisk) -> None:
    plain.hints[:] = [Hint("2000", "internal", ["PJSIP/2000"])]
    checks = await run_checks(config_for(plain))
    assert failed(checks) == [CHECK_USERS]
    assert "(1 hint(s) listed)" in by_name(checks)[CHECK_USERS].detail


async def test_no_hints_but_config_users_pass(plain: FakeAsterisk) -> None:
    plain.hints.clear()
    users = (UserRecord("alice", origin="config"),)
    checks = await run_checks(config_for(plain, users=users))
    assert failed(checks) == []
    assert "1 user(s) from [[users]]" in by_name(checks)[CHECK_USERS].detail


async def test_mirror_missing_in_a_hint_fails(plain: FakeAsterisk) -> None:
    plain.hints[1] = Hint("2001", "internal", ["PJSIP/2001"], "CustomPresence:2001")
    checks = await run_checks(config_for(plain, rules=MIRROR_RULES))
    mirror = by_name(checks)[CHECK_MIRROR]
    assert failed(checks) == [CHECK_MIRROR]
    assert mirror.detail == "hint without Custom:presence-<user> for 2001"
    assert "astpresence dialplan hints" in mirror.fix
    assert "exten => 2001,hint,PJSIP/2001&Custom:presence-2001,CustomPresence:2001" in mirror.fix


async def test_mirror_with_a_custom_prefix(plain: FakeAsterisk) -> None:
    checks = await run_checks(config_for(plain, rules=RuleConfig(mirror=True,
                                                                 mirror_prefix="blf-")))
    mirror = by_name(checks)[CHECK_MIRROR]
    assert mirror.detail == "hint without Custom:blf-<user> for 2000, 2001"


async def test_mirror_config_user_without_hint_fails(plain: FakeAsterisk) -> None:
    users = (UserRecord("alice", origin="config"),)
    checks = await run_checks(config_for(plain, rules=MIRROR_RULES, users=users))
    mirror = by_name(checks)[CHECK_MIRROR]
    assert failed(checks) == [CHECK_MIRROR]
    assert mirror.detail == "no hint at all for alice"


async def test_mirror_config_user_found_by_extension(plain: FakeAsterisk) -> None:
    plain.hints.append(Hint("2002", "internal", ["PJSIP/2002", "Custom:presence-bob"]))
    users = (UserRecord("bob", extension="2002", context="internal", origin="config"),)
    checks = await run_checks(config_for(plain, rules=MIRROR_RULES, users=users))
    assert failed(checks) == []


async def test_mirror_off_is_not_checked(plain: FakeAsterisk) -> None:
    plain.hints[:] = [Hint("2000", "internal", ["PJSIP/2000"], "CustomPresence:2000")]
    checks = await run_checks(config_for(plain))
    assert failed(checks) == []
    assert "mirror is off" in by_name(checks)[CHECK_MIRROR].detail


# -- pure helpers -------------------------------------------------------------------


def test_format_check() -> None:
    assert format_check(Check("login", True, "logged in as x")) == "[ OK ] login: logged in as x"
    assert (format_check(Check("login", False, "refused", "fix it"))
            == "[FAIL] login: refused — fix: fix it")
    assert checks_as_json([Check("a", True, "d")]) == {
        "ok": True, "checks": [{"name": "a", "ok": True, "status": "ok", "detail": "d",
                                "fix": ""}]}
    # A check that did not run is SKIP, not FAIL, and shows no fix.
    assert (format_check(Check("users", False, "skipped: needs a working login", "fix it"))
            == "[SKIP] users: skipped: needs a working login")


def test_privilege_classes() -> None:
    assert privilege_classes("call,all") == {"call"}
    assert privilege_classes("system,reporting,all") == {"system", "reporting"}
    assert privilege_classes(None) == frozenset()


def test_parse_manager_show_user() -> None:
    lines = ["", "          username: astpresence", "            secret: <Set>",
             "         read perm: system,call,all", "        write perm: <none>"]
    assert parse_manager_show_user(lines) == (frozenset({"system", "call", "all"}), frozenset())
    assert parse_manager_show_user(["There is no manager called x"]) is None


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"probed_write": {"call": (True, "p")}, "shown": None, "seen_read": frozenset(),
          "fully_booted": True},
         {"write=call": "yes", "read=system": "yes", "read=call": "unknown"}),
        ({"probed_write": {"call": (False, "p")}, "shown": None, "seen_read": {"call"},
          "fully_booted": False},
         {"write=call": "no", "read=system": "no", "read=call": "yes"}),
        # The live probe wins over manager.conf as shown (reloaded since login?).
        ({"probed_write": {"call": (True, "p")},
          "shown": (frozenset({"all"}), frozenset()), "seen_read": frozenset(),
          "fully_booted": False},
         {"write=call": "yes", "read=system": "yes", "read=call": "yes"}),
        ({"probed_write": {}, "shown": (frozenset({"call"}), frozenset({"call"})),
          "seen_read": frozenset({"system"}), "fully_booted": True},
         {"write=call": "yes", "read=system": "no", "read=call": "yes"}),
        ({"probed_write": {}, "shown": None, "seen_read": frozenset(), "fully_booted": True},
         {"write=call": "unknown", "read=system": "yes", "read=call": "unknown"}),
    ],
)
def test_judge_permissions(kwargs: dict[str, object], expected: dict[str, str]) -> None:
    findings: list[PermissionFinding] = judge_permissions(
        {"system", "call"}, {"call"}, **kwargs)  # type: ignore[arg-type]
    assert {f.label: f.verdict for f in findings} == expected


# -- the CLI ----------------------------------------------------------------------------


@dataclass
class CliResult:
    code: int
    out: str
    err: str


async def doctor_cli(*args: str, env: dict[str, str] | None = None,
                     timeout: float = 30.0) -> CliResult:
    """``python -m astpresence doctor ARGS`` as a real subprocess."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ASTPRESENCE_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "astpresence", "doctor", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL, env={**clean, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return CliResult(proc.returncode, out.decode(), err.decode())


async def test_cli_all_pass_exits_0(fakes: Fakes) -> None:
    fake = await fakes(read=GOOD_READ, write=GOOD_WRITE)
    res = await doctor_cli("--ami-port", str(fake.port), "--ami-secret", SECRET)
    assert res.code == 0, res.out + res.err
    lines = res.out.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        *(f"[ OK ] {n}" for n in CHECK_NAMES[:-3]), f"[SKIP] {CHECK_CALLS}",
        f"[SKIP] {CHECK_ARI}", f"[ OK ] {CHECK_STORE}"]
    assert SECRET not in res.out + res.err


async def test_cli_failure_exits_1_with_fixes(fakes: Fakes) -> None:
    fake = await fakes(read=GOOD_READ, write="system,command")
    fake.modules.discard("func_devstate")
    res = await doctor_cli("--ami-port", str(fake.port),
                           env={"ASTPRESENCE_AMI_SECRET": SECRET})
    assert res.code == 1, res.out + res.err
    lines = {line.split(":")[0]: line for line in res.out.splitlines()}
    assert lines["[ OK ] login"] == "[ OK ] login: logged in as astpresence"
    assert "[FAIL] permissions" in lines
    assert " — fix: " in lines["[FAIL] permissions"]
    assert lines["[FAIL] modules"].startswith("[FAIL] modules: not loaded: func_devstate;")
    assert SECRET not in res.out + res.err


async def test_cli_refused_login_never_shows_the_secret(fakes: Fakes, tmp_path: Path) -> None:
    fake = await fakes()
    wrong = "Wr0ng-but-also-secret"
    config = tmp_path / "astpresence.toml"
    config.write_text(f'[ami]\nport = {fake.port}\nsecret = "{wrong}"\n', encoding="utf-8")
    res = await doctor_cli("--config", str(config))
    assert res.code == 1
    assert res.out.splitlines()[1].startswith("[FAIL] login: Asterisk refused the login")
    res_json = await doctor_cli("--config", str(config), "--json")
    assert res_json.code == 1
    for text in (res.out, res.err, res_json.out, res_json.err):
        assert wrong not in text and SECRET not in text


async def test_cli_json(plain: FakeAsterisk) -> None:
    res = await doctor_cli("--ami-port", str(plain.port), "--ami-secret", plain.secret, "--json")
    assert res.code == 0, res.out + res.err
    data = json.loads(res.out)
    assert data["ok"] is True
    assert [c["name"] for c in data["checks"]] == list(CHECK_NAMES)
    assert set(data["checks"][0]) == {"name", "ok", "status", "detail", "fix"}
    assert [c["status"] for c in data["checks"]] == ["ok"] * 7 + ["skip", "skip", "ok"]


async def test_cli_unreachable_exits_1() -> None:
    port = free_port()
    res = await doctor_cli("--ami-port", str(port), "--ami-secret", SECRET)
    assert res.code == 1
    assert res.out.startswith(f"[FAIL] ami reachable: cannot connect to AMI at 127.0.0.1:{port}")
    assert len(res.out.splitlines()) == len(CHECK_NAMES)
    assert SECRET not in res.out + res.err


@pytest.mark.parametrize("port", ["99999", "abc", "0"])
async def test_cli_bad_port_is_a_usage_error_exit_2(port: str) -> None:
    res = await doctor_cli("--ami-port", port, "--ami-secret", SECRET)
    assert res.code == 2 and res.out == ""
    assert "Invalid value for '--ami-port'" in res.err and "Traceback" not in res.err


async def test_cli_config_error_is_one_line_exit_1(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text("[ami]\nport = 99999\n")
    res = await doctor_cli("--config", str(conf), "--ami-secret", SECRET)
    assert res.code == 1
    assert res.out == ""
    assert res.err.strip() == f"Error: {conf} ami.port: port 99999 is outside 1-65535"


# -- the dialplan kit's modules and ARI ------------------------------------------------


@pytest.mark.parametrize("module", KIT_MODULES)
async def test_kit_modules_are_checked_when_the_kit_is_loaded(plain: FakeAsterisk,
                                                             module: str) -> None:
    plain.variables[KIT_MARKER] = "*30"  # what the kit's [globals] define
    plain.modules |= set(KIT_MODULES)
    checks = by_name(await run_checks(config_for(plain)))
    assert checks[CHECK_MODULES].ok and "dialplan kit loaded" in checks[CHECK_MODULES].detail
    plain.modules.discard(module)
    modules = by_name(await run_checks(config_for(plain)))[CHECK_MODULES]
    assert not modules.ok and modules.detail.startswith(f"not loaded: {module};")
    assert f"module load {module}.so" in modules.fix


async def test_kit_modules_not_needed_without_the_kit(plain: FakeAsterisk) -> None:
    modules = by_name(await run_checks(config_for(plain)))[CHECK_MODULES]
    assert modules.ok and "dialplan kit not loaded" in modules.detail


@pytest.fixture
async def ari_server() -> AsyncIterator[tuple[str, dict[str, int]]]:
    """``GET /ari/asterisk/info`` answering the status in ``answer["status"]``."""
    answer = {"status": 200}

    async def info(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != basic_auth("ari", "pw"):
            return web.json_response({"message": "Authentication required"}, status=401)
        return web.json_response({"system": {}}, status=answer["status"])

    app = web.Application()
    app.router.add_get("/ari/asterisk/info", info)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/ari", answer
    await runner.cleanup()


@pytest.mark.parametrize(("status", "password", "ok", "expect"), [
    (200, "pw", True, "answered as ari"),
    (404, "pw", False, "res_websocket_client.so and res_ari_model.so"),
    (200, "wrong", False, "ari.conf"),
    (500, "pw", False, "answered 500"),
])
async def test_ari_is_checked_when_the_mirror_uses_it(
        plain: FakeAsterisk, ari_server: tuple[str, dict[str, int]], status: int,
        password: str, ok: bool, expect: str) -> None:
    url, answer = ari_server
    answer["status"] = status
    cfg = replace(config_for(plain, rules=RuleConfig.from_mapping({"mirror": True, "mirror_via": "ari"})),
                  ari=AriConfig(url, "ari", Secret(password)))
    check = by_name(await run_checks(cfg))[CHECK_ARI]
    assert check.ok is ok and check.status == ("ok" if ok else "fail")
    assert expect in check.detail + check.fix


async def test_ari_unreachable(plain: FakeAsterisk) -> None:
    cfg = replace(config_for(plain, rules=RuleConfig.from_mapping({"mirror": True, "mirror_via": "ari"})),
                  ari=AriConfig(f"http://127.0.0.1:{free_port()}/ari", "ari", Secret("pw")))
    check = by_name(await run_checks(cfg))[CHECK_ARI]
    assert not check.ok and "unreachable" in check.detail and "http.conf" in check.fix


@pytest.mark.parametrize(("pattern", "sync", "expect"), [
    ("Custom:DND{user}", False, "FreePBX dialplan: DND devices (Custom:DND{user}) in the hints "
                                "of 2000; *78/*79 are read as the person's dnd; dnd set through "
                                "astpresence leaves FreePBX DND alone (dnd_sync = false)"),
    ("Custom:DND{user}", True, "also switches FreePBX DND (dnd_sync = true)"),
    ("", False, "not recognised"),
])
async def test_freepbx_dialplan_is_detected(plain: FakeAsterisk, pattern: str, sync: bool,
                                            expect: str) -> None:
    plain.hints.append(Hint("2000", "ext-local", ["PJSIP/2000", "Custom:DND2000"],
                            "CustomPresence:2000"))
    cfg = replace(config_for(plain), freepbx=FreepbxConfig(pattern, sync))
    check = by_name(await run_checks(cfg))[CHECK_FREEPBX]
    assert check.ok and expect in check.detail


async def test_freepbx_astdb_is_read(plain: FakeAsterisk) -> None:
    plain.hints.append(Hint("2000", "ext-local", ["PJSIP/2000", "Custom:DND2000"],
                            "CustomPresence:2000"))
    plain.astdb[("AMPUSER", "2000/cidname")] = "Alice\x1b[31m Martin"
    check = by_name(await run_checks(config_for(plain)))[CHECK_FREEPBX]
    assert check.ok and "AMPUSER names for 1 of 2 extension(s) asked" in check.detail
    assert '"Alice\\x1b[31m Martin"' in check.detail  # escaped, never raw to a terminal
    # Without the permission for DBGet: said, with the manager.conf fix.
    plain.denied_actions.add("dbget")
    check = by_name(await run_checks(config_for(plain)))[CHECK_FREEPBX]
    assert not check.ok and "Permission denied" in check.detail
    assert "write=reporting" in check.fix


async def test_no_freepbx_devices_nothing_to_do(plain: FakeAsterisk) -> None:
    check = by_name(await run_checks(config_for(plain)))[CHECK_FREEPBX]
    assert check.ok and "nothing to do" in check.detail


async def test_store_check(plain: FakeAsterisk, postgres_url: str, tmp_path: Path) -> None:
    """SQLite or PostgreSQL: reachable, schema, and with [ha] the group."""
    from astpresence.app.settings import HaConfig
    from astpresence.cli.services import store_check
    from astpresence.store.postgres import PostgresStore

    sqlite = await store_check(replace(config_for(plain), db=str(tmp_path / "x.db")))
    assert sqlite.ok and "made at the daemon's first start" in sqlite.detail
    ha_on_sqlite = await store_check(replace(config_for(plain), ha=HaConfig(enabled=True)))
    assert not ha_on_sqlite.ok and "[ha] needs [store] url" in ha_on_sqlite.detail
    pg = replace(config_for(plain), db_url=Secret(postgres_url), ha=HaConfig(enabled=True))
    empty = await store_check(pg)
    assert empty.ok and "empty (the daemon creates the tables" in empty.detail
    store = PostgresStore(postgres_url)
    await store.open()
    await store.close()
    import asyncpg
    conn = await asyncpg.connect(postgres_url)
    now = datetime.now(UTC).isoformat()
    await conn.execute("INSERT INTO meta VALUES ('ha_node:a', $1)", json.dumps(
        {"node": "a", "role": "leader", "api": "http://h:1", "since": now, "seen": now}))
    await conn.close()
    ready = await store_check(pg)
    assert ready.ok and "schema version 4; HA group: a (leader, seen 0 s ago)" in ready.detail
    down = await store_check(replace(pg, db_url=Secret("postgresql://u:pw@127.0.0.1:1/x")))
    assert not down.ok and "u:***@" in down.detail and "pw" not in down.detail
    assert "pg_hba.conf" in down.fix


@pytest.mark.parametrize(("dialplan", "ok", "words"), [
    ({}, False, "astpresence-dial is not loaded (Did not find context astpresence-dial)"),
    ({"astpresence-dial": [("s", "NoOp", "astpresence-dial: ${ARG1}"),
                           ("s", "Dial", "${ARG2}")]}, False, "predates call handling"),
    ({"astpresence-dial": [("s", "Set", "LOCAL(rule)=${DB(astpresence-calls/${user}/x)}")]},
     True, "astpresence-dial loaded; astdb astpresence-calls holds 1 rule(s)"),
])
async def test_call_handling_check(plain: FakeAsterisk, dialplan: dict[str, Any], ok: bool,
                                   words: str) -> None:
    from dataclasses import replace

    from astpresence.domain.call_settings import CallSettings

    plain.dialplan.update(dialplan)
    plain.astdb[("astpresence-calls", "2000/internal")] = "v1|busy|||"
    checks = await run_checks(replace(config_for(plain), calls=CallSettings(enabled=True)))
    check = by_name(checks)[CHECK_CALLS]
    assert check.ok is ok and words in check.detail, check
    assert ok or "dialplan reload" in check.fix
