"""Pipelining (RFC 3501 §5.5): many commands sent at once are all answered, in order, and a
long run of commands that complete at once does not grow the server's stack (each used to
start the next from inside the previous one's completion)."""

from __future__ import annotations

from tests.imap.conftest import Transcript


def test_twenty_thousand_pipelined_noops(imap: Transcript) -> None:
    count = 20_000  # ~190 KB: several reads of the socket, thousands of commands each
    imap.sock.sendall(b"".join(b"n%d NOOP\r\n" % i for i in range(count)))
    for i in range(count):
        assert imap.line() == b"n%d OK NOOP completed" % i
    imap.ok("CAPABILITY")
