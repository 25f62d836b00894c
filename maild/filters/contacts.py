"""The spam allow-list's source: the addresses a user has sent mail to.

Those are the To/Cc/Bcc addresses of the messages in the user's \\Sent mailboxes (RFC 6154)
- where both submission and mail clients (IMAP APPEND of the sent copy) put them. The
store is the only record; this class keeps a per-user cache of the addresses and of the
highest uid it has read per Sent mailbox, so a lookup reads only the envelopes of messages
sent since the last one (at most MAX_ENVELOPES of them). Deleting a sent message does not
forget the address (the user did write to it).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet import defer, threads

from maild.store.types import Envelope, Mailbox, SpecialUse, StoreError
from maild.util.message import addresses

log = logging.getLogger(__name__)

# Envelopes read per Sent mailbox and lookup, newest first, so a user's first lookup over a
# huge Sent folder stays bounded (5000 take 0.1-0.4 s here, in a worker thread). Older
# correspondents are missed until the store keeps an index of contacts.
MAX_ENVELOPES = 5000


class SentMailReader(Protocol):
    """The read-only slice of maild.store.Store used here."""

    def mailboxes(self, user: str) -> list[Mailbox]: ...

    def uids(self, user: str, mailbox_id: int) -> list[int]: ...

    def envelope(self, user: str, mailbox_id: int, uid: int) -> Envelope: ...


@dataclass
class _UserContacts:
    addresses: set[str] = field(default_factory=set)
    scanned: dict[tuple[int, int], int] = field(default_factory=dict)  # (id, uidvalidity) -> uid


class SentContacts:
    """``knows`` reads the store on the reactor's thread pool (LMDB read transactions are
    per call, so thread-safe); one lock keeps the cache consistent."""

    def __init__(self, store: SentMailReader, reactor: Any) -> None:
        self.store = store
        self.reactor = reactor
        self._users: dict[str, _UserContacts] = {}
        self._lock = threading.Lock()

    def knows(self, user: str, sender: str) -> defer.Deferred[bool]:
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                         self._knows, user, sender.lower())

    def _knows(self, user: str, sender: str) -> bool:
        try:
            with self._lock:
                return sender in self.addresses(user)
        except StoreError as exc:
            log.warning("contacts of %s: %s", user, exc)
            return False

    def addresses(self, user: str) -> set[str]:
        """The user's correspondents, lower-case (blocking: call from a worker thread)."""
        contacts = self._users.setdefault(user, _UserContacts())
        for mailbox in self.store.mailboxes(user):
            if mailbox.special_use is not SpecialUse.SENT:
                continue
            key = (mailbox.id, mailbox.uidvalidity)
            last = contacts.scanned.get(key, 0)
            if mailbox.uidnext - 1 <= last:
                continue
            fresh = [uid for uid in self.store.uids(user, mailbox.id) if uid > last]
            for uid in fresh[-MAX_ENVELOPES:]:
                envelope = self.store.envelope(user, mailbox.id, uid)
                for value in (envelope.to, envelope.cc, envelope.bcc):
                    contacts.addresses.update(a.lower() for a in addresses(value or "") if "@" in a)
            contacts.scanned[key] = mailbox.uidnext - 1
        return contacts.addresses
