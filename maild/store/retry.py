"""The local-delivery retry queue: recipients of a message that was stored for some of its
recipients and not for others (a full shard, a quota), kept durably in the directory
environment and delivered later, so the sender is answered 250 once and its retry never
duplicates the message for those who have it (docs/reliability.md, "Multi-recipient
delivery").

An entry: ``{"id", "created", "next_attempt", "attempts", "last_error", "sha", "size",
"when", "envelope", "targets": [{"user", "mailbox", "flags", "prefix"}]}``. Its body is in
``retry_body`` (bodies kept inline) or the directory's blob files (reference-counted in
``blobref`` like the outbound queue's). Entries are retried with backoff until every target
has the message; they show in ``maild status``.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable
from typing import Any

from maild.store import codec
from maild.store.codec import jdump, jload
from maild.store.writer import Batch

DB_NAMES = ("retry", "retry_body")
FIRST_DELAY = 60.0
LONGEST_DELAY = 3600.0


def next_delay(attempts: int) -> float:
    return min(FIRST_DELAY * 2 ** max(attempts - 1, 0), LONGEST_DELAY)


def target_record(user: str, mailbox: int | str, flags: frozenset[str], prefix: bytes) -> dict[str, Any]:
    return {"user": user, "mailbox": mailbox, "flags": sorted(flags),
            "prefix": base64.b64encode(prefix).decode("ascii")}


def target_prefix(target: dict[str, Any]) -> bytes:
    return base64.b64decode(target["prefix"])


def _ref(b: Batch, sha: str, delta: int) -> None:
    key = bytes.fromhex(sha)
    raw = b.txn.get(key, db=b.dbs["blobref"])
    count = (codec.read_u64(raw) if raw else 0) + delta
    if count > 0:
        b.txn.put(key, codec.u64(count), db=b.dbs["blobref"])
    else:
        b.txn.delete(key, db=b.dbs["blobref"])
        b.unlink.add(sha)


def op_add(sha: str, size: int, inline: bytes | None, envelope: dict[str, str], when: float,
           targets: list[dict[str, Any]], error: str, now: float) -> Callable[[Batch], str]:
    """Queue ``targets``; a body file must be staged with the operation (linked here)."""
    def op(b: Batch) -> str:
        entry_id = uuid.uuid4().hex[:16]
        entry = {"id": entry_id, "created": now, "next_attempt": now + next_delay(1),
                 "attempts": 0, "last_error": error, "sha": sha, "size": size, "when": when,
                 "envelope": envelope, "targets": targets, "inline": inline is not None}
        b.txn.put(entry_id.encode(), jdump(entry), db=b.dbs["retry"])
        if inline is not None:
            b.txn.put(entry_id.encode(), inline, db=b.dbs["retry_body"])
        else:
            _ref(b, sha, +1)
        return entry_id
    return op


def op_update(entry: dict[str, Any]) -> Callable[[Batch], None]:
    """Write back an entry after an attempt; one with no targets left is removed."""
    def op(b: Batch) -> None:
        key = entry["id"].encode()
        if b.txn.get(key, db=b.dbs["retry"]) is None:
            return
        if entry["targets"]:
            b.txn.put(key, jdump(entry), db=b.dbs["retry"])
            return
        b.txn.delete(key, db=b.dbs["retry"])
        if entry["inline"]:
            b.txn.delete(key, db=b.dbs["retry_body"])
        else:
            _ref(b, entry["sha"], -1)
    return op


def entries(env: Any, dbs: dict[str, Any]) -> list[dict[str, Any]]:
    with env.begin() as txn:
        return [jload(v) for _k, v in txn.cursor(db=dbs["retry"])]


def due(env: Any, dbs: dict[str, Any], now: float) -> list[dict[str, Any]]:
    return [e for e in entries(env, dbs) if e["next_attempt"] <= now]


def inline_body(env: Any, dbs: dict[str, Any], entry_id: str) -> bytes | None:
    with env.begin() as txn:
        return txn.get(entry_id.encode(), db=dbs["retry_body"])


def describe(all_entries: list[dict[str, Any]]) -> dict[str, Any]:
    oldest = min((e["created"] for e in all_entries), default=None)
    return {"entries": len(all_entries),
            "recipients": sum(len(e["targets"]) for e in all_entries),
            "oldest_age": None if oldest is None else time.time() - oldest}
