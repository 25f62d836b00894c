"""SAVEDATE (RFC 8514): when a message was saved into its mailbox.

Implementation notes — invariants a contributor must keep:

1. The store records the save date in the message record whenever a message enters a
   mailbox (APPEND, delivery, COPY, MOVE: RFC 8514 §3), in ``store.operations._insert``.
2. Every mailbox supports save dates, so ``SEARCH SAVEDATESUPPORTED`` matches every message
   and FETCH SAVEDATE is never NIL (§4, §5). A message stored before maild recorded save
   dates answers its internal date, which for a delivery is its save date.
3. SAVEDBEFORE / SAVEDON / SAVEDSINCE compare the save date's day in UTC, disregarding time
   and zone, as BEFORE / ON / SINCE do for the internal date (RFC 3501 §6.4.4).
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from maild.imap import wire
from maild.store.types import MessageMeta


def save_date(meta: MessageMeta) -> float:
    return meta.internal_date if meta.save_date is None else meta.save_date


def save_day(meta: MessageMeta) -> date:
    return datetime.fromtimestamp(save_date(meta), UTC).date()


def fetch_item(meta: MessageMeta) -> bytes:
    """``SAVEDATE "dd-Mon-yyyy hh:mm:ss +0000"`` (RFC 8514 §4)."""
    return b"SAVEDATE " + wire.internal_date(save_date(meta))
