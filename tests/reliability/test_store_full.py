"""A full store answers 452 4.3.1 and half-writes nothing; a full quota answers 552 5.2.2;
service resumes when space returns (the operator raises store.map_size_mb and restarts)."""

from __future__ import annotations

import os
import smtplib

from tests.conftest import MaildServer

DIRECTORY_MB = 64


def _message(i: int) -> bytes:
    return (f"From: sender@remote.example\r\nTo: alice@example.test\r\nSubject: fill {i}\r\n\r\n".encode()
            + b"".join(os.urandom(36).hex().encode() + b"\r\n" for _ in range(160)))


def _send(server: MaildServer, raw: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP(server.host, server.ports["smtp"], timeout=30) as smtp:
        smtp.ehlo("client.remote.example")
        try:
            smtp.sendmail("sender@remote.example", ["alice@example.test"], raw)
        except smtplib.SMTPResponseException as exc:
            return exc.smtp_code, exc.smtp_error
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = exc.recipients["alice@example.test"]
            return code, text
        return 250, b""


def test_full_lmdb_map_tempfails_then_resumes(maild_factory) -> None:  # type: ignore[no-untyped-def]
    server = maild_factory(store={"shards": 1, "map_size_mb": 1, "directory_map_size_mb": DIRECTORY_MB})
    accepted = 0
    for i in range(400):
        code, text = _send(server, _message(i))
        if code != 250:
            assert (code, text[:5]) == (452, b"4.3.1"), (code, text)
            break
        accepted += 1
    else:
        raise AssertionError("a 1 MB map never filled up")
    assert accepted > 5
    server.stop()
    assert server.fsck().returncode == 0, server.fsck().stdout  # nothing half-written
    store = server.store()
    try:
        inbox = store.require_mailbox("alice@example.test", "INBOX")
        assert inbox.messages == accepted
    finally:
        store.close()
    server.config_path.write_text(server.config_path.read_text().replace("map_size_mb = 1\n", "map_size_mb = 64\n"))
    server.start()
    assert _send(server, _message(9999))[0] == 250


def test_user_quota_is_552(maild_factory) -> None:  # type: ignore[no-untyped-def]
    server = maild_factory()
    server.stop()
    store = server.store()
    try:
        store.user_set_quota("alice@example.test", 20_000)
    finally:
        store.close()
    server.start()
    assert _send(server, _message(1))[0] == 250
    code, text = _send(server, _message(2))
    assert (code, text[:5]) == (552, b"5.2.2")
