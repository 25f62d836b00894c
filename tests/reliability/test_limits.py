"""Resource limits under abuse (issue 9): each attack gets its protocol error or a timeout,
other sessions keep working, and the daemon's resident memory stays bounded."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

from tests.conftest import MaildServer
from tests.reliability.conftest import assert_serving, imap_session, rss_kb, smtp_session

MB = 1024

# The memory an attack may add to the daemon's RSS; each attack below sends far more.
RSS_SLACK_KB = 16 * MB


def test_imap_append_of_4gb_is_refused_before_reading(maild_factory: Callable[..., MaildServer]) -> None:
    server = maild_factory()
    s = imap_session(server)
    before = rss_kb(server)
    # RFC 7889 §4: refused at once, no "+" continuation; the session goes on.
    s.send("a APPEND INBOX {4294967295}")
    assert s.line().startswith(b"a NO [TOOBIG]")
    s.send("b APPEND INBOX (\\Seen) {99999999999999999999999999}")  # not a number32: BAD
    assert s.line().startswith((b"b NO [TOOBIG]", b"b BAD"))
    s.ok("NOOP")
    # RFC 7888 §4: a non-synchronizing literal will be sent anyway, so the session ends.
    s.send("c APPEND INBOX {4294967295+}")
    assert s.line().startswith(b"c NO [TOOBIG]")
    assert s.line().startswith(b"* BYE")
    assert s.closed()
    assert rss_kb(server) - before < RSS_SLACK_KB
    check = imap_session(server)
    assert b"* 0 EXISTS" in check.ok("SELECT INBOX")
    assert_serving(server)


def test_imap_literal_plus_never_sent_times_out_alone(maild_factory: Callable[..., MaildServer]) -> None:
    server = maild_factory(imap={"autologout_authenticated": 2.0})
    stuck = imap_session(server)
    stuck.send(b"a APPEND INBOX {5000+}\r\nFrom: never@remote.example\r\n")
    started = time.monotonic()
    # Meanwhile another session of the same user works normally.
    other = imap_session(server)
    other.ok("SELECT INBOX")
    other.ok("NOOP")
    assert_serving(server)
    assert stuck.line() == b"* BYE Autologout; idle for too long"
    assert 1.5 < time.monotonic() - started < 5  # autologout_authenticated = 2.0 (a timer, not a poll)
    assert stuck.closed()
    # Nothing of the half-sent literal was stored: only assert_serving's probe is there.
    assert other.ok('UID SEARCH FROM "never@remote.example"')[0] == b"* SEARCH"
    other.ok("LOGOUT")


def test_imap_10k_nested_parentheses_are_bad(maild_factory: Callable[..., MaildServer]) -> None:
    server = maild_factory()
    s = imap_session(server)
    s.ok("SELECT INBOX")
    before = rss_kb(server)
    deep = "(" * 10_000 + "ALL" + ")" * 10_000
    s.bad(f"SEARCH {deep}")
    s.bad(f"UID SEARCH NOT {deep}")
    s.bad("FETCH 1:* " + "(" * 10_000 + "FLAGS" + ")" * 10_000)
    s.bad('LIST "" ' + "(" * 10_000)
    s.bad("STORE 1 +FLAGS " + "(" * 10_000 + "\\Seen" + ")" * 10_000)
    # Not nested, but as long: still fine.
    s.ok("SEARCH " + " ".join(["ALL"] * 5_000))
    assert rss_kb(server) - before < RSS_SLACK_KB
    assert_serving(server)


def _read_replies(sock: socket.socket, counts: dict[bytes, int], expected: int) -> None:
    """Count SMTP reply codes until ``expected`` replies arrived or the connection closed."""
    buf = b""
    total = 0
    while total < expected:
        chunk = sock.recv(1 << 20)
        if not chunk:
            return
        buf += chunk
        lines = buf.split(b"\r\n")
        buf = lines.pop()
        for line in lines:
            key = line[:9]  # "452 4.5.3"
            counts[key] = counts.get(key, 0) + 1
        total += len(lines)


def test_smtp_recipient_flood(maild_factory: Callable[..., MaildServer]) -> None:
    server = maild_factory(smtp={"max_recipients": 100})
    t = smtp_session(server)
    t.cmd("MAIL FROM:<flood@remote.example>", 250)
    before = rss_kb(server)
    flood = 100_000  # 1,000 times the limit, pipelined
    counts: dict[bytes, int] = {}
    reader = threading.Thread(target=_read_replies, args=(t.sock, counts, flood + 1))
    reader.start()
    batch = b"RCPT TO:<alice@example.test>\r\n" * 10_000  # RFC 2920: pipelined, no waiting
    peak = before
    for n in range(flood // 10_000):
        t.sock.sendall(batch)
        if n % 20 == 0:
            peak = max(peak, rss_kb(server))
    t.sock.sendall(b"RSET\r\n")
    reader.join(120)
    assert not reader.is_alive()
    assert counts == {b"250 2.1.5": 100, b"452 4.5.3": flood - 100, b"250 2.0.0": 1}, counts
    assert max(peak, rss_kb(server)) - before < RSS_SLACK_KB
    reply = t.message("flood@remote.example", ["alice@example.test"],
                      b"From: f@r.example\r\nSubject: after the flood\r\n\r\nok\r\n")
    assert reply.code == 250
    assert_serving(server)


def test_smtp_endless_data_is_552_at_the_end_with_bounded_memory(maild_factory: Callable[..., MaildServer]) -> None:
    server = maild_factory(smtp={"max_message_size": 1_000_000})
    t = smtp_session(server)
    t.cmd("MAIL FROM:<endless@remote.example>", 250)
    t.cmd("RCPT TO:<alice@example.test>", 250)
    t.cmd("DATA", 354)
    before = peak = rss_kb(server)
    line = b"x" * 998 + b"\r\n"
    chunk = b"Subject: endless\r\n\r\n" + line * 1000  # 1 MB
    for n in range(128):  # 128 MB, 128 times the limit
        t.sock.sendall(chunk)
        if n % 8 == 0:
            peak = max(peak, rss_kb(server))
    t.sock.sendall(b".\r\n")
    reply = t.reply()
    assert (reply.code, reply.text[:5]) == (552, "5.3.4"), reply
    assert max(peak, rss_kb(server)) - before < RSS_SLACK_KB
    small = b"From: a@r.example\r\nSubject: small\r\n\r\nok\r\n"
    assert t.message("endless@remote.example", ["alice@example.test"], small).code == 250
    assert_serving(server)


def _trickle(port: int, payload: bytes, closed_after: list[float], host: str = "127.0.0.1") -> None:
    """Send ``payload`` one byte per second, never a whole line; note when the server
    closed the connection."""
    sock = socket.create_connection((host, port), 10)
    started = time.monotonic()
    sock.settimeout(1.0)
    try:
        for byte in payload:
            try:
                data = sock.recv(4096)  # the greeting, then the timeout's goodbye or EOF
                if data == b"" or data.startswith((b"421", b"* BYE", b"-ERR")):
                    closed_after.append(time.monotonic() - started)
                    return
            except TimeoutError:
                pass
            sock.sendall(bytes([byte]))
    except (ConnectionError, BrokenPipeError):
        closed_after.append(time.monotonic() - started)
    finally:
        sock.close()


def test_one_byte_per_second_clients_are_timed_out(maild_factory: Callable[..., MaildServer]) -> None:
    server = maild_factory(smtp={"command_timeout": 3.0}, imap={"autologout_unauthenticated": 3.0},
                           pop3={"idle_timeout": 3.0})
    assert_serving(server)  # warms up TLS and every protocol before measuring
    before = rss_kb(server)
    results: dict[str, list[float]] = {"smtp": [], "imap": [], "pop3": []}
    payloads = {"smtp": b"EHLO slow.example", "imap": b"a LOGIN slowpoke", "pop3": b"USER slowpoke"}
    threads = [threading.Thread(target=_trickle, args=(server.ports[name], payloads[name], results[name]))
               for name in results]
    for thread in threads:
        thread.start()
    assert_serving(server)  # while they trickle, everyone else is served
    for thread in threads:
        thread.join(30)
    for name, closed_after in results.items():
        assert closed_after, f"{name}: a 1-byte-per-second client was never timed out"
        assert 2.5 < closed_after[0] < 8, (name, closed_after)
    assert rss_kb(server) - before < RSS_SLACK_KB
