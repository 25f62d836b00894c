"""IDLE (RFC 2177): woken by other sessions' changes and by SMTP deliveries."""

from __future__ import annotations

import smtplib
import time
from collections.abc import Callable
from typing import Any

from tests.imap.conftest import Account, Transcript, append, message


def start_idle(s: Transcript) -> None:
    s.send("i1 IDLE")
    assert s.line() == b"+ idling"


def test_idle_sees_append_flags_and_expunge(connect: Callable[..., Transcript]) -> None:
    watcher, actor = connect(), connect()
    append(actor, "INBOX", message("first"))
    watcher.ok("SELECT INBOX")
    start_idle(watcher)
    started = time.monotonic()
    append(actor, "INBOX", message("second"))
    assert watcher.line() == b"* 2 EXISTS"
    assert time.monotonic() - started < 1.0
    assert watcher.line() == b"* 2 RECENT"  # RFC 3501 §7.3.2, both are the watcher's
    # The watcher was told of both first: they are its \Recent, not the actor's (RFC 3501 §2.3.2).
    assert b"* 0 RECENT" in actor.ok("SELECT INBOX")
    actor.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert watcher.line() == b"* 1 FETCH (FLAGS (\\Deleted \\Recent) UID 1)"
    actor.ok("EXPUNGE")
    assert watcher.line() == b"* 1 EXPUNGE"  # EXPUNGE is allowed during IDLE
    watcher.send("DONE")
    assert watcher.line() == b"i1 OK IDLE completed"
    assert watcher.ok("FETCH 1 UID") == [b"* 1 FETCH (UID 2)"]


def test_idle_woken_by_smtp_delivery(imap_server: Any, connect: Callable[..., Transcript], account: Account) -> None:
    watcher = connect()
    watcher.ok("SELECT INBOX")
    start_idle(watcher)
    started = time.monotonic()
    with smtplib.SMTP(imap_server.host, imap_server.ports["smtp"], timeout=10) as smtp:
        smtp.sendmail("someone@remote.example", [account.address], message("via smtp"))
    assert watcher.line() == b"* 1 EXISTS"
    assert time.monotonic() - started < 1.0
    assert watcher.line() == b"* 1 RECENT"
    watcher.send("DONE")
    assert watcher.line() == b"i1 OK IDLE completed"
    assert b"via smtp" in watcher.ok("FETCH 1 BODY.PEEK[HEADER.FIELDS (SUBJECT)]")[0]


def test_idle_needs_done(imap: Transcript) -> None:
    imap.ok("SELECT INBOX")
    start_idle(imap)
    imap.send("t9 NOOP")
    assert imap.line().startswith(b"i1 BAD")
    imap.ok("NOOP")
