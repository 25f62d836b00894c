"""COMPRESS=DEFLATE (RFC 4978): after the tagged OK both directions are raw deflate with a
sync flush after each server write; over implicit TLS, STARTTLS and plain TCP; with large
FETCH bodies streamed through it; with Python's imaplib on a wrapped socket."""

from __future__ import annotations

import imaplib
import socket
import zlib
from collections.abc import Callable
from typing import Any

from tests.conftest import MaildServer
from tests.imap.conftest import TIMEOUT, Account, Transcript, append, message, tls_context


class DeflateSocket:
    """A socket speaking raw deflate (RFC 4978 §4), as a client does after COMPRESS."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.inflate = zlib.decompressobj(-15)
        self.wire_in = 0  # compressed octets received

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(self.deflate.compress(data) + self.deflate.flush(zlib.Z_SYNC_FLUSH))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, size: int) -> bytes:
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                return b""
            self.wire_in += len(chunk)
            out = self.inflate.decompress(chunk)
            if out:
                return out

    def settimeout(self, value: float) -> None:
        self.sock.settimeout(value)

    def close(self) -> None:
        self.sock.close()


def _compress(s: Transcript) -> DeflateSocket:
    untagged, result = s.command("COMPRESS DEFLATE")
    assert untagged == [] and result.startswith(b"OK"), result
    assert s.buffer == b""  # nothing after the OK was sent uncompressed
    s.sock = DeflateSocket(s.sock)
    return s.sock


def test_compress_over_tls_with_streamed_fetch(connect: Callable[..., Transcript]) -> None:
    s = connect()
    assert b"COMPRESS=DEFLATE" in s.ok("CAPABILITY")[0].split()
    wire = _compress(s)
    big = message("big", body=("All work and no play makes Jack a dull boy.\r\n" * 20_000))  # ~900 KB: streamed
    small = message("small")
    append(s, "INBOX", big)
    append(s, "INBOX", small)
    s.ok("SELECT INBOX")
    before = wire.wire_in
    lines = s.ok("FETCH 1:2 (BODY.PEEK[] FLAGS)")
    # \Recent: this session's SELECT was the first to see them (RFC 3501 §2.3.2).
    assert lines[0] in (b"* 1 FETCH (BODY[] {%d}\r\n" % len(big) + big + b" FLAGS (\\Recent))",
                        b"* 1 FETCH (FLAGS (\\Recent) BODY[] {%d}\r\n" % len(big) + big + b")")
    assert lines[1].endswith(small + b" FLAGS (\\Recent))")
    assert wire.wire_in - before < len(big) // 10  # it really was compressed
    s.no("COMPRESS DEFLATE", code="COMPRESSIONACTIVE")  # RFC 4978 §3
    assert s.ok("LOGOUT") == [b"* BYE maild logging out"]


def test_compress_over_starttls(connect: Callable[..., Transcript]) -> None:
    s = connect(tls="starttls")
    s.bad("COMPRESS GZIP")  # an unknown mechanism: arguments invalid
    _compress(s)
    append(s, "Drafts", message("over STARTTLS"))
    assert s.ok("STATUS Drafts (MESSAGES)") == [b"* STATUS Drafts (MESSAGES 1)"]


def test_compress_over_plain_tcp(maild_factory: Callable[..., Any]) -> None:
    server = maild_factory(imap={"allow_plaintext_auth_on_loopback": True})
    s = Transcript(socket.create_connection((server.host, server.ports["imap"]), TIMEOUT))
    s.login("alice@example.test", "alice-secret")
    _compress(s)
    append(s, "INBOX", message("over TCP"))
    s.ok("SELECT INBOX")
    assert s.ok("FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])") == [
        b"* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {21}\r\nSubject: over TCP\r\n\r\n)"]


def test_not_before_login(connect: Callable[..., Transcript]) -> None:
    s = connect(login=False)
    s.bad("COMPRESS DEFLATE")
    assert b"COMPRESS=DEFLATE" not in s.greeting


def test_bounded_input_and_broken_stream(connect: Callable[..., Transcript]) -> None:
    s = connect()
    wire = _compress(s)
    # 40 MB of one line in a few dozen KB: refused as too long, read a chunk at a time.
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    wire.send_raw(b"".join(bomb.compress(b"x" * 1_000_000) for _ in range(40)) + bomb.compress(b"\r\n")
                  + bomb.flush(zlib.Z_SYNC_FLUSH))
    assert s.line() == b"* BAD line too long"
    # 1,000 pipelined APPENDs of 1.5 KB (1.5 MB inflated, from ~20 KB on the wire): each waits
    # for its commit, so the input backs up past what the session queues; reading pauses
    # with the rest still compressed, resumes as they drain, and every one is answered.
    count = 1000
    body = b"Subject: flood\r\n\r\n" + b"z" * 1500 + b"\r\n"
    data = b"".join(b"a%d APPEND Drafts {%d+}\r\n" % (i, len(body)) + body + b"\r\n" for i in range(count))
    wire.send_raw(bomb.compress(data) + bomb.flush(zlib.Z_SYNC_FLUSH))
    for i in range(count):
        assert s.line().startswith(b"a%d OK [APPENDUID " % i)
    assert s.ok("STATUS Drafts (MESSAGES)") == [b"* STATUS Drafts (MESSAGES %d)" % count]
    s.ok("NOOP")
    # Octets that do not inflate end the connection.
    wire.send_raw(b"\xff" * 64)
    assert s.line() == b"* BYE Compressed stream error"
    assert s.closed()


class DeflateIMAP4(imaplib.IMAP4_SSL):
    """imaplib with COMPRESS DEFLATE: its socket I/O goes through deflate once enabled."""

    compressing = False

    def compress(self) -> None:
        imaplib.Commands.setdefault("COMPRESS", ("AUTH", "SELECTED"))  # imaplib knows no COMPRESS
        typ, _ = self._simple_command("COMPRESS", "DEFLATE")
        assert typ == "OK"
        self.compressing = True
        self.deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.inflate = zlib.decompressobj(-15)
        self.inbuf = b""

    def send(self, data: bytes) -> None:
        if self.compressing:
            data = self.deflate.compress(data) + self.deflate.flush(zlib.Z_SYNC_FLUSH)
        super().send(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise imaplib.IMAP4.abort("socket closed")
        self.inbuf += self.inflate.decompress(chunk)

    def read(self, size: int) -> bytes:
        if not self.compressing:
            return super().read(size)
        while len(self.inbuf) < size:
            self._fill()
        out, self.inbuf = self.inbuf[:size], self.inbuf[size:]
        return out

    def readline(self) -> bytes:
        if not self.compressing:
            return super().readline()
        while b"\n" not in self.inbuf:
            self._fill()
        line, _, self.inbuf = self.inbuf.partition(b"\n")
        return line + b"\n"


def test_imaplib_with_compression(imap_server: MaildServer, account: Account) -> None:
    client = DeflateIMAP4(imap_server.host, imap_server.ports["imaps"],
                          ssl_context=tls_context(imap_server.cafile), timeout=TIMEOUT)
    try:
        client.login(account.address, account.password)
        client.compress()
        raw = message("via imaplib", body="compressed " * 1000)
        assert client.append("INBOX", "(\\Flagged)", None, raw)[0] == "OK"
        assert client.select("INBOX") == ("OK", [b"1"])
        typ, data = client.fetch("1", "(FLAGS BODY.PEEK[])")
        assert typ == "OK" and data[0][1] == raw and b"\\Flagged" in data[0][0]
        assert client.search(None, "FLAGGED") == ("OK", [b"1"])
        client.logout()
    finally:
        try:
            client.shutdown()
        except OSError:
            pass


def test_idle_updates_are_flushed(connect: Callable[..., Transcript]) -> None:
    """An untagged update during IDLE reaches the client at once (each write is flushed)."""
    idler = connect()
    other = connect()
    _compress(idler)
    idler.ok("SELECT INBOX")
    idler.send("i IDLE")
    assert idler.line().startswith(b"+ ")
    append(other, "INBOX", message("wake up"))
    idler.sock.settimeout(5)
    assert idler.line() == b"* 1 EXISTS"
    idler.send("DONE")
    assert idler.collect("i")[1].startswith(b"OK")
