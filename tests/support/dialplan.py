"""The dialplan kit read and run the way Asterisk would, for the tests.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astpresence.asterisk.codec import decode_presence_value
from astpresence.domain.model import State

ROOT = Path(__file__).resolve().parents[2]
DIALPLAN = ROOT / "astpresence" / "app" / "kit"
KIT = DIALPLAN / "extensions_astpresence.conf"

FEATURES = "astpresence-features"
SET_SUB = "astpresence-set"
DIAL_SUB = "astpresence-dial"

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
    #: connected line updates sent to this channel's phone (CONNECTEDLINE writes)
    connected: dict[str, str] = field(default_factory=dict)


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
                 mailboxes: set[str] | None = None, refuse_writes: bool = False,
                 db: dict[str, str] | None = None,
                 dial_status: dict[str, str] | None = None) -> None:
        self.dp = dialplan
        self.globals = dict(dialplan.globals)
        # astdb family CustomPresence: user -> raw value as written
        self.astdb = dict(presence or {})
        self.mailboxes = mailboxes or set()
        #: the rest of astdb, as "family/key" -> value (DB() reads it)
        self.db = dict(db or {})
        #: what Dial() of a dial string ends with (DIALSTATUS); NOANSWER otherwise
        self.dial_status = dict(dial_status or {})
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
            if what in ("subtype", "message") and len(parts) == 2:  # plain text, as read
                return str(getattr(presence, what))
            raise AssertionError(f"PRESENCE_STATE field {what} not modelled")
        if fname == "DB":  # func_db: family/key, the family up to the first "/"
            return self.db.get(args, "")
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
        if fname == "CONNECTEDLINE":  # func_callerid: sends the caller an update
            chan.connected[arg] = value
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
                if app == "ExecIf":  # app_exec: cond?App(args), only the true branch here
                    cond, _, call = data.partition("?")
                    if not check_condition(cond):
                        self.apps.append((app, data))
                        prio += 1
                        continue
                    app, _, rest = call.partition("(")
                    data = rest[: rest.rindex(")")]
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
                    chan.vars["DIALSTATUS"] = self.dial_status.get(split_args(data)[0],
                                                                   "NOANSWER")
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


def kit_code_lines() -> list[tuple[int, str]]:
    """Non-comment lines of the kit with their numbers."""
    out = []
    for n, raw in enumerate(KIT.read_text(encoding="utf-8").splitlines(), 1):
        line = _strip_comment(raw)
        if line:
            out.append((n, line))
    return out


