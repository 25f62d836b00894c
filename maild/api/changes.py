"""The change log as the API's events read it, through one small object.

When the store has its durable change-log API (/work/wt/FOLLOW_API.md: ``log_head``,
``read_changes``; the ``changelog`` work) the feed reads through it: a client may come
back with any position the log still holds, across restarts. Until then it is a STAND-IN
that keeps the changes this process committed since it started (``store.subscribe``), up
to ``RETAIN`` per shard; a position older than what it holds is "trimmed" and the client
resyncs. Either way live changes arrive through ``store.subscribe``, and a client drops a
change whose position it has already seen (the log may hold a commit before its
subscribers hear of it).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

from maild.store.types import Change, StoreError

RETAIN = 20_000  # changes kept per shard (stand-in); read at most per request (durable log)


class Trimmed(Exception):
    """Changes after the asked position are no longer all available: resync."""


class ChangeFeed:
    def __init__(self, store: Any) -> None:
        self.store = store
        count = len(store.shards)
        self._buffers: list[collections.deque[Change]] = [collections.deque(maxlen=RETAIN) for _ in range(count)]
        # Everything after this position is in the buffer (the log's head at start-up).
        self._floor = [self._head_at_start(i) for i in range(count)]
        self._listeners: list[Callable[[Change], None]] = []
        self._unsubscribe = store.subscribe(self._on_change)

    def _head_at_start(self, shard: int) -> int:
        log_head = getattr(self.store, "log_head", None)
        if log_head is not None:
            return int(log_head(shard))
        return int(self.store.shards[shard]._next_seq) - 1  # stand-in: the shard's own counter

    def close(self) -> None:
        self._unsubscribe()

    def _on_change(self, change: Change) -> None:
        buffer = self._buffers[change.shard]
        if len(buffer) == buffer.maxlen:
            self._floor[change.shard] = buffer[0].seq
        buffer.append(change)
        for listener in list(self._listeners):
            listener(change)

    def head(self, shard: int) -> int:
        if hasattr(self.store, "read_changes"):
            return int(self.store.log_head(shard))
        buffer = self._buffers[shard]
        return buffer[-1].seq if buffer else self._floor[shard]

    def read(self, shard: int, after: int) -> list[Change]:
        """Every change of ``shard`` with seq > ``after``, ascending; Trimmed when some are
        not held (or ``after`` is beyond the head: a position from before a restore), or
        when there are more than RETAIN of them (re-reading is cheaper for the client)."""
        if after > self.head(shard):
            raise Trimmed(after)
        if not hasattr(self.store, "read_changes"):
            if after < self._floor[shard]:
                raise Trimmed(after)
            return [c for c in self._buffers[shard] if c.seq > after]
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
