"""Config layers: defaults < TOML < environment < flags; every bad value named."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from astpresence.app.config import load_config
from astpresence.app.config_view import config_json, read_batching
from astpresence.app.settings import AUTO_ANSWERS_MS, AUTO_BATCH_MS, ConfigError, SYSTEM_DB, default_db_path
from astpresence.domain.model import Secret

TOML = """
[ami]
host = "pbx.example"
port = 5039
username = "presence"
secret = "from-file"
ping_interval = 5

[store]
path = "/var/lib/astpresence/p.db"

[api]
listen = "0.0.0.0:9000"

[[users]]
id = "2000"
name = "Alice"
devices = ["PJSIP/2000", "PJSIP/2000-mobile"]
extension = "2000"
context = "internal"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "astpresence.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(env={})
    assert (cfg.ami.host, cfg.ami.port, cfg.ami.username) == ("127.0.0.1", 5038, "astpresence")
    # Never relative to the working directory.
    assert os.path.isabs(cfg.db) and not cfg.db.startswith(str(tmp_path))
    assert cfg.db == default_db_path({})
    assert cfg.listen == "127.0.0.1:8780"
    assert cfg.users == ()


def test_file_then_env_then_flags(tmp_path: Path) -> None:
    path = write(tmp_path, TOML)
    cfg = load_config(path, env={})
    assert (cfg.ami.host, cfg.ami.port, cfg.ami.secret.value) == ("pbx.example", 5039, "from-file")
    assert cfg.ami.ping_interval == 5.0
    assert cfg.db == "/var/lib/astpresence/p.db"
    assert (cfg.listen_host, cfg.listen_port) == ("0.0.0.0", 9000)
    assert cfg.users[0].devices == ("PJSIP/2000", "PJSIP/2000-mobile")
    assert cfg.users[0].origin == "config"

    env = {"ASTPRESENCE_AMI_HOST": "env-host", "ASTPRESENCE_AMI_PORT": "6000",
           "ASTPRESENCE_AMI_SECRET": "from-env", "ASTPRESENCE_DB": "env.db",
           "ASTPRESENCE_LISTEN": "[::1]:8781", "ASTPRESENCE_AMI_USERNAME": "envuser"}
    cfg = load_config(path, env=env)
    assert (cfg.ami.host, cfg.ami.port, cfg.ami.secret.value) == ("env-host", 6000, "from-env")
    assert (cfg.db, cfg.listen_host, cfg.listen_port) == (os.path.abspath("env.db"), "::1", 8781)
    assert cfg.listen == "[::1]:8781"
    assert cfg.ami.username == "envuser"

    cfg = load_config(path, env=env, overrides={"ami_host": "flag-host", "ami_port": None,
                                                "db": "flag.db"})
    assert (cfg.ami.host, cfg.ami.port, cfg.db) == ("flag-host", 6000, os.path.abspath("flag.db"))


def test_secret_never_shows() -> None:
    cfg = load_config(env={"ASTPRESENCE_AMI_SECRET": "hunter2"})
    assert "hunter2" not in repr(cfg)
    assert "hunter2" not in str(cfg.ami.secret)
    assert repr(Secret("x")) == "Secret('********')"


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[ami]\nport = 70000\n", {}, "port 70000 is outside 1-65535"),
        ("[ami]\nport = 'abc'\n", {}, "ami.port: expected a port number"),
        ("[ami]\nhots = 'x'\n", {}, "unknown setting(s) hots"),
        ("[amy]\n", {}, "unknown setting(s) amy"),
        ("[api]\nlisten = 'nohost'\n", {}, "api.listen: expected HOST:PORT"),
        ("[ami]\nping_interval = -1\n", {}, "ami.ping_interval: expected a positive number"),
        ("[[users]]\nname = 'x'\n", {}, "users[0]: missing 'id'"),
        ("[[users]]\nid = 'a b'\n", {}, "forbidden character"),
        ("[[users]]\nid = '1'\n[[users]]\nid = '1'\n", {}, "defined twice: 1"),
        ("[[users]]\nid = '1'\ndevices = 'PJSIP/1'\n", {}, "'devices' must be a list"),
        ("not toml = = =\n", {}, "is not valid TOML"),
        ("", {"ASTPRESENCE_AMI_PORT": "0"}, "environment variable ASTPRESENCE_AMI_PORT"),
        ("", {"ASTPRESENCE_LISTEN": "[::1]8780"}, "ASTPRESENCE_LISTEN: expected [IPV6]:PORT"),
        ("", {"ASTPRESENCE_AMI_HOST": "a\nb"}, "must not contain CR, LF or NUL"),
    ],
)
def test_bad_values_are_named(tmp_path: Path, text: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env=env)
    assert message in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", env={})


def test_bad_flag_is_named() -> None:
    with pytest.raises(ConfigError, match="--ami-port"):
        load_config(env={}, overrides={"ami_port": "x"})


def test_default_database_follows_the_user_not_the_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    env = {"HOME": "/home/alice"}
    assert default_db_path(env) == "/home/alice/.local/state/astpresence/astpresence.db"
    assert default_db_path({**env, "XDG_STATE_HOME": "/srv/state"}) == (
        "/srv/state/astpresence/astpresence.db")
    for cwd in (tmp_path / "a", tmp_path / "b"):
        cwd.mkdir()
        monkeypatch.chdir(cwd)
        assert load_config(env=env).db == "/home/alice/.local/state/astpresence/astpresence.db"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert default_db_path(env) == SYSTEM_DB == "/var/lib/astpresence/astpresence.db"


def test_relative_database_paths_become_absolute(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config(env={"ASTPRESENCE_DB": "x.db"}).db == str(tmp_path / "x.db")


@pytest.mark.parametrize("value", ["5", "true", "[1]", '""'])
def test_cli_token_must_be_a_string(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, f"[cli]\ntoken = {value}\n")
    with pytest.raises(ConfigError, match="cli.token: expected a non-empty string"):
        load_config(path, env={})


def test_ami_read_batching_is_off_with_one_server_unless_asked_and_bounded(tmp_path: Path) -> None:
    assert load_config(env={}).read_batch_ms == 0
    cfg = load_config(write(tmp_path, "[ami_reads]\nbatch_ms = 5\n"), env={})
    assert cfg.ami_read_batch_ms == 5
    for bad in ("-1", "51", "2.5", '"5"', "true"):
        with pytest.raises(ConfigError, match="ami_reads.batch_ms: expected 0-50"):
            load_config(write(tmp_path, f"[ami_reads]\nbatch_ms = {bad}\n"), env={})
    with pytest.raises(ConfigError, match=r"\[ami_reads\]: unknown setting\(s\) batch"):
        load_config(write(tmp_path, "[ami_reads]\nbatch = 5\n"), env={})


def test_reads_are_batched_by_default_only_with_several_servers(tmp_path: Path) -> None:
    one = load_config(env={})
    assert one.ami_answers_ms is None and one.answers_ms == 0 and one.read_batch_ms == 0
    several = "".join(f'[[asterisk]]\nname = "n{i}"\nhost = "127.0.0.1"\nport = {5038 + i}\n'
                      for i in range(3))
    cfg = load_config(write(tmp_path, several), env={})
    assert (cfg.read_batch_ms, cfg.answers_ms) == (AUTO_BATCH_MS, AUTO_ANSWERS_MS)
    off = load_config(write(tmp_path, several + "[ami_reads]\nanswers_ms = 0\nbatch_ms = 0\n"),
                      env={})
    assert (off.read_batch_ms, off.answers_ms) == (0, 0)
    assert read_batching(off) == ""
    assert load_config(write(tmp_path, "[ami_reads]\nanswers_ms = 8\n"), env={}).answers_ms == 8
    for bad in ("-1", "51", "2.5", '"5"', "true"):
        with pytest.raises(ConfigError, match="ami_reads.answers_ms: expected 0-50"):
            load_config(write(tmp_path, f"[ami_reads]\nanswers_ms = {bad}\n"), env={})


def test_read_batching_as_the_start_line_and_v1_config_show_it(tmp_path: Path) -> None:
    assert read_batching(load_config(env={})) == ""
    cfg = load_config(write(tmp_path, "[ami_reads]\nbatch_ms = 2\nanswers_ms = 6\n"), env={})
    assert read_batching(cfg) == (" (read in batches: at most once every 2 ms; "
                                  "answers to writes read at most once every 6 ms)")
    assert config_json(cfg)["ami_answers_ms"] == 6
    assert config_json(cfg)["ami_read_batch_ms"] == 2
    shown = config_json(load_config(env={}))  # as they apply
    assert (shown["ami_read_batch_ms"], shown["ami_answers_ms"]) == (0, 0)


def test_max_users(tmp_path: Path) -> None:
    assert load_config(env={}).max_users == 20_000
    assert load_config(write(tmp_path, "[limits]\nmax_users = 50\n"), env={}).max_users == 50
    for bad in ("0", "true", "'5'"):
        with pytest.raises(ConfigError, match="limits.max_users: expected 1-1000000"):
            load_config(write(tmp_path, f"[limits]\nmax_users = {bad}\n"), env={})


@pytest.mark.parametrize("uid", ["{x}", "a/b", "..", "a?b", "a%b"])
def test_config_refuses_unroutable_user_ids(tmp_path: Path, uid: str) -> None:
    with pytest.raises(ConfigError, match="users\\[0\\]"):
        load_config(write(tmp_path, f"[[users]]\nid = {uid!r}\n"), env={})
