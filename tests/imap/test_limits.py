"""Robustness: line and literal limits, bad syntax, abuse, autologout (RFC 3501 §5.4)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

from tests.imap.conftest import Transcript


def plain_session(server: Any) -> Transcript:
    return Transcript(socket.create_connection((server.host, server.ports["imap"]), 10))


def test_long_lines_and_big_literals(imap: Transcript) -> None:
    imap.send(b"a1 NOOP " + b"x" * 70_000)
    assert imap.line() == b"a1 BAD line too long"
    imap.send("a2 LOGIN {2000000}")
    assert imap.line() == b"a2 BAD literal too large"
    imap.ok("NOOP")
    imap.bad("SELECT INBOX\x00")
    imap.send(b"a3 SELECT \xff\xfe")
    assert imap.line().startswith(b"a3 BAD")
    untagged, result = imap.command("LIST \"\" *")
    assert result.startswith(b"OK")


def test_many_bad_commands_disconnect(connect: Callable[..., Transcript]) -> None:
    s = connect(login=False)
    for _ in range(25):
        s.send("x BOGUS")
    lines = [s.line() for _ in range(20)]  # [imap] max_bad_commands = 20 in a row
    assert all(line.startswith(b"x BAD") for line in lines)
    assert s.line().startswith(b"* BYE")
    assert s.closed()


def test_autologout_unauthenticated(maild_factory: Callable[..., Any]) -> None:
    server = maild_factory(imap={"autologout_unauthenticated": 0.5})
    s = plain_session(server)
    started = time.monotonic()
    assert s.line() == b"* BYE Autologout; idle for too long"
    assert 0.4 < time.monotonic() - started < 5
    assert s.closed()


def test_pipelined_commands_answer_in_order(imap: Transcript) -> None:
    imap.send(b"p1 NOOP\r\np2 SELECT INBOX\r\np3 FETCH 1:* FLAGS\r\np4 NOOP")
    tags = []
    while len(tags) < 4:
        line = imap.line()
        if not line.startswith(b"*"):
            tags.append(line.split()[0:2])
    assert tags == [[b"p1", b"OK"], [b"p2", b"OK"], [b"p3", b"BAD"], [b"p4", b"OK"]]
