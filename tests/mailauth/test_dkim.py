"""DKIM verification of every signature, and our signatures checked by dkimpy's own
``dkimverify`` command, all against keys served by the real DNS server."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import dkim as dkimpy
from dkim import canonicalization
from hypothesis import given
from hypothesis import strategies as st

from maild.dns import Resolver
from maild.mailauth import dkim
from tests.fixtures.dns import DnsZone
from tests.mailauth.conftest import message, publish, signed

DKIMVERIFY = Path(sys.executable).parent / "dkimverify"
# Run the installed dkimverify script unchanged, its resolver aimed at the test server.
_RUN_DKIMVERIFY = """
import runpy, sys
import dns.nameserver, dns.resolver
resolver = dns.resolver.Resolver(configure=False)
resolver.nameservers = [dns.nameserver.Do53Nameserver("127.0.0.1", int(sys.argv[1]))]
dns.resolver.default_resolver = resolver
script, sys.argv = sys.argv[2], ["dkimverify", "--index", sys.argv[3]]
runpy.run_path(script, run_name="__main__")
"""


def results(raw: bytes, resolver: Resolver) -> list[tuple[str, str]]:
    return [(r.result, r.algorithm) for r in dkim.verify_sync(raw, resolver)]


def test_valid_rsa_and_ed25519(dns_zone: DnsZone, resolver: Resolver,
                               org_keys: list[dict[str, Any]]) -> None:
    publish(dns_zone, "example.org", org_keys)
    raw = signed(message(), "example.org", org_keys)
    verified = dkim.verify_sync(raw, resolver)
    assert [(r.result, r.algorithm, r.domain) for r in verified] == [
        ("pass", "rsa-sha256", "example.org"), ("pass", "ed25519-sha256", "example.org")]
    assert [r.selector for r in verified] == [k["selector"] for k in org_keys]


def test_ed25519_alone(dns_zone: DnsZone, resolver: Resolver,
                       org_keys: list[dict[str, Any]]) -> None:
    ed = [k for k in org_keys if k["algorithm"] == "ed25519-sha256"]
    publish(dns_zone, "example.org", ed)
    assert results(signed(message(), "example.org", ed), resolver) == [("pass", "ed25519-sha256")]


def test_body_tampered(dns_zone: DnsZone, resolver: Resolver,
                       org_keys: list[dict[str, Any]]) -> None:
    publish(dns_zone, "example.org", org_keys)
    raw = signed(message(), "example.org", org_keys) + b"P.S. send money\r\n"
    verified = dkim.verify_sync(raw, resolver)
    assert [r.result for r in verified] == ["fail", "fail"]
    assert "body hash" in verified[0].reason


def test_header_tampered(dns_zone: DnsZone, resolver: Resolver,
                         org_keys: list[dict[str, Any]]) -> None:
    publish(dns_zone, "example.org", org_keys)
    raw = signed(message(), "example.org", org_keys).replace(b"Subject: Hello",
                                                             b"Subject: Invoice")
    verified = dkim.verify_sync(raw, resolver)
    assert [r.result for r in verified] == ["fail", "fail"]
    assert verified[0].reason == "signature did not verify"


def test_missing_key(dns_zone: DnsZone, resolver: Resolver,
                     org_keys: list[dict[str, Any]]) -> None:
    verified = dkim.verify_sync(signed(message(), "example.org", org_keys), resolver)
    assert [(r.result, r.reason) for r in verified] == [("permerror", "no key for signature")] * 2


def test_revoked_key(dns_zone: DnsZone, resolver: Resolver,
                     org_keys: list[dict[str, Any]]) -> None:
    for key in org_keys:  # RFC 6376 §3.6.1: an empty p= revokes the key
        dns_zone.set(f"{key['selector']}._domainkey.example.org", "TXT", "v=DKIM1; k=rsa; p=")
    verified = dkim.verify_sync(signed(message(), "example.org", org_keys), resolver)
    assert [(r.result, r.reason) for r in verified] == [("permerror", "key revoked")] * 2


def test_key_lookup_timeout_is_temperror(dns_zone: DnsZone, resolver: Resolver,
                                         org_keys: list[dict[str, Any]]) -> None:
    rsa, ed = org_keys
    publish(dns_zone, "example.org", [ed])
    dns_zone.timeout(f"{rsa['selector']}._domainkey.example.org")
    raw = signed(message(), "example.org", org_keys)
    assert results(raw, resolver) == [("temperror", "rsa-sha256"), ("pass", "ed25519-sha256")]


def test_every_signature_is_checked(dns_zone: DnsZone, resolver: Resolver,
                                    org_keys: list[dict[str, Any]]) -> None:
    # a broken first signature must not hide a good second one (dkim.verify() checks idx 0)
    rsa, ed = org_keys
    publish(dns_zone, "example.org", [ed])
    raw = signed(message(), "example.org", [ed])
    raw = signed(raw, "example.org", [rsa])  # on top, its key is not published
    assert results(raw, resolver) == [("permerror", "rsa-sha256"), ("pass", "ed25519-sha256")]


def test_rsa_sha1_is_reported_not_trusted(dns_zone: DnsZone, resolver: Resolver,
                                          org_keys: list[dict[str, Any]]) -> None:
    rsa = org_keys[0]
    publish(dns_zone, "example.org", [rsa])
    raw = message()
    field = dkimpy.DKIM(raw, signature_algorithm=b"rsa-sha1").sign(
        rsa["selector"].encode(), b"example.org", rsa["private_key"].encode())
    verified = dkim.verify_sync(field + raw, resolver)
    assert [(r.result, r.algorithm) for r in verified] == [("policy", "rsa-sha1")]
    assert "RFC 8301" in verified[0].reason


def test_unsigned_and_garbled_signature(dns_zone: DnsZone, resolver: Resolver) -> None:
    assert dkim.verify_sync(message(), resolver) == []
    raw = message(extra="DKIM-Signature: v=1; a=rsa-sha256; d=example.org\r\n")
    assert results(raw, resolver) == [("permerror", "rsa-sha256")]


def test_our_signatures_pass_dkimverify(dns_zone: DnsZone,
                                        org_keys: list[dict[str, Any]]) -> None:
    publish(dns_zone, "example.org", org_keys)
    raw = signed(message(body="Line one\r\n.dot line\r\n\r\n\r\n"), "example.org", org_keys)
    for index in ("0", "1"):
        run = subprocess.run([sys.executable, "-c", _RUN_DKIMVERIFY, str(dns_zone.port),
                              str(DKIMVERIFY), index], input=raw, capture_output=True, timeout=60)
        assert run.stdout.strip() == b"signature ok", run.stdout + run.stderr
    tampered = raw.replace(b"Line one", b"Line 1")
    run = subprocess.run([sys.executable, "-c", _RUN_DKIMVERIFY, str(dns_zone.port),
                          str(DKIMVERIFY), "0"], input=tampered, capture_output=True, timeout=60)
    assert run.returncode != 0 and b"body hash mismatch" in run.stderr


def test_generated_keys(org_keys: list[dict[str, Any]]) -> None:
    assert [(k["selector"], k["algorithm"], k["state"]) for k in org_keys] == [
        ("rsa-20260101", "rsa-sha256", "active"), ("ed25519-20260101", "ed25519-sha256", "active")]
    assert org_keys[0]["private_key"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert org_keys[1]["private_key"].startswith("-----BEGIN PRIVATE KEY-----")
    assert org_keys[0]["public_record"].startswith("v=DKIM1; k=rsa; p=MIIBIjAN")  # 2048-bit
    assert org_keys[1]["public_record"].startswith("v=DKIM1; k=ed25519; p=")
    rotated = dkim.rotate(org_keys, now=1_767_225_600.0)  # the same day: selectors differ
    assert [k["selector"] for k in rotated if k["state"] == "pending"] == [
        "rsa-20260101-2", "ed25519-20260101-2"]


@given(st.lists(st.sampled_from([b"a", b" ", b"\t", b"  ", b"\r\n", b"b c", b" \t\r\n"]), max_size=60))
def test_canonicalisation_by_windows_is_dkimpys(pieces: list[bytes]) -> None:
    """The windowed canonicalisation (maild.mailauth.dkim, "Memory") gives dkimpy's
    answer, RFC 6376 §3.4.4, wherever the windows are cut."""
    body = b"".join(pieces) + b"\r\n"
    raw = b"From: a@example.org\r\n\r\n" + body
    saved = dkim._WINDOW
    dkim._WINDOW = 3
    try:
        relaxed = dkim._Bodies(raw).body(b"relaxed")
        stripped = dkim._strip_trailing_whitespace(body)
        compressed = dkim._compress_whitespace(body)
    finally:
        dkim._WINDOW = saved
    assert stripped == re.sub(b"[\t ]+\r\n", b"\r\n", body)
    assert compressed == re.sub(b"[\t ]+", b" ", body)
    assert relaxed == re.sub(b"[\t ]+", b" ", re.sub(b"[\t ]+\r\n", b"\r\n", body))
    assert canonicalization.Relaxed.canonicalize_body(relaxed) == \
        canonicalization.Relaxed.canonicalize_body(body)
    assert dkim._Bodies(raw).body(b"simple") == body


def test_permerror_reason_has_no_python_bytes_dump(dns_zone: DnsZone, resolver: Resolver,
                                                    org_keys: list[dict[str, Any]]) -> None:
    """dkimpy words its errors with reprs (``b= value is not valid base64 (b'...')``); the
    Authentication-Results comment carries the words, never a ``b'...'`` dump."""
    from maild.util.authresults import AuthResults

    publish(dns_zone, "example.org", org_keys[:1])
    raw = signed(message(), "example.org", org_keys[:1])
    raw = raw.replace(b" b=", b" b=!!not*base64!!", 1)
    (verified,) = dkim.verify_sync(raw, resolver)
    assert verified.result == "permerror"
    assert "b'" not in verified.reason and "base64" in verified.reason
    field = AuthResults(dkim=[verified]).header_value("mx.example.test")
    assert "b'" not in field and 'b"' not in field and "permerror" in field
