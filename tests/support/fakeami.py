"""A fake Asterisk AMI server for tests: real TCP on 127.0.0.1, port chosen by the OS.

It speaks what the captures in tests/support/captures/ show, byte for byte
(tests/asterisk/test_fakeami.py replays them), and models just enough of Asterisk to be
useful end to end: CustomPresence presence, Custom: device states, hints,
one level of queues.

Asterisk behaviour reproduced, with where it comes from (asterisk/asterisk,
main/manager.c unless said otherwise):

- Lines end at CRLF (or a bare LF); a request line that does not fit the
  1024-byte input buffer is discarded and the request answered
  ``Failed to parse message: line too long`` (``get_input``/``do_message``).
- Action names are case-insensitive; anything but Login/Logoff before login is
  answered ``Permission denied``; unknown actions
  ``Invalid/unknown command: X. Use Action: ListCommands to show available commands.``
- A refused Login is answered after ``login_failure_delay`` (Asterisk sleeps
  one second) and the socket is then CLOSED (``action_login`` returns -1).
- A response is written before the events its action caused
  (``process_message`` then ``process_events``).
- ``PresenceStateChange`` is sent on every presence write, C-escaped
  (main/presencestate.c ``presence_state_to_ami``); ``PresenceStatus`` only
  for hints whose aggregated presence really changed, raw, never escaped
  (main/extension_state.c); their relative order varies (README).
- ``DeviceStateChange`` only when a device's state really changes
  (main/stasis_cache.c publishes an aggregate only when it changed);
  ``ExtensionStatus`` only when a hint's state changes or is ringing.
- Hint device aggregation and the extension-state numbers follow
  ``ast_devstate_aggregate_add`` (main/devicestate.c) and
  ``ast_devstate_to_extenstate`` (main/extension_state.c).
- Base64 (``e``) subtype/message are decoded into 256-byte buffers: silently
  truncated to 255 bytes (funcs/func_presencestate.c ``presence_write``).
- Setting ``not_set`` keeps an entry (astdb holds ``not_set,,``): the name is
  gone from :attr:`FakeAsterisk.presences` but ``PresenceStateList`` still
  reports it with ``Status: not_set``, as Asterisk's stasis cache does.

List order: Asterisk lists from hash containers, so the order means nothing.
The fake lists devices in insertion order and presences most-recently-set
last, which reproduces the captures.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Iterable, Mapping, Sequence, Union

from astpresence.asterisk.ami.frames import Message
from astpresence.asterisk.codec import decode_presence_value
from tests.support.wire import c_escape, encode_message
from astpresence.domain.model import InvalidInput, parse_presence

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"

#: Raw AMI sessions recorded against a real Asterisk, kept with the tests
#: (docs/asterisk.md says what they show).
CAPTURE_DIR = Path(__file__).resolve().parent / "captures"
Headers = Union[Mapping[str, str], Iterable[tuple[str, str]]]

#: main/manager.c: ``char inbuf[1025]`` and ``maxlen = sizeof(inbuf) - 1``.
INBUF_MAX = 1024

DEVICE_STATES = (
    "UNKNOWN", "NOT_INUSE", "INUSE", "BUSY", "INVALID",
    "UNAVAILABLE", "RINGING", "RINGINUSE", "ONHOLD",
)
#: enum ast_device_state values (include/asterisk/devicestate.h).
DEVICE_STATE_NUM = {name: num for num, name in enumerate(DEVICE_STATES)}
#: ast_devstate_aggregate_add(): state_order[], indexed by state name.
_DEVICE_ORDER = {
    "UNKNOWN": 1, "NOT_INUSE": 3, "INUSE": 6, "BUSY": 7, "INVALID": 0,
    "UNAVAILABLE": 2, "RINGING": 5, "RINGINUSE": 8, "ONHOLD": 4,
}

# enum ast_extension_states (include/asterisk/pbx.h)
EXT_NOT_INUSE, EXT_INUSE, EXT_BUSY, EXT_UNAVAILABLE, EXT_RINGING, EXT_ONHOLD = 0, 1, 2, 4, 8, 16
#: ast_devstate_to_extenstate(): note UNKNOWN is Idle, INVALID is Unavailable.
_DEVICE_TO_EXTEN = {
    "ONHOLD": EXT_ONHOLD,
    "BUSY": EXT_BUSY,
    "UNKNOWN": EXT_NOT_INUSE,
    "UNAVAILABLE": EXT_UNAVAILABLE,
    "INVALID": EXT_UNAVAILABLE,
    "RINGINUSE": EXT_INUSE | EXT_RINGING,
    "RINGING": EXT_RINGING,
    "INUSE": EXT_INUSE,
    "NOT_INUSE": EXT_NOT_INUSE,
}
#: extension_state_mappings[] (main/extension_state.c)
EXTEN_STATE_TEXT = {
    EXT_NOT_INUSE: "Idle",
    EXT_INUSE: "InUse",
    EXT_BUSY: "Busy",
    EXT_UNAVAILABLE: "Unavailable",
    EXT_RINGING: "Ringing",
    EXT_INUSE | EXT_RINGING: "InUse&Ringing",
    EXT_ONHOLD: "Hold",
    EXT_INUSE | EXT_ONHOLD: "InUse&Hold",
}
#: app_queue.c extensionstate2devicestate()
_EXTEN_TO_DEVICE = {
    EXT_NOT_INUSE: "NOT_INUSE",
    EXT_INUSE: "INUSE",
    EXT_BUSY: "BUSY",
    EXT_RINGING: "RINGING",
    EXT_INUSE | EXT_RINGING: "RINGINUSE",
    EXT_ONHOLD: "ONHOLD",
    EXT_INUSE | EXT_ONHOLD: "INUSE",
    EXT_UNAVAILABLE: "UNAVAILABLE",
}

PRESENCE_STATES = ("not_set", "unavailable", "available", "away", "xa", "chat", "dnd")
#: ast_presence_state_helper(): which state wins when a hint names several.
_PRESENCE_ORDER = {
    "invalid": 0, "not_set": 1, "available": 2, "unavailable": 3,
    "chat": 4, "away": 5, "xa": 6, "dnd": 7,
}

DEFAULT_MODULES = frozenset(
    {
        "func_presencestate",
        "res_manager_presencestate",
        "res_manager_devicestate",
        "app_queue",
        "func_devstate",
        "res_pjsip_exten_state",
    }
)

#: Class (Privilege) of each event the fake emits.
_EVENT_CLASS = {
    "FullyBooted": "system",
    "QueueMemberPause": "agent",
}

_TRUE = {"yes", "true", "y", "t", "1", "on"}  # main/utils.c ast_true()


@dataclass
class Hint:
    """``exten => <exten>,hint,<devices joined by &>[,<presence>]`` in ``<context>``."""

    exten: str
    context: str
    devices: list[str]
    presence: str | None = None
    watchers: int = 0  # only shown by ``core show hints``

    @property
    def hint(self) -> str:
        text = "&".join(self.devices)
        return text + ("," + self.presence if self.presence else "")


@dataclass
class QueueMember:
    """A static member of an app_queue queue."""

    queue: str
    name: str
    location: str
    paused: bool = False
    paused_reason: str = ""
    state_interface: str = ""
    penalty: int = 0
    calls_taken: int = 0
    last_call: int = 0
    last_pause: int = 0
    login_time: int = 0  # 0: set to the time the fake starts
    ringinuse: int = 1
    wrapuptime: int = 0


class _Session:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.authenticated = False
        self.username = ""
        self.event_classes: set[str] | None = None  # None: all
        self.lock = asyncio.Lock()
        self.task: asyncio.Task[None] | None = None

    def wants(self, event_class: str) -> bool:
        return self.authenticated and (
            self.event_classes is None or event_class in self.event_classes
        )


class FakeAsterisk:
    """The fake server. Seed the public dicts, :meth:`start`, talk AMI, :meth:`stop`."""

    host = HOST

    def __init__(
        self,
        *,
        username: str = "astpresence",
        secret: str = "s3cret",
        banner_version: str = "13.0.0",
    ) -> None:
        self.username = username
        self.secret = secret
        self.banner_version = banner_version
        self.port = 0

        # -- state, seedable --
        self.presences: dict[str, tuple[str, str, str]] = {}
        self.devices: dict[str, str] = {}
        self.hints: list[Hint] = []
        self.queue_members: list[QueueMember] = []
        self.modules: set[str] = set(DEFAULT_MODULES)
        self.variables: dict[str, str] = {}  # global variables set with Setvar
        #: astdb beside the families the fake keeps elsewhere: (family, key) -> value
        self.astdb: dict[tuple[str, str], str] = {}
        #: dialplan the fake lists with ShowDialPlan: context -> [(exten, app, data)]
        self.dialplan: dict[str, list[tuple[str, str, str]]] = {}
        #: PJSIP endpoints: name -> caller ID (name, number) as pjsip.conf sets them
        self.endpoints: dict[str, tuple[str | None, str | None]] = {}
        #: app_voicemail boxes: "2000@default" -> (new, old)
        self.mailboxes: dict[str, tuple[int, int]] = {}
        # Presentities set to not_set: still listed by PresenceStateList.
        self._cleared: dict[str, tuple[str, str]] = {}

        # -- behaviour switches --
        self.refuse_logins = False
        #: actions (lower case) the login may not run: manager.c answers
        #: "Permission denied" when the write= classes do not cover them
        self.denied_actions: set[str] = set()
        self.login_failure_delay = 0.0  # Asterisk: sleep(1)
        self.action_delay = 0.0
        self.split_writes: int | None = None
        self.split_delay = 0.0  # pause between the chunks of a split write
        #: "change_first", "status_first" or "random": where PresenceStateChange
        #: goes relative to the PresenceStatus events of the same change.
        self.presence_event_order = "change_first"
        self._stalled = False

        # -- observation --
        self.actions: list[Message] = []
        self.connections = 0
        self.logins = 0

        self._server: asyncio.Server | None = None
        self._sessions: set[_Session] = set()
        self._started_at = time.time()
        self._changed = asyncio.Condition()

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        self._started_at = time.time()
        for member in self.queue_members:
            if not member.login_time:
                member.login_time = int(self._started_at)
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        await self.drop_clients()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def restart(self) -> None:
        """Drop clients and listen again on the same port; state is kept (astdb)."""
        await self.stop()
        self._started_at = time.time()
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, reuse_address=True
        )

    async def drop_clients(self) -> None:
        """Close every client connection abruptly (RST)."""
        sessions = list(self._sessions)
        for session in sessions:
            session.writer.transport.abort()
        tasks = [s.task for s in sessions if s.task is not None]
        if not tasks:
            return
        # The handlers see EOF and end; cancelling them would make asyncio's
        # stream callback log the CancelledError (Python 3.11).
        _, stuck = await asyncio.wait(tasks, timeout=2.0)
        for task in stuck:
            task.cancel()
        if stuck:
            await asyncio.wait(stuck)

    def stall(self, on: bool = True) -> None:
        """Stop answering anything and sending events; sockets stay open."""
        self._stalled = on

    # -- observation helpers -----------------------------------------------------

    def setvars(self, variable_prefix: str) -> list[Message]:
        """Received Setvar actions whose Variable starts with ``variable_prefix``."""
        return [
            m
            for m in self.actions
            if (m.get("Action") or "").lower() == "setvar"
            and (m.get("Variable") or "").startswith(variable_prefix)
        ]

    async def wait_for_action(
        self, pred: Callable[[Message], bool], timeout: float = 5.0, *, start: int = 0
    ) -> Message:
        """The first action (from index ``start`` of :attr:`actions`) matching ``pred``."""

        def find() -> Message | None:
            for message in self.actions[start:]:
                if pred(message):
                    return message
            return None

        async with asyncio.timeout(timeout):
            async with self._changed:
                await self._changed.wait_for(lambda: find() is not None)
        found = find()
        assert found is not None
        return found

    async def wait_for_login(self, count: int = 1, timeout: float = 5.0) -> None:
        """Wait until ``count`` logins in total have succeeded."""
        async with asyncio.timeout(timeout):
            async with self._changed:
                await self._changed.wait_for(lambda: self.logins >= count)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- things that happen outside AMI --------------------------------------------

    async def external_presence_change(
        self, name: str, state: str, subtype: str = "", message: str = ""
    ) -> None:
        """As if a phone or the CLI changed ``CustomPresence:<name>``."""
        if state.lower() not in PRESENCE_STATES:
            raise ValueError(f"invalid presence state {state!r}")
        await self._broadcast(
            self._set_presence(f"CustomPresence:{name}", name, state.lower(), subtype, message)
        )

    async def external_device_change(self, device: str, state: str) -> None:
        """As if ``device`` changed state (a call, a registration...)."""
        if state.upper() not in DEVICE_STATE_NUM:
            raise ValueError(f"invalid device state {state!r}")
        await self._broadcast(self._set_device(device, state.upper()))

    async def broadcast_event(self, headers: Headers) -> None:
        """Send an arbitrary event frame to every logged-in client."""
        await self._broadcast([list(_pairs(headers))])

    async def send_raw(self, data: bytes) -> None:
        """Write raw bytes to every logged-in client (malformed input tests)."""
        for session in list(self._sessions):
            if session.authenticated:
                await self._write(session, data)

    # -- connection handling ----------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _Session(reader, writer)
        session.task = asyncio.current_task()
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sessions.add(session)
        self.connections += 1
        try:
            await self._write(session, f"Asterisk Call Manager/{self.banner_version}\r\n".encode())
            await self._serve(session)
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._sessions.discard(session)
            self.connections -= 1
            writer.transport.abort()

    async def _serve(self, session: _Session) -> None:
        buf = bytearray()
        lines: list[str] = []
        too_long = False
        while True:
            data = await session.reader.read(65536)
            if not data:
                return
            buf += data
            while True:
                # get_input(): look for the line end inside the input buffer only.
                end = buf.find(b"\n", 0, INBUF_MAX)
                if end < 0:
                    if len(buf) >= INBUF_MAX:
                        # "Line too long": keep the last byte, it may be a CR.
                        del buf[: INBUF_MAX - 1]
                        too_long = True
                        continue
                    break
                raw = bytes(buf[:end])
                del buf[: end + 1]
                if raw.endswith(b"\r"):
                    raw = raw[:-1]
                line = raw.decode("utf-8", "replace")
                if line:
                    lines.append(line)
                    continue
                if not lines and not too_long:
                    continue  # blank line between requests
                request, lines = lines, []
                keep = await self._request(session, request, too_long)
                too_long = False
                if not keep:
                    return

    async def _request(self, session: _Session, lines: list[str], too_long: bool) -> bool:
        message = _parse_request(lines)
        self.actions.append(message)
        await self._notify()
        if self._stalled:
            return True  # a hung Asterisk: requests are recorded, never answered
        if self.action_delay:
            await asyncio.sleep(self.action_delay)
        if too_long:
            await self._reply(session, _error(message, "Failed to parse message: line too long"))
            return True
        action = (message.get("Action") or "").strip()
        if not action:
            await self._reply(session, _error(message, "Missing action in request"))
            return True
        name = action.lower()
        if not session.authenticated and name not in ("login", "logoff", "challenge"):
            await self._reply(session, _error(message, "Permission denied"))
            return True
        handler = self._handlers().get(name)
        if handler is None:
            return await self._unknown(session, message)
        if name in self.denied_actions:
            await self._reply(session, _error(message, "Permission denied"))
            return True
        return await handler(session, message)

    async def _unknown(self, session: _Session, m: Message) -> bool:
        """An action no loaded module registered."""
        action = (m.get("Action") or "").strip()
        await self._reply(session, _error(
            m, f"Invalid/unknown command: {action}. "
               "Use Action: ListCommands to show available commands."))
        return True

    def _handlers(self) -> dict[str, Callable[[_Session, Message], Awaitable[bool]]]:
        return {
            "login": self._login,
            "logoff": self._logoff,
            "ping": self._ping,
            "setvar": self._setvar,
            "getvar": self._getvar,
            "presencestate": self._presencestate,
            "presencestatelist": self._presencestatelist,
            "devicestatelist": self._devicestatelist,
            "extensionstatelist": self._extensionstatelist,
            "extensionstate": self._extensionstate,
            "queuestatus": self._queuestatus,
            "queuepause": self._queuepause,
            "modulecheck": self._modulecheck,
            "command": self._command,
            "dbput": self._dbput,
            "dbdel": self._dbdel,
            "dbget": self._dbget,
            "dbgettree": self._dbgettree,
            "showdialplan": self._showdialplan,
            "pjsipshowendpoints": self._pjsipshowendpoints,
            "pjsipshowendpoint": self._pjsipshowendpoint,
            "voicemailuserslist": self._voicemailuserslist,
            "mailboxcount": self._mailboxcount,
        }

    # -- writing ------------------------------------------------------------

    async def _write(self, session: _Session, data: bytes) -> None:
        async with session.lock:
            writer = session.writer
            if writer.is_closing():
                return
            size = self.split_writes
            if not size:
                writer.write(data)
                await writer.drain()
                return
            for i in range(0, len(data), size):
                writer.write(data[i : i + size])
                await writer.drain()
                await asyncio.sleep(self.split_delay)

    async def _reply(self, session: _Session, headers: Sequence[tuple[str, str]]) -> None:
        await self._write(session, encode_message(headers))

    async def _broadcast(self, events: list[list[tuple[str, str]]]) -> None:
        if self._stalled:
            return
        for headers in events:
            name = headers[0][1]
            event_class = _EVENT_CLASS.get(name, "call")
            # manager_event(): Event, Privilege, then the fields.
            frame = encode_message([headers[0], ("Privilege", f"{event_class},all"), *headers[1:]])
            for session in list(self._sessions):
                if session.wants(event_class):
                    try:
                        await self._write(session, frame)
                    except (ConnectionError, OSError):
                        pass

    # -- actions ---------------------------------------------------------------

    async def _login(self, session: _Session, m: Message) -> bool:
        if session.authenticated:
            await self._reply(session, _ack(m, "Already authenticated"))
            return True
        if (
            self.refuse_logins
            or m.get("Username") != self.username
            or m.get("Secret") != self.secret
        ):
            if self.login_failure_delay:
                await asyncio.sleep(self.login_failure_delay)
            await self._reply(session, _error(m, "Authentication failed"))
            return False  # Asterisk ends the session after a failed login
        session.authenticated = True
        session.username = self.username
        session.event_classes = _event_mask(m.get("Events"))
        self.logins += 1
        await self._reply(session, _ack(m, "Authentication accepted"))
        if session.wants("system"):
            up = str(int(time.time() - self._started_at))
            await self._reply(
                session,
                [
                    ("Event", "FullyBooted"),
                    ("Privilege", "system,all"),
                    ("Uptime", up),
                    ("LastReload", up),
                    ("Status", "Fully Booted"),
                ],
            )
        await self._notify()
        return True

    async def _logoff(self, session: _Session, m: Message) -> bool:
        await self._reply(session, _response(m, "Goodbye", "Thanks for all the fish."))
        return False

    async def _ping(self, session: _Session, m: Message) -> bool:
        now = time.time()
        await self._reply(
            session,
            [*_head(m, "Success"), ("Ping", "Pong"), ("Timestamp", f"{now:.6f}")],
        )
        return True

    async def _setvar(self, session: _Session, m: Message) -> bool:
        variable = m.get("Variable") or ""
        value = m.get("Value") or ""
        if not variable:
            await self._reply(session, _error(m, "No variable specified"))
            return True
        func, args = _function_call(variable)
        events: list[list[tuple[str, str]]] | None
        if func == "PRESENCE_STATE":
            events = self._setvar_presence(args, value)
        elif func == "DEVICE_STATE":
            events = self._setvar_device(args, value)
        elif func is None:
            self.variables[variable] = value
            events = []
        else:
            events = None
        if events is None:
            await self._reply(session, _error(m, "Variable not set"))
            return True
        await self._reply(session, _ack(m, "Variable Set"))
        await self._broadcast(events)
        return True

    def _setvar_presence(self, args: list[str], value: str) -> list[list[tuple[str, str]]] | None:
        provider = args[0] if args else ""
        prefix = "CustomPresence:"
        if provider[: len(prefix)].lower() != prefix.lower() or not provider[len(prefix) :]:
            return None
        name = provider[len(prefix) :]
        options = value.split(",")[3] if value.count(",") >= 3 else ""
        if options and "e" not in options:
            return None  # func_presencestate parse_data(): invalid options
        # Asterisk ignores fields after the fourth; the codec refuses them.
        fields = (value.split(",") + ["", ""])[:4]
        try:
            if "e" in options:
                # ast_base64decode() never refuses: what is not base64 decodes to
                # bytes all the same (checked on Asterisk 22; docs/asterisk.md)
                state = parse_presence(fields[0]).state.value
                subtype, message = (_truncate255(asterisk_b64decode(f)) for f in fields[1:3])
            else:
                presence = decode_presence_value(",".join(fields[:3]))
                state, subtype, message = presence.state.value, presence.subtype, presence.message
        except InvalidInput:
            return None
        return self._set_presence(provider, name, state, subtype, message)

    def _setvar_device(self, args: list[str], value: str) -> list[list[tuple[str, str]]] | None:
        device = args[0] if args else ""
        if device[:7].lower() != "custom:" or not device[7:]:
            return None
        state = value.upper()
        # func_devstate devstate_write(): anything unknown parses as UNKNOWN,
        # and UNKNOWN is refused.
        if state not in DEVICE_STATE_NUM or state == "UNKNOWN":
            return None
        return self._set_device(device, state)

    async def _dbput(self, session: _Session, m: Message) -> bool:
        # main/db.c manager_dbput(): Family and Key required, Val may be empty.
        family, key = m.get("Family") or "", m.get("Key") or ""
        if not family:
            await self._reply(session, _error(m, "No family specified"))
        elif not key:
            await self._reply(session, _error(m, "No key specified"))
        else:
            self.astdb[(family, key)] = m.get("Val") or ""
            await self._reply(session, _response(m, "Success", "Updated database successfully"))
        return True

    async def _dbdel(self, session: _Session, m: Message) -> bool:
        # main/db.c manager_dbdel()
        family, key = m.get("Family") or "", m.get("Key") or ""
        if not family:
            await self._reply(session, _error(m, "No family specified."))
        elif not key:
            await self._reply(session, _error(m, "No key specified."))
        elif self.astdb.pop((family, key), None) is None:
            # what Asterisk 22 answers for a key that is not there (seen on the lab's)
            await self._reply(session, _error(m, "Database entry could not be deleted"))
        else:
            await self._reply(session, _response(m, "Success", "Key deleted successfully"))
        return True

    async def _dbget(self, session: _Session, m: Message) -> bool:
        # main/db.c manager_dbget(): a list of one DBGetResponse, ActionID last.
        family, key = m.get("Family") or "", m.get("Key") or ""
        if not family:
            await self._reply(session, _error(m, "No family specified."))
        elif not key:
            await self._reply(session, _error(m, "No key specified."))
        elif (family, key) not in self.astdb:
            await self._reply(session, _error(m, "Database entry not found"))
        else:
            await self._send_list(session, m, "Result will follow", "DBGetResponse",
                                  [[("Family", family), ("Key", key),
                                    ("Val", self.astdb[(family, key)])]],
                                  "DBGetComplete", id_last=True)
        return True

    async def _dbgettree(self, session: _Session, m: Message) -> bool:
        # main/db.c manager_db_tree_get(): whole keys ("/AMPUSER/2000/cidname") in
        # key order, ActionID last; an empty family lists everything.
        family, key = m.get("Family") or "", m.get("Key") or ""
        prefix = f"/{family}/{key}" if family and key else f"/{family}" if family else ""
        rows = sorted((f"/{f}/{k}", v) for (f, k), v in self.astdb.items())
        items = [[("Key", k), ("Val", v)] for k, v in rows
                 if not prefix or k == prefix or k.startswith(prefix + "/")]
        await self._send_list(session, m, "Result will follow", "DBGetTreeResponse", items,
                              "DBGetTreeComplete", id_last=True)
        return True

    async def _showdialplan(self, session: _Session, m: Message) -> bool:
        # main/pbx.c manager_show_dialplan(): ListDialplan events, ActionID after Event;
        # "Did not find context X" when there is none (seen on the lab's Asterisk 22).
        context, exten = m.get("Context") or "", m.get("Extension") or ""
        if context and context not in self.dialplan:
            await self._reply(session, _error(m, f"Did not find context {context}"))
            return True
        items = [[("Context", ctx), ("Extension", ext), ("Priority", str(n)),
                  ("Application", app), ("AppData", data), ("Registrar", "pbx_config")]
                 for ctx, steps in self.dialplan.items() if not context or ctx == context
                 for n, (ext, app, data) in enumerate(steps, 1) if not exten or ext == exten]
        await self._send_list(session, m, "Success", "ListDialplan", items,
                              "ShowDialPlanComplete")
        return True

    async def _pjsipshowendpoints(self, session: _Session, m: Message) -> bool:
        # res_pjsip/pjsip_configuration.c ami_show_endpoints()
        if "res_pjsip" not in self.modules:
            return await self._unknown(session, m)
        if not self.endpoints:
            await self._reply(session, _error(m, "No endpoints found\n"))
            return True
        items = [[("ObjectType", "endpoint"), ("ObjectName", name), ("Transport", ""),
                  ("Aor", name), ("Auths", name), ("OutboundAuths", ""), ("Contacts", ""),
                  ("DeviceState", self._endpoint_state(name)), ("ActiveChannels", "")]
                 for name in self.endpoints]
        await self._send_list(
            session, m, "A listing of Endpoints follows, presented as EndpointList events",
            "EndpointList", items, "EndpointListComplete")
        return True

    async def _pjsipshowendpoint(self, session: _Session, m: Message) -> bool:
        # ami_show_endpoint(): EndpointDetail first, then the endpoint's other
        # objects (an AorDetail here); ListItems counts them all.
        if "res_pjsip" not in self.modules:
            return await self._unknown(session, m)
        name = m.get("Endpoint") or ""
        if not name:
            await self._reply(session, _error(m, "PJSIPShowEndpoint requires an endpoint name\n"))
            return True
        if name.lower().startswith("pjsip/"):
            name = name[6:]
        if name not in self.endpoints:
            await self._reply(session, _error(m, f"Unable to retrieve endpoint {name}\n"))
            return True
        cid_name, cid_num = self.endpoints[name]
        detail = [("ObjectType", "endpoint"), ("ObjectName", name), ("Context", "from-internal"),
                  ("Callerid", callerid_merge(cid_name, cid_num)), ("CalleridPrivacy", "allowed_not_screened"),
                  ("DeviceState", self._endpoint_state(name)), ("ActiveChannels", "")]
        aor = [("ObjectType", "aor"), ("ObjectName", name), ("MaxContacts", "1")]
        await self._send_list(session, m, "Following are Events for each object associated "
                              "with the Endpoint", "EndpointDetail", [detail],
                              "EndpointDetailComplete", more=[("AorDetail", aor)])
        return True

    def _endpoint_state(self, name: str) -> str:
        state = self._device_state(f"PJSIP/{name}")
        return {"NOT_INUSE": "Not in use", "INUSE": "In use", "UNAVAILABLE": "Unavailable",
                "RINGING": "Ringing", "BUSY": "Busy"}.get(state, "Unknown")

    async def _voicemailuserslist(self, session: _Session, m: Message) -> bool:
        # apps/app_voicemail.c manager_list_voicemail_users()
        if "app_voicemail" not in self.modules:
            return await self._unknown(session, m)
        if not self.mailboxes:
            await self._reply(session, _ack(m, "There are no voicemail users currently defined."))
            return True
        items = []
        for box, (new, old) in self.mailboxes.items():
            mailbox, _, context = box.partition("@")
            items.append([("VMContext", context), ("VoiceMailbox", mailbox),
                          ("Fullname", f"Mailbox {mailbox}"), ("Email", ""), ("Pager", ""),
                          ("ServerEmail", ""), ("FromString", ""), ("MailCommand", ""),
                          ("Language", ""), ("TimeZone", ""), ("Callback", ""),
                          ("Dialout", ""), ("UniqueID", ""), ("ExitContext", ""),
                          ("SayDurationMinimum", "2"), ("SayEnvelope", "Yes"),
                          ("SayCID", "No"), ("AttachMessage", "No"),
                          ("AttachmentFormat", ""), ("DeleteMessage", "No"),
                          ("VolumeGain", "0.00"), ("CanReview", "No"),
                          ("CanMarkUrgent", "No"), ("CallOperator", "No"),
                          ("MaxMessageCount", "100"), ("MaxMessageLength", "0"),
                          ("NewMessageCount", str(new)), ("OldMessageCount", str(old))])
        await self._send_list(session, m, "Voicemail user list will follow",
                              "VoicemailUserEntry", items, "VoicemailUserEntryComplete")
        return True

    async def _mailboxcount(self, session: _Session, m: Message) -> bool:
        # main/manager.c action_mailboxcount(): a mailbox nobody has counts 0.
        mailbox = m.get("Mailbox") or ""
        if not mailbox:
            await self._reply(session, _error(m, "Mailbox not specified"))
            return True
        new, old = self.mailboxes.get(mailbox if "@" in mailbox else f"{mailbox}@default",
                                      (0, 0))
        await self._reply(session, [*_head(m, "Success"), ("Message", "Mailbox Message Count"),
                                    ("Mailbox", mailbox), ("UrgMessages", "0"),
                                    ("NewMessages", str(new)), ("OldMessages", str(old))])
        return True

    async def freepbx_dnd(self, ext: str, on: bool) -> None:
        """FreePBX's *78 / *79 (module donotdisturb, app-dnd-on/off and their
        ``sstate`` gosub): the astdb key, then ``Custom:DND<ext>``, then
        ``Custom:DEVDND<device>`` for each device in ``AMPUSER/<ext>/device``."""
        if on:
            self.astdb[("DND", ext)] = "YES"
        else:
            self.astdb.pop(("DND", ext), None)
        state = "BUSY" if on else "UNAVAILABLE"
        await self.external_device_change(f"Custom:DND{ext}", state)
        for device in filter(None, self.astdb.get(("AMPUSER", f"{ext}/device"), "").split("&")):
            await self.external_device_change(f"Custom:DEVDND{device}", state)

    async def set_voicemail(self, mailbox: str, new: int, old: int) -> None:
        """A message left or listened to: main/manager_mwi.c's MessageWaiting."""
        self.mailboxes[mailbox] = (new, old)
        await self._broadcast([[("Event", "MessageWaiting"), ("Mailbox", mailbox),
                                ("Waiting", "1" if new else "0"), ("New", str(new)),
                                ("Old", str(old))]])

    async def _getvar(self, session: _Session, m: Message) -> bool:
        variable = m.get("Variable") or ""
        if not variable:
            await self._reply(session, _error(m, "No variable specified"))
            return True
        func, args = _function_call(variable)
        value = ""
        if func == "PRESENCE_STATE" and len(args) >= 2:
            value = self._read_presence_field(args)
        elif func == "DEVICE_STATE" and args:
            value = self._device_state(args[0])
        elif func is None:
            value = self.variables.get(variable, "")
        await self._reply(session, [*_head(m, "Success"), ("Variable", variable), ("Value", value)])
        return True

    def _read_presence_field(self, args: list[str]) -> str:
        state, subtype, message = self._presence_of(args[0])
        if state == "invalid":
            return ""
        field = args[1].lower()
        encode = len(args) > 2 and "e" in args[2]
        if field == "value":
            return state
        text = subtype if field == "subtype" else message if field == "message" else ""
        if encode:
            return base64.b64encode(text.encode("utf-8")).decode("ascii")
        return text

    async def _presencestate(self, session: _Session, m: Message) -> bool:
        provider = m.get("Provider") or ""
        if not provider:
            await self._reply(session, _error(m, "No provider specified"))
            return True
        state, subtype, message = self._presence_of(provider)
        if state == "invalid":
            await self._reply(
                session, _error(m, f"Invalid provider {provider} or provider in invalid state")
            )
            return True
        headers = [*_head(m, "Success"), ("Message", "Presence State"), ("State", state)]
        if subtype:
            headers.append(("Subtype", subtype))
        if message:
            # The deprecated duplicate "Message" header, then PresenceMessage.
            headers += [("Message", message), ("PresenceMessage", message)]
        await self._reply(session, headers)
        return True

    async def _presencestatelist(self, session: _Session, m: Message) -> bool:
        items = [
            [
                ("Presentity", f"CustomPresence:{name}"),
                ("Status", state),
                ("Subtype", c_escape(subtype)),
                ("Message", c_escape(message)),
            ]
            for name, (state, subtype, message) in self._listed_presences()
        ]
        await self._send_list(
            session, m, "Presence State Changes will follow", "PresenceStateChange",
            items, "PresenceStateListComplete",
        )
        return True

    async def _devicestatelist(self, session: _Session, m: Message) -> bool:
        items = [[("Device", device), ("State", state)] for device, state in self.devices.items()]
        await self._send_list(
            session, m, "Device State Changes will follow", "DeviceStateChange",
            items, "DeviceStateListComplete",
        )
        return True

    async def _extensionstatelist(self, session: _Session, m: Message) -> bool:
        if not self.hints:
            await self._reply(session, _error(m, "No dialplan hints are available"))
            return True
        items = []
        for hint in self.hints:
            if hint.exten.startswith("_"):
                continue
            status = self._hint_exten_state(hint)
            items.append(
                [
                    ("Exten", hint.exten),
                    ("Context", hint.context),
                    ("Hint", hint.hint),
                    ("Status", str(status)),
                    ("StatusText", EXTEN_STATE_TEXT.get(status, "Unknown")),
                ]
            )
        await self._send_list(
            session, m, "Extension Statuses will follow", "ExtensionStatus",
            items, "ExtensionStateListComplete",
        )
        return True

    async def _send_list(
        self,
        session: _Session,
        m: Message,
        ack: str,
        item_event: str,
        items: list[list[tuple[str, str]]],
        complete_event: str,
        *,
        id_last: bool = False,
        more: Sequence[tuple[str, list[tuple[str, str]]]] = (),
    ) -> None:
        # astman_send_listack, items with ActionID right after Event (main/db.c
        # puts it last), astman_send_list_complete_start/end.
        action_id = m.get("ActionID") or ""
        frames = [
            *_head(m, "Success"), ("EventList", "start"), ("Message", ack)
        ]
        out = [encode_message(frames)]
        id_header = [("ActionID", action_id)] if action_id else []
        events = [(item_event, item) for item in items] + list(more)
        for name, item in events:
            fields = [*item, *id_header] if id_last else [*id_header, *item]
            out.append(encode_message([("Event", name), *fields]))
        out.append(
            encode_message(
                [
                    ("Event", complete_event),
                    *id_header,
                    ("EventList", "Complete"),
                    ("ListItems", str(len(events))),
                ]
            )
        )
        await self._write(session, b"".join(out))

    async def _extensionstate(self, session: _Session, m: Message) -> bool:
        exten = m.get("Exten") or ""
        context = m.get("Context") or "default"
        if not exten:
            await self._reply(session, _error(m, "Extension not specified"))
            return True
        hint = self._find_hint(exten, context)
        status = self._hint_exten_state(hint) if hint else -1
        await self._reply(
            session,
            [
                *_head(m, "Success"),
                ("Message", "Extension Status"),
                ("Exten", exten),
                ("Context", context),
                ("Hint", hint.hint if hint else ""),
                ("Status", str(status)),
                ("StatusText", EXTEN_STATE_TEXT.get(status, "Unknown")),
            ],
        )
        return True

    async def _queuestatus(self, session: _Session, m: Message) -> bool:
        queue_filter = m.get("Queue") or ""
        member_filter = m.get("Member") or ""
        action_id = m.get("ActionID") or ""
        id_header = [("ActionID", action_id)] if action_id else []
        out = [encode_message([*_head(m, "Success"), ("EventList", "start"),
                               ("Message", "Queue status will follow")])]
        count = 0
        for queue in self._queues():
            if queue_filter and queue.lower() != queue_filter.lower():
                continue
            # app_queue.c manager_queues_status(): ActionID comes last here.
            out.append(encode_message([
                ("Event", "QueueParams"), ("Queue", queue), ("Max", "0"),
                ("Strategy", "ringall"), ("Calls", "0"), ("Holdtime", "0"),
                ("TalkTime", "0"), ("Completed", "0"), ("Abandoned", "0"),
                ("ServiceLevel", "0"), ("ServicelevelPerf", "0.0"),
                ("ServicelevelPerf2", "0.0"), ("Weight", "0"), *id_header,
            ]))
            count += 1
            for mem in self.queue_members:
                if mem.queue != queue:
                    continue
                if member_filter and member_filter not in (mem.location, mem.name):
                    continue
                out.append(encode_message([
                    ("Event", "QueueMember"), ("Queue", queue), ("Name", mem.name),
                    ("Location", mem.location),
                    ("StateInterface", mem.state_interface or mem.location),
                    ("Membership", "static"), ("Penalty", str(mem.penalty)),
                    ("CallsTaken", str(mem.calls_taken)), ("LastCall", str(mem.last_call)),
                    ("LastPause", str(mem.last_pause)), ("LoginTime", str(mem.login_time)),
                    ("InCall", "0"), ("Status", str(self._member_status(mem))),
                    ("Paused", "1" if mem.paused else "0"),
                    ("PausedReason", mem.paused_reason),
                    ("Wrapuptime", str(mem.wrapuptime)), *id_header,
                ]))
                count += 1
        out.append(encode_message([("Event", "QueueStatusComplete"), *id_header,
                                   ("EventList", "Complete"), ("ListItems", str(count))]))
        await self._write(session, b"".join(out))
        return True

    async def _queuepause(self, session: _Session, m: Message) -> bool:
        interface = m.get("Interface") or ""
        paused_s = m.get("Paused") or ""
        queue = m.get("Queue") or ""
        reason = m.get("Reason") or ""
        if not interface or not paused_s:
            await self._reply(session, _error(m, "Need 'Interface' and 'Paused' parameters."))
            return True
        paused = paused_s.lower() in _TRUE
        members = [
            mem
            for mem in self.queue_members
            if (not queue or mem.queue.lower() == queue.lower())
            and mem.location.lower() == interface.lower()
        ]
        if not members:
            await self._reply(session, _error(m, "Interface not found"))
            return True
        events: list[list[tuple[str, str]]] = []
        for mem in members:
            events += self._pause_member(mem, paused, reason)
        await self._reply(
            session,
            _ack(m, "Interface paused successfully" if paused else "Interface unpaused successfully"),
        )
        await self._broadcast(events)
        return True

    def _pause_member(self, mem: QueueMember, paused: bool, reason: str) -> list[list[tuple[str, str]]]:
        # app_queue.c set_queue_member_pause()
        mem.paused = paused
        if paused:
            mem.last_pause = int(time.time())
        mem.paused_reason = reason if paused else ""
        events = self._set_device(
            f"Queue:{mem.queue}_pause_{mem.location}", "INUSE" if paused else "NOT_INUSE"
        )
        available = any(self._member_available(m) for m in self.queue_members if m.queue == mem.queue)
        events += self._set_device(f"Queue:{mem.queue}_avail", "NOT_INUSE" if available else "INUSE")
        events.append([
            ("Event", "QueueMemberPause"), ("Queue", mem.queue), ("MemberName", mem.name),
            ("Interface", mem.location), ("StateInterface", mem.state_interface or mem.location),
            ("Membership", "static"), ("Penalty", str(mem.penalty)),
            ("CallsTaken", str(mem.calls_taken)), ("LastCall", str(mem.last_call)),
            ("LastPause", str(mem.last_pause)), ("LoginTime", str(mem.login_time)),
            ("InCall", "0"), ("Status", str(self._member_status(mem))),
            ("Paused", "1" if paused else "0"),
            # An unpause with a reason reports it in this one event.
            ("PausedReason", reason if reason else mem.paused_reason),
            ("Ringinuse", str(mem.ringinuse)), ("Wrapuptime", str(mem.wrapuptime)),
        ])
        return events

    async def _modulecheck(self, session: _Session, m: Message) -> bool:
        # manager.c manager_modulecheck(): an empty Version header survives
        # from the subversion days; loader.c matches names without ".so",
        # case-insensitively.
        module = (m.get("Module") or "").strip()
        base = module[:-3] if module.lower().endswith(".so") else module
        if not base or base.lower() not in {x.lower() for x in self.modules}:
            await self._reply(session, _error(m, "Module not loaded"))
            return True
        await self._reply(session, [*_head(m, "Success"), ("Version", "")])
        return True

    async def _command(self, session: _Session, m: Message) -> bool:
        command = " ".join((m.get("Command") or "").split())
        if not command:
            await self._reply(session, _error(m, "No command provided"))
            return True
        if command.lower() == "core show hints":
            ok, output = True, self._core_show_hints()
        else:
            first = command.split()[0]
            ok, output = False, (
                f"No such command '{command}' (type 'core show help {first}' "
                "for other possible commands)\n"
            )
        # action_command(): trailing newline trimmed, one Output per line.
        if output.endswith("\n"):
            output = output[:-1]
        await self._reply(
            session,
            [
                *_head(m, "Success" if ok else "Error"),
                ("Message", "Command output follows"),
                *(("Output", line) for line in output.split("\n")),
            ],
        )
        return True

    def _core_show_hints(self) -> str:
        if not self.hints:
            return "There are no registered dialplan hints\n"
        out = ["\n    -= Registered Asterisk Dial Plan Hints =-\n"]
        for hint in self.hints:
            status = self._hint_exten_state(hint)
            presence = self._hint_presence(hint)[0]
            out.append(
                f"{_fmt(f'{hint.exten}@{hint.context}', 30)}: {_fmt(hint.hint, 60)}  "
                f"State:{_fmt(EXTEN_STATE_TEXT.get(status, 'Unknown'), 15)} "
                f"Presence:{_fmt(presence if presence != 'invalid' else '', 15)} "
                f"Watchers {hint.watchers:2d}\n"
            )
        out.append("----------------\n")
        out.append(f"- {len(self.hints)} hints registered\n")
        return "".join(out)

    # -- the model -------------------------------------------------------------

    def _listed_presences(self) -> list[tuple[str, tuple[str, str, str]]]:
        listed = list(self.presences.items())
        listed += [(n, ("not_set", s, msg)) for n, (s, msg) in self._cleared.items()
                   if n not in self.presences]
        return listed

    def _presence_of(self, provider: str) -> tuple[str, str, str]:
        """ast_presence_state(): aggregate over '&'-separated providers."""
        best = ("invalid", "", "")
        for label in provider.split("&"):
            prefix, sep, name = label.partition(":")
            if not sep or prefix.lower() != "custompresence" or not name:
                continue
            if name in self.presences:
                current = self.presences[name]
            else:
                subtype, message = self._cleared.get(name, ("", ""))
                current = ("not_set", subtype, message)
            if _PRESENCE_ORDER[current[0]] > _PRESENCE_ORDER[best[0]]:
                best = current
        return best

    def _hint_presence(self, hint: Hint) -> tuple[str, str, str]:
        if not hint.presence:
            return ("not_set", "", "")
        return self._presence_of(hint.presence)

    def _set_presence(
        self, provider: str, name: str, state: str, subtype: str, message: str
    ) -> list[list[tuple[str, str]]]:
        touched = [
            h for h in self.hints
            if h.presence and name in _custom_presence_names(h.presence)
        ]
        before = [self._hint_presence(h) for h in touched]
        self.presences.pop(name, None)
        self._cleared.pop(name, None)
        if state == "not_set":
            self._cleared[name] = (subtype, message)
        else:
            self.presences[name] = (state, subtype, message)
        change = [
            ("Event", "PresenceStateChange"),
            ("Presentity", provider),
            ("Status", state),
            ("Subtype", c_escape(subtype)),
            ("Message", c_escape(message)),
        ]
        statuses = []
        for hint, old in zip(touched, before):
            new = self._hint_presence(hint)
            if new != old and new[0] != "invalid":
                # manager_state_cb(): raw values; a CR/LF in them forges frames.
                statuses.append([
                    ("Event", "PresenceStatus"), ("Exten", hint.exten),
                    ("Context", hint.context), ("Hint", hint.hint), ("Status", new[0]),
                    ("Subtype", new[1]), ("Message", new[2]),
                ])
        order = self.presence_event_order
        if order == "random":
            order = random.choice(("change_first", "status_first"))
        return [change, *statuses] if order == "change_first" else [*statuses, change]

    def _device_state(self, device: str) -> str:
        if device in self.devices:
            return self.devices[device]
        # Custom: devices never set read UNKNOWN from astdb; other unknown
        # devices (no such endpoint) are INVALID.
        return "UNKNOWN" if device.lower().startswith("custom:") else "INVALID"

    def _hint_exten_state(self, hint: Hint) -> int:
        return _DEVICE_TO_EXTEN[_aggregate(self._device_state(d) for d in hint.devices)]

    def _find_hint(self, exten: str, context: str) -> Hint | None:
        for hint in self.hints:
            if hint.exten == exten and hint.context == context:
                return hint
        return None

    def _set_device(self, device: str, state: str) -> list[list[tuple[str, str]]]:
        touched = [h for h in self.hints if device in h.devices]
        before = [self._hint_exten_state(h) for h in touched]
        old = self.devices.get(device)
        self.devices[device] = state
        events: list[list[tuple[str, str]]] = []
        for hint, was in zip(touched, before):
            now = self._hint_exten_state(hint)
            if now != was or now & EXT_RINGING:
                events.append([
                    ("Event", "ExtensionStatus"), ("Exten", hint.exten),
                    ("Context", hint.context), ("Hint", hint.hint), ("Status", str(now)),
                    ("StatusText", EXTEN_STATE_TEXT.get(now, "Unknown")),
                ])
        if old != state:
            events.append([("Event", "DeviceStateChange"), ("Device", device), ("State", state)])
        return events

    def _queues(self) -> list[str]:
        return list(dict.fromkeys(m.queue for m in self.queue_members))

    def _member_state(self, mem: QueueMember) -> str:
        interface = mem.state_interface or mem.location
        if interface.lower().startswith("hint:"):
            exten, _, context = interface[5:].partition("@")
            hint = self._find_hint(exten, context or "default")
            if hint is None:
                return "INVALID"
            return _EXTEN_TO_DEVICE.get(self._hint_exten_state(hint), "INVALID")
        return self._device_state(interface)

    def _member_status(self, mem: QueueMember) -> int:
        return DEVICE_STATE_NUM[self._member_state(mem)]

    def _member_available(self, mem: QueueMember) -> bool:
        # app_queue.c is_member_available(), without wrapup time.
        state = self._member_state(mem)
        if mem.paused or state in ("INVALID", "UNAVAILABLE"):
            return False
        return state in ("NOT_INUSE", "UNKNOWN") or bool(mem.ringinuse)


# -- helpers --------------------------------------------------------------------


def _pairs(headers: Headers) -> Iterable[tuple[str, str]]:
    return headers.items() if isinstance(headers, Mapping) else headers


def _parse_request(lines: list[str]) -> Message:
    """Headers the way astman_get_header() sees them: blanks after ':' skipped."""
    headers = []
    for line in lines:
        key, sep, value = line.partition(":")
        if sep:
            headers.append((key.strip(), value.lstrip(" \t")))
    return Message(headers)


def _head(m: Message, response: str) -> list[tuple[str, str]]:
    headers = [("Response", response)]
    action_id = m.get("ActionID")
    if action_id:
        headers.append(("ActionID", action_id))
    return headers


def _response(m: Message, response: str, message: str) -> list[tuple[str, str]]:
    return [*_head(m, response), ("Message", message)]


def _ack(m: Message, message: str) -> list[tuple[str, str]]:
    return _response(m, "Success", message)


def _error(m: Message, message: str) -> list[tuple[str, str]]:
    return _response(m, "Error", message)


def _event_mask(value: str | None) -> set[str] | None:
    # manager.c set_eventmask()/strings_to_mask(): on/off or a class list.
    if value is None or value.strip().lower() in _TRUE or value.strip().lower() == "all":
        return None
    if value.strip().lower() in ("off", "no", "false", "n", "f", "0", ""):
        return set()
    return {part.strip().lower() for part in value.split(",")}


def _function_call(variable: str) -> tuple[str | None, list[str]]:
    """``FUNC(a,b)`` -> ("FUNC", ["a", "b"]); a plain variable -> (None, [])."""
    if not variable.endswith(")") or "(" not in variable:
        return None, []
    name, _, rest = variable.partition("(")
    return name.strip().upper(), rest[:-1].split(",")


def _custom_presence_names(presence: str) -> set[str]:
    names = set()
    for label in presence.split("&"):
        prefix, sep, name = label.partition(":")
        if sep and prefix.lower() == "custompresence":
            names.add(name)
    return names


def callerid_merge(name: str | None, number: str | None) -> str:
    """main/callerid.c ast_callerid_merge() with ast_escape_quoted() into 128 bytes."""
    if name is not None and number is not None:
        out = bytearray()
        for ch in name:
            raw = ch.encode("utf-8")
            esc = (ch not in "\t\v !" and not "#" <= ch <= "[" and not "]" <= ch <= "~"
                   and ord(ch) <= 0x7F)
            piece = b"\\" + raw if esc else raw
            if len(out) + len(piece) > 127:
                break  # the byte-wise C loop can also cut inside a character; kept whole here
            out += piece
        return f'"{out.decode("utf-8")}" <{number}>'
    return name if name is not None else number if number is not None else "<unknown>"


def _aggregate(states: Iterable[str]) -> str:
    """ast_devstate_aggregate_add(): the 'busiest' state, ringing+busy is RINGINUSE."""
    result, ringing, inuse = "INVALID", False, False
    for state in states:
        if state == "RINGING":
            ringing = True
        elif state in ("INUSE", "ONHOLD", "BUSY"):
            inuse = True
        if ringing and inuse:
            result = "RINGINUSE"
        elif _DEVICE_ORDER[state] > _DEVICE_ORDER[result]:
            result = state
    return result


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def asterisk_b64decode(text: str) -> str:
    """main/utils.c ``ast_base64decode()``: 6 bits per character up to the first
    ``=``, a character outside the alphabet counting as 63; left-over bits dropped.
    The bytes are then read as UTF-8, invalid sequences as U+FFFD (as a client
    reading the event sees them)."""
    out = bytearray()
    acc = bits = 0
    for ch in text.split("=", 1)[0]:
        index = _B64.find(ch)
        acc = (acc << 6) | (index if index >= 0 else 63)
        bits += 6
        if bits >= 8:
            bits -= 8
            out.append((acc >> bits) & 0xFF)
    return out.decode("utf-8", "replace")


def _truncate255(text: str) -> str:
    raw = text.encode("utf-8")
    if len(raw) <= 255:
        return text
    # Asterisk cuts bytes, possibly inside a character; a reader then sees
    # U+FFFD, which is what "replace" produces here too.
    return raw[:255].decode("utf-8", "replace")


def _fmt(text: str, width: int) -> str:
    """printf ``%-W.Ws``."""
    return f"{text[:width]:<{width}}"


# -- captures ------------------------------------------------------------------


@dataclass(frozen=True)
class CaptureStep:
    """What the client sent (b"" for the banner) and what Asterisk wrote back."""

    sent: bytes
    received: bytes


def load_capture(path: Path) -> list[CaptureStep]:
    """Split a capture: lines starting ``>>> `` were sent, the rest received."""
    steps: list[CaptureStep] = []
    sent, received = bytearray(), bytearray()
    for line in path.read_bytes().splitlines(keepends=True):
        if line.startswith(b">>> "):
            if received:
                steps.append(CaptureStep(bytes(sent), bytes(received)))
                sent, received = bytearray(), bytearray()
            sent += line[4:]
        else:
            received += line
    steps.append(CaptureStep(bytes(sent), bytes(received)))
    return steps


def captured_server_bytes(path: Path) -> bytes:
    """Everything Asterisk wrote in a capture, as one byte string."""
    return b"".join(step.received for step in load_capture(path))
