"""FETCH data of immutable message content, kept across commands and sessions.

A stored message never changes, so its ENVELOPE, BODYSTRUCTURE and the fields of its own
header are the same every time a client asks; clients ask again when they resync, and a
second device asks for the same. Dovecot keeps these in its cache file; maild keeps them
in memory, least recently used first out, up to ``[imap] fetch_cache_mb`` per process.

A key names the message exactly: user, UIDVALIDITY, mailbox id and uid (never reused
under one UIDVALIDITY), and the body's sha256 with the length of the per-recipient prefix.
Nothing cached for one user can answer another user's FETCH.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from maild.store.types import MessageMeta

_ENTRY_OVERHEAD = 350  # the key tuple, its sha256 string and the ordered-dict slot (tracemalloc)

Key = tuple[str, int, int, int, str, int, str]


class FetchCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Key, bytes] = OrderedDict()
        self._bytes = 0

    def resize(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._evict()

    def get(self, user: str, uidvalidity: int, mailbox_id: int, meta: MessageMeta, item: str,
            make: Callable[..., bytes], *args: Any) -> bytes:
        """The cached ``item`` of the message, or ``make(meta, *args)``, remembered."""
        key = (user, uidvalidity, mailbox_id, meta.uid, meta.blob, meta.prefix_len, item)
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
            return value
        value = make(meta, *args)
        size = len(value) + _ENTRY_OVERHEAD
        if size > self.max_bytes:
            return value
        self._items[key] = value
        self._bytes += size
        self._evict()
        return value

    def _evict(self) -> None:
        while self._bytes > self.max_bytes:
            _, evicted = self._items.popitem(last=False)
            self._bytes -= len(evicted) + _ENTRY_OVERHEAD

    def __len__(self) -> int:
        return len(self._items)


# One per process, shared by every IMAP session (sessions run on the reactor thread); the
# IMAP factory sizes it from [imap] fetch_cache_mb.
CACHE = FetchCache(32 * 1024 * 1024)
