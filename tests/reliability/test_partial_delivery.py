"""A message for users on two shards when one shard is full: the sender gets one answer and
its retry never duplicates the message (docs/reliability.md, "Multi-recipient delivery").

Before, alice's shard committed, bob's failed, and the sender was answered 452: its retry
gave alice a second copy. Now the copy bob's shard could not take goes to the durable
local-delivery retry queue and the sender is answered 250 once; bob gets it when his shard
has room again.
"""

from __future__ import annotations

import os
import smtplib
import time

from maild import config as configmod
from maild.store import retry
from tests.conftest import MaildServer

ALICE, BOB = "alice@example.test", "bob@example.test"  # shards 0 and 1 (maild.store.shard_for)


def _message(subject: str, size: int = 6000) -> bytes:
    lines = b"".join(os.urandom(36).hex().encode() + b"\r\n" for _ in range(size // 74))
    return f"From: s@remote.example\r\nSubject: {subject}\r\n\r\n".encode() + lines


def _send(server: MaildServer, rcpts: list[str], raw: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP(server.host, server.ports["smtp"], timeout=30) as smtp:
        smtp.ehlo("client.remote.example")
        try:
            smtp.sendmail("s@remote.example", rcpts, raw)
        except smtplib.SMTPResponseException as exc:
            return exc.smtp_code, exc.smtp_error
        return 250, b""


def _subjects(server: MaildServer, user: str) -> list[str]:
    store = server.store()
    try:
        inbox = store.require_mailbox(user, "INBOX")
        return [store.envelope(user, inbox.id, uid).subject or "" for uid in store.uids(user, inbox.id)]
    finally:
        store.close()


def test_full_shard_in_a_two_shard_delivery_is_answered_once(maild_factory) -> None:  # type: ignore[no-untyped-def]
    server = maild_factory(store={"shards": 2, "map_size_mb": 2, "directory_map_size_mb": 64},
                           smtp={"messages_per_minute_per_ip": 100_000})
    store = server.store()
    try:
        assert store.user(ALICE).shard != store.user(BOB).shard
    finally:
        store.close()
    # Fill bob's shard only: large messages first, then ones the size of the message for
    # both, so what room is left cannot take it either.
    for size in (30_000, 6000):
        for i in range(1000):
            code, text = _send(server, [BOB], _message(f"fill {size} {i}", size))  # inline: in LMDB
            if code != 250:
                assert (code, text[:5]) == (452, b"4.3.1"), (code, text)
                break
        else:
            raise AssertionError("bob's shard never filled up")

    code, _ = _send(server, [ALICE, BOB], _message("for both", 30_000))
    assert code == 250  # stored for alice, queued for bob: the sender must not retry
    assert "queued for 1 more" in server.log()
    status = server.cli("status", "--json")
    assert '"recipients": 1' in status.stdout, status.stdout

    server.stop()
    # Room for bob: a full map is made bigger (docs/reliability.md); a full disk, emptied.
    server.config_path.write_text(server.config_path.read_text().replace("map_size_mb = 2\n", "map_size_mb = 64\n"))
    server.config = configmod.load(server.config_path)
    store = server.store()
    try:
        [entry] = store.retry_entries()
        entry["next_attempt"] = 0  # due now rather than in a minute
        store.directory.writer.run(retry.op_update(entry))
    finally:
        store.close()
    server.start()  # the daemon attempts due entries at start and every 15 s
    deadline = time.monotonic() + 20
    while "delivered to 1 recipient(s), 0 left" not in server.log():
        assert time.monotonic() < deadline, server.log()[-3000:]
        time.sleep(0.1)
    server.stop()
    store = server.store()
    try:
        assert store.retry_entries() == []
    finally:
        store.close()
    assert _subjects(server, ALICE).count("for both") == 1
    assert _subjects(server, BOB).count("for both") == 1
    assert _subjects(server, BOB)[-1] == "for both"
    server.start()  # the fixture's fsck: blob references of the retry queue balanced
