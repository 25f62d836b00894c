"""The indexer's one door to a shard's change log: the store's change-log API
(``store.read_changes`` / ``store.log_head``, maild/store/changelog.py)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from maild.store import ChangesTrimmed
from maild.store.types import Change

if TYPE_CHECKING:
    from maild.store import Store


class Trimmed(Exception):
    """Records after the position were trimmed from the log: resync from the store."""


def log_head(store: Store, shard: int) -> int:
    """The highest committed change-log position of the shard (0: empty)."""
    return store.log_head(shard)


def read_changes(store: Store, shard: int, after: int, limit: int = 1000) -> list[Change]:
    """Committed records with seq > after, ascending, at most ``limit``; Trimmed when the
    log no longer holds the records right after ``after``."""
    try:
        return list(store.read_changes(shard, after, limit))
    except ChangesTrimmed as exc:
        raise Trimmed(str(exc)) from None


def shard_identity(store: Store, shard: int) -> int:
    """What tells this shard's environment from another made in its place (a restore, a
    replication resync that set the old data aside): its data file's inode. An index
    built from another environment is rebuilt, whatever its cursor says."""
    s: Any = store.shards[shard]
    return os.stat(s.path / "lmdb" / "data.mdb").st_ino
