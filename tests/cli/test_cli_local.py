"""CLI pieces that need no daemon: presets, time and duration parsing, hint lines."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from astpresence.cli.kit import format_hints
from astpresence.cli.main import main
from astpresence.cli.common import parse_duration, parse_when
from astpresence.asterisk.codec import decode_presence_value
from astpresence.app.config import load_config
from astpresence.app.settings import ConfigError
from astpresence.domain.model import InvalidInput, Presence, State

PRESETS = """
[[presets]]
digit = 1
state = "away"
subtype = "lunch"
message = "Back at 2pm, promise"

[[presets]]
digit = 2
state = "DND"
message = "Réunion \\"budget\\""
"""


def test_dialplan_presets_prints_globals(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(PRESETS, encoding="utf-8")
    result = CliRunner().invoke(main, ["dialplan", "presets", "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    values = dict(line.split("=", 1) for line in result.output.splitlines()
                  if line.startswith("ASTPRESENCE_PRESET_"))
    assert set(values) == {"ASTPRESENCE_PRESET_1", "ASTPRESENCE_PRESET_2"}
    # Exactly what func_presencestate parses: state,b64,b64,e.
    assert values["ASTPRESENCE_PRESET_1"] == (
        "away," + base64.b64encode(b"lunch").decode() + ","
        + base64.b64encode(b"Back at 2pm, promise").decode() + ",e")
    assert decode_presence_value(values["ASTPRESENCE_PRESET_2"]) == Presence(
        State.DND, "", 'Réunion "budget"')


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[presets]]\ndigit = 10\nstate = 'away'\n", "'digit' must be 0-9"),
        ("[[presets]]\ndigit = 1\nstate = 'away'\n[[presets]]\ndigit = 1\nstate = 'dnd'\n",
         "digit 1 is used twice"),
        ("[[presets]]\ndigit = 1\n", "missing 'state'"),
        ("[[presets]]\nstate = 'zzz'\n", "invalid state 'zzz'"),
        ("[[presets]]\nstate = 'away'\nmessage = \"a\\nb\"\n", "control character"),
        ("[[presets]]\nstate = 'away'\ncolour = 1\n", "unknown setting(s) colour"),
    ],
)
def test_bad_presets(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(cfg, env={})
    assert message in str(info.value)
    result = CliRunner().invoke(main, ["dialplan", "presets", "--config", str(cfg)])
    assert result.exit_code == 1 and message in result.output


def test_rules_in_config_are_validated(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[rules]\nmirror = true\nqueue_pause = true\noffline_after = 30\n")
    config = load_config(cfg, env={})
    assert config.rules.mirror and config.rules.queue_pause
    assert config.rules.offline_after == timedelta(seconds=30)
    cfg.write_text("[rules]\nofline_after = 30\n")
    with pytest.raises(ConfigError, match="unknown key 'ofline_after'"):
        load_config(cfg, env={})


@pytest.mark.parametrize(("raw", "seconds"),
                         [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400),
                          ("1.5h", 5400)])
def test_parse_duration(raw: str, seconds: float) -> None:
    assert parse_duration(raw) == seconds


@pytest.mark.parametrize("raw", ["", "soon", "-5m", "0", "5w"])
def test_parse_duration_refuses(raw: str) -> None:
    with pytest.raises(InvalidInput):
        parse_duration(raw)


def test_parse_when() -> None:
    now = datetime(2026, 11, 21, 14, 30, tzinfo=timezone(timedelta(hours=1)))
    assert parse_when("15:00", now) == now.replace(hour=15, minute=0)
    # A time already past today means tomorrow.
    assert parse_when("09:15", now) == now.replace(hour=9, minute=15) + timedelta(days=1)
    assert parse_when("2026-12-01T08:00:00+00:00", now) == datetime(
        2026, 12, 1, 8, tzinfo=timezone.utc)
    assert parse_when("2026-12-01 08:00", now).tzinfo is not None  # local time
    for bad in ("25:00", "tomorrow", "15h"):
        with pytest.raises(InvalidInput):
            parse_when(bad, now)


def test_format_hints_adds_mirror_once() -> None:
    users = [
        {"id": "2000", "extension": "2000", "context": "internal", "devices": ["PJSIP/2000"],
         "mirror_device": "Custom:presence-2000"},
        {"id": "2001", "extension": "2001", "context": "internal",
         "devices": ["PJSIP/2001", "Custom:presence-2001"],
         "mirror_device": "Custom:presence-2001"},
        {"id": "bob", "extension": "", "context": "", "devices": [],
         "mirror_device": "Custom:presence-bob"},
    ]
    lines = format_hints(users).splitlines()
    assert "exten => 2000,hint,PJSIP/2000&Custom:presence-2000,CustomPresence:2000" in lines
    assert "exten => 2001,hint,PJSIP/2001&Custom:presence-2001,CustomPresence:2001" in lines
    assert any("bob: no extension known" in line for line in lines)
