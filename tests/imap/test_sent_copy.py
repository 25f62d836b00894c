"""One copy in Sent (issue 19): submission files a copy of every message in the sender's
Sent, and Thunderbird (default settings) then APPENDs its own copy there. The APPEND of a
message submission filed shortly before - same Message-ID and From - is answered with
the existing copy's APPENDUID (RFC 4315 §3) and stores nothing; everything else is stored
as usual."""

from __future__ import annotations

import smtplib
import ssl
import uuid
from collections.abc import Callable

from tests.conftest import MaildServer
from tests.imap.conftest import Account, Transcript, append, fresh_account, untagged_with


def thunderbird_message(sender: str, subject: str, bcc: str = "") -> bytes:
    """What Thunderbird writes: its own Message-ID and Date; Bcc: only in its Sent copy."""
    return (f"Message-ID: <{uuid.uuid4()}@example.test>\r\n"
            "Date: Fri, 4 Dec 2026 21:00:00 +0000\r\n"
            "MIME-Version: 1.0\r\nUser-Agent: Mozilla Thunderbird\r\n"
            f"From: Me <{sender}>\r\nTo: bob@example.test\r\n{bcc}"
            f"Subject: {subject}\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n"
            "Hello Bob.\r\n").encode()


def submit(server: MaildServer, account: Account, raw: bytes) -> None:
    """Send through submission (465), without the Bcc: line, as a client does."""
    wire = b"".join(line for line in raw.splitlines(keepends=True) if not line.startswith(b"Bcc:"))
    context = ssl.create_default_context(cafile=str(server.cafile))
    with smtplib.SMTP_SSL(server.host, server.ports["submissions"], context=context,
                          timeout=20) as smtp:
        smtp.login(account.address, account.password)
        smtp.sendmail(account.address, ["bob@example.test"], wire)


def sent_uids(s: Transcript) -> list[int]:
    s.ok("SELECT Sent")
    lines = s.ok("UID SEARCH ALL")
    (found,) = untagged_with(lines, b"* SEARCH")
    return [int(n) for n in found.split()[2:]]


def submitted(server: MaildServer, account: Account, connect: Callable[..., Transcript],
              subject: str, bcc: str = "") -> tuple[bytes, Transcript, int]:
    """(the message, a session of its sender, the UID of submission's copy in Sent)."""
    raw = thunderbird_message(account.address, subject, bcc)
    submit(server, account, raw)
    s = connect()
    (filed,) = sent_uids(s)
    s.ok("UNSELECT")
    return raw, s, filed


def test_client_copy_of_a_submitted_message_is_not_stored_twice(
        imap_server: MaildServer, account: Account, connect: Callable[..., Transcript]) -> None:
    raw, s, filed = submitted(imap_server, account, connect, "one copy",
                              bcc="Bcc: carol@example.test\r\n")
    # Thunderbird's copy: \Seen, with its Bcc: line. The answer names the copy already there.
    assert append(s, "Sent", raw, r"\Seen") == filed
    assert append(s, "Sent", raw, r"\Seen") == filed  # a retry of the APPEND too
    assert sent_uids(s) == [filed]
    fetched = b"".join(s.ok(f"UID FETCH {filed} BODY.PEEK[HEADER.FIELDS (SUBJECT)]"))
    assert b"one copy" in fetched
    # The same message to another mailbox, and another message to Sent, are stored.
    assert append(s, "Drafts", raw) >= 1
    other = thunderbird_message(account.address, "never submitted")
    assert append(s, "Sent", other) > filed
    assert append(s, "Sent", other) > filed + 1  # not submitted: every APPEND stores
    assert len(sent_uids(s)) == 3


def test_another_message_id_or_sender_is_stored(
        imap_server: MaildServer, account: Account, connect: Callable[..., Transcript]) -> None:
    raw, s, filed = submitted(imap_server, account, connect, "edited")
    new_id = raw.replace(b"Message-ID: <", b"Message-ID: <x", 1)
    assert append(s, "Sent", new_id) != filed
    other_from = raw.replace(f"<{account.address}>".encode(), b"<someone@example.test>", 1)
    assert append(s, "Sent", other_from) != filed
    assert len(sent_uids(s)) == 3


def test_one_users_submission_never_swallows_anothers_append(
        imap_server: MaildServer, account: Account, connect: Callable[..., Transcript]) -> None:
    raw = thunderbird_message(account.address, "mine")
    submit(imap_server, account, raw)
    other = fresh_account()
    s = connect(user=other.address, password=other.password)
    assert sent_uids(s) == []
    s.ok("UNSELECT")
    append(s, "Sent", raw)  # the same bytes, in another user's Sent: stored there
    assert len(sent_uids(s)) == 1


def test_deleted_copy_does_not_count(
        imap_server: MaildServer, account: Account, connect: Callable[..., Transcript]) -> None:
    raw, s, filed = submitted(imap_server, account, connect, "deleted")
    s.ok("SELECT Sent")
    s.ok(f"UID STORE {filed} +FLAGS.SILENT (\\Deleted)")
    s.ok("UNSELECT")
    assert append(s, "Sent", raw) != filed


def test_window_zero_stores_every_append(maild_factory: Callable[..., MaildServer]) -> None:
    """`[imap] sent_copy_window = 0`: the client's copy is stored beside submission's."""
    import imaplib

    server = maild_factory(imap={"sent_copy_window": 0.0})
    alice = Account("alice@example.test", "alice-secret")
    raw = thunderbird_message(alice.address, "two copies")
    submit(server, alice, raw)
    context = ssl.create_default_context(cafile=str(server.cafile))
    client = imaplib.IMAP4_SSL(server.host, server.ports["imaps"], ssl_context=context, timeout=20)
    try:
        client.login(alice.address, alice.password)
        assert client.append("Sent", r"(\Seen)", None, raw)[0] == "OK"
        client.select("Sent")
        assert client.search(None, "ALL")[1][0].split() == [b"1", b"2"]
    finally:
        client.logout()
