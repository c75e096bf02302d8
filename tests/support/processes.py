"""The daemon and the CLI as real processes: a free port, a clean environment, a run
of the command, a token, and waiting until the API answers."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import aiohttp


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASTPRESENCE_")}
    env.update(extra)
    return env


async def run(*args: str, env: dict[str, str], cwd: Path | None = None,
              timeout: float = 20) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "astpresence", *args, env=env, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def create_token(db: Path, env: dict[str, str]) -> str:
    made = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "astpresence", "token", "create", "--role", "admin", "--db", str(db),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await made.communicate()
    token = out.decode().strip()
    assert made.returncode == 0 and token.startswith("astp_"), err.decode()
    return token


async def wait_up(url: str) -> None:
    """Until the daemon at ``url`` answers its public OpenAPI document."""
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            try:
                async with http.get(url + "/v1/openapi.json") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"daemon at {url} did not start")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


