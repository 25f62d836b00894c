"""The spam allow-list's source: the addresses a user has sent mail to.

Those are the To/Cc/Bcc addresses of the messages in the user's \\Sent mailboxes (RFC 6154)
- where both submission and mail clients (IMAP APPEND of the sent copy) put them. The
store is the only record; this class keeps a per-user cache of the addresses and of the
highest uid it has read per Sent mailbox, so a lookup reads only the envelopes of messages
sent since the last one. Deleting a sent message does not forget the address (the user did
write to it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from email.utils import getaddresses
from typing import Protocol

from maild.store.types import Envelope, Mailbox, SpecialUse, StoreError

log = logging.getLogger(__name__)


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
    def __init__(self, store: SentMailReader) -> None:
        self.store = store
        self._users: dict[str, _UserContacts] = {}

    def knows(self, user: str, sender: str) -> bool:
        try:
            return sender.lower() in self.addresses(user)
        except StoreError as exc:
            log.warning("contacts of %s: %s", user, exc)
            return False

    def addresses(self, user: str) -> set[str]:
        contacts = self._users.setdefault(user, _UserContacts())
        for mailbox in self.store.mailboxes(user):
            if mailbox.special_use is not SpecialUse.SENT:
                continue
            key = (mailbox.id, mailbox.uidvalidity)
            last = contacts.scanned.get(key, 0)
            if mailbox.uidnext - 1 <= last:
                continue
            for uid in self.store.uids(user, mailbox.id):
                if uid <= last:
                    continue
                envelope = self.store.envelope(user, mailbox.id, uid)
                fields = [v for v in (envelope.to, envelope.cc, envelope.bcc) if v]
                contacts.addresses.update(
                    addr.lower() for _name, addr in getaddresses(fields) if "@" in addr)
            contacts.scanned[key] = mailbox.uidnext - 1
        return contacts.addresses
