"""RETR and TOP (RFC 1939 §5, §7): byte-stuffing round trip, line counting, large messages
streamed, \\Seen on RETR."""

from __future__ import annotations

import imaplib
import os
import ssl
import time
from pathlib import Path

from tests.conftest import MaildServer
from tests.pop3.conftest import Account, Pop3Transcript, deliver, message, poplib_session, stored

TRICKY = (b"From: sender@remote.example\r\nSubject: dots\r\n\r\n"
          b".\r\n..\r\n.leading dot\r\n..two dots\r\nmiddle . dot\r\n. \r\n\r\nlast line\r\n")

SEEN = "\\Seen"


def test_dot_stuffing_round_trip_with_poplib(server: MaildServer, account: Account) -> None:
    deliver(server, account.address, TRICKY)
    (raw,) = (raw for _, raw in stored(server, account.address).values())
    client = poplib_session(server, account)
    first, lines, octets = client.retr(1)
    assert first == f"+OK {len(raw)} octets".encode()
    assert b"\r\n".join(lines) + b"\r\n" == raw
    client.quit()


def test_dot_stuffing_on_the_wire(pop: Pop3Transcript, server: MaildServer, account: Account) -> None:
    deliver(server, account.address, TRICKY)
    pop.login(account)
    pop.cmd("RETR 1", ok=True)
    wire = []
    while (line := pop.line()) != b".":
        wire.append(line)
    assert wire[-8:] == [b"..", b"...", b"..leading dot", b"...two dots", b"middle . dot", b".. ", b"",
                         b"last line"]


def test_top_counts_body_lines(pop: Pop3Transcript, server: MaildServer, account: Account) -> None:
    deliver(server, account.address, TRICKY)
    (raw,) = (raw for _, raw in stored(server, account.address).values())
    header, _, body = raw.partition(b"\r\n\r\n")
    header_lines = header.split(b"\r\n") + [b""]
    body_lines = body.split(b"\r\n")[:-1]
    pop.login(account)
    for n in (0, 1, 3, len(body_lines), len(body_lines) + 5):
        first, lines = pop.multi(f"TOP 1 {n}")
        assert first == "+OK Top of message follows"
        assert lines == header_lines + body_lines[:n], n


def test_top_with_poplib(server: MaildServer, account: Account) -> None:
    deliver(server, account.address, message(1, b"one\r\ntwo\r\nthree\r\n"))
    client = poplib_session(server, account)
    assert client.top(1, 2)[1][-3:] == [b"", b"one", b"two"]
    client.quit()


def test_top_and_retr_of_missing_or_deleted_messages(pop: Pop3Transcript, server: MaildServer,
                                                     account: Account) -> None:
    deliver(server, account.address, message(1))
    pop.login(account)
    assert pop.cmd("RETR 2", ok=False) == "-ERR No such message 2"
    assert pop.cmd("TOP 2 0", ok=False) == "-ERR No such message 2"
    pop.cmd("DELE 1", ok=True)
    assert pop.cmd("RETR 1", ok=False) == "-ERR Message 1 is deleted"
    assert pop.cmd("TOP 1 0", ok=False) == "-ERR Message 1 is deleted"
    assert pop.cmd("DELE 1", ok=False) == "-ERR Message 1 is deleted"


def test_large_message_is_streamed_intact(server: MaildServer, account: Account) -> None:
    lines = [os.urandom(38).hex().encode() for _ in range(60_000)]  # ~4.6 MB, many chunks
    lines[1000] = b"." + lines[1000]
    body = b"\r\n".join(lines) + b"\r\n"
    deliver(server, account.address, message(1, body))
    (raw,) = (raw for _, raw in stored(server, account.address).values())
    client = poplib_session(server, account)
    _, got, _ = client.retr(1)
    assert b"\r\n".join(got) + b"\r\n" == raw
    assert client.top(1, 2)[1][-2:] == lines[:2]
    client.quit()


def test_retr_marks_seen_and_top_does_not(pop: Pop3Transcript, server: MaildServer, account: Account) -> None:
    for n in range(2):
        deliver(server, account.address, message(n))
    pop.login(account)
    pop.multi("TOP 1 0")
    pop.multi("TOP 2 0")
    pop.multi("RETR 2")
    pop.cmd("QUIT", ok=True)  # +OK after QUIT: the flag change is committed
    flags = [f for f, _ in stored(server, account.address).values()]
    assert [SEEN in f for f in flags] == [False, True]


def test_retr_marks_seen_when_the_client_leaves_without_quit(pop: Pop3Transcript, server: MaildServer,
                                                            account: Account) -> None:
    """\\Seen is written in batches (invariant 9), and a dropped connection writes its batch."""
    for n in range(3):
        deliver(server, account.address, message(n))
    pop.login(account)
    pop.multi("RETR 1")
    pop.multi("RETR 3")
    pop.close()
    deadline = time.monotonic() + 10
    while True:
        flags = [SEEN in f for f, _ in stored(server, account.address).values()]
        if flags == [True, False, True] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert flags == [True, False, True]


def test_message_expunged_by_another_session(pop: Pop3Transcript, server: MaildServer, account: Account) -> None:
    """An IMAP client may expunge a message under the POP3 snapshot."""
    deliver(server, account.address, message(1))
    pop.login(account)
    imap = imaplib.IMAP4_SSL(server.host, server.ports["imaps"],
                             ssl_context=ssl.create_default_context(cafile=str(server.cafile)))
    imap.login(account.address, account.password)
    imap.select("INBOX")
    imap.store("1", "+FLAGS", "(\\Deleted)")
    imap.expunge()
    imap.logout()
    assert pop.cmd("RETR 1", ok=False) == "-ERR Message 1 was removed by another session"
    pop.cmd("DELE 1", ok=True)
    pop.cmd("QUIT", ok=True)


def blob_read_positions(server: MaildServer) -> list[int]:
    """Offsets of the daemon's open blob files (/proc/PID/fdinfo), i.e. how far it has read."""
    assert server.process is not None
    proc = Path(f"/proc/{server.process.pid}")
    positions = []
    for fd in (proc / "fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(str(server.data_dir)) and "/blobs/" in target:
            info = (proc / "fdinfo" / fd.name).read_text()
            positions.append(int(info.split("pos:")[1].split()[0]))
    return positions


def test_retr_reads_only_as_fast_as_the_client(server: MaildServer, account: Account) -> None:
    """A client that stops reading stops the server reading the blob: RETR is streamed,
    the message is never loaded whole."""
    size = 16 * 1024 * 1024
    line = b"x" * 78 + b"\r\n"
    deliver(server, account.address, message(1, line * (size // len(line))))
    (raw,) = (raw for _, raw in stored(server, account.address).values())
    t = Pop3Transcript(server.host, server.ports["pop3s"], implicit_tls=True, cafile=server.cafile, rcvbuf=65536)
    t.greeting()
    t.send(f"USER {account.address}\r\nPASS {account.password}\r\nRETR 1\r\n".encode())
    # Poll until the server's read offset stops moving: it waits for us, or it is done.
    deadline = time.monotonic() + 20
    previous, stalled = -1, None
    while stalled is None:
        assert time.monotonic() < deadline, "the server's read offset never settled"
        time.sleep(0.2)
        positions = blob_read_positions(server)
        current = positions[0] if positions else -1
        if current == previous and current >= 0:
            stalled = current
        previous = current
    assert stalled < size // 2, f"read {stalled} of {size} octets while the client read nothing"
    t.status(ok=True)
    t.status(ok=True)
    assert t.status(ok=True) == f"+OK {len(raw)} octets"
    assert b"\r\n".join(t.body()) + b"\r\n" == raw
    assert blob_read_positions(server) == []  # closed after the last chunk
    t.close()


def test_last_line_without_crlf(server: MaildServer, account: Account) -> None:
    """IMAP APPEND may store a message whose last line has no line end; RETR still ends
    with CRLF "." CRLF, and a last line starting with "." is stuffed."""
    raw = b"From: a@example.test\r\nSubject: no end\r\n\r\nfirst\r\n.last"
    imap = imaplib.IMAP4_SSL(server.host, server.ports["imaps"],
                             ssl_context=ssl.create_default_context(cafile=str(server.cafile)))
    imap.login(account.address, account.password)
    assert imap.append("INBOX", None, None, raw)[0] == "OK"
    imap.logout()
    t = Pop3Transcript(server.host, server.ports["pop3s"], implicit_tls=True, cafile=server.cafile)
    t.greeting()
    t.login(account)
    assert t.cmd("LIST 1", ok=True) == f"+OK 1 {len(raw)}"
    t.send(b"RETR 1\r\n")
    t.status(ok=True)
    wire = [t.line() for _ in range(6)]
    assert wire == [b"From: a@example.test", b"Subject: no end", b"", b"first", b"..last", b"."]
    assert t.multi("TOP 1 5")[1][-1] == b".last"
    t.close()
