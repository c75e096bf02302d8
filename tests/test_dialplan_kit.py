"""Static checks of the dialplan kit, the AMI account and the Docker files.

There is no Asterisk and no Docker engine on the build machines, so this
module reads the files the way Asterisk and compose would:

* a small parser for Asterisk config files (``[context]``, ``key = value``,
  ``exten =>``, ``same =>``, ``include =>``, ``#include``) that loads
  ``extensions.conf`` the way ``pbx/pbx_config.c`` does: every ``[globals]``
  section first, then each context, with global variables substituted in
  extension names;
* a small interpreter for the subset of dialplan the kit uses, to run the
  feature codes and ``astpresence-dial`` against a fake channel and a fake
  ``CustomPresence`` store. Its semantics follow the Asterisk sources cited in
  the kit's comments; where they are an approximation it says so.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from astpresence.codec import decode_presence_value, encode_presence_value
from astpresence.model import Presence, State

ROOT = Path(__file__).resolve().parents[1]
DIALPLAN = ROOT / "dialplan"
KIT = DIALPLAN / "extensions_astpresence.conf"
MANAGER_KIT = DIALPLAN / "manager_astpresence.conf"
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
DEMO = DOCKER / "asterisk"

FEATURES = "astpresence-features"
SET_SUB = "astpresence-set"
DIAL_SUB = "astpresence-dial"

DEFAULT_CODES = {
    "ASTPRESENCE_CODE_DND_TOGGLE": ("*30", "toggle"),
    "ASTPRESENCE_CODE_AVAILABLE": ("*31", "available"),
    "ASTPRESENCE_CODE_AWAY": ("*32", "away"),
    "ASTPRESENCE_CODE_DND": ("*33", "dnd"),
    "ASTPRESENCE_CODE_XA": ("*34", "xa"),
    "ASTPRESENCE_CODE_CHAT": ("*35", "chat"),
    "ASTPRESENCE_CODE_CLEAR": ("*36", "not_set"),
}


# =========================================================================
# Asterisk config files
# =========================================================================


@dataclass
class Entry:
    key: str
    value: str
    op: str  # "=" or "=>"
    lineno: int
    file: str


@dataclass
class Category:
    name: str
    entries: list[Entry] = field(default_factory=list)
    file: str = ""


def _strip_comment(line: str) -> str:
    """Drop a ``;`` comment; ``\\;`` is a literal semicolon (main/config.c)."""
    out = []
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == "\\" and i + 1 < len(line) and line[i + 1] == ";":
            out.append(";")
            i += 2
            continue
        if ch == ";":
            break
        out.append(ch)
        i += 1
    return "".join(out).strip()


def parse_config(
    text: str, name: str = "<text>", *, include_root: Path | None = None,
    include_map: dict[str, Path] | None = None,
) -> list[Category]:
    """Categories in file order, ``#include`` expanded in place."""
    cats: list[Category] = []
    _parse_into(text, name, cats, include_root, include_map or {})
    return cats


def _parse_into(
    text: str, name: str, cats: list[Category], include_root: Path | None,
    include_map: dict[str, Path],
) -> None:
    in_block = False
    for lineno, raw in enumerate(text.splitlines(), 1):
        if in_block:
            if "--;" in raw:
                in_block = False
            continue
        if raw.lstrip().startswith(";--"):
            in_block = "--;" not in raw.lstrip()[3:]
            continue
        stripped = raw.strip()
        if stripped.startswith("#include"):
            target = stripped[len("#include"):].strip().strip('"<>')
            path = include_map.get(target) or (include_root / target if include_root else None)
            assert path is not None and path.is_file(), f"{name}:{lineno}: cannot #include {target}"
            _parse_into(path.read_text(encoding="utf-8"), str(path), cats, include_root,
                        include_map)
            continue
        line = _strip_comment(raw)
        if not line:
            continue
        m = re.fullmatch(r"\[([^\]]+)\](?:\(([^)]*)\))?", line)
        if m:
            cats.append(Category(m.group(1), file=name))
            continue
        m = re.match(r"([^=]+?)\s*(=>|=)\s*(.*)", line)
        assert m, f"{name}:{lineno}: cannot parse {raw!r}"
        assert cats, f"{name}:{lineno}: setting outside a [section]"
        cats[-1].entries.append(Entry(m.group(1).strip(), m.group(3), m.group(2), lineno, name))


# =========================================================================
# Dialplan: variables, functions, expressions (subset)
# =========================================================================


def _find_close(s: str, start: int, open_ch: str, close_ch: str) -> int:
    """Index of the bracket closing the one before ``start`` (pbx_variables.c
    counts only this bracket pair)."""
    depth = 1
    i = start
    while i < len(s):
        if s[i] == open_ch:
            depth += 1
        elif s[i] == close_ch:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError(f"unbalanced {open_ch}{close_ch} in {s!r}")


def split_args(data: str, delim: str = ",") -> list[str]:
    """``ast_app_separate_args``: delimiters inside () [] or "" do not count;
    quotes and backslashes are removed."""
    args: list[str] = []
    cur: list[str] = []
    paren = bracket = 0
    quote = False
    i = 0
    while i < len(data):
        ch = data[i]
        if ch == "(":
            paren += 1
        elif ch == ")":
            paren = max(0, paren - 1)
        elif ch == "[":
            bracket += 1
        elif ch == "]":
            bracket = max(0, bracket - 1)
        elif ch == '"' and delim != '"':
            quote = not quote
            i += 1
            continue
        elif ch == "\\" and i + 1 < len(data):
            cur.append(data[i + 1])
            i += 2
            continue
        elif ch == delim and not paren and not bracket and not quote:
            args.append("".join(cur))
            cur = []
            i += 1
            continue
        cur.append(ch)
        i += 1
    args.append("".join(cur))
    return args


def evaluate_expression(expr: str) -> str:
    """``$[...]`` for what the kit uses: ``= != < >``, ``&``, ``|``, quoted
    strings and numbers. Returns "1"/"0" (or the single operand)."""
    tokens = re.findall(r'"[^"]*"|!=|<=|>=|=|<|>|\||&|\(|\)|[^\s"=!<>|&()]+', expr)
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def value(tok: str) -> str:
        return tok[1:-1] if tok.startswith('"') else tok

    def atom() -> str:
        tok = take()
        if tok == "(":
            v = or_()
            assert take() == ")"
            return v
        return value(tok)

    def compare() -> str:
        left = atom()
        while peek() in ("=", "!=", "<", ">", "<=", ">="):
            op = take()
            right = atom()
            a: Any = left
            b: Any = right
            if re.fullmatch(r"-?\d+", left) and re.fullmatch(r"-?\d+", right):
                a, b = int(left), int(right)
            result = {
                "=": a == b, "!=": a != b, "<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b,
            }[op]
            left = "1" if result else "0"
        return left

    def truthy(v: str) -> bool:
        return v not in ("", "0")

    def and_() -> str:
        left = compare()
        while peek() == "&":
            take()
            right = compare()
            left = "1" if truthy(left) and truthy(right) else "0"
        return left

    def or_() -> str:
        left = and_()
        while peek() == "|":
            take()
            right = and_()
            left = "1" if truthy(left) or truthy(right) else "0"
        return left

    if not tokens:
        return ""
    result = or_()
    assert pos == len(tokens), f"unparsed tail in $[{expr}]"
    return result


def check_condition(cond: str) -> bool:
    """``pbx_checkcondition``: empty is false, a number is its value, other text true."""
    cond = cond.strip()
    if not cond:
        return False
    if re.fullmatch(r"-?\d+", cond):
        return int(cond) != 0
    return True


# =========================================================================
# A fake Asterisk: presence store, mailboxes, one channel, the interpreter
# =========================================================================

PRESENCE_STATES = {s.value for s in State}


@dataclass
class Channel:
    name: str = "PJSIP/2000-00000001"
    endpoint: str | None = "2000"  # None: not a PJSIP channel (e.g. Local)
    callerid: str = "2000"
    vars: dict[str, str] = field(default_factory=dict)


@dataclass
class Frame:
    return_to: tuple[str, str, int, str]  # context, extension name, priority, EXTEN
    locals: dict[str, str]


class Hangup(Exception):
    pass


@dataclass
class Dialplan:
    globals: dict[str, str]
    # context -> extension name -> priority -> (label, app, data)
    contexts: dict[str, dict[str, dict[int, tuple[str | None, str, str]]]]
    includes: dict[str, list[str]]
    hints: dict[str, dict[str, str]]


class DialplanSim:
    """Enough of Asterisk to run the kit: see the module docstring."""

    def __init__(self, dialplan: Dialplan, *, presence: dict[str, str] | None = None,
                 mailboxes: set[str] | None = None, refuse_writes: bool = False) -> None:
        self.dp = dialplan
        self.globals = dict(dialplan.globals)
        # astdb family CustomPresence: user -> raw value as written
        self.astdb = dict(presence or {})
        self.mailboxes = mailboxes or set()
        self.refuse_writes = refuse_writes
        self.writes: list[tuple[str, str]] = []
        self.apps: list[tuple[str, str]] = []

    # --- variables -------------------------------------------------------

    def lookup(self, chan: Channel | None, frames: list[Frame], name: str) -> str:
        if frames and name in frames[-1].locals:
            return frames[-1].locals[name]
        if chan is not None and name in chan.vars:
            return chan.vars[name]
        return self.globals.get(name, "")

    def substitute(self, s: str, chan: Channel | None, frames: list[Frame],
                   exten: str = "") -> str:
        out: list[str] = []
        i = 0
        while i < len(s):
            if s.startswith("${", i):
                end = _find_close(s, i + 2, "{", "}")
                inner = self.substitute(s[i + 2:end], chan, frames, exten)
                out.append(self._expand(inner, chan, frames, exten))
                i = end + 1
            elif s.startswith("$[", i):
                end = _find_close(s, i + 2, "[", "]")
                inner = self.substitute(s[i + 2:end], chan, frames, exten)
                out.append(evaluate_expression(inner))
                i = end + 1
            else:
                out.append(s[i])
                i += 1
        return "".join(out)

    def _expand(self, inner: str, chan: Channel | None, frames: list[Frame], exten: str) -> str:
        if "(" in inner:
            fname, _, rest = inner.partition("(")
            args = rest[: rest.rindex(")")]  # func_args(): the LAST ')'
            return self.read_function(fname, args, chan, frames)
        name, _, sub = inner.partition(":")
        value = exten if name == "EXTEN" else self.lookup(chan, frames, name)
        if sub:
            offset, _, length = sub.partition(":")
            value = value[int(offset):]
            if length:
                value = value[: int(length)]
        return value

    # --- functions -----------------------------------------------------------

    def read_function(self, fname: str, args: str, chan: Channel | None,
                      frames: list[Frame]) -> str:
        if fname == "IF":
            expr, _, rest = args.partition("?")
            iftrue, _, iffalse = rest.partition(":")
            return iftrue.strip() if check_condition(expr) else iffalse.strip()
        if fname == "EXISTS":
            return "1" if args else "0"
        if fname == "LEN":
            return str(len(args))
        if fname == "TOLOWER":
            return args.lower()
        if fname == "REGEX":
            parts = split_args(args, '"')
            if len(parts) != 3:
                return ""  # Asterisk logs an error; the expansion is empty
            text = parts[2][1:] if parts[2][:1] in (" ", "\t") else parts[2]
            return "1" if re.search(parts[1], text) else "0"
        if fname == "CUT":
            var, delim, spec = split_args(args)
            fields = self.lookup(chan, frames, var).split(delim or "-")
            if spec.endswith("-"):
                return delim.join(fields[int(spec[:-1]) - 1:])
            return fields[int(spec) - 1] if int(spec) <= len(fields) else ""
        if fname == "GLOBAL":
            return self.globals.get(args, "")
        if fname == "LOCAL":
            return self.lookup(chan, frames, args)
        if fname == "CHANNEL":
            assert chan is not None
            if args == "endpoint":
                # PJSIP channels only; elsewhere a warning and nothing
                return chan.endpoint or ""
            if args == "name":
                return chan.name
            raise AssertionError(f"CHANNEL({args}) not modelled")
        if fname in ("CALLERID", "CONNECTEDLINE"):
            assert chan is not None
            return chan.callerid
        if fname == "PRESENCE_STATE":
            parts = split_args(args)
            provider, what = parts[0], parts[1]
            assert provider.startswith("CustomPresence:"), provider
            raw = self.astdb.get(provider[len("CustomPresence:"):], "")
            if not raw:
                return "not_set" if what == "value" else ""
            presence = decode_presence_value(raw)
            if what == "value":
                return presence.state.value
            raise AssertionError(f"PRESENCE_STATE field {what} not modelled")
        if fname == "VM_INFO":
            box, what = split_args(args)
            assert what == "exists"
            return "1" if box in self.mailboxes else "0"
        raise AssertionError(f"function {fname}() not modelled")

    def write_function(self, target: str, value: str, chan: Channel, frames: list[Frame]) -> None:
        fname, _, rest = target.partition("(")
        arg = rest[: rest.rindex(")")]
        if fname == "LOCAL":
            assert frames, "LOCAL() outside a Gosub"
            frames[-1].locals[arg] = value
            return
        if fname == "PRESENCE_STATE":
            # func_presencestate.c presence_write()/parse_data()
            assert arg.startswith("CustomPresence:"), arg
            user = arg[len("CustomPresence:"):]
            assert user and re.fullmatch(r"[^(),= ]+", user), f"unsafe user id {user!r}"
            parts = value.split(",")
            self.writes.append((user, value))
            if self.refuse_writes:
                return
            if not parts[0] or parts[0].lower() not in PRESENCE_STATES:
                return  # "Invalid arguments to PRESENCE_STATE": nothing stored
            if len(parts) > 3 and parts[3] and "e" not in parts[3]:
                return
            self.astdb[user] = value
            return
        raise AssertionError(f"writing {fname}() not modelled")

    # --- execution -------------------------------------------------------------

    def _resolve(self, context: str, exten: str, seen: frozenset[str] = frozenset()
                 ) -> tuple[str, str]:
        """(context, extension name) that handles ``exten`` dialled in
        ``context``: own extensions (literal, then patterns), then includes."""
        found = self._search(context, exten, seen)
        assert found is not None, f"{exten} not found in {context}"
        return found

    def _search(self, context: str, exten: str, seen: frozenset[str]
                ) -> tuple[str, str] | None:
        if context in seen:
            return None
        extens = self.dp.contexts.get(context, {})
        if exten in extens and 1 in extens[exten]:
            return context, exten
        for name, prios in extens.items():
            if name.startswith("_") and 1 in prios and pattern_matches(name, exten):
                return context, name
        for inc in self.dp.includes.get(context, []):
            found = self._search(inc, exten, seen | {context})
            if found is not None:
                return found
        return None

    def _label(self, context: str, ext_name: str, label: str) -> int:
        for prio, (lab, _app, _data) in self.dp.contexts[context][ext_name].items():
            if lab == label:
                return prio
        if label.isdigit():
            return int(label)
        raise AssertionError(f"no label {label!r} in {context},{ext_name}")

    def run(self, chan: Channel, context: str, exten: str, max_steps: int = 500) -> RunResult:
        """Dial ``exten`` in ``context`` on ``chan`` and run until hangup or the end."""
        ctx, ext_name = self._resolve(context, exten)
        dialled = exten
        prio = 1
        frames: list[Frame] = []
        ended = "end"
        try:
            for _ in range(max_steps):
                step = self.dp.contexts[ctx][ext_name].get(prio)
                if step is None:
                    ended = "end"  # no such priority: the channel hangs up
                    break
                _label, app, data_raw = step
                data = self.substitute(data_raw, chan, frames, dialled)
                self.apps.append((app, data))
                nxt = prio + 1
                if app == "Set":
                    name, _, value = data.partition("=")
                    if "(" in name:
                        self.write_function(name, value, chan, frames)
                    else:
                        chan.vars[name] = value
                elif app == "GotoIf":
                    cond, _, labels = data.partition("?")
                    iftrue, _, iffalse = labels.partition(":")
                    target = iftrue if check_condition(cond) else iffalse
                    if target:
                        nxt = self._label(ctx, ext_name, target)
                elif app == "Goto":
                    nxt = self._label(ctx, ext_name, data)
                elif app == "Gosub":
                    where, _, rest = data.partition("(")
                    args = split_args(rest[: rest.rindex(")")]) if rest else []
                    sub_ctx, sub_ext, sub_prio = where.split(",")
                    locals_ = {f"ARG{i}": a for i, a in enumerate(args, 1)}
                    locals_["ARGC"] = str(len(args))
                    frames.append(Frame((ctx, ext_name, prio + 1, dialled), locals_))
                    ctx, ext_name = self._resolve(sub_ctx, sub_ext)
                    dialled = sub_ext
                    nxt = self._label(ctx, ext_name, sub_prio)
                elif app == "Return":
                    assert frames, "Return without Gosub"
                    frame = frames.pop()
                    chan.vars["GOSUB_RETVAL"] = data
                    ctx, ext_name, nxt, dialled = frame.return_to
                elif app == "Hangup":
                    raise Hangup()
                elif app == "VoiceMail":
                    box = split_args(data)[0]
                    if box not in self.mailboxes:
                        ended = "voicemail-missing-box"  # "Dialplan execution will stop"
                        break
                    chan.vars["VMSTATUS"] = "SUCCESS"
                elif app == "Dial":
                    chan.vars["DIALSTATUS"] = "NOANSWER"
                elif app in ("NoOp", "Answer", "Wait", "Playtones", "StopPlaytones",
                             "Progress", "Log"):
                    pass
                else:
                    raise AssertionError(f"application {app} not modelled")
                prio = nxt
            else:
                raise AssertionError("dialplan did not end (loop?)")
        except Hangup:
            ended = "hangup"
        return RunResult(ended, frames, chan, list(self.apps))


@dataclass
class RunResult:
    ended: str
    frames: list[Frame]
    chan: Channel
    apps: list[tuple[str, str]]

    def app_calls(self, name: str) -> list[str]:
        return [d for a, d in self.apps if a == name]


def pattern_matches(pattern: str, exten: str) -> bool:
    """Asterisk extension patterns: X Z N [..] . ! (pbx.c ext_cmp)."""
    rx = []
    i = 1
    while i < len(pattern):
        ch = pattern[i]
        if ch == "X":
            rx.append("[0-9]")
        elif ch == "Z":
            rx.append("[1-9]")
        elif ch == "N":
            rx.append("[2-9]")
        elif ch == ".":
            rx.append(".+")
        elif ch == "!":
            rx.append(".*")
        elif ch == "[":
            end = pattern.index("]", i)
            rx.append("[" + pattern[i + 1:end] + "]")
            i = end
        else:
            rx.append(re.escape(ch))
        i += 1
    return re.fullmatch("".join(rx), exten) is not None


def load_dialplan(cats: list[Category]) -> Dialplan:
    """What pbx_config.c pbx_load_config() builds from the categories."""
    loader = DialplanSim(Dialplan({}, {}, {}, {}))
    # every [globals] section first, values substituted with no channel
    for cat in cats:
        if cat.name == "globals":
            for e in cat.entries:
                loader.globals[e.key] = loader.substitute(e.value, None, [])
    contexts: dict[str, dict[str, dict[int, tuple[str | None, str, str]]]] = {}
    includes: dict[str, list[str]] = {}
    hints: dict[str, dict[str, str]] = {}
    for cat in cats:
        if cat.name in ("general", "globals"):
            continue
        ctx = contexts.setdefault(cat.name, {})
        last_ext: str | None = None
        last_prio = -2
        for e in cat.entries:
            if e.key == "include":
                includes.setdefault(cat.name, []).append(loader.substitute(e.value, None, []))
                continue
            if e.key == "exten":
                raw_ext, _, rest = e.value.partition(",")
                ext = loader.substitute(raw_ext.strip(), None, [])
                assert ext, f"{e.file}:{e.lineno}: extension name is empty after substitution"
                last_ext = ext
            elif e.key == "same":
                assert last_ext is not None, f"{e.file}:{e.lineno}: same => without exten"
                ext, rest = last_ext, e.value
            else:
                continue
            prio_s, _, app_part = rest.partition(",")
            prio_s = prio_s.strip()
            label = None
            m = re.fullmatch(r"([^()]+)\(([^)]*)\)", prio_s)
            if m:
                prio_s, label = m.group(1), m.group(2)
            if prio_s == "hint":
                hints.setdefault(cat.name, {})[ext] = app_part
                continue
            if prio_s == "n":
                assert last_prio > -2, f"{e.file}:{e.lineno}: 'n' on the first entry"
                prio = last_prio + 1
            else:
                prio = int(prio_s)
            app, paren, data = app_part.partition("(")
            if paren:
                assert data.endswith(")"), f"{e.file}:{e.lineno}: no closing parenthesis"
                data = data[:-1]
            steps = ctx.setdefault(ext, {})
            assert prio not in steps, f"{e.file}:{e.lineno}: duplicate priority {ext},{prio}"
            steps[prio] = (label, app.strip(), data)
            last_prio = prio
    return Dialplan(loader.globals, contexts, includes, hints)


def kit_categories() -> list[Category]:
    return parse_config(KIT.read_text(encoding="utf-8"), str(KIT))


def kit_dialplan(admin_before: str = "", admin_after: str = "",
                 extra: str = "") -> Dialplan:
    """extensions.conf = admin globals + #include of the kit + admin globals + extra."""
    text = (
        f"[general]\nstatic=yes\n\n[globals]\n{admin_before}\n"
        f"#include astpresence/extensions_astpresence.conf\n\n"
        f"[globals]\n{admin_after}\n\n{extra}\n"
    )
    cats = parse_config(
        text, "extensions.conf",
        include_map={"astpresence/extensions_astpresence.conf": KIT},
    )
    return load_dialplan(cats)


@pytest.fixture(scope="module")
def dialplan() -> Dialplan:
    return kit_dialplan()


def kit_code_lines() -> list[tuple[int, str]]:
    """Non-comment lines of the kit with their numbers."""
    out = []
    for n, raw in enumerate(KIT.read_text(encoding="utf-8").splitlines(), 1):
        line = _strip_comment(raw)
        if line:
            out.append((n, line))
    return out


# =========================================================================
# Structure of the kit
# =========================================================================


def test_kit_defines_the_documented_contexts(dialplan: Dialplan) -> None:
    assert {FEATURES, SET_SUB, DIAL_SUB} <= set(dialplan.contexts)
    assert set(dialplan.contexts[SET_SUB]) == {"s"}
    assert set(dialplan.contexts[DIAL_SUB]) == {"s"}


@pytest.mark.parametrize(("variable", "code", "action"),
                         [(k, c, a) for k, (c, a) in DEFAULT_CODES.items()])
def test_default_feature_code(dialplan: Dialplan, variable: str, code: str, action: str) -> None:
    assert dialplan.globals[variable] == code
    steps = dialplan.contexts[FEATURES][code]
    assert steps[1][1:] == ("Gosub", f"{SET_SUB},s,1({action})")
    assert steps[max(steps)][1] == "Hangup"


def test_preset_codes(dialplan: Dialplan) -> None:
    assert dialplan.globals["ASTPRESENCE_CODE_PRESET"] == "*37"
    steps = dialplan.contexts[FEATURES]["_*37X"]
    assert steps[1][1:] == ("Gosub", f"{SET_SUB},s,1(preset,${{EXTEN:-1}})")
    assert steps[max(steps)][1] == "Hangup"
    for digit in "0123456789":
        assert pattern_matches("_*37X", f"*37{digit}")
    assert not pattern_matches("_*37X", "*37")
    assert not pattern_matches("_*37X", "*3712")


def test_feature_context_has_only_the_codes_and_each_ends_in_hangup(dialplan: Dialplan) -> None:
    extens = dialplan.contexts[FEATURES]
    assert set(extens) == {c for c, _ in DEFAULT_CODES.values()} | {"_*37X"}
    for name, steps in extens.items():
        assert sorted(steps) == list(range(1, len(steps) + 1)), name
        assert steps[max(steps)][1] == "Hangup", name
        assert all(app != "Hangup" for _l, app, _d in list(steps.values())[:-1]), name


@pytest.mark.parametrize("where", ["before", "after"])
def test_codes_are_overridable_from_the_admins_globals(where: str) -> None:
    overrides = "ASTPRESENCE_CODE_DND=*78\nASTPRESENCE_CODE_PRESET=*8\n"
    dp = kit_dialplan(**{f"admin_{where}": overrides})
    extens = dp.contexts[FEATURES]
    assert "*78" in extens and "*33" not in extens
    assert extens["*78"][1][1:] == ("Gosub", f"{SET_SUB},s,1(dnd)")
    assert "_*8X" in extens and "_*37X" not in extens
    # the codes not overridden keep their defaults
    assert {"*30", "*31", "*32", "*34", "*35", "*36"} <= set(extens)


def test_each_code_default_fills_only_an_empty_value() -> None:
    """The kit's [globals] lines must not clobber a value set earlier."""
    pattern = re.compile(
        r"(ASTPRESENCE_CODE_[A-Z_]+)=\$\{IF\(\$\{EXISTS\(\$\{\1\}\)\}\?\$\{\1\}:([0-9*#]+)\)\}"
    )
    lines = [e for c in kit_categories() if c.name == "globals" for e in c.entries]
    assert lines, "the kit defines its defaults in [globals]"
    for e in lines:
        assert pattern.fullmatch(f"{e.key}={e.value}"), f"line {e.lineno}: {e.key}={e.value}"


def test_kit_globals_section_comes_first() -> None:
    """The kit can be #included anywhere: it opens its own section."""
    cats = kit_categories()
    assert cats[0].name == "globals"
    assert [c.name for c in cats].count("globals") == 1


def test_every_presence_write_uses_option_e() -> None:
    writes = []
    for n, line in kit_code_lines():
        for m in re.finditer(r"Set\(PRESENCE_STATE\((CustomPresence:[^)]*)\)=(.*)\)\s*$", line):
            writes.append((n, m.group(1), m.group(2)))
    assert len(writes) >= 2, "the kit writes presence for fixed states and for presets"
    for n, target, value in writes:
        fields = split_args(value)
        assert len(fields) in (1, 4), f"line {n}: {value}"
        if len(fields) == 4:
            assert fields[3] == "e", f"line {n}: a subtype/message write without option e"
        assert target == "CustomPresence:${user}", f"line {n}: writes {target}"
    # nothing else writes presence (e.g. through another function or app)
    text = "\n".join(line for _n, line in kit_code_lines())
    assert text.count("PRESENCE_STATE(CustomPresence:${user})=") == len(writes)


def test_user_comes_from_endpoint_or_override_never_caller_id(dialplan: Dialplan) -> None:
    for n, line in kit_code_lines():
        assert not re.search(r"CALLERID|CONNECTEDLINE|CALLERIDNUM|CDR\(src", line, re.IGNORECASE), (
            f"line {n} reads caller identity: {line}"
        )
    user_sets = [
        data.partition("=")[2]
        for _l, app, data in dialplan.contexts[SET_SUB]["s"].values()
        if app == "Set" and data.startswith("LOCAL(user)=")
    ]
    assert sorted(user_sets) == ["${ASTPRESENCE_USER}", "${CHANNEL(endpoint)}"]


def _control_flow(steps: dict[int, tuple[str | None, str, str]]) -> dict[int, set[int]]:
    labels = {lab: p for p, (lab, _a, _d) in steps.items() if lab}
    graph: dict[int, set[int]] = {}
    for prio, (_lab, app, data) in steps.items():
        succ: set[int] = set()
        if app in ("Return", "Hangup"):
            pass
        elif app == "Goto":
            assert data in labels, f"Goto({data}): no such label"
            succ.add(labels[data])
        else:
            if app == "GotoIf":
                _cond, _, targets = data.rpartition("?")
                iftrue, _, iffalse = targets.partition(":")
                for t in (iftrue, iffalse):
                    if t:
                        assert t in labels, f"GotoIf target {t}: no such label"
                        succ.add(labels[t])
                if iftrue and iffalse:
                    graph[prio] = succ
                    continue
            succ.add(prio + 1)
        graph[prio] = succ
    return graph


@pytest.mark.parametrize("context", [SET_SUB, DIAL_SUB])
def test_subroutine_returns_on_every_path(dialplan: Dialplan, context: str) -> None:
    steps = dialplan.contexts[context]["s"]
    graph = _control_flow(steps)
    reachable = set()
    todo = [1]
    while todo:
        p = todo.pop()
        if p in reachable:
            continue
        reachable.add(p)
        for q in graph[p]:
            assert q in steps, f"{context}: priority {p} falls off the end"
            todo.append(q)
    assert reachable == set(steps), f"{context}: dead priorities {sorted(set(steps) - reachable)}"
    ends = {p for p in reachable if not graph[p]}
    assert ends and all(steps[p][1] == "Return" for p in ends)
    assert all(app != "Hangup" for _l, app, _d in steps.values()), "a subroutine must not hang up"


def test_dial_routine_branches_on_dnd_away_and_xa(dialplan: Dialplan) -> None:
    datas = [d for _l, app, d in dialplan.contexts[DIAL_SUB]["s"].values() if app == "GotoIf"]
    conditions = " ".join(datas)
    for state in ("dnd", "away", "xa"):
        assert f'"${{state}}" = "{state}"' in conditions
    assert any(
        "PRESENCE_STATE(CustomPresence:${user},value)" in d
        for _l, _a, d in dialplan.contexts[DIAL_SUB]["s"].values()
    )


# =========================================================================
# Running the feature codes
# =========================================================================


def run_code(code: str, *, chan: Channel | None = None, presence: dict[str, str] | None = None,
             globals_: dict[str, str] | None = None, refuse_writes: bool = False,
             dp: Dialplan | None = None) -> tuple[DialplanSim, RunResult]:
    dp = dp or kit_dialplan(extra=f"[phones]\ninclude => {FEATURES}\n")
    ast = DialplanSim(dp, presence=presence, refuse_writes=refuse_writes)
    ast.globals.update(globals_ or {})
    result = ast.run(chan or Channel(), "phones", code)
    return ast, result


def stored(ast: DialplanSim, user: str) -> Presence | None:
    raw = ast.astdb.get(user)
    return decode_presence_value(raw) if raw else None


@pytest.mark.parametrize(("code", "state"), [
    ("*31", "available"), ("*32", "away"), ("*33", "dnd"), ("*34", "xa"),
    ("*35", "chat"), ("*36", "not_set"),
])
def test_code_sets_the_callers_presence(code: str, state: str) -> None:
    ast, res = run_code(code, presence={"2000": "xa,,,e"})
    assert ast.writes == [("2000", f"{state},,,e")]
    assert stored(ast, "2000") == Presence(State(state))
    assert res.ended == "hangup" and not res.frames
    assert res.chan.vars["ASTPRESENCE_FEATURE_RESULT"] == "OK"
    assert res.app_calls("Answer") and res.app_calls("Playtones") == ["!880/250"]


def test_code_writes_the_endpoint_even_when_caller_id_is_spoofed() -> None:
    chan = Channel(endpoint="2000", callerid="2001")
    ast, _res = run_code("*33", chan=chan)
    assert [u for u, _v in ast.writes] == ["2000"]


def test_astpresence_user_overrides_the_endpoint() -> None:
    chan = Channel(endpoint="2000", vars={"ASTPRESENCE_USER": "alice"})
    ast, _res = run_code("*32", chan=chan)
    assert ast.writes == [("alice", "away,,,e")]


def test_local_channel_with_astpresence_user_works() -> None:
    chan = Channel(name="Local/*33@astpresence-features-0001;2", endpoint=None,
                   vars={"ASTPRESENCE_USER": "2000"})
    ast, res = run_code("*33", chan=chan)
    assert ast.writes == [("2000", "dnd,,,e")]
    assert res.chan.vars["ASTPRESENCE_FEATURE_RESULT"] == "OK"


def test_no_user_means_error_tone_and_nothing_written() -> None:
    chan = Channel(name="Local/*33@astpresence-features-0001;2", endpoint=None, callerid="2000")
    ast, res = run_code("*33", chan=chan)
    assert ast.writes == []
    assert res.ended == "hangup"
    assert res.chan.vars["ASTPRESENCE_FEATURE_RESULT"] == "NOUSER"
    assert res.app_calls("Playtones") == ["!440/200,!0/100,!330/200,!0/100,!220/500"]


def test_a_global_astpresence_user_is_refused() -> None:
    ast, res = run_code("*33", globals_={"ASTPRESENCE_USER": "2001"})
    assert ast.writes == []
    assert res.chan.vars["ASTPRESENCE_FEATURE_RESULT"] == "MISCONFIGURED"


@pytest.mark.parametrize("user", ["20)00", "a,b", "x=y", "two words", "a(b", "a@b"])
def test_unsafe_user_ids_are_refused(user: str) -> None:
    ast, res = run_code("*33", chan=Channel(endpoint=None, vars={"ASTPRESENCE_USER": user}))
    assert ast.writes == []
    assert res.chan.vars["ASTPRESENCE_FEATURE_RESULT"] == "INVALIDUSER"


@pytest.mark.parametrize(("before", "after", "tone"), [
    (None, "dnd", "!880/250"),
    ("available,,,e", "dnd", "!880/250"),
    ("away,YQ==,Yg==,e", "dnd", "!880/250"),
    ("dnd,,,e", "available", "!880/120,!0/80,!880/120"),
    ("dnd,bWVldGluZw==,,e", "available", "!880/120,!0/80,!880/120"),
])
def test_toggle(before: str | None, after: str, tone: str) -> None:
    ast, res = run_code("*30", presence={"2000": before} if before else None)
    assert ast.writes == [("2000", f"{after},,,e")]
    assert res.app_calls("Playtones") == [tone]


@pytest.mark.parametrize("presence", [
    Presence(State.AWAY, "lunch", "Back at 2, promise"),
    Presence(State.DND, "", "Réunion « budget »"),
    Presence(State.XA, "été", ""),
    Presence(State.AVAILABLE),
])
def test_preset_written_as_generated_by_the_codec(presence: Presence) -> None:
    value = encode_presence_value(presence)
    ast, res = run_code("*374", globals_={"ASTPRESENCE_PRESET_4": value})
    assert ast.writes == [("2000", value)]
    assert stored(ast, "2000") == presence
    assert res.chan.vars["ASTPRESENCE_FEATURE_RESULT"] == "OK"


@pytest.mark.parametrize("value", [
    "",  # unset
    "away,bHVuY2g=,,",  # no option e
    "away,lunch,Back at 2,e",  # not base64
    "away,bHVuY2g,,e",  # base64 without its padding
    "away,bHVuY2g=,,e,x",  # extra field
    "busy,,,e",  # not a state
    "away",  # state only: would be written without e
])
def test_bad_presets_are_refused(value: str) -> None:
    ast, res = run_code("*371", globals_={"ASTPRESENCE_PRESET_1": value})
    assert ast.writes == []
    assert res.chan.vars["ASTPRESENCE_FEATURE_RESULT"] == "INVALIDPRESET"
    assert res.ended == "hangup"


def test_preset_digit_selects_the_preset() -> None:
    ast, _res = run_code("*379", globals_={
        "ASTPRESENCE_PRESET_1": "away,,,e", "ASTPRESENCE_PRESET_9": "chat,,,e",
    })
    assert ast.writes == [("2000", "chat,,,e")]


def test_refused_write_plays_error_tone() -> None:
    ast, res = run_code("*33", refuse_writes=True)
    assert ast.writes == [("2000", "dnd,,,e")]
    assert res.chan.vars["ASTPRESENCE_FEATURE_RESULT"] == "FAILED"
    assert res.app_calls("Playtones") == ["!440/200,!0/100,!330/200,!0/100,!220/500"]


def test_overridden_code_runs_the_same_action() -> None:
    dp = kit_dialplan(admin_after="ASTPRESENCE_CODE_DND_TOGGLE=*78",
                      extra=f"[phones]\ninclude => {FEATURES}\n")
    ast, _res = run_code("*78", dp=dp)
    assert ast.writes == [("2000", "dnd,,,e")]


# =========================================================================
# Running astpresence-dial
# =========================================================================

CALLER = """
[calls]
exten => 2000,1,Gosub(astpresence-dial,s,1(2000,PJSIP/2000,30))
 same => n,Set(AFTER_RETURN=${ASTPRESENCE_DIAL_RESULT})
 same => n,Hangup()
exten => bad,1,Gosub(astpresence-dial,s,1(20)00,PJSIP/2000,30))
 same => n,Hangup()
exten => nodial,1,Gosub(astpresence-dial,s,1(2000))
 same => n,Hangup()
"""


def run_dial(state: str | None, *, mailboxes: set[str] | None = None,
             globals_: dict[str, str] | None = None, exten: str = "2000") -> RunResult:
    ast = DialplanSim(kit_dialplan(extra=CALLER),
                       presence={"2000": f"{state},,,e"} if state else None,
                       mailboxes=mailboxes)
    ast.globals.update(globals_ or {})
    return ast.run(Channel(name="PJSIP/2001-00000002", endpoint="2001"), "calls", exten)


@pytest.mark.parametrize(("state", "away_action", "boxes", "result", "app", "data"), [
    ("dnd", None, {"2000@default"}, "VOICEMAIL", "VoiceMail", "2000@default,b"),
    ("dnd", None, set(), "BUSY", "Playtones", "busy"),
    ("away", None, {"2000@default"}, "BUSY", "Playtones", "busy"),
    ("xa", None, {"2000@default"}, "BUSY", "Playtones", "busy"),
    ("away", "busy", {"2000@default"}, "BUSY", "Playtones", "busy"),
    ("away", "voicemail", {"2000@default"}, "VOICEMAIL", "VoiceMail", "2000@default,u"),
    ("xa", "voicemail", {"2000@default"}, "VOICEMAIL", "VoiceMail", "2000@default,u"),
    ("xa", "voicemail", set(), "BUSY", "Playtones", "busy"),
    ("available", "voicemail", {"2000@default"}, "DIALED", "Dial", "PJSIP/2000,30,"),
    ("chat", None, set(), "DIALED", "Dial", "PJSIP/2000,30,"),
    ("unavailable", None, set(), "DIALED", "Dial", "PJSIP/2000,30,"),
    ("not_set", None, set(), "DIALED", "Dial", "PJSIP/2000,30,"),
    (None, None, set(), "DIALED", "Dial", "PJSIP/2000,30,"),
])
def test_dial_routine(state: str | None, away_action: str | None, boxes: set[str],
                      result: str, app: str, data: str) -> None:
    globals_ = {"ASTPRESENCE_AWAY_ACTION": away_action} if away_action else {}
    res = run_dial(state, mailboxes=boxes, globals_=globals_)
    assert res.ended == "hangup" and not res.frames, "the routine returned to the caller"
    assert res.chan.vars["ASTPRESENCE_DIAL_RESULT"] == result
    assert res.chan.vars["AFTER_RETURN"] == result
    assert res.chan.vars["GOSUB_RETVAL"] == result
    assert data in res.app_calls(app)
    if result != "DIALED":
        assert res.app_calls("Dial") == []
    if result == "BUSY":
        assert res.app_calls("Wait")[-1] == "5" and res.app_calls("Progress")


def test_dial_routine_voicemail_context_and_busy_seconds() -> None:
    res = run_dial("dnd", mailboxes={"2000@staff"},
                   globals_={"ASTPRESENCE_VM_CONTEXT": "staff"})
    assert res.app_calls("VoiceMail") == ["2000@staff,b"]
    res = run_dial("away", globals_={"ASTPRESENCE_BUSY_SECONDS": "12"})
    assert res.app_calls("Wait")[-1] == "12"
    res = run_dial("away", globals_={"ASTPRESENCE_BUSY_SECONDS": "1;Hangup"})
    assert res.app_calls("Wait")[-1] == "5"


@pytest.mark.parametrize("exten", ["bad", "nodial"])
def test_dial_routine_refuses_bad_arguments(exten: str) -> None:
    res = run_dial("dnd", mailboxes={"2000@default"}, exten=exten)
    assert res.chan.vars["ASTPRESENCE_DIAL_RESULT"] == "INVALIDARGS"
    assert res.app_calls("Dial") == [] and res.app_calls("VoiceMail") == []
    assert res.ended == "hangup" and not res.frames


# =========================================================================
# The AMI account
# =========================================================================


def _classes(value: str) -> set[str]:
    return {c.strip() for c in value.split(",") if c.strip()}


def test_manager_kit_is_least_privilege() -> None:
    text = MANAGER_KIT.read_text(encoding="utf-8")
    cats = parse_config(text, str(MANAGER_KIT))
    assert [c.name for c in cats] == ["astpresence"], "only the account, no [general]"
    entries = [(e.key, e.value.strip()) for e in cats[0].entries]
    keys = [k for k, _v in entries]
    assert keys.count("read") == 1 and keys.count("write") == 1 and keys.count("secret") == 1
    settings = dict(entries)
    assert _classes(settings["read"]) == {"call", "reporting", "system"}
    assert _classes(settings["write"]) == {"call"}
    assert "CHANGE" in settings["secret"].upper()
    acl = [(k, v.replace(" ", "")) for k, v in entries if k in ("deny", "permit", "acl")]
    assert acl == [("deny", "0.0.0.0/0.0.0.0"), ("permit", "127.0.0.1/255.255.255.255")]
    commented = [line.strip() for line in text.splitlines() if line.strip().startswith(";")]
    assert any(re.fullmatch(r";\s*write\s*=\s*call,agent\s*", c) for c in commented)
    assert any(re.fullmatch(r";\s*write\s*=\s*call,agent,originate\s*", c) for c in commented)
    assert "integration tests" in text


# =========================================================================
# Docker
# =========================================================================


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


MOVING_TAGS = {"latest", "stable", "edge", "dev", "testing", "experimental", "lts"}


def _pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        return False
    return tag.lower() not in MOVING_TAGS and re.search(r"\d+\.\d+", tag) is not None


@pytest.mark.parametrize(("image", "ok"), [
    ("andrius/asterisk:22.10.1_debian-trixie", True),
    ("python:3.11.14-slim-bookworm", True),
    ("andrius/asterisk", False),
    ("andrius/asterisk:latest", False),
    ("andrius/asterisk:22", False),
    ("localhost:5000/asterisk", False),
])
def test_pinned_image_rule(image: str, ok: bool) -> None:
    assert _pinned(image) is ok


def test_compose_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"asterisk", "astpresence"} <= set(services)
    for name, svc in services.items():
        if "image" in svc:
            assert _pinned(svc["image"]), f"{name}: image {svc['image']} is not pinned"
        else:
            build = svc["build"]
            assert (COMPOSE.parent / build["context"] / build["dockerfile"]).is_file()
    assert services["astpresence"]["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}


def _bind_mounts(svc: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for vol in svc.get("volumes", []):
        if isinstance(vol, str):
            source, _, rest = vol.partition(":")
            target = rest.split(":")[0]
        else:
            if vol.get("type") != "bind":
                continue
            source, target = vol["source"], vol["target"]
        if source.startswith((".", "/", "~")):
            out.append((source, target))
    return out


def test_compose_mounts_exist_in_the_repository(compose: dict[str, Any]) -> None:
    named = set(compose.get("volumes") or {})
    for name, svc in compose["services"].items():
        for source, _target in _bind_mounts(svc):
            assert not source.startswith(("/", "~")), f"{name}: absolute host path {source}"
            path = (COMPOSE.parent / source).resolve()
            assert path.exists(), f"{name}: {source} does not exist"
            assert ROOT in path.parents or path == ROOT, f"{name}: {source} is outside the repo"
        for vol in svc.get("volumes", []):
            if isinstance(vol, str) and not vol.startswith((".", "/", "~")):
                assert vol.split(":")[0] in named, f"{name}: undeclared volume {vol}"


def test_compose_ports_bound_to_loopback(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", f"{name}: {port}"
            else:
                assert str(port).startswith("127.0.0.1:"), f"{name}: {port} not on 127.0.0.1"
    assert "127.0.0.1:8780:8780" in compose["services"]["astpresence"]["ports"]


def test_compose_astpresence_service(compose: dict[str, Any]) -> None:
    svc = compose["services"]["astpresence"]
    env = svc["environment"]
    assert env["ASTPRESENCE_AMI_HOST"] == "asterisk"
    assert env["ASTPRESENCE_DB"] == "/data/astpresence.db"
    assert env["ASTPRESENCE_AMI_SECRET"].startswith("${")  # from the environment / .env
    depends = svc["depends_on"]
    assert "asterisk" in (depends if isinstance(depends, (list, dict)) else [])
    data_volumes = [v for v in svc["volumes"] if isinstance(v, str) and v.endswith(":/data")]
    assert data_volumes and data_volumes[0].split(":")[0] in compose["volumes"]


def test_compose_secrets_come_from_the_environment(compose: dict[str, Any]) -> None:
    """Demo defaults are allowed only as ${VAR:-demo...} interpolations."""
    for name, svc in compose["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if re.search(r"SECRET|PASSWORD|TOKEN", key):
                m = re.fullmatch(r"\$\{[A-Z0-9_]+:-(demo[-a-z0-9]*)\}", str(value))
                assert m, f"{name}: {key} must be ${{VAR:-demo-...}}, got {value!r}"


def _asterisk_mount(compose: dict[str, Any], target: str) -> Path:
    for source, tgt in _bind_mounts(compose["services"]["asterisk"]):
        if tgt == target:
            return (COMPOSE.parent / source).resolve()
    raise AssertionError(f"nothing mounted at {target}")


def test_demo_asterisk_configuration(compose: dict[str, Any]) -> None:
    ext_conf = _asterisk_mount(compose, "/etc/asterisk/extensions.conf")
    kit_dir = _asterisk_mount(compose, "/etc/asterisk/astpresence")
    assert kit_dir == DIALPLAN.resolve()
    # #include paths are relative to /etc/asterisk, where the kit is mounted
    cats = parse_config(ext_conf.read_text(encoding="utf-8"), str(ext_conf),
                        include_map={"astpresence/extensions_astpresence.conf": kit_dir
                                     / "extensions_astpresence.conf"})
    dp = load_dialplan(cats)
    assert FEATURES in dp.includes["internal"]
    assert dp.hints["internal"]["2000"] == "PJSIP/2000,CustomPresence:2000"
    assert dp.hints["internal"]["2001"] == "PJSIP/2001&Custom:presence-2001,CustomPresence:2001"
    # the phones land in that context
    pjsip = parse_config(_asterisk_mount(compose, "/etc/asterisk-templates/pjsip.conf")
                         .read_text(encoding="utf-8"))
    templates = {c.name: {e.key: e.value for e in c.entries} for c in pjsip}
    assert templates["phone"]["context"] == "internal"
    names = [c.name for c in pjsip]
    assert names.count("2000") == 3 and names.count("2001") == 3  # endpoint, auth, aor
    passwords = [e.value for c in pjsip for e in c.entries if e.key == "password"]
    assert passwords == ["${SIP_PASSWORD_2000}", "${SIP_PASSWORD_2001}"]
    # running the demo: *33 from phone 2000
    ast = DialplanSim(dp)
    ast.run(Channel(), "internal", "*33")
    assert ast.writes == [("2000", "dnd,,,e")]


def test_demo_manager_and_modules(compose: dict[str, Any]) -> None:
    manager = parse_config(_asterisk_mount(compose, "/etc/asterisk-templates/manager.conf")
                           .read_text(encoding="utf-8"))
    users = {c.name: c for c in manager if c.name != "general"}
    for cat in users.values():
        settings = {e.key: e.value for e in cat.entries}
        assert re.fullmatch(r"\$\{[A-Z_]+\}", settings["secret"]), "secret from the environment"
        assert cat.entries[[e.key for e in cat.entries].index("deny")].value == "0.0.0.0/0.0.0.0"
        assert "command" not in settings["write"] and "system" not in settings["write"]
    assert _classes({e.key: e.value for e in users["astpresence"].entries}["write"]) == {
        "call", "agent"}
    modules = _asterisk_mount(compose, "/etc/asterisk/modules.conf").read_text(encoding="utf-8")
    required = set(re.findall(r"^require\s*=\s*(\S+)\.so", modules, re.MULTILINE))
    assert {"res_manager_presencestate", "res_manager_devicestate", "func_presencestate",
            "func_devstate", "func_channel", "func_global", "app_stack", "app_playtones",
            "app_voicemail", "app_queue"} <= required
    start = _asterisk_mount(compose, "/usr/local/bin/astpresence-start-asterisk.sh")
    assert "envsubst" in start.read_text(encoding="utf-8")


def test_demo_daemon_config_loads(compose: dict[str, Any]) -> None:
    from astpresence.config import load_config

    svc = compose["services"]["astpresence"]
    target = svc["environment"]["ASTPRESENCE_CONFIG"]
    source = next(src for src, tgt in _bind_mounts(svc) if tgt == target)
    cfg = load_config(COMPOSE.parent / source, env={})
    # the demo hint of 2001 has the mirror device; the demo account has agent
    assert cfg.rules.mirror and cfg.rules.queue_pause


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile() -> None:
    instructions = _dockerfile_instructions()
    froms = [rest.split()[0] for word, rest in instructions if word == "FROM"]
    assert froms, "no FROM"
    for image in froms:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", image), image
    users = [rest for word, rest in instructions if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert ("EXPOSE", "8780") in instructions
    cmds = [rest for word, rest in instructions if word == "CMD"]
    assert cmds[-1] == '["astpresence", "serve", "--listen", "0.0.0.0:8780"]'
    assert any(word == "RUN" and "pip install ." in rest for word, rest in instructions)


def test_dockerfile_has_no_secrets() -> None:
    for word, rest in _dockerfile_instructions():
        if word in ("ENV", "ARG", "LABEL"):
            assert not re.search(r"SECRET|PASSWORD|PASSWD|TOKEN|API_?KEY", rest, re.IGNORECASE), rest
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert not re.search(r"(?i)(secret|password|passwd|token)\s*[=:]\s*['\"]?[^\s'\"$]{4,}", text)
    # nothing that looks like a generated credential (long hex/base64 runs)
    assert not re.search(r"(?<![0-9a-f])[0-9a-f]{32,}(?![0-9a-f])", text)
    assert not re.search(r"[A-Za-z0-9+/]{40,}={0,2}", text)


def test_dockerignore_keeps_the_context_small() -> None:
    path = DOCKER / "Dockerfile.dockerignore"
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*", "allow-list: exclude everything first"
    allowed = {ln[1:] for ln in lines if ln.startswith("!")}
    assert {"pyproject.toml", "astpresence"} <= allowed
    assert not any(a.startswith(("tests", ".git", ".env", "docker")) for a in allowed)


def test_demo_start_script_rejects_config_injection() -> None:
    script = (DEMO / "start-asterisk.sh").read_text(encoding="utf-8")
    assert "*[!A-Za-z0-9._+-]*" in script
    assert re.search(r"exec /usr/sbin/asterisk -f .*-U asterisk", script)


def _compose_plugin() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    try:
        ok = subprocess.run([docker, "compose", "version"], capture_output=True,
                            timeout=30, check=False).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return None
    return docker if ok else None


def test_docker_compose_config_is_valid() -> None:
    docker = _compose_plugin()
    if docker is None:
        pytest.skip("docker CLI with the compose plugin not installed; "
                    "the static compose checks above still ran")
    proc = subprocess.run([docker, "compose", "-f", str(COMPOSE), "config", "-q"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr


# =========================================================================
# The parser and interpreter themselves
# =========================================================================


@pytest.mark.parametrize(("expr", "result"), [
    ('"dnd" = "dnd"', "1"), ('"away" = "dnd"', "0"), ('"" != ""', "0"),
    ('"xa" = "away" | "xa" = "xa"', "1"), ("1 & 0", "0"), ("12 > 3", "1"),
])
def test_expression_evaluator(expr: str, result: str) -> None:
    assert evaluate_expression(expr) == result


def test_substitution_nesting_and_functions() -> None:
    ast = DialplanSim(Dialplan({"A": "x", "B_x": "nested", "P": "s,YQ==,,e"}, {}, {}, {}))
    chan = Channel()
    assert ast.substitute("${B_${A}}", chan, []) == "nested"
    assert ast.substitute("${IF(${EXISTS(${A})}?${A}:*30)}", chan, []) == "x"
    assert ast.substitute("${IF(${EXISTS(${NOPE})}?${NOPE}:*30)}", chan, []) == "*30"
    assert ast.substitute('${REGEX("^[-A-Za-z0-9_.+]+$" ${A})}', chan, []) == "1"
    assert ast.substitute("${CUT(P,\\,,2)}", chan, []) == "YQ=="
    assert ast.substitute("${CUT(P,\\,,4-)}", chan, []) == "e"
    assert ast.substitute("${EXTEN:-1}", chan, [], exten="*374") == "4"
    assert split_args("a,b(c,d),\"e,f\",g\\,h") == ["a", "b(c,d)", "e,f", "g,h"]


def test_parser_handles_comments_and_same_lines() -> None:
    cats = parse_config("[c]\nexten => 1,1,NoOp(a\\;b) ; comment\n same => n(l),Hangup()\n")
    dp = load_dialplan(cats)
    assert dp.contexts["c"]["1"] == {1: (None, "NoOp", "a;b"), 2: ("l", "Hangup", "")}

