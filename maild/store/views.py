"""Packed per-mailbox arrays: what the read paths of a large mailbox need of every message
(uid, modseq, flags, size, a tag of its body), kept ready in memory between commands, as
Dovecot keeps its index file.

Implementation notes — invariants a contributor must keep:

1. A :class:`MailboxIndex` is an immutable snapshot of one mailbox as one LMDB read
   transaction saw it: the mailbox record's UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ and message
   count, and, in uid order, parallel ``array`` columns. Nobody changes one after it is
   made; a newer state is a new object (readers on other threads keep theirs).
2. Every message change a store operation makes (append, copy, flag change, expunge) bumps
   the mailbox's HIGHESTMODSEQ in the same transaction (maild/store/operations.py), and
   nothing else changes a message record. So a snapshot is current exactly when the
   record read in the reader's own transaction shows the same UIDVALIDITY, HIGHESTMODSEQ
   and message count, whichever process or node wrote. The message count catches a repair
   that removes records without a modseq (``maild fsck``): such a state is rebuilt.
3. From an older snapshot of the same UIDVALIDITY the newer one is derived from what
   changed since its modseq: the modseq index (messages appended or changed after it,
   each listed once at its latest modseq) and the expunged index (uids expunged after
   it, kept for as long as the mailbox exists). Cost: the changes, plus one copy of the
   columns they alter (memcpy: modseqs and flag ids for flag changes; all five when
   messages come or go; the columns not copied are shared with the older snapshot, which
   is immutable too). Many changes, or a count that does not add up, rebuild from one pass.
4. :class:`IndexCache` holds the snapshots of a shard, least recently used first out past
   ``[store] mailbox_index_mb``; a snapshot larger than that is used and not kept. Beside
   each it keeps the record bytes it was last checked against: the same bytes need no
   decoding (a record that changed without a new modseq, a \\Recent claim, is decoded
   and checked as in note 2).
"""

from __future__ import annotations

import bisect
import threading
from array import array
from collections import Counter, OrderedDict
from collections.abc import Iterator
from typing import Any

import lmdb

from maild.store import codec
from maild.store.codec import jload, mbox_key, msg_key

# Flag-set ids 0..31 are the system-flag bit combinations (the record's bits); sets with
# keywords get ids from 32 on, per snapshot.
_SYSTEM_SETS = codec._FLAG_SETS
_RECORD = codec._RECORD
# Octets a snapshot costs per message: uid (4), modseq (8), flag-set id (4), size (8), tag (8).
BYTES_PER_MESSAGE = 32
_OVERHEAD = 2048  # the object, its arrays' headers, a small flag-set table
# Incremental refresh reads at most this share of the mailbox's messages; more changed:
# one pass over the mailbox instead.
REBUILD_SHARE = 4


def body_tag(sha: bytes, prefix_len: int) -> int:
    """64 bits naming a message's content: its body's sha256 (first 8 octets) and the length
    of its per-recipient prefix. Caches of immutable message data (FETCH sections) store
    it beside what they keep, to check they answer for the same message."""
    return int.from_bytes(sha[:8], "big") ^ prefix_len


def tag_of_hex(blob: str, prefix_len: int) -> int:
    """:func:`body_tag` from a MessageMeta's hex ``blob``."""
    return int(blob[:16], 16) ^ prefix_len


class MailboxIndex:
    """One mailbox's messages as packed columns, in uid order (see the module notes).

    ``flag_ids[i]`` indexes ``flag_sets``; ``tags[i]`` is :func:`body_tag` of message i."""

    __slots__ = ("uidvalidity", "uidnext", "highestmodseq", "uids", "modseqs", "flag_ids", "sizes",
                 "tags", "flag_sets", "_set_ids", "_counts", "_order_shared")

    def __init__(self, uidvalidity: int, uidnext: int, highestmodseq: int) -> None:
        self.uidvalidity = uidvalidity
        self.uidnext = uidnext
        self.highestmodseq = highestmodseq
        self.uids: array[int] = array("I")
        self.modseqs: array[int] = array("Q")
        self.flag_ids: array[int] = array("I")
        self.sizes: array[int] = array("Q")
        self.tags: array[int] = array("Q")
        self.flag_sets: list[frozenset[str]] = list(_SYSTEM_SETS)
        self._set_ids: dict[frozenset[str], int] = {}
        self._counts: dict[int, int] | None = None  # flag-set id -> messages, made on first use
        self._order_shared = False  # uids, sizes, tags are the predecessor's (_successor)

    @property
    def nbytes(self) -> int:
        return _OVERHEAD + BYTES_PER_MESSAGE * len(self.uids)

    def __len__(self) -> int:
        return len(self.uids)

    def index_of(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.uids, uid)
        return i if i < len(self.uids) and self.uids[i] == uid else None

    def flags_at(self, i: int) -> frozenset[str]:
        return self.flag_sets[self.flag_ids[i]]

    def flag_counts(self) -> dict[int, int]:
        """Messages per flag-set id: counted once per snapshot (in C), carried forward by
        :func:`refresh`."""
        if self._counts is None:
            self._counts = dict(Counter(self.flag_ids))
        return self._counts

    def count_flag(self, flag: str) -> int:
        """How many messages carry ``flag`` (STATUS DELETED, RFC 9051 §6.3.11)."""
        return sum(n for i, n in self.flag_counts().items() if flag in self.flag_sets[i])

    def _set_id(self, bits: int, data: Any, kwlen: int) -> int:
        if not kwlen:
            return bits
        flags = codec._flags(bits, data, kwlen)
        found = self._set_ids.get(flags)
        if found is None:
            found = self._set_ids[flags] = len(self.flag_sets)
            self.flag_sets.append(flags)
        return found

    def _decode(self, data: Any) -> tuple[int, int, int, int]:
        """(modseq, flag-set id, size, tag) of a message record."""
        modseq, _idate, size, bits, sha, kwlen, plen = _RECORD.unpack_from(data)
        return modseq, self._set_id(bits, data, kwlen), plen + size, body_tag(sha, plen)

    def _successor(self, record: dict[str, Any]) -> MailboxIndex:
        """The snapshot to bring up to ``record`` (:func:`_apply_changes`): a copy of the
        columns a flag change alters, the others (uids, sizes, tags) shared with this one
        until :meth:`_own_order` copies them for an append or an expunge. So a mailbox
        whose flags alone changed keeps the very uid array a session's sequence map took
        at SELECT, and the map is known to be the index's by identity, not a comparison
        of every uid (maild/imap/fastfetch.py)."""
        new = MailboxIndex(record["uidvalidity"], record["uidnext"], record["highestmodseq"])
        new.uids, new.sizes, new.tags = self.uids, self.sizes, self.tags
        new._order_shared = True
        new.modseqs = array("Q", self.modseqs)
        new.flag_ids = array("I", self.flag_ids)
        new.flag_sets = list(self.flag_sets)
        new._set_ids = dict(self._set_ids)
        return new

    def _own_order(self) -> None:
        """Copy the shared columns before messages are added or removed (invariant 1: the
        predecessor never changes)."""
        if self._order_shared:
            self.uids, self.sizes, self.tags = array("I", self.uids), array("Q", self.sizes), array("Q", self.tags)
            self._order_shared = False

    def _columns(self) -> tuple[array[int], ...]:
        return self.uids, self.modseqs, self.flag_ids, self.sizes, self.tags


def build(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], user_id: int, mailbox_id: int,
          record: dict[str, Any]) -> MailboxIndex:
    """The mailbox's index from one pass over its message records."""
    index = MailboxIndex(record["uidvalidity"], record["uidnext"], record["highestmodseq"])
    prefix = mbox_key(user_id, mailbox_id)
    end = codec.mbox_key_after(prefix)
    keys: list[bytes] = []
    modseqs, flag_ids, sizes, tags = index.modseqs, index.flag_ids, index.sizes, index.tags
    unpack = _RECORD.unpack_from
    cur = txn.cursor(db=dbs["msg"])
    if cur.set_range(prefix):
        for key, value in cur:
            if key >= end:
                break
            keys.append(key)
            modseq, _idate, size, bits, sha, kwlen, plen = unpack(value)
            modseqs.append(modseq)
            flag_ids.append(bits if not kwlen else index._set_id(bits, value, kwlen))
            sizes.append(plen + size)
            tags.append(int.from_bytes(sha[:8], "big") ^ plen)
    index.uids = array("I", codec.msg_uids(keys))
    return index


def refresh(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], user_id: int, mailbox_id: int,
            old: MailboxIndex | None, record: dict[str, Any]) -> MailboxIndex:
    """The index of the mailbox as ``record`` (read in ``txn``) describes it: ``old``
    itself when still current, else derived from ``old`` and what changed since, else
    built anew (module notes 2 and 3)."""
    if old is not None and old.uidvalidity == record["uidvalidity"]:
        if old.highestmodseq == record["highestmodseq"] and len(old) == record["messages"]:
            return old
        if old.highestmodseq < record["highestmodseq"]:
            newer = _apply_changes(txn, dbs, user_id, mailbox_id, old, record)
            if newer is not None:
                return newer
    return build(txn, dbs, user_id, mailbox_id, record)


def _since(txn: lmdb.Transaction[bytes], db: Any, user_id: int, mailbox_id: int, modseq: int) -> Iterator[bytes]:
    """The values of the mailbox's entries above ``modseq`` in a modseq-keyed index (the
    modseq index: a uid each; the expunged index: uids), in modseq order."""
    prefix = mbox_key(user_id, mailbox_id)
    cur = txn.cursor(db=db)
    if cur.set_range(codec.modseq_key(user_id, mailbox_id, modseq + 1)):
        for key, value in cur:
            if key[:8] != prefix:
                return
            yield value


def _apply_changes(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], user_id: int, mailbox_id: int,
                   old: MailboxIndex, record: dict[str, Any]) -> MailboxIndex | None:
    """``old`` brought up to ``record`` from the modseq and expunged indexes; None when
    that would read more than a rebuild, or the result does not add up."""
    budget = max(64, len(old) // REBUILD_SHARE)
    changed: list[int] = []
    for value in _since(txn, dbs["modseq"], user_id, mailbox_id, old.highestmodseq):
        changed.append(codec.read_u32(value))
        if len(changed) > budget:
            return None
    gone: list[int] = []
    for value in _since(txn, dbs["expunged"], user_id, mailbox_id, old.highestmodseq):
        gone.extend(codec.read_u32(value[i:i + 4]) for i in range(0, len(value), 4))
        if len(gone) > budget:
            return None
    new = old._successor(record)
    counts = None if old._counts is None else dict(old._counts)
    drop = sorted({i for i in map(new.index_of, gone) if i is not None}, reverse=True)
    if drop:
        new._own_order()
    for i in drop:
        if counts is not None:
            counts[new.flag_ids[i]] -= 1
        for column in new._columns():
            del column[i]
    msg = dbs["msg"]
    for uid in sorted(changed):
        raw = txn.get(msg_key(user_id, mailbox_id, uid), db=msg)
        if raw is None:  # pragma: no cover - the modseq index names live messages only
            return None
        modseq, set_id, size, tag = new._decode(raw)
        i = bisect.bisect_left(new.uids, uid)
        if counts is not None:
            counts[set_id] = counts.get(set_id, 0) + 1
        if i < len(new.uids) and new.uids[i] == uid:
            if counts is not None:
                counts[new.flag_ids[i]] -= 1
            new.modseqs[i], new.flag_ids[i] = modseq, set_id
            continue
        new._own_order()
        for column, item in zip(new._columns(), (uid, modseq, set_id, size, tag), strict=True):
            column.insert(i, item)  # new uids are the largest: an append, in practice
    if len(new) != record["messages"]:
        return None
    new._counts = counts
    return new


class IndexCache:
    """The :class:`MailboxIndex` snapshots of one shard's mailboxes, by ``user | mailbox``
    key, least recently used first out past ``max_bytes``. Reads run on the reactor and in
    worker threads: the dict is guarded by a lock, snapshots are immutable."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        # key -> (the mailbox record's bytes it was last checked against, the snapshot)
        self._items: OrderedDict[bytes, tuple[bytes, MailboxIndex]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: bytes) -> tuple[bytes, MailboxIndex] | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: bytes, stamp: bytes, index: MailboxIndex) -> MailboxIndex:
        """Keep ``index``, checked against the record bytes ``stamp``; the snapshot to use:
        one kept already for the same state (another thread built it meanwhile) stays and is
        returned, so the readers of one state share one object (a session's sequence map is
        then known to be the index's by identity: maild/imap/fastfetch.py)."""
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                old = found[1]
                if old.uidvalidity == index.uidvalidity:
                    if old.highestmodseq > index.highestmodseq:
                        return index  # another thread kept a newer one meanwhile
                    if old.highestmodseq == index.highestmodseq and len(old) == len(index):
                        self._items[key] = (stamp, old)  # the same messages (module note 2)
                        self._items.move_to_end(key)
                        return old
                del self._items[key]
                self._bytes -= old.nbytes
            if index.nbytes > self.max_bytes:
                return index
            self._items[key] = (stamp, index)
            self._bytes += index.nbytes
            while self._bytes > self.max_bytes:
                _, (_, evicted) = self._items.popitem(last=False)
                self._bytes -= evicted.nbytes
            return index

    def discard(self, key: bytes) -> None:
        with self._lock:
            found = self._items.pop(key, None)
            if found is not None:
                self._bytes -= found[1].nbytes

    @property
    def nbytes(self) -> int:
        return self._bytes


def mailbox_index(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], cache: IndexCache, user_id: int,
                  mailbox_id: int) -> MailboxIndex | None:
    """The current index of a mailbox as ``txn`` sees it (None: no such mailbox)."""
    key = mbox_key(user_id, mailbox_id)
    raw = txn.get(key, db=dbs["mbox"])
    if raw is None:
        cache.discard(key)
        return None
    found = cache.get(key)
    if found is not None and found[0] == raw:
        return found[1]  # the very record it was checked against: nothing to decode
    old = None if found is None else found[1]
    index = refresh(txn, dbs, user_id, mailbox_id, old, jload(raw))
    return cache.put(key, bytes(raw), index)
