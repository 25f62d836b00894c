"""EHLO/HELO, the advertised extensions, command order and the simple commands."""

from __future__ import annotations

import random
import smtplib

from tests.conftest import MaildServer
from tests.smtp.conftest import Transcript

MX_EXTENSIONS = ["PIPELINING", "SIZE 26214400", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8",
                 "CHUNKING", "STARTTLS"]


def test_mx_advertises_the_extensions_and_no_auth(server: MaildServer) -> None:
    t = Transcript(server.host, server.ports["smtp"])
    assert t.greeting().text.startswith("mx.example.test ESMTP")
    reply = t.cmd("EHLO client.example", 250)
    assert reply.lines[0].startswith("mx.example.test Hello client.example [127.0.0.1]")
    for ext in MX_EXTENSIONS:
        assert ext in reply.lines
    assert not any(line.startswith("AUTH") for line in reply.lines)
    t.cmd("AUTH PLAIN", 502)


def test_ehlo_with_an_address_literal_names_it_once(server: MaildServer) -> None:
    t = Transcript(server.host, server.ports["smtp"])
    t.greeting()
    assert t.cmd("EHLO [127.0.0.1]", 250).lines[0] == "mx.example.test Hello [127.0.0.1]"


def test_smtplib_sees_the_extensions(server: MaildServer) -> None:
    with smtplib.SMTP(server.host, server.ports["smtp"], timeout=10) as client:
        client.ehlo("client.example")
        for ext in ("pipelining", "size", "8bitmime", "enhancedstatuscodes", "smtputf8",
                    "chunking", "starttls"):
            assert client.has_extn(ext), ext
        assert client.esmtp_features["size"] == "26214400"


def test_helo_is_plain_smtp(server: MaildServer) -> None:
    t = Transcript(server.host, server.ports["smtp"])
    t.greeting()
    assert t.cmd("HELO client.example", 250).lines == ["mx.example.test"]
    # ESMTP parameters need EHLO (RFC 5321 §4.1.1.11 / RFC 1869).
    t.cmd("MAIL FROM:<a@remote.example> SIZE=10", 555)
    t.cmd("MAIL FROM:<a@remote.example>", 250)


def test_command_order(server: MaildServer) -> None:
    t = Transcript(server.host, server.ports["smtp"])
    t.greeting()
    assert t.cmd("MAIL FROM:<a@remote.example>", 503).text == "5.5.1 Send EHLO first"
    t.cmd("EHLO client.example", 250)
    t.cmd("RCPT TO:<alice@example.test>", 503)
    t.cmd("DATA", 503)
    t.cmd("MAIL FROM:<a@remote.example>", 250)
    assert "Nested" in t.cmd("MAIL FROM:<a@remote.example>", 503).text
    t.cmd("DATA", 554)  # RFC 2920: no valid recipients
    t.cmd("RSET", 250)
    t.cmd("RCPT TO:<alice@example.test>", 503)


def test_simple_commands(mx: Transcript) -> None:
    assert mx.cmd("NOOP", 250).text == "2.0.0 Ok"
    assert mx.cmd("VRFY alice@example.test", 252).text.startswith("2.5.2")
    assert "MAIL" in mx.cmd("HELP", 214).text
    mx.cmd("EXPN staff", 500)
    assert mx.cmd("QUIT", 221).text.startswith("2.0.0")
    assert mx.closed()


def test_garbage_gets_errors_then_disconnect(server: MaildServer) -> None:
    t = Transcript(server.host, server.ports["smtp"])
    t.greeting()
    t.cmd("EHLO client.example", 250)
    assert t.cmd(b"GET / HTTP/1.1", 500).text == "5.5.2 Command unrecognized"
    t.cmd(b"MAIL FROM:<a@b.example>\xff", 500)
    assert "CRLF" in t.cmd(b"NOOP\n\r", 500).text  # bare LF ends nothing silently
    t.cmd(b"", 500)
    errors = 4
    while errors < 19:
        t.cmd(b"BOGUS", 500)
        errors += 1
    reply = t.cmd(b"BOGUS")
    assert (reply.code, reply.text.split()[0]) == (421, "4.7.0")
    assert t.closed()


def test_overlong_command_line_is_refused_without_growing(server: MaildServer) -> None:
    t = Transcript(server.host, server.ports["smtp"])
    t.greeting()
    t.send(b"NOOP " + b"x" * 200_000)
    t.send(b"\r\nNOOP\r\n")
    assert t.reply().code == 500
    assert t.reply().code == 250


def test_random_bytes_never_break_the_server(server: MaildServer) -> None:
    """Junk of every kind gets protocol errors; the daemon keeps serving."""
    rng = random.Random(5321)
    alphabet = b"\r\n\x00 .:<>@\"\\ABCDEFHILMNOPQRSTVXYZ0123456789\xff\xc3"
    for _ in range(5):
        t = Transcript(server.host, server.ports["smtp"])
        t.greeting()
        junk = bytes(rng.choice(alphabet) for _ in range(3000))
        t.send(junk.replace(b"QUIT", b"QUXT").replace(b"DATA", b"DAXA").replace(b"BDAT", b"BDXT"))
        t.close()
    t = Transcript(server.host, server.ports["smtp"])
    t.greeting()
    t.cmd("EHLO client.example", 250)
    t.cmd("NOOP", 250)
    assert "Traceback" not in server.log()
