"""FETCH data of immutable message content, kept across commands and sessions.

A stored message never changes, so its ENVELOPE, BODYSTRUCTURE and the fields of its own
header are the same every time a client asks; clients ask again when they resync, and a
second device asks for the same. Dovecot keeps these in its cache file; maild keeps them
in memory, least recently used first out, up to ``[imap] fetch_cache_mb`` per process.

Entries are grouped per user, UIDVALIDITY, mailbox id and item (a uid is never reused
under one UIDVALIDITY), each a dict of uid -> (body tag, value); the tag
(``maild.store.views.body_tag``: the body's sha256 and the length of the per-recipient
prefix) is checked at every hit, so a uid that names other content (a node resynced
from another history) is never answered from the cache. Nothing cached for one user can
answer another user's FETCH. Groups go least recently used first; the group being added
to is never the one evicted, and what does not fit is not kept.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from itertools import islice
from typing import Any

from maild.store.types import MessageMeta
from maild.store.views import tag_of_hex

# Octets per entry besides the value's own length: the dict slot, the uid, the (tag, value)
# tuple and the tag, and the bytes object's header (sys.getsizeof, CPython 3.11).
_ENTRY_OVERHEAD = 200

Group = tuple[str, int, int, str]  # user, UIDVALIDITY, mailbox id, item


class FetchCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._groups: OrderedDict[Group, dict[int, tuple[int, bytes]]] = OrderedDict()
        self._sizes: dict[Group, int] = {}
        self._bytes = 0

    def resize(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._evict(None)

    def entries(self, user: str, uidvalidity: int, mailbox_id: int, item: str) -> dict[int, tuple[int, bytes]] | None:
        """The group's uid -> (body tag, value) dict, to look many messages up at once
        (read-only to the caller); None when nothing is kept."""
        group = (user, uidvalidity, mailbox_id, item)
        found = self._groups.get(group)
        if found is not None:
            self._groups.move_to_end(group)
        return found

    def get(self, user: str, uidvalidity: int, mailbox_id: int, meta: MessageMeta, item: str,
            make: Callable[..., bytes], *args: Any) -> bytes:
        """The cached ``item`` of the message, or ``make(meta, *args)``, remembered."""
        group = (user, uidvalidity, mailbox_id, item)
        tag = tag_of_hex(meta.blob, meta.prefix_len)
        entries = self._groups.get(group)
        if entries is not None:
            self._groups.move_to_end(group)
            hit = entries.pop(meta.uid, None)
            if hit is not None:
                entries[meta.uid] = hit  # most recently used within its group
                if hit[0] == tag:
                    return hit[1]
        value = make(meta, *args)
        size = len(value) + _ENTRY_OVERHEAD
        if size > self.max_bytes:
            return value
        self._evict(group, size)
        entries = self._groups.get(group)
        if entries is None:
            entries = self._groups[group] = {}
            self._sizes[group] = 0
        old = entries.pop(meta.uid, None)
        if old is not None:
            self._sizes[group] -= len(old[1]) + _ENTRY_OVERHEAD
            self._bytes -= len(old[1]) + _ENTRY_OVERHEAD
        entries[meta.uid] = (tag, value)
        self._sizes[group] += size
        self._bytes += size
        return value

    def _evict(self, keep: Group | None, room: int = 0) -> None:
        """Make ``room``: whole groups, least recently used first and ``keep`` (being added
        to) last; of the last group left, its oldest entries."""
        while self._groups and self._bytes + room > self.max_bytes:
            group = next(iter(self._groups))
            if group == keep and len(self._groups) > 1:
                self._groups.move_to_end(group)
                continue
            entries = self._groups[group]
            if len(self._groups) > 1 or len(entries) <= 1:  # the last group loses its oldest
                del self._groups[group]
                self._bytes -= self._sizes.pop(group)
                continue
            # Its oldest eighth at once, into a new dict: popping a dict's first item one at
            # a time leaves a run of dead slots that every later pop walks again.
            cut = max(1, len(entries) // 8)
            freed = sum(len(value) + _ENTRY_OVERHEAD for _, value in islice(entries.values(), cut))
            self._groups[group] = dict(islice(entries.items(), cut, None))
            self._sizes[group] -= freed
            self._bytes -= freed

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._groups.values())


# One per process, shared by every IMAP session (sessions run on the reactor thread); the
# IMAP factory sizes it from [imap] fetch_cache_mb.
CACHE = FetchCache(96 * 1024 * 1024)
