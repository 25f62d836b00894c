"""The change log as the API's events read it, through one small object: the store's
durable change-log API (``log_head``, ``read_changes``; docs/architecture.md) for what a
client missed, ``store.subscribe`` for what commits from now on (every process's commits,
in seq order per shard). A client may come back with any position the log still holds,
across restarts; an older one (trimmed) or one beyond the head (a restored backup) means
resync. The log may hold a commit before its subscribers hear of it, so a client drops a
change whose position it has already seen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from maild.store.types import Change, StoreError

RETAIN = 20_000  # changes read for one client at most; further behind, re-reading is cheaper


class Trimmed(Exception):
    """Changes after the asked position are no longer all available: resync."""


class ChangeFeed:
    def __init__(self, store: Any) -> None:
        self.store = store
        self._listeners: list[Callable[[Change], None]] = []
        self._unsubscribe = store.subscribe(self._on_change)

    def close(self) -> None:
        self._unsubscribe()

    def _on_change(self, change: Change) -> None:
        for listener in list(self._listeners):
            listener(change)

    def head(self, shard: int) -> int:
        return int(self.store.log_head(shard))

    def read(self, shard: int, after: int) -> list[Change]:
        """Every change of ``shard`` with seq > ``after``, ascending; Trimmed when some are
        no longer in the log, when ``after`` is beyond the head, or when there are more
        than RETAIN of them."""
        if after > self.head(shard):
            raise Trimmed(after)
        out: list[Change] = []
        while len(out) <= RETAIN:
            try:
                batch = self.store.read_changes(shard, out[-1].seq if out else after, 1000)
            except StoreError:  # ChangesTrimmed
                raise Trimmed(after) from None
            if not batch:
                return out
            out.extend(batch)
        raise Trimmed(after)

    def listen(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        """``callback(change)`` on the reactor thread after each commit, every shard."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None
