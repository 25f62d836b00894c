"""Unit tests of the headers maild.delivery adds: Received, Date and Message-ID."""

from __future__ import annotations

from maild.delivery import complete_submission, protocol_name, received_header
from maild.util.transaction import Transaction


def tx(**fields: object) -> Transaction:
    t = Transaction(client_ip="192.0.2.7", client_port=4242, submission=False, helo="mx.remote.example")
    for key, value in fields.items():
        setattr(t, key, value)
    return t


def test_protocol_names() -> None:
    assert protocol_name(tx()) == "SMTP"
    assert protocol_name(tx(esmtp=True)) == "ESMTP"
    assert protocol_name(tx(esmtp=True, tls_version="TLSv1.3")) == "ESMTPS"
    assert protocol_name(tx(esmtp=True, tls_version="TLSv1.3", authenticated_user="a@b")) == "ESMTPSA"
    assert protocol_name(tx(tls_version="TLSv1.2")) == "ESMTPS"  # RFC 3848 has no SMTPS
    assert protocol_name(tx(esmtp=True, mail_params={"SMTPUTF8": None})) == "UTF8SMTP"
    assert protocol_name(tx(esmtp=True, mail_params={"SMTPUTF8": None}, tls_version="x")) == "UTF8SMTPS"


def test_received_header() -> None:
    header = received_header(tx(esmtp=True, tls_version="TLSv1.3",
                                tls_cipher="TLS_AES_256_GCM_SHA384 (256 bits)",
                                rcpt_to=["alice@example.test"]),
                             "mx.example.test", "ABC123", now=0)
    assert header == (b"Received: from mx.remote.example ([192.0.2.7])\r\n"
                      b"\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256 bits))\r\n"
                      b"\tby mx.example.test (maild) with ESMTPS id ABC123\r\n"
                      b"\tfor <alice@example.test>;\r\n"
                      b"\tThu, 01 Jan 1970 00:00:00 +0000\r\n")
    many = received_header(tx(rcpt_to=["a@x", "b@x"], client_ip="2001:db8::1"), "h", "ID")
    assert b"([IPv6:2001:db8::1])" in many and b" for <" not in many


def test_submission_completion() -> None:
    done = complete_submission(b"From: a@example.test\r\nSubject: s\r\n\r\nbody\r\n", "mx.example.test")
    head = done.split(b"\r\n\r\n")[0]
    assert head.startswith(b"Date: ")
    assert b"\r\nMessage-ID: <" in head and b"@mx.example.test>\r\n" in head
    full = b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nmessage-id: <x@y>\r\n\r\nbody\r\n"
    assert complete_submission(full, "mx.example.test") == full
    # A "Date:" inside the body is not a header.
    body_only = b"Subject: s\r\n\r\nDate: not a header\r\n"
    assert complete_submission(body_only, "h").startswith(b"Date: ")
