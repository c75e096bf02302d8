"""Static checks of the AMI account of the kit and of the Docker files.

There is no Docker engine on the build machines, so the compose file and the
Dockerfile are read the way compose and Docker would.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.dialplan import (
    Channel,
    DIALPLAN,
    DialplanSim,
    FEATURES,
    load_dialplan,
    parse_config,
)

ROOT = Path(__file__).resolve().parents[2]
MANAGER_KIT = DIALPLAN / "manager_astpresence.conf"
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
DEMO = DOCKER / "asterisk"


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
    from astpresence.app.config import load_config

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




def test_compose_ha_variant() -> None:
    """docker/compose.ha.yaml: two Asterisk servers, PostgreSQL and two daemons in one
    HA group."""
    data = yaml.safe_load((DOCKER / "compose.ha.yaml").read_text(encoding="utf-8"))
    services = data["services"]
    assert set(services) == {"asterisk-east", "asterisk-west", "postgres", "astpresence-a",
                             "astpresence-b"}
    for name, svc in services.items():
        if "image" in svc:
            assert _pinned(svc["image"]), name
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)
    nodes = []
    for name in ("astpresence-a", "astpresence-b"):
        env = services[name]["environment"]
        assert env["ASTPRESENCE_HA"] == "1"
        assert env["ASTPRESENCE_DB_URL"].startswith("postgresql://astpresence:${")
        assert env["ASTPRESENCE_DB_URL"].endswith("@postgres/astpresence")
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        nodes.append(env["ASTPRESENCE_HA_NODE"])
    assert nodes == ["node-a", "node-b"]
    # Both servers are in the daemons' config, their secrets in the environment.
    from astpresence.app.config import load_config

    env = services["astpresence-a"]["environment"]
    source = next(src for src, tgt in _bind_mounts(services["astpresence-a"])
                  if tgt == env["ASTPRESENCE_CONFIG"])
    cfg = load_config(DOCKER / source, env={
        k: "x" for k in env if k.startswith("ASTPRESENCE_AMI_SECRET_")})
    assert [(n.name, n.host, n.secret.value) for n in cfg.asterisk_servers] == [
        ("east", "asterisk-east", "x"), ("west", "asterisk-west", "x")]
    assert cfg.rules.mirror and cfg.rules.queue_pause
    assert not any(k.startswith("ASTPRESENCE_AMI_") and not k.startswith(
        "ASTPRESENCE_AMI_SECRET_") for k in env)  # they would clash with [[asterisk]]
    assert set(services["asterisk-west"]["volumes"]) == set(
        services["asterisk-east"]["volumes"])
    # Secrets only from the environment, with demo placeholders.
    pg = services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert pg.startswith("${ASTPRESENCE_DEMO_PG_PASSWORD:-demo-only")
    for source, _ in _bind_mounts(services["astpresence-b"]):
        assert (DOCKER / source).exists(), source
