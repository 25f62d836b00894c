"""SASL (RFC 4422) server mechanisms PLAIN (RFC 4616) and LOGIN
(draft-murchison-sasl-login), as one challenge/response state machine per exchange.

The protocols only carry the exchange: SMTP AUTH (RFC 4954) sends a challenge as
``334 <base64>``, IMAP AUTHENTICATE (RFC 3501 §6.2.2) as ``+ <base64>``, POP3 AUTH
(RFC 5034) as ``+ <base64>``; each hands the client's lines back here. The exchange itself
(what is asked, how the answers decode, a cancel, an initial response) lives only here, and
:meth:`maild.util.session.CommandSession._sasl_exchange` drives it for all three.

    exchange = start("LOGIN")           # UnknownMechanism for anything else
    step = exchange.step(initial)       # None: no initial response was sent
    while isinstance(step, bytes):      # a challenge (raw, the protocol base64-encodes it)
        step = exchange.step(client_line)
    credentials = step                  # Credentials(authcid, password, authzid, mechanism)
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

MECHANISMS = ("PLAIN", "LOGIN")


class SaslError(ValueError):
    """A failed exchange; ``str()`` is a public text (never an exception's)."""


class UnknownMechanism(SaslError):
    pass


class Cancelled(SaslError):
    """The client answered a challenge with "*" (RFC 4422 §3.5)."""


class Malformed(SaslError):
    """A response that is not what the mechanism expects (bad base64, bad fields)."""


class LineProblem(Malformed):
    """The protocol could not read the response line (too long, no CRLF)."""


class AuthzidMismatch(SaslError):
    """PLAIN asked to act as someone else: maild has no proxy authorization."""


@dataclass(frozen=True)
class Credentials:
    authcid: str  # the user name as the client gave it
    password: str
    authzid: str
    mechanism: str


def initial_response(text: str | bytes | None) -> bytes | None:
    """The initial response of SMTP AUTH (RFC 4954 §4), IMAP SASL-IR (RFC 4959 §3) or POP3
    AUTH (RFC 5034 §4) as the exchange takes it: None when absent, b"" for "="."""
    if text is None:
        return None
    raw = text.encode("ascii", "replace") if isinstance(text, str) else text
    return b"" if raw.strip() == b"=" else raw


def _b64(data: bytes) -> bytes:
    try:
        return base64.b64decode(data.strip(), validate=True)
    except binascii.Error:
        raise Malformed("Invalid base64 in response") from None


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed("Credentials are not UTF-8") from None


class Exchange:
    """One SASL exchange on the server side; :meth:`step` takes each client response."""

    mechanism = ""

    def step(self, response: bytes | None) -> bytes | Credentials:
        if response is not None and response.strip() == b"*":
            raise Cancelled("Authentication cancelled")  # RFC 4422 §3.5
        return self._step(response)

    def reject(self, problem: str) -> None:
        """The protocol could not read the client's line (too long, no CRLF)."""
        raise LineProblem(problem)

    def _step(self, response: bytes | None) -> bytes | Credentials:
        raise NotImplementedError


class Plain(Exchange):
    """RFC 4616: one message, base64 of ``authzid NUL authcid NUL passwd``."""

    mechanism = "PLAIN"

    def _step(self, response: bytes | None) -> bytes | Credentials:
        if response is None:
            return b""  # RFC 4422 §5: an empty challenge asks for the initial response
        parts = _text(_b64(response)).split("\0")
        if len(parts) != 3 or not parts[1]:
            raise Malformed("PLAIN response must be authzid NUL authcid NUL passwd")
        authzid, authcid, password = parts
        if authzid and authzid.lower() != authcid.lower():
            raise AuthzidMismatch("Authorization identity must be empty or the user itself")
        return Credentials(authcid, password, authzid, self.mechanism)


class Login(Exchange):
    """draft-murchison-sasl-login: "Username:" then "Password:", each answered in base64.
    An initial response (SASL-IR, SMTP AUTH LOGIN <user>) is the user name."""

    mechanism = "LOGIN"

    def __init__(self) -> None:
        self._username: str | None = None

    def _step(self, response: bytes | None) -> bytes | Credentials:
        if self._username is None:
            if response is None:
                return b"Username:"
            self._username = _text(_b64(response))
            return b"Password:"
        if response is None:
            raise Malformed("Password expected")
        return Credentials(self._username, _text(_b64(response)), "", self.mechanism)


_EXCHANGES: dict[str, type[Exchange]] = {"PLAIN": Plain, "LOGIN": Login}


def start(mechanism: str) -> Exchange:
    exchange = _EXCHANGES.get(mechanism.upper())
    if exchange is None:
        raise UnknownMechanism("Unsupported authentication mechanism")
    return exchange()
