"""The indexer's one door to a shard's change log (/work/wt/FOLLOW_API.md's contract).

``store.read_changes`` / ``store.log_head`` when the store has them (the change-log API);
until then a stand-in reads the shard's committed "changes" records itself, through the
shard object the store opened (read-only transactions; nothing else here touches it).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from maild.store.types import Change, ChangeKind

if TYPE_CHECKING:
    from maild.store import Store


class Trimmed(Exception):
    """Records after the position were trimmed from the log: resync from the store."""


def log_head(store: Store, shard: int) -> int:
    """The highest committed change-log position of the shard (0: empty)."""
    if hasattr(store, "log_head"):
        return int(store.log_head(shard))
    s: Any = store.shards[shard]
    with s.env.begin() as txn:
        cur = txn.cursor(db=s.dbs["changes"])
        return int.from_bytes(cur.key(), "big") if cur.last() else 0


def read_changes(store: Store, shard: int, after: int, limit: int = 1000) -> list[Change]:
    """Committed records with seq > after, ascending, at most ``limit``; raises Trimmed
    when the log no longer holds the record right after ``after``."""
    if hasattr(store, "read_changes"):
        try:
            return list(store.read_changes(shard, after, limit))
        except Exception as exc:
            if type(exc).__name__ == "ChangesTrimmed":
                raise Trimmed(str(exc)) from None
            raise
    s: Any = store.shards[shard]
    out: list[Change] = []
    with s.env.begin() as txn:
        cur = txn.cursor(db=s.dbs["changes"])
        if not cur.set_range((after + 1).to_bytes(8, "big")):
            return out
        first = True
        for key, value in cur:
            seq = int.from_bytes(key, "big")
            if first and seq != after + 1 and after > 0:
                raise Trimmed(f"change log of shard {shard} starts after {after + 1}")
            first = False
            c = json.loads(value)
            out.append(Change(shard=shard, seq=seq, kind=ChangeKind(c["kind"]), user=c["user"],
                              mailbox_id=c["mailbox_id"], uids=tuple(c.get("uids", ())),
                              modseq=c.get("modseq", 0), name=c.get("name"), extra=c.get("extra", {})))
            if len(out) >= limit:
                break
    return out


def shard_identity(store: Store, shard: int) -> int:
    """What tells this shard's environment from another made in its place (a restore, a
    replication resync that set the old data aside): its data file's inode. An index
    built from another environment is rebuilt, whatever its cursor says."""
    s: Any = store.shards[shard]
    return os.stat(s.path / "lmdb" / "data.mdb").st_ino
