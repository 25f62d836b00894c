"""Delivery status notifications (RFC 3464) for the outbound queue, and their delivery.

Implementation notes (invariants a contributor must keep):

- Never a DSN for a message with a null envelope sender (RFC 5321 §4.5.5, RFC 3464 §2):
  that is how bounce loops are avoided. A DSN itself has the null sender.
- The report is multipart/report; report-type=delivery-status (RFC 6522) with three
  parts: a human explanation that quotes the remote server's reply, the
  message/delivery-status fields (RFC 3464 §2.2, §2.3), and the original header section
  as text/rfc822-headers (the body is not returned).
- Text from remote servers has its control characters removed before it goes into a
  header field (:attr:`maild.queue.wire.Reply.text`), so it cannot add fields.
- A DSN for a local sender is filed into the sender's INBOX with ``store.deliver``; for a
  remote sender it is enqueued like any outbound message. Either way the caller waits for
  the store's Deferred before it marks the recipients as done.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet import defer

from maild.queue.wire import Reply, normalize_line_endings
from maild.store.types import Recipient
from maild.util.dates import header_date as _date
from maild.util.message import split_header

if TYPE_CHECKING:
    from maild.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Failed:
    """One recipient in a report: its address, the reply that decided it, and the MX."""

    address: str
    reply: Reply
    remote_mta: str | None = None


def _diagnostic(reply: Reply) -> str:
    """The text of a reply maild made itself, without the status code (that is Status:)."""
    text = reply.text
    if text.startswith(reply.enhanced + " "):
        text = text[len(reply.enhanced) + 1:]
    return text or str(reply)


def build(*, hostname: str, entry: dict[str, Any], recipients: list[Failed], original: bytes,
          now: float, delayed: bool = False, retry_until: float | None = None,
          gave_up: bool = False) -> bytes:
    """The RFC 3464 report for ``recipients`` of queue ``entry``: failed (``gave_up``: the
    queue lifetime ran out), or ``delayed`` (a warning; retries go on until
    ``retry_until``)."""
    boundary = f"=_maild_{secrets.token_hex(12)}"
    action = "delayed" if delayed else "failed"
    if delayed:
        subject = "Delivery delayed: still trying"
        intro = ("Your message could not be delivered yet to the recipients below.\r\n"
                 f"{hostname} will keep trying"
                 + (f" until {_date(retry_until)}" if retry_until else "")
                 + "; you do not need to send it again.\r\n")
    elif gave_up:
        subject = "Undelivered Mail Returned to Sender"
        days = (now - entry["created"]) / 86400
        intro = ("Your message could not be delivered to the recipients below.\r\n"
                 f"{hostname} tried for {days:.1f} days and has given up; the last error is "
                 "shown.\r\n")
    else:
        subject = "Undelivered Mail Returned to Sender"
        intro = ("Your message could not be delivered to the recipients below.\r\n"
                 "This is a permanent error; it will not be retried.\r\n")
    lines = [intro, "\r\n"]
    for r in recipients:
        where = ""
        if r.remote_mta:
            where = f" (delivering to {r.remote_mta})" if r.reply.local else f" (reply from {r.remote_mta})"
        lines.append(f"<{r.address}>{where}:\r\n    {r.reply}\r\n\r\n")
    human = "".join(lines)

    # RFC 3464 §2.2: per-message fields.
    status = [f"Reporting-MTA: dns; {hostname}\r\n",
              f"X-Maild-Queue-ID: {entry['id']}\r\n",
              f"Arrival-Date: {_date(entry['created'])}\r\n"]
    for r in recipients:
        # RFC 3464 §2.3: per-recipient fields, each group after a blank line.
        status.append("\r\n")
        status.append(f"Final-Recipient: rfc822; {r.address}\r\n")
        status.append(f"Action: {action}\r\n")
        status.append(f"Status: {r.reply.enhanced}\r\n")
        if r.remote_mta and not r.reply.local:  # the reply came from that server
            status.append(f"Remote-MTA: dns; {r.remote_mta}\r\n")
            status.append(f"Diagnostic-Code: smtp; {r.reply}\r\n")
        else:  # maild decided: RFC 3464 §2.3.6 "X-" diagnostic type, as Postfix's X-Postfix
            status.append(f"Diagnostic-Code: X-maild; {_diagnostic(r.reply)}\r\n")
        status.append(f"Last-Attempt-Date: {_date(now)}\r\n")
        if delayed and retry_until:
            status.append(f"Will-Retry-Until: {_date(retry_until)}\r\n")

    headers = normalize_line_endings(split_header(original)[0]).rstrip(b"\r\n") + b"\r\n"
    eight_bit = not headers.isascii()
    top = (f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n"
           f"To: <{entry['sender']}>\r\n"
           f"Subject: {subject}\r\n"
           f"Date: {_date(now)}\r\n"
           f"Message-ID: <{secrets.token_hex(12)}@{hostname}>\r\n"
           "Auto-Submitted: auto-replied\r\n"  # RFC 3834 §5
           "MIME-Version: 1.0\r\n"
           f"Content-Type: multipart/report; report-type=delivery-status;\r\n"
           f"\tboundary=\"{boundary}\"\r\n"
           "\r\n"
           "This is a MIME-encapsulated delivery status notification.\r\n"
           f"\r\n--{boundary}\r\n"
           "Content-Type: text/plain; charset=utf-8\r\n"
           "Content-Transfer-Encoding: 8bit\r\n"
           "Content-Description: Notification\r\n\r\n"
           f"{human}"
           f"\r\n--{boundary}\r\n"
           "Content-Type: message/delivery-status\r\n"
           "Content-Description: Delivery report\r\n\r\n"
           + "".join(status) +
           f"\r\n--{boundary}\r\n"
           "Content-Type: text/rfc822-headers\r\n"
           + ("Content-Transfer-Encoding: 8bit\r\n" if eight_bit else "")
           + "Content-Description: Undelivered message headers\r\n\r\n")
    return top.encode("utf-8") + headers + f"\r\n--{boundary}--\r\n".encode()


def send(store: Store, sender: str, report: bytes) -> defer.Deferred[Any]:
    """File ``report`` for ``sender``: into the INBOX of a local sender, else the queue.
    Fires after the store has committed it."""
    if not sender:
        raise ValueError("no DSN for a null sender")  # RFC 3464 §2; callers check first
    users = store.resolve_recipient(sender)
    if users is None:
        return store.enqueue(report, "", [sender])
    if not users:
        log.warning("DSN for <%s> dropped: no such local user", sender)
        return defer.succeed(None)
    prefix = "Return-Path: <>\r\n"
    return store.deliver(report, [Recipient(user=u, mailbox="INBOX",
                                            prefix=(prefix + f"Delivered-To: {u}\r\n").encode())
                                  for u in users])
