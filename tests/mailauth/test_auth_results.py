"""The Authentication-Results header (RFC 8601) and removal of forged ones."""

from __future__ import annotations

from maild.mailauth.filter import remove_auth_results
from maild.util.authresults import ArcResult, AuthResults, DkimResult, DmarcResult, SpfResult
from maild.util.message import from_domain, parse_header
from tests.mailauth.conftest import message


def test_header_value() -> None:
    results = AuthResults(
        spf=SpfResult("pass", "mailfrom", "example.org", "bounce@example.org"),
        dkim=[DkimResult("pass", "example.org", "rsa-2026", "rsa-sha256", "ab+/cd=e"),
              DkimResult("fail", "example.org", "ed-2026", "ed25519-sha256", "xyz",
                         "body hash did not verify")],
        dmarc=DmarcResult("pass", "example.org", policy="reject", disposition="none"),
        arc=ArcResult("none"))
    assert results.header_value("mx.example.test") == (
        "mx.example.test;"
        "\r\n\tspf=pass smtp.mailfrom=bounce@example.org;"
        '\r\n\tdkim=pass header.d=example.org header.s=rsa-2026 header.a=rsa-sha256 '
        'header.b="ab+/cd=e";'
        "\r\n\tdkim=fail (body hash did not verify) header.d=example.org header.s=ed-2026 "
        "header.a=ed25519-sha256 header.b=xyz;"
        "\r\n\tdmarc=pass (p=reject dis=none) header.from=example.org;"
        "\r\n\tarc=none")
    assert not results.temperror


def test_helo_unsigned_and_temperror() -> None:
    results = AuthResults(spf=SpfResult("temperror", "helo", "client.example.net",
                                        "client.example.net", "DNS (timeout)"),
                          dmarc=DmarcResult("none", None))
    assert results.header_value("mx") == (
        "mx;\r\n\tspf=temperror (DNS  timeout ) smtp.helo=client.example.net;"
        "\r\n\tdkim=none;\r\n\tdmarc=none")
    assert results.temperror


def test_odd_sender_is_quoted() -> None:
    spf = SpfResult("fail", "mailfrom", "example.org", "a b;c@example.org")
    assert spf.resinfo() == 'spf=fail smtp.mailfrom="a b;c@example.org"'


def test_remove_only_our_authserv_id() -> None:
    raw = message(extra="Authentication-Results: MX.example.test; dkim=pass\r\n"
                        "Authentication-Results: (forged) mx.example.test 1;\r\n spf=pass\r\n"
                        "Authentication-Results: mx.example.net; spf=fail\r\n"
                        "X-Other: Authentication-Results: mx.example.test\r\n")
    cleaned = remove_auth_results(parse_header(raw), "mx.example.test")
    assert b"dkim=pass" not in cleaned and b"forged" not in cleaned
    assert b"Authentication-Results: mx.example.net; spf=fail\r\n" in cleaned
    assert b"X-Other" in cleaned
    assert cleaned.endswith(b"\r\n\r\nHi Bob,\r\n\r\nsee you.\r\n")
    assert remove_auth_results(parse_header(message()), "mx.example.test") == message()


def test_header_fields_and_from_domain() -> None:
    raw = b"From: a@Example.ORG\r\nSubject: x\r\n  folded\r\n\r\nbody\r\n"
    header = parse_header(raw)
    assert [header.field_bytes(f) for f in header.fields] == [
        b"From: a@Example.ORG\r\n", b"Subject: x\r\n  folded\r\n"]
    assert raw[header.end:] == b"body\r\n"
    assert from_domain(header) == "example.org"

    def domain(text: bytes) -> str | None:
        return from_domain(parse_header(text))
    assert domain(b"From: a@x.example, b@x.example\r\n\r\n") == "x.example"
    assert domain(b"From: a@x.example, b@y.example\r\n\r\n") is None  # RFC 7489 §6.6.1
    assert domain(b"From: a@x.example\r\nFrom: a@x.example\r\n\r\n") is None
    assert domain(b"Subject: none\r\n\r\n") is None
