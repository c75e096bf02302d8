"""``astpresence doctor`` against a real Asterisk: passes on a good set-up, and
names the fix when a module or a permission is missing."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import clean_env

from .conftest import Server, asterisk_cli

pytestmark = pytest.mark.timeout(120)


async def doctor(server: Server, tmp_path: Path, config: str = "",
                 username: str | None = None) -> tuple[int, dict[str, Any]]:
    cfg = tmp_path / "doctor.toml"
    cfg.write_text(config, encoding="utf-8")
    args = [sys.executable, "-m", "astpresence", "doctor", "--json", "--config", str(cfg),
            "--ami-host", server.host, "--ami-port", str(server.port),
            "--ami-username", username or server.username]
    env = {**clean_env(), "ASTPRESENCE_AMI_SECRET": server.secret,
           "ASTPRESENCE_DB": str(tmp_path / "doctor.db")}
    done = await asyncio.to_thread(subprocess.run, args, capture_output=True, text=True,
                                   timeout=60, env=env, stdin=subprocess.DEVNULL)
    data = json.loads(done.stdout)
    assert isinstance(data, dict), done.stdout
    return done.returncode, data


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


async def test_doctor_passes_on_a_good_server(dialplan: Server, tmp_path: Path) -> None:
    code, report = await doctor(dialplan, tmp_path, "[rules]\nqueue_pause = true\n")
    checks = by_name(report)
    assert code == 0, checks
    assert {c["status"] for c in checks.values()} <= {"ok", "skip"}
    assert "dialplan kit loaded" in checks["modules"]["detail"]


async def test_doctor_checks_call_handling(dialplan: Server, tmp_path: Path) -> None:
    code, report = await doctor(dialplan, tmp_path, "[calls]\n")
    check = by_name(report)["call handling"]
    assert code == 0 and check["status"] == "ok", check
    assert "astpresence-dial loaded" in check["detail"]
    assert "astpresence-calls holds" in check["detail"]


async def test_doctor_names_an_unloaded_module(dialplan: Server, ami: Any,
                                               tmp_path: Path) -> None:
    """The kit calls CUT(): with func_cut unloaded doctor fails and says how to load it."""
    await asterisk_cli(dialplan, "module unload func_cut.so", ami)
    try:
        code, report = await doctor(dialplan, tmp_path)
    finally:
        await asterisk_cli(dialplan, "module load func_cut.so", ami)
    modules = by_name(report)["modules"]
    assert code == 1
    assert modules["status"] == "fail"
    assert "not loaded: func_cut" in modules["detail"]
    assert "module load func_cut.so" in modules["fix"]


async def test_doctor_names_a_missing_permission(it: Server, ami: Any, tmp_path: Path) -> None:
    if it.manager_conf is None:
        pytest.skip("set ASTPRESENCE_IT_MANAGER_CONF to the server's manager.conf (the test "
                    "adds a user with fewer permissions for a moment and restores the file)")
    original = it.manager_conf.read_text(encoding="utf-8")
    user = "astpresence-limited"
    it.manager_conf.write_text(
        original + f"\n[{user}]\nsecret = {it.secret}\ndeny = 0.0.0.0/0.0.0.0\n"
        "permit = 127.0.0.1/255.255.255.255\nread = call\nwrite = call\n", encoding="utf-8")
    await asterisk_cli(it, "manager reload", ami)
    try:
        code, report = await doctor(it, tmp_path, "[rules]\nqueue_pause = true\n", user)
    finally:
        it.manager_conf.write_text(original, encoding="utf-8")
        await asterisk_cli(it, "manager reload", ami)
    permissions = by_name(report)["permissions"]
    assert code == 1
    assert permissions["status"] == "fail"
    assert "missing write=agent" in permissions["detail"]
    assert "add agent to write=" in permissions["fix"]
