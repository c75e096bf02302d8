"""One Asterisk server's connection settings (``[ami]`` or an ``[[asterisk]]`` entry;
app/config.py reads them)."""

from __future__ import annotations

from dataclasses import dataclass

from astpresence.domain.model import DEFAULT_NODE, Secret


@dataclass(frozen=True)
class AMIConfig:
    """One Asterisk server's AMI: the ``[ami]`` section or an ``[[asterisk]]`` entry."""

    name: str = DEFAULT_NODE
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "astpresence"
    secret: Secret = Secret("")
    ping_interval: float = 10.0
    action_timeout: float = 10.0
    connect_timeout: float = 10.0
