"""The fake Asterisk and capture helpers live in tests/; import them from the repo root."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.fakeami import (
    CAPTURE_DIR,
    FakeAsterisk,
    Hint,
    captured_server_bytes,
)
from tests.support.postgres import PostgresServer
from tests.support.teams_graph import TeamsGraphServer
from tests.support.wire import encode_message

__all__ = ["CAPTURE_DIR", "ROOT", "FakeAsterisk", "Hint", "PostgresServer", "TeamsGraphServer",
           "captured_server_bytes", "encode_message"]
