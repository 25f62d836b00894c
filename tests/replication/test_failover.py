"""Sync mode: the leader SIGKILLed at a random moment under concurrent SMTP and IMAP
load, the follower promoted, every acknowledged message there byte for byte; the old
leader, back, is fenced by the new epoch and rejoins as a follower with its old data set
aside, never merged. Several rounds, the two nodes swapping roles each time
(MAILD_FAILOVER_ROUNDS, default 3; the issue's acceptance run uses 10)."""

from __future__ import annotations

import imaplib
import os
import random
import smtplib
import ssl
import threading
import time
from collections.abc import Callable

from tests.fixtures.ports import free_port
from tests.replication.conftest import Pair, send
from tests.replication.test_pair import _bodies

ROUNDS = int(os.environ.get("MAILD_FAILOVER_ROUNDS", "2"))


def _smtp_load(server, tag: str, acked: list[bytes], stop: threading.Event) -> None:  # type: ignore[no-untyped-def]
    """Send until the server dies; keep what it acknowledged with 250."""
    i = 0
    try:
        with smtplib.SMTP(server.host, server.ports["smtp"], timeout=30) as client:
            while not stop.is_set():
                body = (f"From: carol@example.org\r\nTo: alice@example.test\r\nSubject: {tag} {i}\r\n"
                        f"Message-ID: <{tag}.{i}@example.org>\r\n\r\n{tag} body {i}\r\n").encode()
                i += 1
                try:
                    client.sendmail("carol@example.org", ["alice@example.test"], body)
                except smtplib.SMTPResponseException:
                    continue  # 4xx: not acknowledged
                acked.append(body)
    except (OSError, smtplib.SMTPException):
        pass  # the leader was killed


def _imap_load(server, tag: str, acked: list[bytes], stop: threading.Event) -> None:  # type: ignore[no-untyped-def]
    """APPEND to alice's Archive until the server dies; keep what was answered OK."""
    i = 0
    try:
        with imaplib.IMAP4_SSL(server.host, server.ports["imaps"], timeout=30,
                               ssl_context=ssl.create_default_context(cafile=str(server.cafile))) as c:
            c.login("alice@example.test", "alice-secret")
            while not stop.is_set():
                body = f"From: alice@example.test\r\nSubject: {tag} {i}\r\n\r\n{tag} draft {i}\r\n".encode()
                i += 1
                typ, _ = c.append("Archive", "(\\Seen)", None, body)
                if typ == "OK":
                    acked.append(body)
    except (OSError, imaplib.IMAP4.error, imaplib.IMAP4.abort):
        pass


def _wait_role(pair: Pair, server, role: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 15
    while (pair.status(server)["daemon"] or {}).get("role") != role:
        assert time.monotonic() < deadline, server.log()[-2000:]
        time.sleep(0.2)


def test_sync_kill9_promote_fence_rejoin(pair_factory: Callable[..., Pair]) -> None:
    port_a, port_b = free_port(), free_port()
    sync = {"mode": "sync", "sync_timeout": 10.0, "on_timeout": "tempfail"}
    # each node knows the other both ways: listen for it, and call it when promoted
    pair = pair_factory(leader={**sync, "leader": f"127.0.0.1:{port_b}"}, leader_port=port_a,
                        follower={**sync, "listen": [f"127.0.0.1:{port_b}"]})
    send(pair.leader, 1, "warm-up")
    pair.wait_caught_up()
    for round_ in range(ROUNDS):
        smtp_acked: list[bytes] = []
        imap_acked: list[bytes] = []
        stop = threading.Event()
        loads = [threading.Thread(target=_smtp_load, args=(pair.leader, f"r{round_}s{n}", smtp_acked, stop))
                 for n in range(3)]
        loads.append(threading.Thread(target=_imap_load, args=(pair.leader, f"r{round_}i", imap_acked, stop)))
        for t in loads:
            t.start()
        time.sleep(random.uniform(0.8, 2.5))
        pair.leader.kill()
        stop.set()
        for t in loads:
            t.join(30)
        assert len(smtp_acked) > 5 and imap_acked, (len(smtp_acked), len(imap_acked))

        result = pair.follower.cli("replica", "promote")
        assert result.returncode == 0, result.stderr
        _wait_role(pair, pair.follower, "leader")
        for box, acked in (("INBOX", smtp_acked), ("Archive", imap_acked)):
            held = _bodies(pair.follower, mailbox=box)
            missing = [b for b in acked if not any(h.endswith(b) for h in held)]
            assert missing == [], f"round {round_}: {len(missing)} acknowledged message(s) lost from {box}"

        # the old leader comes back as it was: the new leader shows it the new epoch, and
        # it takes no more writes
        pair.leader.start()
        deadline = time.monotonic() + 20
        while pair.status(pair.leader)["fenced"] is None:
            assert time.monotonic() < deadline, pair.leader.log()[-2000:]
            time.sleep(0.3)
        with smtplib.SMTP(pair.leader.host, pair.leader.ports["smtp"], timeout=10) as client:
            client.ehlo()
            assert client.mail("carol@example.org")[0] == 451

        # it rejoins as a follower of the new leader: its data set aside, copied anew
        pair.leader.stop()
        result = pair.leader.cli("replica", "resync")
        assert result.returncode == 0 and "set aside" in result.stdout, result.stdout + result.stderr
        pair.leader.start()
        pair.follower, pair.leader = pair.leader, pair.follower  # the roles have swapped
        pair.wait_caught_up(timeout=60)
        result = pair.follower.cli("replica", "verify", str(pair.leader.config_path))
        assert result.returncode == 0, result.stdout
    (aside,) = list((pair.follower.data_dir / "set-aside").iterdir())[:1]
    report = (aside / "report.txt").read_text()
    assert "alice@example.test INBOX:" in report and "shard 00: position" in report, report
