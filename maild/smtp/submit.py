"""The end of a mail transaction, one path for every way a message comes in: the SMTP
session's end of DATA (MX and submission) and the HTTP API's ``POST /v1/messages``, which
the wiring hands :func:`submit` (front ends do not import each other, docs/architecture.md).

Implementation notes — invariants a contributor must keep:

1. Submission (RFC 6409): every address of the originator fields (From, Sender, Resent-From,
   Resent-Sender; RFC 5322 §3.6.2, §3.6.6) belongs to the authenticated user; Date and
   Message-ID are added when missing (§8.2-8.3); the filters' data phase signs with DKIM
   (maild/mailauth/filter.py); :meth:`maild.delivery.Delivery.submit` queues remote
   recipients durably and files local copies and the \\Seen copy in Sent.
2. A header section that does not name one author unambiguously, or MIME nested deeper
   than ``MAX_DEPTH``, is refused 554 5.6.0 before any filter runs.
3. Durability: the 250 (the API's 202) is returned only after the store's Deferred fired.
4. The caller answers the returned :class:`Reply`; refusals by a filter are also handed
   to ``refused`` (the SMTP session's ``NOQUEUE: reject:`` log line).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from maild.config import SmtpConfig
from maild.delivery import complete_submission, new_queue_id
from maild.store.types import QuotaExceeded, ReadOnlyStore, ReplicaTimeout, StoreFull, User
from maild.util import metrics
from maild.util.limits import TokenBuckets, TreeTokenBuckets
from maild.util.message import MAX_HEADER, ORIGINATOR_FIELDS, author_problem, originators
from maild.util.mime import MAX_DEPTH, MAX_PARTS
from maild.util.transaction import Action, Reply, Transaction, Verdict

if TYPE_CHECKING:
    from maild.context import ServerContext

log = logging.getLogger("maild.smtp.server")


class Rates:
    """The message rates of a listener section (token buckets per client IP and per
    authenticated user), shared by its listeners and, for submission, by the HTTP API;
    counted across the worker processes when there are several (``tree``)."""

    def __init__(self, config: SmtpConfig, clock: Any, tree: Any = None, section: str = "smtp") -> None:
        if tree is None:
            self.per_ip: TokenBuckets = TokenBuckets(config.messages_per_minute_per_ip, clock)
            self.per_user: TokenBuckets = TokenBuckets(config.messages_per_minute_per_user, clock)
        else:
            self.per_ip = TreeTokenBuckets(config.messages_per_minute_per_ip, clock, tree, f"{section} rate ip")
            self.per_user = TreeTokenBuckets(config.messages_per_minute_per_user, clock, tree,
                                             f"{section} rate user")


def refusal(verdict: Verdict) -> Reply | None:
    """The reply of a REJECT or TEMPFAIL verdict; None for ACCEPT."""
    if verdict.action is Action.ACCEPT:
        return None
    return verdict.reply or (Reply(550, "5.7.1", "Rejected by policy") if verdict.action is Action.REJECT
                             else Reply(451, "4.7.1", "Try again later"))


def malformed(tx: Transaction) -> Reply | None:
    """RFC 7489 §6.6.1, RFC 5322 §3.6: the author must be unambiguous, since From is
    what DMARC judges and what the user is shown; RFC 2046 nesting within MAX_DEPTH
    (and MAX_PARTS) so every MIME walker sees every part. Permanent: resending the same
    message cannot help."""
    assert tx.header is not None
    if tx.header.truncated:
        return Reply(554, "5.6.0", f"Message header is larger than {MAX_HEADER} octets")
    problem = author_problem(tx.header)
    if problem is not None:
        return Reply(554, "5.6.0", problem)
    assert tx.mime is not None
    if tx.mime.big_header:
        return Reply(554, "5.6.0", f"MIME part header is larger than {MAX_HEADER} octets")
    if tx.mime.too_deep:
        return Reply(554, "5.6.0", f"MIME parts nested more than {MAX_DEPTH} levels deep")
    if tx.mime.too_many:
        return Reply(554, "5.6.0", f"Message has more than {MAX_PARTS} MIME parts")
    return None


def originator_not_owned(ctx: ServerContext, user: User, tx: Transaction) -> str | None:
    """RFC 6409 §8.1-style sender check: every address of every originator field
    (From, Sender, Resent-From, Resent-Sender; RFC 5322 §3.6.2, §3.6.6) is the
    authenticated user's. The name of the first field that is not, or None."""
    assert tx.header is not None
    owned = {a.lower() for a in ctx.store.addresses_of(user.address)}
    found = originators(tx.header)
    for name in ORIGINATOR_FIELDS:
        if any(a.lower() not in owned for a in found.get(name, [])):
            return "-".join(w.capitalize() for w in name.split("-")) + ":"
    return None


async def accept_message(ctx: ServerContext, tx: Transaction, body: bytes, user: User | None,
                         local_rcpts: list[str], remote_rcpts: list[str],
                         refused: Callable[[Reply], None], service: str) -> Reply:
    """End of DATA: check, filter, stamp and store or queue ``body``; the reply to give."""
    tx.raw = body
    # Submission: an address the user does not own is the clearer answer, so first.
    field = originator_not_owned(ctx, user, tx) if user is not None else None
    if field is not None:
        return Reply(553, "5.7.1", f"{field} header address not owned by the authenticated user")
    problem = malformed(tx)
    if problem is not None:
        return problem
    if user is not None:
        tx.raw = body = complete_submission(body, ctx.config.hostname, header=tx.header)
    verdict = await ctx.filters.run("data", tx)
    reply = refusal(verdict)
    if reply is not None:
        refused(reply)
        return reply
    delivery = ctx.delivery
    # Filters may rewrite the message (mail authentication removes forged
    # Authentication-Results claiming our authserv-id, RFC 8601 §5): store tx.raw.
    message = delivery.stamp(tx, tx.raw or body, verdict.add_headers)
    try:
        if user is not None:
            await delivery.submit(tx, message, local_rcpts, remote_rcpts, user)
        else:
            await delivery.deliver(tx, message, local_rcpts, verdict.folder)
    except QuotaExceeded:
        return Reply(552, "5.2.2", "Mailbox full")
    except StoreFull:
        log.error("store full: refusing message %s", tx.queue_id)
        return Reply(452, "4.3.1", "Insufficient system storage")
    except (ReadOnlyStore, ReplicaTimeout) as exc:  # docs/replication.md: the sender retries
        log.warning("replication: not acknowledging %s: %s", tx.queue_id, exc)
        return Reply(451, "4.3.0", "Not confirmed by the replica, try again later")
    log.info("accepted %s from=<%s> rcpts=%d size=%d", tx.queue_id, tx.mail_from,
             len(tx.rcpt_to), sum(map(len, message)), extra={"maild_queue_id": tx.queue_id})
    metrics.SMTP_ACCEPTED.labels(service).inc()
    return Reply(250, "2.0.0", f"Ok: queued as {tx.queue_id}")


async def submit(ctx: ServerContext, tx: Transaction, user: User, recipients: list[str],
                 body: bytes) -> Reply:
    """A whole submission transaction for a caller that is not an SMTP session (the HTTP
    API): what MAIL FROM and RCPT TO check on the submission port, then
    :func:`accept_message`. ``tx`` carries the client address and the envelope sender."""
    if ctx.read_only:
        return Reply(451, "4.3.0", "This server is a read-only replica, try again later")
    if len(body) > ctx.config.submission.max_message_size:
        return Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
    owned = {a.lower() for a in ctx.store.addresses_of(user.address)}
    if (tx.mail_from or "").lower() not in owned:
        return Reply(553, "5.7.1", "Sender address not owned by the authenticated user")
    if not recipients:
        return Reply(554, "5.5.1", "No valid recipients")
    if len(recipients) > ctx.config.submission.max_recipients:
        return Reply(452, "4.5.3", "Too many recipients")
    table = ctx.shared.setdefault("submission", {})  # the submission listeners' own buckets
    rates = table.get("rates")
    if rates is None:
        rates = table["rates"] = Rates(ctx.config.submission, ctx.reactor.seconds,
                                       getattr(ctx, "tree", None), "submission")
    if not rates.per_user.take(user.address):
        return Reply(451, "4.7.1", "Message rate limit exceeded, try again later")
    tx.authenticated_user = user.address
    tx.queue_id = new_queue_id()
    reply = refusal(await ctx.filters.run("mail_from", tx))
    if reply is not None:
        return reply
    local: list[str] = []
    remote: list[str] = []
    for address in recipients:
        users = ctx.store.resolve_recipient(address)
        if users is not None and not users:
            return Reply(550, "5.1.1", f"No such user here: {address}")
        reply = refusal(await ctx.filters.run("rcpt_to", tx, address))
        if reply is not None:
            return reply
        tx.rcpt_to.append(address)
        (remote if users is None else local).append(address)
    return await accept_message(ctx, tx, body, user, local, remote, lambda _: None, "api")
