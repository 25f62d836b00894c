"""A leader and a follower (two `maild serve` processes): catch-up, reads on the follower,
writes refused there, crash of the follower, verify (docs/replication.md)."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import socket
import ssl
from collections.abc import Callable

from tests.imap.conftest import Transcript, tls_context
from tests.replication.conftest import Pair, send


def _same(pair: Pair, sent: list[bytes]) -> None:
    """The follower holds exactly the leader's messages, and those are what was sent."""
    theirs = _bodies(pair.follower)
    assert theirs == _bodies(pair.leader)
    assert len(theirs) == len(sent) and all(b.endswith(s) for b, s in zip(theirs, sent, strict=True))


def _transcript(server) -> Transcript:  # type: ignore[no-untyped-def]
    sock = socket.create_connection((server.host, server.ports["imaps"]), timeout=10)
    return Transcript(tls_context(server.cafile).wrap_socket(sock, server_hostname="localhost"))


def _imap(server) -> imaplib.IMAP4_SSL:  # type: ignore[no-untyped-def]
    return imaplib.IMAP4_SSL(server.host, server.ports["imaps"], timeout=10,
                             ssl_context=ssl.create_default_context(cafile=str(server.cafile)))


def _bodies(server, user: str = "alice@example.test", password: str = "alice-secret",  # type: ignore[no-untyped-def]
            mailbox: str = "INBOX") -> list[bytes]:
    with _imap(server) as c:
        c.login(user, password)
        typ, data = c.select(mailbox, readonly=True)
        assert typ == "OK"
        typ, data = c.uid("FETCH", "1:*", "(BODY.PEEK[])")
        return [part[1] for part in data if isinstance(part, tuple)]


def test_follower_catches_up_and_serves_reads_only(pair_factory: Callable[..., Pair]) -> None:
    pair = pair_factory()

    sent = send(pair.leader, 20, "first")
    sent += send(pair.leader, 2, "large", size=100_000)  # body files, fetched once
    pair.wait_caught_up()
    _same(pair, sent)
    # verify compares every user's mailboxes, uids, flags, modseqs and bodies
    result = pair.follower.cli("replica", "verify", str(pair.leader.config_path))
    assert result.returncode == 0, result.stdout + result.stderr

    # IMAP: SELECT opens read-only (RFC 3501 §6.3.1), writes answer NO with a code
    t = _transcript(pair.follower)
    try:
        t.login("alice@example.test", "alice-secret")
        t.ok("SELECT INBOX", "READ-ONLY")
        t.no("UID STORE 1 +FLAGS (\\Seen)", "READ-ONLY")
        t.no("CREATE Projects", "UNAVAILABLE")
        t.no("APPEND INBOX {14+}\r\nSubject: x\r\n\r\n", "UNAVAILABLE")
        t.no("UID EXPUNGE 1", "READ-ONLY")
    finally:
        t.close()
    # SMTP: 4yz so that the sender retries (at the leader)
    with smtplib.SMTP(pair.follower.host, pair.follower.ports["smtp"], timeout=10) as client:
        client.ehlo()
        code, text = client.mail("carol@example.org")
        assert code == 451, text
    # POP3: no deletions
    pop = poplib.POP3_SSL(pair.follower.host, pair.follower.ports["pop3s"], timeout=10,
                          context=ssl.create_default_context(cafile=str(pair.follower.cafile)))
    try:
        pop.user("alice@example.test")
        pop.pass_("alice-secret")
        assert pop.stat()[0] == 22
        try:
            pop.dele(1)
            raise AssertionError("DELE accepted on a follower")
        except poplib.error_proto as exc:
            assert b"[SYS/TEMP]" in exc.args[0]
    finally:
        pop.quit()

    # the follower stopped, the leader goes on; the follower catches up when back
    pair.follower.stop()
    sent += send(pair.leader, 15, "while away")
    # verify over the replication connection (replication.leader) sees the difference
    result = pair.follower.cli("replica", "verify")
    assert result.returncode == 1 and "15 difference(s)" in result.stdout, result.stdout + result.stderr
    assert "alice@example.test INBOX uid 23: here None" in result.stdout, result.stdout
    pair.follower.start()
    pair.wait_caught_up()
    _same(pair, sent)
    result = pair.follower.cli("replica", "verify")
    assert result.returncode == 0 and "0 difference(s)" in result.stdout, result.stdout + result.stderr
    status = pair.status(pair.leader)
    assert status["role"] == "leader" and status["daemon"]["peers"]
    text = pair.leader.cli("status").stdout  # `maild status` has a replication line
    assert "replication: leader, epoch 1, peers 127.0.0.1:" in text and "lag 0 records" in text, text
    assert all(row["lag_records"] == 0 and row["lag_bytes"] == 0 and row["lag_seconds"] is None
               for row in status["environments"].values())


def test_follower_killed_while_applying(pair_factory: Callable[..., Pair]) -> None:
    pair = pair_factory()
    pair.follower.stop()
    sent = send(pair.leader, 60, "load")
    pair.follower.start()
    pair.follower.kill()  # somewhere in the catch-up
    pair.follower.start()
    pair.wait_caught_up()
    _same(pair, sent)  # no gap, nothing twice
    result = pair.follower.cli("replica", "verify", str(pair.leader.config_path))
    assert result.returncode == 0, result.stdout


def test_idle_on_the_follower_sees_applied_mail(pair_factory: Callable[..., Pair]) -> None:
    pair = pair_factory()
    send(pair.leader, 1, "before")
    pair.wait_caught_up()
    t = _transcript(pair.follower)
    try:
        t.login("alice@example.test", "alice-secret")
        t.ok("EXAMINE INBOX")
        t.send("i1 IDLE")
        assert t.line().startswith(b"+")
        send(pair.leader, 1, "during")
        assert t.line() == b"* 2 EXISTS"
        t.send("DONE")
        assert t.collect("i1")[1].startswith(b"OK")
    finally:
        t.close()
