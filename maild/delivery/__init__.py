"""Local delivery and submission hand-off: the service between the SMTP front end and the
store.

Invariants:
- A message for several local users is written once: one ``store.deliver`` call with one
  :class:`Recipient` per user, whose per-recipient prefix (Return-Path, Delivered-To)
  lives in the message record, not the blob (docs/architecture.md).
- Every Deferred returned here fires only after the store has committed (fsync); the
  caller answers 250 only then (docs/smtp.md, "Durability").
- The Received: trace header (RFC 5321 §4.4) is added here, once per message, before the
  blob is written, so local copies, the Sent copy and the queued copy are the same bytes.
"""

from __future__ import annotations

import email.utils
import logging
import secrets
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from twisted.internet import defer

from maild.config import Config
from maild.store.types import AppendResult, Recipient, SpecialUse, User
from maild.util.dates import header_date
from maild.util.message import Header, parse_header
from maild.util.transaction import Transaction

if TYPE_CHECKING:
    from maild.store import Message, Store

log = logging.getLogger(__name__)


def _log_queued(entry_ids: list[str], queue_id: str | None, count: int) -> list[str]:
    """The line that links the SMTP transaction's id to the outbound queue's entries, whose
    ids the delivery attempts log (as Postfix's queue id follows a message)."""
    for entry_id in entry_ids:
        log.info("%s: queued for remote delivery as entry %s (%d recipient(s) in all)", queue_id,
                 entry_id, count, extra={"maild_queue_id": queue_id, "maild_queue_entry": entry_id})
    return entry_ids


def new_queue_id() -> str:
    return secrets.token_hex(6).upper()


def protocol_name(tx: Transaction) -> str:
    """The "with" keyword of RFC 5321 §4.4, RFC 3848 and RFC 6531 §3.7.3."""
    if "SMTPUTF8" in tx.mail_params:
        base = "UTF8SMTP"
    else:
        base = "ESMTP" if tx.esmtp else "SMTP"
    suffix = ("S" if tx.tls_version else "") + ("A" if tx.authenticated_user else "")
    if base == "SMTP" and suffix:
        base = "ESMTP"  # RFC 3848 defines the S and A forms for ESMTP only
    return base + suffix


def received_header(tx: Transaction, hostname: str, queue_id: str, now: float | None = None) -> bytes:
    """RFC 5321 §4.4 Received: with the client's HELO and IP, TLS details as a comment."""
    helo = tx.helo or "unknown"
    ip = f"IPv6:{tx.client_ip}" if ":" in tx.client_ip else tx.client_ip
    parts = [f"from {helo} ([{ip}])"]
    if tx.tls_version:
        parts.append(f"(using {tx.tls_version} with cipher {tx.tls_cipher or 'unknown'})")
    if tx.authenticated_user:
        parts.append("(authenticated sender)")
    parts.append(f"by {hostname} (maild) with {protocol_name(tx)} id {queue_id}")
    if len(tx.rcpt_to) == 1:  # one recipient only: do not disclose the others (Bcc)
        parts.append(f"for <{tx.rcpt_to[0]}>")
    date = header_date(now if now is not None else time.time())
    text = "Received: " + "\r\n\t".join(parts) + f";\r\n\t{date}\r\n"
    return text.encode("utf-8")


def complete_submission(raw: bytes, hostname: str, now: float | None = None,
                        header: Header | None = None) -> bytes:
    """RFC 6409 §8.2-8.3: add Date and Message-ID when the client left them out
    (``header``: ``raw``'s parsed header section, when the caller has it)."""
    header = header if header is not None else parse_header(raw)
    added = b""
    if header.first("Date") is None:
        date = email.utils.formatdate(now if now is not None else time.time(), localtime=True)
        added += f"Date: {date}\r\n".encode()
    if header.first("Message-ID") is None:
        added += f"Message-ID: <{secrets.token_hex(12)}@{hostname}>\r\n".encode()
    return added + raw


class Delivery:
    """``Delivery(store, config)``: the daemon builds one and puts it in the context."""

    def __init__(self, store: Store, config: Config) -> None:
        self.store = store
        self.config = config

    def stamp(self, tx: Transaction, raw: bytes,
              add_headers: Sequence[tuple[str, str]] = ()) -> list[bytes]:
        """The Received: header, then the filters' headers, then ``raw``, as the pieces the
        store writes one after the other (a large message is not copied to prepend them)."""
        queue_id = tx.queue_id or new_queue_id()
        extra = b"".join(f"{name}: {value}\r\n".encode() for name, value in add_headers)
        return [received_header(tx, self.config.hostname, queue_id) + extra, raw]

    def local_targets(self, addresses: list[str]) -> dict[str, str]:
        """Resolve local recipient addresses to {user: the address it was reached by},
        each user once (aliases expanded, +tag stripped, catch-all applied)."""
        targets: dict[str, str] = {}
        for address in addresses:
            for user in self.store.resolve_recipient(address) or []:
                targets.setdefault(user, address)
        return targets

    def _recipients(self, tx: Transaction, local_users: list[str], folder: str | None) -> list[Recipient]:
        recipients = []
        return_path = f"Return-Path: <{tx.mail_from or ''}>\r\n"
        for user in self.local_targets(local_users):
            mailbox = "INBOX"
            if folder and self.store.mailbox(user, folder) is not None:
                mailbox = folder
            prefix = return_path + f"Delivered-To: {user}\r\n"
            recipients.append(Recipient(user=user, mailbox=mailbox, prefix=prefix.encode("utf-8")))
        return recipients

    def deliver(self, tx: Transaction, raw: Message, local_users: list[str],
                folder: str | None = None) -> defer.Deferred[list[AppendResult]]:
        """Store an already stamped message for local recipients (addresses or users) in
        INBOX or ``folder``; fires after commit. Raises (through the Deferred) the store's
        QuotaExceeded / StoreFull."""
        recipients = self._recipients(tx, local_users, folder)
        if not recipients:
            return defer.succeed([])
        return self.store.deliver(raw, recipients)

    def sent_mailbox(self, user: str) -> str | None:
        for mailbox in self.store.mailboxes(user):
            if mailbox.special_use is SpecialUse.SENT:
                return mailbox.name
        return None

    def submit(self, tx: Transaction, raw: Message, local_rcpts: list[str],
               remote_rcpts: list[str], user: User | str) -> defer.Deferred[None]:
        """Submission (RFC 6409): local recipients and a \\Seen copy in the user's Sent in
        one store.deliver (one blob), remote recipients durably in the outbound queue.

        All or nothing for the sender (docs/reliability.md): the outbound queue first (a
        failure there has stored nothing: the client is answered 4xx and sends again), the
        local copies after it, those that fail going to the store's local-delivery retry
        queue, so a client's retry never sends the message twice to anyone."""
        owner = user if isinstance(user, str) else user.address
        recipients = self._recipients(tx, local_rcpts, None)
        sent = self.sent_mailbox(owner)
        if sent is not None:
            recipients.append(Recipient(user=owner, mailbox=sent, flags=frozenset({"\\Seen"})))
        if not remote_rcpts:
            if not recipients:
                return defer.succeed(None)
            return self.store.deliver(raw, recipients).addCallback(lambda _: None)
        queued = self.store.enqueue(raw, tx.mail_from or "", list(remote_rcpts))
        queued.addCallback(_log_queued, tx.queue_id, len(remote_rcpts))
        queued.addCallback(lambda ids: tx.notes.__setitem__("queue_entries", ids))  # the API's queue status
        if recipients:
            queued.addCallback(lambda _: self.store.deliver(raw, recipients, queue_failures=True))
        return queued.addCallback(lambda _: None)
