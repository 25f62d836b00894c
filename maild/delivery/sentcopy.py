"""Recognising a client's copy of a message that submission already filed in Sent.

Submission files a \\Seen copy of every message in the sender's Sent (RFC 6409 flow,
``Delivery.submit``). Most desktop clients (Thunderbird with default settings, Outlook,
mutt with ``record``) then APPEND their own copy to Sent: without this, two copies. As
Gmail does, an APPEND to the Sent mailbox of a message that submission filed shortly
before - same Message-ID, same From addresses - is answered with the existing copy's
APPENDUID (RFC 4315 §3) and stores nothing.

Implementation notes (invariants a contributor must keep):

- Per user: only the APPENDing user's own Sent mailbox is looked at, so one user's
  messages can never swallow another's APPEND.
- Bounded: at most ``SCAN`` messages, the newest by UID, and only those whose internal
  date (the time submission filed them) is within ``window`` seconds; a message marked
  \\Deleted does not count (it is about to go).
- No state of its own: it reads the store, so it holds across processes and restarts,
  and the copy submission filed is committed before its 250, hence before the client's
  APPEND.
- Only a copy submission filed counts: its first field is the Received field submission
  writes (authenticated sender, by maild). Two APPENDs of one message both store.
- A message without a Message-ID never matches.
"""

from __future__ import annotations

import email.utils
from typing import Any

from maild.store.types import Mailbox, NotFound, SpecialUse
from maild.util.message import envelope_fields, header_fields, split_header

SCAN = 32  # the newest messages of Sent looked at
HEAD = 4096  # octets read of a candidate to see its first Received field


def _addresses(value: str | None) -> frozenset[str]:
    return frozenset(addr.lower() for _, addr in email.utils.getaddresses([value or ""]) if addr)


def _filed_by_submission(store: Any, user: str, mailbox_id: int, uid: int) -> bool:
    """Whether the stored message starts with the Received field submission writes
    (``received_header``: "(authenticated sender)", "by <host> (maild)")."""
    with store.open(user, mailbox_id, uid) as fh:
        head = fh.read(HEAD)
    fields = header_fields(split_header(head)[0])
    if not fields or fields[0][0].lower() != "received":
        return False
    value = fields[0][1]
    return "(authenticated sender)" in value and " (maild) with " in value


def submitted_copy(store: Any, user: str, mailbox: Mailbox, raw: bytes, now: float,
                   window: float) -> int | None:
    """The UID of the copy of ``raw`` that submission filed in ``mailbox`` (the user's
    Sent) within ``window`` seconds before ``now``, or None."""
    if window <= 0 or mailbox.special_use is not SpecialUse.SENT:
        return None
    fields = envelope_fields(raw)
    message_id = (fields.get("message_id") or "").strip()
    originators = _addresses(fields.get("from_"))
    if not message_id or not originators:
        return None
    first = max(1, mailbox.uidnext - SCAN)
    recent = [m for m in store.messages(user, mailbox.id, range(first, mailbox.uidnext))
              if m.internal_date >= now - window and "\\Deleted" not in m.flags]
    for meta in reversed(recent):  # the newest first
        try:
            envelope = store.envelope(user, mailbox.id, meta.uid)
            if ((envelope.message_id or "").strip() == message_id
                    and _addresses(envelope.from_) == originators
                    and _filed_by_submission(store, user, mailbox.id, meta.uid)):
                return meta.uid
        except NotFound:  # expunged by another session meanwhile
            continue
    return None
