"""A throwaway PostgreSQL server for the tests, on a free loopback port.

Debian's server binaries (package ``postgresql``, installed by scripts/test
when missing) in a fresh data directory; trust authentication on 127.0.0.1
only. PostgreSQL refuses to run as root, so as root the server runs as the
``postgres`` system user (CI runs as root). Never a server someone else started.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

HOST = "127.0.0.1"


def bindir() -> Path | None:
    """Where initdb and pg_ctl are (the newest Debian version), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """``start()``, use :attr:`url`, ``stop()``. :meth:`restart` keeps the data."""

    def __init__(self, *, network: tuple[str, str] | None = None) -> None:
        """``network``: (an address to listen on besides 127.0.0.1, the clients' network
        to trust there), e.g. a test's own network namespace on a veth pair."""
        self.network = network
        bin_dir = bindir()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL is not installed (Debian package 'postgresql'; "
                               "scripts/test installs it)")
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="astp-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._as_postgres = os.geteuid() == 0

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                                stdin=subprocess.DEVNULL, cwd="/")
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {result.stderr[-800:]}")

    def start(self) -> None:
        if not self.data.exists():
            if self._as_postgres:
                pw = pwd.getpwnam("postgres")
                os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                      "--no-sync", "-E", "UTF8", "--locale=C")
            if self.network is not None:
                # Appended as root: the file stays the postgres user's and readable.
                with open(self.data / "pg_hba.conf", "a", encoding="ascii") as hba:
                    hba.write(f"host all all {self.network[1]} trust\n")
        listen = HOST if self.network is None else f"{HOST},{self.network[0]}"
        opts = (f"-c listen_addresses={listen} -p {self.port} -k {self.root} "
                "-c fsync=on -c max_connections=50")
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"),
                  "-w", "-t", "60", "start")

    def create_database(self) -> str:
        """A new, empty database; its URL."""
        name = f"t{uuid.uuid4().hex[:16]}"
        self._run("psql", "-h", HOST, "-p", str(self.port), "-U", "postgres", "-d", "postgres",
                  "-q", "-c", f"CREATE DATABASE {name}")
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
