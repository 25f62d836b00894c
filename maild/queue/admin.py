"""What ``maild queue`` does to entries: find, retry now, delete, bounce.

These run in the CLI process next to a running daemon: every change is one
``store.queue_update``, the same atomic replace the runner uses, and the runner picks up
a retried entry at its next scan (``[outbound] poll_interval``). An entry the runner is
delivering at that moment may still be delivered by that attempt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet import defer

from maild.queue import dsn
from maild.queue.wire import Reply
from maild.store.types import NotFound

if TYPE_CHECKING:
    from maild.store import Store


def find(store: Store, entry_id: str) -> dict[str, Any]:
    """The entry with this id, or the only one whose id starts with it."""
    entry = store.queue_entry(entry_id)
    if entry is not None:
        return entry
    matches = [e for e in store.queue_entries() if e["id"].startswith(entry_id.lower())]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise NotFound(f"queue id {entry_id} is ambiguous: {len(matches)} entries match")
    raise NotFound(f"no queue entry {entry_id}")


def retry(store: Store, entry: dict[str, Any], now: float) -> defer.Deferred[None]:
    """Make the entry due now (its attempt count and backoff stay)."""
    entry["next_attempt"] = now
    return store.queue_update(entry)


def delete(store: Store, entry: dict[str, Any]) -> defer.Deferred[None]:
    """Drop the entry without telling anyone."""
    for rcpt in entry["recipients"]:
        if rcpt["state"] == "pending":
            rcpt["state"] = "deleted"
    return store.queue_update(entry)


def bounce(store: Store, entry: dict[str, Any], hostname: str, now: float) -> defer.Deferred[None]:
    """Give up on the pending recipients now: a DSN to the sender (unless null), then
    the entry is removed."""
    failed = []
    for rcpt in entry["recipients"]:
        if rcpt["state"] == "pending":
            last = f"; last error: {entry['last_error']}" if entry.get("last_error") else ""
            failed.append(dsn.Failed(rcpt["address"], Reply(
                550, (f"5.0.0 returned to the sender by the mail administrator{last}",),
                local=True)))
            rcpt["state"] = "bounced"
    d: defer.Deferred[Any] = defer.succeed(None)
    if failed and entry["sender"]:
        report = dsn.build(hostname=hostname, entry=entry, recipients=failed,
                           original=store.queue_message(entry), now=now)
        d = dsn.send(store, entry["sender"], report)
    return d.addCallback(lambda _: store.queue_update(entry))
