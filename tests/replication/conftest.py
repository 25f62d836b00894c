"""A leader and a follower: two real `maild serve` processes on loopback, peers
authenticated by a shared secret over TLS (and, where a test asks, pinned certificates)."""

from __future__ import annotations

import functools
import json
import smtplib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import tests.conftest as shared
from maild.config import ReplicationConfig
from tests.conftest import MaildServer
from tests.fixtures.ports import free_port


class _NoUsers:
    """Stands in for the Store MaildServer fills with users: a follower starts empty and
    gets everything from its leader."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def domain_add(self, *args: Any) -> None:
        pass

    def user_add(self, *args: Any) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class Pair:
    leader: MaildServer
    follower: MaildServer
    port: int  # the leader's replication listener
    secret: Path

    def status(self, server: MaildServer) -> dict[str, Any]:
        result = server.cli("replica", "status", "--json")
        assert result.returncode == 0, result.stderr
        return dict(json.loads(result.stdout))

    def positions(self, server: MaildServer) -> dict[str, int]:
        return {w: r["position"] for w, r in self.status(server)["environments"].items()}

    def wait_caught_up(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            want, have = self.positions(self.leader), self.positions(self.follower)
            if want == have:
                return
            assert time.monotonic() < deadline, f"follower at {have}, leader at {want}\n" \
                                                f"{self.follower.log()[-3000:]}"
            time.sleep(0.2)


def send(server: MaildServer, count: int, tag: str, size: int = 0) -> list[bytes]:
    """Deliver ``count`` messages to alice over SMTP; return what was acknowledged."""
    sent = []
    with smtplib.SMTP(server.host, server.ports["smtp"], timeout=30) as client:
        for i in range(count):
            body = (f"From: carol@example.org\r\nTo: alice@example.test\r\nSubject: {tag} {i}\r\n"
                    f"Message-ID: <{tag}.{i}@example.org>\r\n\r\n{tag} body {i}\r\n").encode()
            body += (b"x" * 70 + b"\r\n") * (size // 72)
            client.sendmail("carol@example.org", ["alice@example.test"], body)
            sent.append(body)
    return sent


@pytest.fixture
def pair_factory(tmp_path: Path, maild_factory: Callable[..., MaildServer],
                 monkeypatch: pytest.MonkeyPatch) -> Callable[..., Pair]:
    """make(leader={...}, follower={...}): [replication] keys over the defaults; the
    shared maild_factory stops both at the end and runs fsck on both."""

    def make(leader: dict[str, Any] | None = None, follower: dict[str, Any] | None = None,
             listen_port: int | None = None, leader_port: int | None = None) -> Pair:
        secret = tmp_path / "replication.secret"
        secret.write_text("a shared secret of some length\n")
        port = leader_port or free_port()
        common = {"secret_file": str(secret)}
        # the leader keeps its log from its very first write (the users MaildServer adds)
        monkeypatch.setattr(shared, "Store", functools.partial(
            shared.Store, replication=ReplicationConfig(role="leader")))
        try:
            lead = maild_factory(replication={
                "role": "leader", "listen": [f"127.0.0.1:{port}"], **common, **(leader or {})})
            monkeypatch.setattr(shared, "Store", _NoUsers)
            follow = maild_factory(replication={
                "role": "follower", "leader": f"127.0.0.1:{listen_port or port}", **common,
                **(follower or {})})
        finally:
            monkeypatch.undo()
        return Pair(lead, follow, port, secret)

    return make
