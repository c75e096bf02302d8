"""An HA leader cut off by the network (no FIN, no RST: its host is lost): the
leader stops writing, PostgreSQL frees its lock within seconds (the lock
connection's keepalives), and the follower takes over.

The leader runs in a network namespace of its own, linked to the test's by a
veth pair; PostgreSQL and the fake Asterisk listen on the near end. Cutting
the link is ``ip link set <near end> down``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from tests.support.e2e import seed, until
from tests.support.fakeami import FakeAsterisk
from tests.support.postgres import PostgresServer
from tests.support.processes import free_port, wait_up
from tests.support.processes import clean_env, run
from tests.cluster.test_ha import Node, setvars

pytestmark = [
    pytest.mark.timeout(120),
    # CI runs as root; a developer's run as a user cannot make namespaces.
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
]


def logged_at(log: Path, text: str) -> datetime:
    """When a daemon's log first says ``text`` (its lines start with the time)."""
    for line in log.read_text().splitlines():
        if text in line:
            return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    raise AssertionError(f"{log.name} never says {text!r}")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@dataclass
class Namespace:
    name: str
    near: str  # the test's end of the veth pair
    near_ip: str
    far_ip: str  # the namespace's address

    def cut(self) -> None:
        ip("link", "set", self.near, "down")


@pytest.fixture
def namespace() -> Iterator[Namespace]:
    tag = uuid.uuid4().hex[:6]
    subnet = f"10.213.{random.randrange(1, 250)}"
    ns = Namespace(f"astp-{tag}", f"vh{tag}", f"{subnet}.1", f"{subnet}.2")
    far = f"vn{tag}"
    ip("netns", "add", ns.name)
    try:
        ip("link", "add", ns.near, "type", "veth", "peer", "name", far)
        ip("link", "set", far, "netns", ns.name)
        ip("addr", "add", f"{ns.near_ip}/30", "dev", ns.near)
        ip("link", "set", ns.near, "up")
        for cmd in (("addr", "add", f"{ns.far_ip}/30", "dev", far), ("link", "set", far, "up"),
                    ("link", "set", "lo", "up")):
            ip("netns", "exec", ns.name, "ip", *cmd)
        yield ns
    finally:
        subprocess.run(["ip", "link", "del", ns.near], capture_output=True, timeout=10)
        ip("netns", "del", ns.name)


@pytest.fixture
def reachable_postgres(namespace: Namespace) -> Iterator[PostgresServer]:
    # Clients from both ends of the pair: the namespace and this side's address.
    subnet = namespace.near_ip.rsplit(".", 1)[0] + ".0/30"
    server = PostgresServer(network=(namespace.near_ip, subnet))
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


class FarNode(Node):
    """A node inside the namespace: its API on the namespace's address."""

    def __init__(self, name: str, env: dict[str, str], tmp: Path, ns: Namespace) -> None:
        super().__init__(name, env, tmp)
        self.ns = ns
        self.url = f"http://{ns.far_ip}:{free_port()}"

    async def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", self.ns.name, sys.executable, "-m", "astpresence",
                "serve", "--listen", self.url.removeprefix("http://"), env=self.env,
                stdout=log, stderr=log, stdin=asyncio.subprocess.DEVNULL)
        await wait_up(self.url)


@pytest.fixture
async def fake_near(namespace: Namespace) -> AsyncIterator[FakeAsterisk]:
    fake = FakeAsterisk()
    fake.host = namespace.near_ip  # reachable from the namespace and from here
    seed(fake)
    await fake.start()
    yield fake
    await fake.stop()


async def test_a_leader_cut_off_by_the_network_loses_its_lock(
        namespace: Namespace, reachable_postgres: PostgresServer, fake_near: FakeAsterisk,
        tmp_path: Path) -> None:
    url = reachable_postgres.create_database().replace("127.0.0.1", namespace.near_ip)
    env = clean_env(ASTPRESENCE_AMI_HOST=namespace.near_ip,
                    ASTPRESENCE_AMI_PORT=str(fake_near.port),
                    ASTPRESENCE_AMI_SECRET=fake_near.secret, ASTPRESENCE_DB_URL=url,
                    ASTPRESENCE_HA="1", ASTPRESENCE_DB=str(tmp_path / "unused.db"))
    code, out, err = await run("token", "create", "--role", "admin", "--json", env=env)
    assert code == 0, err
    token = json.loads(out)["token"]
    a = FarNode("node-a", env, tmp_path, namespace)
    b = Node("node-b", env, tmp_path)
    try:
        await a.start()
        await a.wait_leading(token)
        await b.start()
        await b.wait_following(token)
        code, _ = await a.call("PUT", "/v1/presence/2000", token, {"state": "dnd"})
        assert code == 200
        await until(lambda: len(setvars(fake_near, "2000")) == 1, what="a's write")

        namespace.cut()
        cut = datetime.now()
        assert a.proc is not None
        # The leader notices first (heartbeat: 2 s) and stops writing: exit 1.
        assert await asyncio.wait_for(a.proc.wait(), 15) == 1
        assert "no longer the leader; AMI writes stopped" in a.log.read_text()
        # Without keepalives PostgreSQL would hold a's lock for hours.
        await b.wait_leading(token, timeout=20)
        # Never two writers: a had stopped writing before b took the lock.
        stopped = logged_at(a.log, "no longer the leader; AMI writes stopped")
        leading = logged_at(b.log, "this node (node-b) is the leader now")
        assert cut < stopped < leading, (cut, stopped, leading)
        (tmp_path / "seconds-after-the-cut").write_text(
            f"a stopped writing {(stopped - cut).total_seconds():.2f}, "
            f"b took the lock {(leading - cut).total_seconds():.2f}\n")
        # One writer: what b writes now reaches Asterisk once; a wrote nothing more.
        code, _ = await b.call("PUT", "/v1/presence/2000", token, {"state": "away"})
        assert code == 200
        await until(lambda: [v.split(",")[0] for v in setvars(fake_near, "2000")]
                    == ["dnd", "away"], what="b's write, once")
        st = await b.status(token)
        assert st["role"] == "leader" and st["ha"]["takeovers"] == 1
    finally:
        for node in (a, b):
            if node.proc is not None and node.proc.returncode is None:
                node.proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(node.proc.wait(), 20)
                except TimeoutError:
                    node.proc.kill()
                    await node.proc.wait()
