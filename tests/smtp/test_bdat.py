"""CHUNKING (RFC 3030): BDAT chunks, pipelined, with limits."""

from __future__ import annotations

from tests.conftest import MaildServer
from tests.smtp.conftest import Transcript, messages

MAILD_OVERRIDES = {"smtp": {"max_message_size": 10_000}}


def test_bdat_in_chunks(mx: Transcript, server: MaildServer) -> None:
    mx.cmd("MAIL FROM:<a@remote.example>", 250)
    mx.cmd("RCPT TO:<alice@example.test>", 250)
    part1 = b"From: a@remote.example\r\nSubject: chunked\r\n\r\n"
    part2 = b".not stuffed\r\nRSET\r\n"
    mx.send(b"BDAT %d\r\n" % len(part1) + part1 + b"BDAT %d LAST\r\n" % len(part2) + part2)
    assert mx.reply().text == f"2.0.0 {len(part1)} octets received"
    assert mx.reply().code == 250
    (stored,) = [m for m in messages(server, "alice@example.test") if b"Subject: chunked" in m]
    assert stored.endswith(b"\r\n\r\n.not stuffed\r\nRSET\r\n")


def test_bdat_without_transaction_consumes_chunk(mx: Transcript) -> None:
    mx.send(b"BDAT 6 LAST\r\nQUIT\r\n")
    assert mx.reply().code == 503
    mx.cmd("NOOP", 250)  # "QUIT\r\n" was chunk data, not a command


def test_bdat_too_big_reads_everything(mx: Transcript) -> None:
    mx.cmd("MAIL FROM:<a@remote.example>", 250)
    mx.cmd("RCPT TO:<alice@example.test>", 250)
    data = b"x" * 70 + b"\r\n"
    mx.send(b"BDAT %d LAST\r\n" % (len(data) * 200) + data * 200)
    assert mx.reply().code == 552
    mx.cmd("NOOP", 250)


def test_bdat_bare_lf_refused(mx: Transcript) -> None:
    mx.cmd("MAIL FROM:<a@remote.example>", 250)
    mx.cmd("RCPT TO:<alice@example.test>", 250)
    body = b"From: a@remote.example\r\nSubject: x\r\n\r\na\n.\nb\r\n"
    mx.send(b"BDAT %d LAST\r\n" % len(body) + body)
    assert mx.reply().code == 550


def test_bdat_syntax_error_closes(mx: Transcript) -> None:
    mx.cmd("MAIL FROM:<a@remote.example>", 250)
    mx.cmd("RCPT TO:<alice@example.test>", 250)
    mx.send(b"BDAT lots\r\nMAIL FROM:<x@y.example>\r\n")
    assert mx.reply().code == 501
    assert mx.closed()


def test_data_after_bdat_refused(mx: Transcript) -> None:
    mx.cmd("MAIL FROM:<a@remote.example>", 250)
    mx.cmd("RCPT TO:<alice@example.test>", 250)
    mx.send(b"BDAT 3\r\nabc")
    assert mx.reply().code == 250
    mx.cmd("DATA", 503)


def test_refused_chunks_do_not_spoil_the_next_transaction(mx: Transcript, server: MaildServer) -> None:
    mx.send(b"BDAT 3\r\nabc")
    assert mx.reply().code == 503  # no transaction: chunk read and refused
    part = b"From: a@remote.example\r\nSubject: after refused chunk\r\n\r\nok\r\n"
    mx.cmd("MAIL FROM:<a@remote.example>", 250)
    mx.cmd("RCPT TO:<bob@example.test>", 250)
    mx.send(b"BDAT %d LAST\r\n" % len(part) + part)
    assert mx.reply().code == 250
    assert [m for m in messages(server, "bob@example.test") if b"after refused chunk" in m]
