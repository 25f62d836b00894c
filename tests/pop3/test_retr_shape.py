"""RETR and TOP by the shape the store noted at delivery (RFC 1939 §3, §7): a clean body
(CRLF only, no line starting with ".") is sent as stored; a body with dot-lines is
byte-stuffed; a body with bare LFs gets CRLF; a message record written before shapes were
kept (no shape octet) takes the general path, as does a body kept inline in LMDB (small
enough to scan as it is sent: no shape is worked out for it). Each byte-exact on the wire
against a plain line-by-line reading of RFC 1939 §3, and through poplib.

This module has a daemon of its own: the old-record test stops it to rewrite a record."""

from __future__ import annotations

import imaplib

from maild.store import Store
from maild.store.codec import SHAPE_CLEAN, SHAPE_CRLF, SHAPE_KNOWN, MessageRecord, msg_key
from tests.conftest import MaildServer
from tests.pop3.conftest import Account, Pop3Transcript, deliver, message, poplib_session

MAILD_OVERRIDES = {"pop3": {"mark_seen_on_retr": False}}
FILLER = b"".join(b"filler line %d of a body staged to a file\r\n" % i for i in range(1000))  # > 32 KB inline


def rfc1939(raw: bytes, body_lines: int | None = None) -> bytes:
    """The multi-line response for ``raw``, one line at a time as RFC 1939 §3 words it:
    each line ends with CRLF, a line starting with "." gets another, then "." CRLF. With
    ``body_lines``, TOP's (§7): the header, the blank line, then that many body lines."""
    lines = raw.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the last line had its line end
    out, in_body, sent = [], False, 0
    for line in lines:
        if body_lines is not None and in_body:
            if sent == body_lines:
                break
            sent += 1
        line = line[:-1] if line.endswith(b"\r") else line
        out.append((b"." if line.startswith(b".") else b"") + line + b"\r\n")
        in_body = in_body or line == b""
    return b"".join(out) + b".\r\n"


def wire(pop: Pop3Transcript, command: str) -> tuple[str, bytes]:
    """The status line and the raw octets of a multi-line response, terminator included."""
    first = pop.cmd(command, ok=True)
    data = bytearray(pop._buf)
    while not (data.startswith(b".\r\n") or b"\r\n.\r\n" in data):
        chunk = pop.sock.recv(1 << 20)
        assert chunk, f"connection closed in a multi-line response:\n{pop.dump()}"
        data += chunk
    end = 3 if data.startswith(b".\r\n") else data.index(b"\r\n.\r\n") + 5
    pop._buf = bytes(data[end:])
    return first, bytes(data[:end])


def opened(server: MaildServer, user: str) -> list[tuple[bytes, int]]:
    """(stored octets, recorded shape) of each message of ``user``'s INBOX, in uid order."""
    store = Store(server.data_dir, server.config.store)
    try:
        box = store.mailbox(user, "INBOX")
        assert box is not None
        out = []
        for meta in store.messages(user, box.id):
            found = store.open_message(user, box.id, meta.uid)
            with found.stream as fh:
                out.append((fh.read(), found.shape))
        return out
    finally:
        store.close()


def check(pop: Pop3Transcript, server: MaildServer, account: Account, raw: bytes, msg: int = 1) -> None:
    """RETR and TOP of message ``msg`` byte-exact on the wire, and RETR through poplib."""
    first, body = wire(pop, f"RETR {msg}")
    assert first == f"+OK {len(raw)} octets"
    assert body == rfc1939(raw)
    for n in (0, 2, 10**6):
        assert wire(pop, f"TOP {msg} {n}") == ("+OK Top of message follows", rfc1939(raw, n)), n


def test_clean_body_is_sent_as_stored(pop: Pop3Transcript, server: MaildServer, account: Account) -> None:
    # ~600 KB: several of the sender's chunks, a body file (not inline), dots mid-line only
    body = b"".join(b"line %d. of a clean body .. with dots inside\r\n" % i for i in range(13_000))
    deliver(server, account.address, message(1, body))
    ((raw, shape),) = opened(server, account.address)
    assert shape == SHAPE_CLEAN
    pop.login(account)
    check(pop, server, account, raw)
    pop.cmd("QUIT", ok=True)
    client = poplib_session(server, account)
    _, lines, octets = client.retr(1)
    assert b"\r\n".join(lines) + b"\r\n" == raw
    client.quit()


def test_dot_lines_are_stuffed(pop: Pop3Transcript, server: MaildServer, account: Account) -> None:
    # Dot-lines throughout ~400 KB, lines of 3 to 9 octets, so some start exactly where
    # one chunk ends and the next begins; the body's first line starts with "." too.
    body = b"".join(b"." * (1 + i % 3) + b"x" * (i % 5) + b"\r\n" for i in range(70_000))
    deliver(server, account.address, message(1, b".first\r\n" + body + b".\r\n..\r\nend\r\n"))
    ((raw, shape),) = opened(server, account.address)
    assert shape == SHAPE_KNOWN | SHAPE_CRLF
    pop.login(account)
    check(pop, server, account, raw)
    pop.cmd("QUIT", ok=True)
    client = poplib_session(server, account)
    _, lines, _ = client.retr(1)
    assert b"\r\n".join(lines) + b"\r\n" == raw  # poplib takes the stuffing off again
    client.quit()


def test_bare_lf_body_gets_crlf(pop: Pop3Transcript, server: MaildServer, account: Account) -> None:
    # IMAP APPEND keeps a literal's octets as they are: LF-only lines, a dot-line after a
    # bare LF, a last line without its line end.
    raw_in = (b"From: a@remote.example\nSubject: unix\n\nfirst\n.dot after LF\r\nmixed\n\n" + FILLER
              + b"last")
    with imaplib.IMAP4(server.host, server.ports["imap"], timeout=30) as imap:
        imap.starttls()
        imap.login(account.address, account.password)
        imap.literal = raw_in  # imaplib's append() would make every LF a CRLF first
        assert imap._simple_command("APPEND", "INBOX")[0] == "OK"
    ((raw, shape),) = opened(server, account.address)
    assert raw == raw_in
    assert shape == SHAPE_KNOWN
    pop.login(account)
    check(pop, server, account, raw)
    assert wire(pop, "TOP 1 2")[1] == (b"From: a@remote.example\r\nSubject: unix\r\n\r\nfirst\r\n"
                                       b"..dot after LF\r\n.\r\n")
    assert wire(pop, "TOP 1 3")[1].endswith(b"\r\nmixed\r\n.\r\n")
    pop.cmd("QUIT", ok=True)
    client = poplib_session(server, account)
    _, lines, _ = client.retr(1)
    assert b"\r\n".join(lines) + b"\r\n" == raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + b"\r\n"
    client.quit()


def test_record_without_shape_takes_the_general_path(server: MaildServer, account: Account) -> None:
    deliver(server, account.address, message(1, b"one\r\n.two\r\nthree\r\n" + FILLER))
    deliver(server, account.address, message(2, b"clean\r\nbody\r\n" + FILLER))
    deliver(server, account.address, message(3, b"kept inline\r\n"))
    before = opened(server, account.address)
    assert [shape for _, shape in before] == [SHAPE_KNOWN | SHAPE_CRLF, SHAPE_CLEAN, 0]
    # Rewrite both records as a maild that kept no shape wrote them: they end with the
    # save date. The daemon is stopped meanwhile (one writer).
    server.stop()
    store = Store(server.data_dir, server.config.store)
    try:
        user = store.user(account.address)
        box = store.mailbox(account.address, "INBOX")
        assert user is not None and box is not None
        shard = store.shards[user.shard]
        with shard.env.begin(write=True) as txn:
            for uid in (1, 2):
                key = msg_key(user.id, box.id, uid)
                value = txn.get(key, db=shard.dbs["msg"])
                assert value is not None
                record = MessageRecord.decode(value)
                assert record.shape and record.saved is not None
                old = MessageRecord.encode(MessageRecord(record.modseq, record.internal_date, record.blob_size,
                                                         record.flags, record.sha, record.prefix, record.saved))
                assert old == bytes(value)[:-1]  # the shape is one octet at the end
                txn.put(key, old, db=shard.dbs["msg"])
    finally:
        store.close()
    server.start()
    after = opened(server, account.address)
    assert after == [(raw, 0) for raw, _ in before]
    assert len(after) == 3
    pop = Pop3Transcript(server.host, server.ports["pop3"], cafile=server.cafile)
    try:
        pop.greeting()
        pop.stls()
        pop.login(account)
        for n, (raw, _) in enumerate(after, 1):
            check(pop, server, account, raw, n)
        pop.cmd("QUIT", ok=True)
    finally:
        pop.close()
    client = poplib_session(server, account)
    assert [b"\r\n".join(client.retr(n)[1]) + b"\r\n" for n in (1, 2, 3)] == [raw for raw, _ in after]
    client.quit()
    server.stop()  # fsck wants the store to itself; it finds nothing amiss in a record without a shape
    result = server.fsck()
    server.start()
    assert result.returncode == 0, result.stdout + result.stderr
