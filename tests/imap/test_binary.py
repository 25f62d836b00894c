"""BINARY (RFC 3516): FETCH BINARY[part] / BINARY.PEEK[part] with the Content-Transfer-
Encoding undone (§4.2), BINARY.SIZE (§4.2), literal8 for data holding NUL (§4.3),
NO [UNKNOWN-CTE] (§5), and APPEND with a literal8 (§4.4)."""

from __future__ import annotations

import base64
import binascii
import imaplib

from tests.imap.conftest import Transcript, append

PAYLOAD = bytes(range(256)) * 4  # every octet, NUL included
TEXT = "Grüße, naïve café — ünïcödé\r\nsecond line\r\n".encode()


def _multipart() -> bytes:
    qp = binascii.b2a_qp(TEXT, istext=False)
    b64 = base64.encodebytes(PAYLOAD).replace(b"\n", b"\r\n")
    return (b"From: a@example.test\r\nTo: b@example.test\r\nSubject: binary\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="XX"\r\n\r\n'
            b"--XX\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
            + qp + b"\r\n"
            b"--XX\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + b64 +
            b"--XX\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n"
            b"begin 644 x\r\n`\r\nend\r\n"
            b"--XX\r\nContent-Type: text/plain\r\n\r\nplain 7bit\r\n"
            b"--XX--\r\n")


def test_fetch_binary_parts(imap: Transcript) -> None:
    assert b"BINARY" in imap.ok("CAPABILITY")[0].split()
    raw = _multipart()
    append(imap, "INBOX", raw)
    imap.ok("SELECT INBOX")
    # quoted-printable undone; no NUL, so a plain literal.
    line = imap.ok("FETCH 1 (BINARY.PEEK[1])")[0]
    assert line == b"* 1 FETCH (BINARY[1] {%d}\r\n" % len(TEXT) + TEXT + b")"
    # base64 undone; it holds NUL, so a literal8.
    line = imap.ok("FETCH 1 (BINARY.PEEK[2] BINARY.SIZE[2] BINARY.SIZE[1])")[0]
    assert line == (b"* 1 FETCH (BINARY[2] ~{%d}\r\n" % len(PAYLOAD) + PAYLOAD
                    + b" BINARY.SIZE[2] %d BINARY.SIZE[1] %d)" % (len(PAYLOAD), len(TEXT)))
    assert imap.ok("FETCH 1 (BINARY.PEEK[4])")[0] == b"* 1 FETCH (BINARY[4] {10}\r\nplain 7bit)"
    # A partial applies to the decoded octets; only the origin is echoed.
    line = imap.ok("FETCH 1 (BINARY.PEEK[2]<1.3>)")[0]
    assert line == b"* 1 FETCH (BINARY[2]<1> {3}\r\n\x01\x02\x03)"
    # The whole message is not decoded; a part that does not exist is NIL.
    line = imap.ok("FETCH 1 (BINARY.PEEK[] BINARY.SIZE[] BINARY.PEEK[9])")[0]
    assert line == b"* 1 FETCH (BINARY[] {%d}\r\n" % len(raw) + raw + b" BINARY.SIZE[] %d BINARY[9] NIL)" % len(raw)
    # An encoding maild cannot undo (RFC 3516 §5).
    imap.no("FETCH 1 (BINARY.PEEK[3])", code="UNKNOWN-CTE")
    imap.no("FETCH 1 (BINARY.SIZE[3])", code="UNKNOWN-CTE")
    # Only part numbers; no partial on BINARY.SIZE.
    imap.bad("FETCH 1 (BINARY[1.MIME])")
    imap.bad("FETCH 1 (BINARY[HEADER])")
    imap.bad("FETCH 1 (BINARY.SIZE[1]<0.5>)")
    imap.bad("FETCH 1 (BINARY.SIZE)")


def test_binary_sets_seen(imap: Transcript) -> None:
    append(imap, "INBOX", _multipart())
    imap.ok("SELECT INBOX")
    imap.ok("FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[2])")
    # No \Seen from the PEEKs; \Recent: this session's SELECT was the first (RFC 3501 §2.3.2).
    assert imap.ok("FETCH 1 (FLAGS)") == [b"* 1 FETCH (FLAGS (\\Recent))"]
    lines = imap.ok("FETCH 1 (BINARY[4])")  # RFC 3516 §4.2: as BODY[] does
    assert lines == [b"* 1 FETCH (BINARY[4] {10}\r\nplain 7bit FLAGS (\\Recent \\Seen))"]


def test_append_literal8(imap: Transcript) -> None:
    raw = b"Subject: raw binary\r\nContent-Transfer-Encoding: binary\r\n\r\n" + PAYLOAD + b"\r\n"
    untagged, result = imap.command(b"APPEND INBOX ~{%d+}\r\n" % len(raw) + raw)
    assert result.startswith(b"OK [APPENDUID "), result
    imap.send(b"a1 APPEND INBOX (\\Seen) ~{%d}" % len(raw))  # synchronizing
    assert imap.line().startswith(b"+ ")
    imap.send(raw)
    assert imap.collect("a1")[1].startswith(b"OK [APPENDUID ")
    imap.ok("SELECT INBOX")
    line = imap.ok("FETCH 2 (FLAGS BINARY.PEEK[1])")[0]
    assert line == b"* 2 FETCH (FLAGS (\\Recent \\Seen) BINARY[1] ~{%d}\r\n" % (len(PAYLOAD) + 2) + PAYLOAD + b"\r\n)"
    line = imap.ok("FETCH 1 (BINARY.PEEK[])")[0]
    assert line == b"* 1 FETCH (BINARY[] ~{%d}\r\n" % len(raw) + raw + b")"


def test_imaplib_fetch_binary(imaplib_client: imaplib.IMAP4_SSL) -> None:
    """Python's imaplib reads the literal8 (its literal pattern ends in ``{n}``)."""
    imaplib_client.append("INBOX", None, None, _multipart())
    imaplib_client.select("INBOX")
    typ, data = imaplib_client.fetch("1", "(BINARY.PEEK[2])")
    assert typ == "OK" and data[0] == (b"1 (BINARY[2] ~{%d}" % len(PAYLOAD), PAYLOAD)
