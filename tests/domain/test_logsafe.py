"""Log lines stay one line and short whatever text they carry."""

from __future__ import annotations

import logging

import pytest

from astpresence.domain.logsafe import OneLineFormatter, clip, escape


@pytest.mark.parametrize(("text", "expected"), [
    ("plain", "plain"),
    ("a\nb", "a\\x0ab"),
    ("a\r\nERROR forged", "a\\x0d\\x0aERROR forged"),
    ("tab\there", "tab\\x09here"),
    ("del\x7f", "del\\x7f"),
    ("c1\x85", "c1\\x85"),
    ("ls\u2028ps\u2029", "ls\\u2028ps\\u2029"),
    ("lone\ud800", "lone\\ud800"),
    ("é ü 中", "é ü 中"),
])
def test_escape(text: str, expected: str) -> None:
    assert escape(text) == expected


def test_clip_cuts_and_says_how_long() -> None:
    assert clip("x" * 500) == "x" * 120 + "...(500 chars)"
    assert clip(None) == "-"
    assert clip("a\nb" * 100, 10) == "a\\x0aba\\x0aba\\x0aba...(300 chars)"


def test_formatter_keeps_each_record_on_one_line() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "user %s said %s", ("u\n1", "hi\r\nthere"), None)
    line = OneLineFormatter("%(levelname)s %(message)s").format(record)
    assert line == "INFO user u\\x0a1 said hi\\x0d\\x0athere"
