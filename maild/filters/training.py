"""Junk training: a user's copy or move into Junk teaches rspamd "spam", out of Junk "ham".

It listens to the store's committed changes: a copy or move (IMAP COPY/MOVE, the HTTP
API) is an APPEND change whose ``extra["source_mailbox_id"]`` names the source mailbox.
Junk is the mailbox with the \\Junk special use (RFC 6154), or named "Junk" when none has
it. Moving out of Junk into Trash teaches nothing: deleting spam is not calling it ham.
Mail the filters themselves filed into Junk is a plain delivery and teaches nothing
either, so rspamd never trains on its own verdicts.

Training is best effort and off the SMTP/IMAP path: at most ``concurrency`` learn requests
are in flight, each message is read from the store only when its turn comes, and failures
(rspamd down, message already expunged) are logged, not retried.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from twisted.internet import defer

from maild.filters.rspamd import RspamdError
from maild.store.types import Change, ChangeKind, Mailbox, SpecialUse, StoreError

log = logging.getLogger(__name__)


class Learner(Protocol):
    def learn(self, raw: bytes, spam: bool) -> defer.Deferred[bool]: ...


class TrainingStore(Protocol):
    """The slice of maild.store.Store used here."""

    def subscribe(self, callback: Callable[[Change], None]) -> Callable[[], None]: ...

    def mailboxes(self, user: str) -> list[Mailbox]: ...

    def mailbox_by_id(self, user: str, mailbox_id: int) -> Mailbox | None: ...

    def read(self, user: str, mailbox_id: int, uid: int) -> bytes: ...


class JunkTrainer:
    def __init__(self, store: TrainingStore, learner: Learner, concurrency: int = 2) -> None:
        self.store = store
        self.learner = learner
        self._limit = defer.DeferredSemaphore(concurrency)
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> None:
        self._unsubscribe = self.store.subscribe(self.on_change)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _is_junk(self, user: str, mailbox: Mailbox) -> bool:
        if mailbox.special_use is SpecialUse.JUNK:
            return True
        if any(m.special_use is SpecialUse.JUNK for m in self.store.mailboxes(user)):
            return False
        return mailbox.name.lower() == "junk"

    def on_change(self, change: Change) -> None:
        source_id = change.extra.get("source_mailbox_id")
        if change.kind is not ChangeKind.APPEND or not isinstance(source_id, int):
            return
        try:
            source = self.store.mailbox_by_id(change.user, source_id)
            target = self.store.mailbox_by_id(change.user, change.mailbox_id)
            if source is None or target is None:
                return
            into_junk = self._is_junk(change.user, target)
            out_of_junk = self._is_junk(change.user, source)
        except StoreError as exc:
            log.warning("junk training: %s", exc)
            return
        if into_junk == out_of_junk or target.special_use is SpecialUse.TRASH:
            return
        for uid in change.uids:
            self._limit.run(self._learn, change.user, change.mailbox_id, uid, into_junk)

    @defer.inlineCallbacks
    def _learn(self, user: str, mailbox_id: int, uid: int, spam: bool):  # type: ignore[no-untyped-def]
        kind = "spam" if spam else "ham"
        try:
            raw = self.store.read(user, mailbox_id, uid)
            learned = yield self.learner.learn(raw, spam)
        except (StoreError, RspamdError) as exc:
            log.warning("junk training: %s uid %d as %s: %s", user, uid, kind, exc)
            return
        log.info("junk training: %s uid %d %s as %s", user, uid,
                 "learned" if learned else "already known", kind)
