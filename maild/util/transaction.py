"""The types the SMTP server, the filters and mail authentication share: one transaction,
the verdict a filter gives, the reply it carries, and the filter hook interface. They
live in the base layer so no service imports another for them (docs/architecture.md).

A :class:`Transaction` carries its message's parsed header section and MIME structure
(:attr:`Transaction.header`, :attr:`Transaction.mime`), parsed once per message by the
one parser (:mod:`maild.util.message`, :mod:`maild.util.mime`) and parsed again only
when a filter replaces ``raw`` (mail authentication removing forged
Authentication-Results).
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from maild.util.message import MAX_HEADER, Header, parse_header
from maild.util.mime import Structure, walk


@dataclass(frozen=True)
class Reply:
    code: int  # RFC 5321 reply code
    enhanced: str  # RFC 3463 enhanced status code, e.g. "5.7.1"
    text: str  # public text; internal reasons go to the log only


class Action(enum.Enum):
    ACCEPT = "accept"
    REJECT = "reject"
    TEMPFAIL = "tempfail"


@dataclass
class Verdict:
    action: Action = Action.ACCEPT
    reply: Reply | None = None
    add_headers: list[tuple[str, str]] = field(default_factory=list)  # prepended, in order
    folder: str | None = None  # deliver to this folder instead of INBOX (e.g. "Junk")

    @classmethod
    def reject(cls, code: int, enhanced: str, text: str) -> Verdict:
        return cls(Action.REJECT, Reply(code, enhanced, text))

    @classmethod
    def tempfail(cls, code: int, enhanced: str, text: str) -> Verdict:
        return cls(Action.TEMPFAIL, Reply(code, enhanced, text))


@dataclass
class Transaction:
    """What a filter may know about one SMTP session and its current message."""

    client_ip: str
    client_port: int
    submission: bool  # the submission listeners (587/465) rather than MX (25)
    helo: str | None = None
    tls_version: str | None = None  # e.g. "TLSv1.3"; None without TLS
    tls_cipher: str | None = None
    authenticated_user: str | None = None
    mail_from: str | None = None  # "" for the null reverse-path
    mail_params: dict[str, str | None] = field(default_factory=dict)
    rcpt_to: list[str] = field(default_factory=list)  # accepted recipients so far
    raw: bytes | None = None  # the message, CRLF line endings, at end of DATA only
    notes: dict[str, Any] = field(default_factory=dict)
    esmtp: bool = False  # the client greeted with EHLO (RFC 5321 §4.1.1.1)
    queue_id: str = ""  # this message's id, as in the Received: header and the logs
    _header: Header | None = field(default=None, repr=False, compare=False)
    _mime: Structure | None = field(default=None, repr=False, compare=False)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "raw":
            # A replaced message is dropped with its parses: they hold the old octets, a
            # second copy of a large message otherwise (docs/smtp.md, "Memory per message").
            object.__setattr__(self, "_header", None)
            object.__setattr__(self, "_mime", None)
        object.__setattr__(self, name, value)

    @property
    def header(self) -> Header | None:
        """``raw``'s header section, parsed once (again only when ``raw`` is replaced)."""
        if self.raw is None:
            return None
        if self._header is None or self._header.raw is not self.raw:
            self._header = parse_header(self.raw, max_bytes=MAX_HEADER)
        return self._header

    @property
    def mime(self) -> Structure | None:
        """``raw``'s MIME structure, walked once (again only when ``raw`` is replaced)."""
        if self.raw is None:
            return None
        if self._mime is None or self._mime.parts[0].header.raw is not self.raw:
            self._mime = walk(self.raw)
        return self._mime


class Filter:
    """Base class: every hook has no opinion unless a subclass overrides it."""

    name = "filter"

    def on_connect(self, tx: Transaction) -> Verdict | None | Awaitable[Verdict | None]:
        return None

    def on_helo(self, tx: Transaction) -> Verdict | None | Awaitable[Verdict | None]:
        return None

    def on_mail_from(self, tx: Transaction) -> Verdict | None | Awaitable[Verdict | None]:
        return None

    def on_rcpt_to(self, tx: Transaction, rcpt: str) -> Verdict | None | Awaitable[Verdict | None]:
        return None

    def on_data(self, tx: Transaction) -> Verdict | None | Awaitable[Verdict | None]:
        return None
