"""The one place where a spam score becomes an SMTP answer or a folder.

Both scorers (rspamd, and the built-in fallback) produce a :class:`SpamScore`;
:class:`SpamPolicy` maps it (docs/filters.md, "Action mapping"):

    reject                        -> 550 5.7.1, nothing stored
    soft reject                   -> 451 4.7.1 (the sender retries; rspamd's greylisting)
    add header, rewrite subject   -> delivered to "Junk" with X-Spam-* headers
    no action, greylist           -> delivered to INBOX

Per-user allow-list: when a local recipient has sent mail to the envelope sender before,
the message is never refused for spam - a reject is filed to Junk and a soft reject is
delivered as usual. A sender whose SPF or DMARC check failed gets no
allow-listing, since anyone can put a friend's address in MAIL FROM.

On the submission port (an authenticated user sending) only reject applies: outgoing mail
is not filed anywhere, and a compromised account should not relay spam.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from twisted.internet import defer

from maild.util.authresults import AuthResults
from maild.util.transaction import Transaction, Verdict

log = logging.getLogger(__name__)

JUNK_FOLDER = "Junk"


class SpamAction(enum.Enum):
    NONE = "no action"
    JUNK = "junk"
    TEMPFAIL = "tempfail"
    REJECT = "reject"


# rspamd's action names (rspamd.com/doc/configuration/metrics.html) -> ours.
RSPAMD_ACTIONS: dict[str, SpamAction] = {
    "reject": SpamAction.REJECT,
    "soft reject": SpamAction.TEMPFAIL,
    # "greylist" is a score threshold, not a verdict: rspamd's greylist module answers
    # "soft reject" while it wants the sender to retry. "greylist" itself means greylisting
    # passed or is off (no redis), and a 451 would defer such mail forever.
    "greylist": SpamAction.NONE,
    "add header": SpamAction.JUNK,
    "rewrite subject": SpamAction.JUNK,
    "no action": SpamAction.NONE,
}


@dataclass(frozen=True)
class SpamScore:
    action: SpamAction
    score: float
    required: float  # the score at which the scorer rejects
    scorer: str  # "rspamd" or "fallback"
    symbols: tuple[str, ...] = field(default=())
    junk: float | None = None  # the score at which it files to Junk, when the scorer says


class SenderAllowList(Protocol):
    """Which senders a local user corresponds with (see maild.filters.contacts)."""

    def knows(self, user: str, sender: str) -> defer.Deferred[bool]: ...


class RecipientResolver(Protocol):
    """The slice of the store the policy needs: local users behind a recipient address."""

    def resolve_recipient(self, address: str) -> list[str] | None: ...


def auth_methods(notes: Mapping[str, object]) -> dict[str, str]:
    """The RFC 8601 result word of ``spf``, ``dkim`` and ``dmarc`` in mail authentication's
    ``notes["auth_results"]``; with several DKIM signatures one pass is a pass."""
    results = notes.get("auth_results")
    if not isinstance(results, AuthResults):
        return {}
    methods: dict[str, str] = {}
    if results.spf is not None:
        methods["spf"] = results.spf.result
    if results.dkim:
        passed = any(d.result == "pass" for d in results.dkim)
        methods["dkim"] = "pass" if passed else results.dkim[0].result
    if results.dmarc is not None:
        methods["dmarc"] = results.dmarc.result
    return methods


def _status(score: SpamScore, spam: bool) -> str:
    """SpamAssassin's form: ``required`` is the threshold that makes the answer Yes (the
    Junk one), never the reject one; a scorer that does not say it (rspamd's /checkv2
    reports only the reject score) gets the action it chose instead."""
    text = f"{'Yes' if spam else 'No'}, score={score.score:.2f}"
    if score.junk is not None:
        text += f" required={score.junk:.2f}"
    else:
        text += f" action={score.action.value.replace(' ', '_')}"
    text += f" scorer={score.scorer}"
    if score.symbols:
        text += " tests=" + ",".join(score.symbols[:40])
    return text


class SpamPolicy:
    def __init__(self, recipients: RecipientResolver | None = None,
                 allow_list: SenderAllowList | None = None) -> None:
        self.recipients = recipients
        self.allow_list = allow_list

    @defer.inlineCallbacks
    def allow_listed(self, tx: Transaction):  # type: ignore[no-untyped-def]
        """True when a local recipient has written to the sender (Deferred)."""
        sender = (tx.mail_from or "").lower()
        if not sender or self.allow_list is None or self.recipients is None:
            return False
        methods = auth_methods(tx.notes)
        if methods.get("spf") == "fail" or methods.get("dmarc") == "fail":
            return False
        for rcpt in tx.rcpt_to:
            for user in self.recipients.resolve_recipient(rcpt) or []:
                known = yield self.allow_list.knows(user, sender)
                if known:
                    return True
        return False

    @defer.inlineCallbacks
    def verdict(self, tx: Transaction, score: SpamScore):  # type: ignore[no-untyped-def]
        """The Verdict for ``score`` (Deferred)."""
        tx.notes["spam"] = score
        action = score.action
        if tx.authenticated_user is not None:
            if action is SpamAction.REJECT:
                log.info("spam: refused submission from %s: score %.2f",
                         tx.authenticated_user, score.score)
                return Verdict.reject(550, "5.7.1", "Message refused as spam")
            return Verdict()
        allowed = False
        if action in (SpamAction.REJECT, SpamAction.TEMPFAIL):
            allowed = yield self.allow_listed(tx)
        if allowed:
            log.info("spam: sender %s is allow-listed, %s downgraded", tx.mail_from, action.value)
            action = SpamAction.JUNK if action is SpamAction.REJECT else SpamAction.NONE
        if action is SpamAction.REJECT:
            return Verdict.reject(550, "5.7.1", "Message refused as spam")
        if action is SpamAction.TEMPFAIL:
            return Verdict.tempfail(451, "4.7.1", "Try again later")
        spam = action is SpamAction.JUNK
        headers = [("X-Spam-Status", _status(score, spam))]
        if spam:
            headers.insert(0, ("X-Spam-Flag", "YES"))
            return Verdict(add_headers=headers, folder=JUNK_FOLDER)
        return Verdict(add_headers=headers)
