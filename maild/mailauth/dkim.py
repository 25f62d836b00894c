"""DKIM (RFC 6376, RFC 8463 ed25519) verification and signing, ARC (RFC 8617) verification,
with dkimpy; key generation and rotation for our domains.

Implementation notes:

- ``dkim.verify()`` checks only the first signature: we verify every DKIM-Signature by
  index, each with its own result (RFC 6376 §6.1, "a verifier SHOULD evaluate each").
- dkimpy swallows DNS failures into a plain False; our key-lookup function records what
  DNS said, so a timeout is ``temperror`` (§6.1.2), a missing key or an empty p= (revoked,
  §3.6.1) is ``permerror``, and only a signature that does not match is ``fail``.
- rsa-sha1 signatures are verified and reported as ``policy``: RFC 8301 §3.1 forbids
  treating them as valid, so DMARC never counts them.
- Everything here blocks (RSA in pure Python costs milliseconds): call it from a worker
  thread.
- Memory: given a whole message, dkimpy splits it into a list of lines and canonicalises
  the body with whole-body regular expressions, ~4 copies of the body at once. It is
  given the header block alone, and its ``body`` is set to the body canonicalised here a
  window at a time (:class:`_Bodies`), on which dkimpy's own canonicalisation has nothing
  left to change (relaxed still copies once when the body holds spaces or tabs). ARC is
  verified only when the message has ARC fields (docs/smtp.md, "Memory").

Key records (stored with the domain by the store as JSON-serialisable dicts)::

    {"selector": "rsa-20260115", "algorithm": "rsa-sha256" | "ed25519-sha256",
     "private_key": "-----BEGIN ...", "public_record": "v=DKIM1; k=rsa; p=...",
     "created": 1768435200.0, "state": "active" | "pending" | "retired"}

Rotation: ``rotate`` adds a pending pair (published, not used); ``confirm_rotation``
signs with it and retires the old pair, whose public key stays listed by ``maild domain
dns`` until ``remove_retired``.
"""

from __future__ import annotations

import base64
import functools
import io
import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dkim import canonicalization
from dkim.util import InvalidTagValueList, parse_tag_value

from maild.dns import Resolver, TempError
from maild.util.authresults import ArcResult, DkimResult
from maild.util.message import Header, header_end, parse_header

log = logging.getLogger("maild.mailauth")

RSA_BITS = 2048
ACTIVE, PENDING, RETIRED = "active", "pending", "retired"
_ALGORITHMS = {"rsa-sha256": "rsa", "ed25519-sha256": "ed25519"}


class _KeyLookup:
    """dkimpy's ``dnsfunc``: TXT through our resolver, remembering what it saw."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self.timed_out = False
        self.records: dict[str, bytes | None] = {}

    def __call__(self, name: bytes | str, timeout: float = 5) -> bytes | None:
        key = (name.decode("ascii", "replace") if isinstance(name, bytes) else name).rstrip(".")
        try:
            txts = self.resolver.txt_sync(key)
        except TempError as exc:
            self.timed_out = True
            raise dkim.DnsTimeoutError(str(exc)) from None
        # RFC 6376 §3.6.2.2: several TXT records at a selector are ambiguous; use the first.
        self.records[key.lower()] = txts[0] if txts else None
        return self.records[key.lower()]


# dkimpy puts Python reprs of the offending bytes into its messages ("b= value is not
# valid base64 (b'...')"): a header comment gets the words, never the dump.
_BYTES_REPR = re.compile(r"""\s*:?\s*\(?\bb(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")\)?""")


def _reason(exc: Exception) -> str:
    text = _BYTES_REPR.sub("", str(exc)).strip(" :")
    return text[:200] or "signature could not be processed"


def _signature_tags(field: bytes) -> dict[bytes, bytes]:
    value = re.sub(rb"\r?\n", b"", field.split(b":", 1)[1])
    try:
        return parse_tag_value(value)
    except InvalidTagValueList:
        return {}


_WINDOW = 1 << 20  # whole-body work is done this much at a time, cut after a line end
_TRAILING_WSP = re.compile(rb"[\t ]+\r\n")
_WSP = re.compile(rb"[\t ]+")


def _windowed(content: bytes, start: int, sub: Callable[[bytes], bytes]) -> bytes:
    """``sub(content[start:])`` for a ``sub`` that never acts across a line end, applied a
    window at a time into one buffer (a whole-body re.sub holds its pieces and the result)."""
    out = io.BytesIO()
    while start < len(content):
        end = content.find(b"\n", start + _WINDOW)
        end = len(content) if end < 0 else end + 1
        out.write(sub(content[start:end]))
        start = end
    return out.getvalue()


def _strip_trailing_whitespace(content: bytes) -> bytes:
    """dkimpy's, returning ``content`` itself when there is nothing to strip."""
    if b" \r\n" not in content and b"\t\r\n" not in content:
        return content
    return _windowed(content, 0, lambda w: _TRAILING_WSP.sub(b"\r\n", w))


def _compress_whitespace(content: bytes) -> bytes:
    """dkimpy's, returning ``content`` itself when every WSP run is already one space."""
    if b"\t" not in content and b"  " not in content:
        return content
    return _windowed(content, 0, lambda w: _WSP.sub(b" ", w))


# The same functions, without whole-body copies (pure, so replacing them is thread-safe):
# on a body canonicalised by _Bodies, dkimpy's relaxed canonicalisation copies nothing.
canonicalization.strip_trailing_whitespace = _strip_trailing_whitespace
canonicalization.compress_whitespace = _compress_whitespace


class _Bodies:
    """The body of one message as dkimpy's ``body`` for a c= body algorithm (RFC 6376
    §3.4.3 simple, §3.4.4 relaxed), made on demand; only the latest is kept."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.cut = header_end(raw)
        self._made: tuple[bytes, bytes] | None = None

    def header(self) -> bytes:
        return self.raw[:self.cut]

    def body(self, algorithm: bytes) -> bytes:
        algorithm = algorithm.strip().lower()
        if self._made is not None and self._made[0] == algorithm:
            return self._made[1]
        self._made = None  # free the other form first
        if algorithm != b"relaxed":
            made = self.raw[self.cut:]  # simple: dkimpy strips trailing empty lines itself
        else:
            made = _windowed(self.raw, self.cut,
                             lambda w: _WSP.sub(b" ", _TRAILING_WSP.sub(b"\r\n", w)))
        self._made = (algorithm, made)
        return made


def _body_algorithm(tags: dict[bytes, bytes]) -> bytes:
    """The body half of c= (RFC 6376 §3.5: "simple" when absent or not given)."""
    _, _, body = tags.get(b"c", b"simple/simple").partition(b"/")
    return body or b"simple"


def _key_problem(record: bytes | None) -> str | None:
    """Why a fetched key record cannot verify anything, or None."""
    if record is None:
        return "no key for signature"
    try:
        tags = parse_tag_value(record)
    except InvalidTagValueList:
        return "key record syntax error"
    if tags.get(b"p", b"x").strip() == b"":
        return "key revoked"  # RFC 6376 §3.6.1
    return None


def verify_sync(raw: bytes, resolver: Resolver, header: Header | None = None) -> list[DkimResult]:
    """One result per DKIM-Signature field, top to bottom (``header``: ``raw``'s parsed
    header section, when the caller has it)."""
    header = header if header is not None else parse_header(raw)
    signatures = [header.field_bytes(f) for f in header.fields if f.lname == "dkim-signature"]
    if not signatures:
        return []
    results: list[DkimResult] = []
    bodies = _Bodies(raw)
    try:
        verifier = dkim.DKIM(bodies.header(), minkey=1024, timeout=resolver.timeout)
    except dkim.DKIMException as exc:
        return [DkimResult("permerror", "", "", "", reason=_reason(exc)) for _ in signatures]
    for idx, field in enumerate(signatures):
        tags = _signature_tags(field)
        domain = tags.get(b"d", b"").decode("ascii", "replace").lower()
        selector = tags.get(b"s", b"").decode("ascii", "replace")
        algorithm = tags.get(b"a", b"").decode("ascii", "replace").lower()
        b = re.sub(rb"\s+", b"", tags.get(b"b", b""))[:8].decode("ascii", "replace")
        result = functools.partial(DkimResult, domain=domain, selector=selector,
                                   algorithm=algorithm, b=b)

        lookup = _KeyLookup(resolver)
        try:
            verifier.body = bodies.body(_body_algorithm(tags))
            ok = verifier.verify(idx, dnsfunc=lookup)
        except dkim.ValidationError as exc:
            if "body hash mismatch" in str(exc):
                results.append(result("fail", reason="body hash did not verify"))
            else:
                results.append(result("permerror", reason=_reason(exc)))
            continue
        except dkim.DKIMException as exc:
            results.append(result("permerror", reason=_reason(exc)))
            continue
        except Exception:  # dkimpy on input it does not expect: never the whole message
            log.exception("dkimpy failed on signature %d", idx)
            results.append(result("permerror", reason="signature could not be processed"))
            continue
        if ok:
            if algorithm == "rsa-sha1":
                results.append(result("policy", reason="rsa-sha1 is not accepted (RFC 8301)"))
            else:
                results.append(result("pass"))
        elif lookup.timed_out:
            results.append(result("temperror", reason="key lookup timed out"))
        else:
            name = f"{selector}._domainkey.{domain}".lower()
            problem = _key_problem(lookup.records.get(name))
            results.append(result("permerror", reason=problem) if problem
                           else result("fail", reason="signature did not verify"))
    return results


def arc_verify_sync(raw: bytes, resolver: Resolver) -> ArcResult:
    """The ARC chain validation status (RFC 8617 §5.2)."""
    if not any(f.lname.startswith("arc-") for f in parse_header(raw).fields):
        return ArcResult("none")  # dkimpy would parse the whole message to find no chain
    lookup = _KeyLookup(resolver)
    try:
        cv, sets, reason = dkim.arc_verify(raw, dnsfunc=lookup, timeout=resolver.timeout)
    except dkim.DKIMException as exc:  # a header block dkimpy cannot parse (MessageFormatError)
        return ArcResult("fail", 0, _reason(exc))
    if cv == dkim.CV_None and not sets:
        return ArcResult("none")
    if lookup.timed_out:
        return ArcResult("temperror", len(sets), "key lookup timed out")
    if cv == dkim.CV_Pass:
        return ArcResult("pass", len(sets))
    return ArcResult("fail", len(sets), reason)


# -- signing -------------------------------------------------------------------------------


def _dkimpy_private_key(key: dict[str, Any]) -> bytes:
    pem = key["private_key"].encode("ascii")
    if key["algorithm"] == "rsa-sha256":
        return pem  # PKCS#1 PEM, as dkimpy reads it
    private = serialization.load_pem_private_key(pem, password=None)
    seed = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
    return base64.b64encode(seed)  # dkimpy takes the base64 seed (RFC 8463 §3)


def sign_sync(raw: bytes, domain: str, keys: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """DKIM-Signature fields (name, folded value) from every active key of ``domain``."""
    headers = []
    bodies = _Bodies(raw)
    for key in signing_keys(keys):
        signer = dkim.DKIM(bodies.header(), signature_algorithm=key["algorithm"].encode("ascii"))
        signer.body = bodies.body(b"relaxed")
        field = signer.sign(key["selector"].encode("ascii"), domain.encode("ascii"),
                            _dkimpy_private_key(key), canonicalize=(b"relaxed", b"relaxed"))
        name, _, value = field.decode("ascii").partition(":")
        headers.append((name, value.strip(" ").rstrip("\r\n")))
    return headers


# -- keys ----------------------------------------------------------------------------------


def _selector(prefix: str, now: float, taken: set[str]) -> str:
    base = f"{prefix}-{datetime.fromtimestamp(now, UTC):%Y%m%d}"
    selector, n = base, 1
    while selector in taken:
        n += 1
        selector = f"{base}-{n}"
    return selector


def _new_pair(now: float, taken: set[str], state: str) -> list[dict[str, Any]]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    rsa_private = rsa_key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.TraditionalOpenSSL,
                                        serialization.NoEncryption()).decode("ascii")
    rsa_public = rsa_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    ed_private = ed_key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()).decode("ascii")
    ed_public = ed_key.public_key().public_bytes(serialization.Encoding.Raw,
                                                 serialization.PublicFormat.Raw)
    pairs = [("rsa", "rsa-sha256", rsa_private, rsa_public),
             ("ed25519", "ed25519-sha256", ed_private, ed_public)]
    keys = []
    for prefix, algorithm, private, public in pairs:
        selector = _selector(prefix, now, taken)
        taken.add(selector)
        keys.append({
            "selector": selector,
            "algorithm": algorithm,
            "private_key": private,
            "public_record": f"v=DKIM1; k={_ALGORITHMS[algorithm]}; "
                             f"p={base64.b64encode(public).decode('ascii')}",
            "created": now,
            "state": state,
        })
    return keys


def generate_keys(domain: str, now: float | None = None) -> list[dict[str, Any]]:
    """A new domain's keys: rsa-2048 and ed25519, dated selectors, both active.
    (``domain`` names the keys' owner; keys do not embed it, so a rename keeps them.)"""
    return _new_pair(time.time() if now is None else now, set(), ACTIVE)


def signing_keys(keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [k for k in keys if k.get("state", ACTIVE) == ACTIVE]


def rotate(keys: list[dict[str, Any]], now: float | None = None) -> list[dict[str, Any]]:
    """Add a pending pair: published by ``maild domain dns``, not signing yet."""
    if any(k.get("state") == PENDING for k in keys):
        raise ValueError("a rotation is already pending: confirm it first")
    taken = {k["selector"] for k in keys}
    return keys + _new_pair(time.time() if now is None else now, taken, PENDING)


def confirm_rotation(keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sign with the pending pair; the active pair is retired (still published)."""
    if not any(k.get("state") == PENDING for k in keys):
        raise ValueError("no rotation is pending")
    moved = {ACTIVE: RETIRED, PENDING: ACTIVE}
    return [{**k, "state": moved.get(k.get("state", ACTIVE), k.get("state", ACTIVE))}
            for k in keys]


def remove_retired(keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [k for k in keys if k.get("state") != RETIRED]


def published_sync(resolver: Resolver, domain: str, key: dict[str, Any]) -> bool:
    """Whether DNS serves this key's public record at its selector (compared by p=)."""
    name = f"{key['selector']}._domainkey.{domain}"
    want = parse_tag_value(key["public_record"].encode("ascii"))[b"p"]
    for txt in resolver.txt_sync(name):
        try:
            if re.sub(rb"\s+", b"", parse_tag_value(txt).get(b"p", b"")) == want:
                return True
        except InvalidTagValueList:
            continue
    return False
