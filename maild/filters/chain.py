"""The SMTP filter chain: policy hooks per phase, in the spirit of aiosmtpd's handler.

The SMTP protocol core knows nothing of policy. At each phase (connect, HELO/EHLO,
MAIL FROM, RCPT TO, end of DATA) it asks the chain, which calls every filter's hook in
order. A hook returns ``None`` (no opinion) or a :class:`Verdict`, directly or through a
Deferred. The first REJECT or TEMPFAIL ends the phase; headers and the target folder
accumulate. Filters share results through ``Transaction.notes`` (mail authentication
writes ``notes["auth_results"]`` before the spam scorer reads it), so order matters and
is fixed at wiring time.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer


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


class FilterChain:
    def __init__(self, filters: list[Filter]) -> None:
        self.filters = list(filters)

    @defer.inlineCallbacks
    def run(self, phase: str, tx: Transaction, *args: Any):  # type: ignore[no-untyped-def]
        """Run hook ``on_<phase>`` of every filter; return the combined Verdict."""
        combined = Verdict()
        for flt in self.filters:
            result = yield defer.maybeDeferred(getattr(flt, f"on_{phase}"), tx, *args)
            if result is None:
                continue
            if result.action is not Action.ACCEPT:
                return result
            combined.add_headers.extend(result.add_headers)
            if result.folder is not None:
                combined.folder = result.folder
        return combined
