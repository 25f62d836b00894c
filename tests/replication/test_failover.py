"""Sync mode: the leader SIGKILLed under concurrent SMTP load, the follower promoted, and
every acknowledged message is there byte for byte; the old leader, back, is fenced by the
new epoch and rejoins as a follower with its old data set aside, never merged."""

from __future__ import annotations

import random
import smtplib
import threading
import time
from collections.abc import Callable

from tests.fixtures.ports import free_port
from tests.replication.conftest import Pair, send
from tests.replication.test_pair import _bodies


def _load(server, tag: str, acked: list[bytes], stop: threading.Event) -> None:  # type: ignore[no-untyped-def]
    """Send until the server dies; keep what it acknowledged with 250."""
    i = 0
    try:
        with smtplib.SMTP(server.host, server.ports["smtp"], timeout=30) as client:
            while not stop.is_set():
                body = (f"From: carol@example.org\r\nTo: alice@example.test\r\nSubject: {tag} {i}\r\n"
                        f"Message-ID: <{tag}.{i}@example.org>\r\n\r\n{tag} body {i}\r\n").encode()
                try:
                    client.sendmail("carol@example.org", ["alice@example.test"], body)
                except smtplib.SMTPResponseException:
                    continue  # 4xx: not acknowledged
                acked.append(body)
                i += 1
    except (OSError, smtplib.SMTPException):
        pass  # the leader was killed


def test_sync_kill9_promote_fence_rejoin(pair_factory: Callable[..., Pair]) -> None:
    new_listen = free_port()
    sync = {"mode": "sync", "sync_timeout": 10.0, "on_timeout": "tempfail"}
    pair = pair_factory(leader=sync, follower={**sync, "on_timeout": "degrade",
                                               "listen": [f"127.0.0.1:{new_listen}"]})
    send(pair.leader, 1, "warm-up")
    pair.wait_caught_up()
    acked: list[bytes] = []
    stop = threading.Event()
    senders = [threading.Thread(target=_load, args=(pair.leader, f"load{n}", acked, stop)) for n in range(3)]
    for t in senders:
        t.start()
    time.sleep(random.uniform(1.0, 2.5))
    pair.leader.kill()
    stop.set()
    for t in senders:
        t.join(30)
    print(f"{len(acked)} acknowledged before SIGKILL")
    assert len(acked) > 5

    result = pair.follower.cli("replica", "promote")
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 10
    while pair.status(pair.follower)["daemon"]["role"] != "leader":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    held = _bodies(pair.follower)
    missing = [b for b in acked if not any(h.endswith(b) for h in held)]
    assert missing == [], f"{len(missing)} acknowledged message(s) lost"
    # the new leader takes mail
    send(pair.follower, 1, "after promotion")

    # the old leader comes back as it was (role leader, epoch 1): the new leader shows it
    # epoch 2, and it takes no more writes
    pair.leader.start()
    deadline = time.monotonic() + 20
    while pair.status(pair.leader)["fenced"] is None:
        assert time.monotonic() < deadline, pair.leader.log()[-2000:]
        time.sleep(0.3)
    with smtplib.SMTP(pair.leader.host, pair.leader.ports["smtp"], timeout=10) as client:
        client.ehlo()
        assert client.mail("carol@example.org")[0] == 451

    # it rejoins as a follower of the new leader: its data is set aside, then copied anew
    pair.leader.stop()
    text = pair.leader.config_path.read_text()
    text = text.replace('role = "leader"', 'role = "follower"').replace(
        f'listen = ["127.0.0.1:{pair.port}"]', f'leader = "127.0.0.1:{new_listen}"')
    pair.leader.config_path.write_text(text)
    result = pair.leader.cli("replica", "resync")
    assert result.returncode == 0 and "set aside" in result.stdout, result.stdout + result.stderr
    assert list((pair.leader.data_dir / "set-aside").iterdir())
    pair.leader.start()
    pair.follower, pair.leader = pair.leader, pair.follower  # the roles have swapped
    pair.wait_caught_up(timeout=60)
    result = pair.follower.cli("replica", "verify", str(pair.leader.config_path))
    assert result.returncode == 0, result.stdout
