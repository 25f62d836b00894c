"""A session's view of its selected mailbox: message sequence numbers <-> UIDs and the
changes of other sessions waiting to be announced (RFC 3501 §7.4.1, §5.2, §5.5)."""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

from maild.imap.commands import SequenceSet


class BadSequence(ValueError):
    """A message sequence number beyond the mailbox (RFC 3501 §9: BAD)."""


@dataclass
class MailboxView:
    mailbox_id: int
    name: str
    readonly: bool
    uidvalidity: int
    # Ascending; message sequence number n is uids[n - 1]. A packed array (4 octets a
    # message). At SELECT it is the store's index's own array, which nobody changes
    # (maild/store/views.py): ``uids_shared`` until the view first changes its map, when it
    # copies it (_own_uids). Nothing else may change ``uids`` in place.
    uids: array[int]
    uids_shared: bool = False
    pending_expunge: set[int] = field(default_factory=set)
    pending_new: set[int] = field(default_factory=set)
    pending_flags: set[int] = field(default_factory=set)
    # Flags our own STORE already reported, so the store's change record for it does not
    # produce a second untagged FETCH.
    echo: dict[int, frozenset[str]] = field(default_factory=dict)
    deleted: bool = False
    # RFC 3501 §2.3.2: the UIDs this session was the first to be told of (\Recent here),
    # and the highest UID it has claimed so far (see ImapSession._claim_recent).
    recent: set[int] = field(default_factory=set)
    claimed: int = 0
    # The keywords announced in FLAGS to this session (RFC 3501 §7.2.6).
    keywords: set[str] = field(default_factory=set)
    # RFC 5182 §2.1 (RFC 9051 §6.4.4): the UIDs of the last SEARCH RETURN (SAVE), "$";
    # empty at SELECT. Expunged UIDs stay in it and resolve to nothing (UIDs never return).
    saved: frozenset[int] = frozenset()

    @property
    def exists(self) -> int:
        return len(self.uids)

    def index_of(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.uids, uid)
        return i if i < len(self.uids) and self.uids[i] == uid else None

    def seq_of(self, uid: int) -> int | None:
        i = self.index_of(uid)
        return None if i is None else i + 1

    def resolve(self, sequence: SequenceSet, uid: bool) -> Sequence[int]:
        """Sorted 0-based indexes into ``uids`` named by a sequence set (one run: a range,
        not a list of 100,000 numbers)."""
        if sequence.saved:  # "$" is the same messages in either form (RFC 5182 §2.1)
            return [i for i in (self.index_of(u) for u in sorted(self.saved)) if i is not None]
        n = len(self.uids)
        if not n:
            if uid or not sequence.ranges:
                return []
            raise BadSequence("no messages in the mailbox")
        spans: list[tuple[int, int]] = []
        if uid:
            largest = self.uids[-1]
            for lo, hi in sequence.bounds(largest):
                a = bisect.bisect_left(self.uids, lo)
                b = bisect.bisect_right(self.uids, hi)
                if a < b:
                    spans.append((a, b))
        else:
            for lo, hi in sequence.bounds(n):
                if hi > n:
                    raise BadSequence(f"message sequence number {hi} does not exist")
                spans.append((lo - 1, hi))
        if len(spans) == 1:
            return range(*spans[0])
        out: set[int] = set()
        for a, b in spans:
            out.update(range(a, b))
        return sorted(out)

    def among(self, sequence: SequenceSet, uid: bool, uids: list[int]) -> list[int]:
        """Sorted 0-based indexes of those of ``uids`` (ascending) that are in the mailbox
        and named by ``sequence``: :meth:`resolve` restricted to a few candidates, at the
        cost of the candidates (CHANGEDSINCE: RFC 7162 §3.1.4.1), not of the mailbox."""
        n = len(self.uids)
        if not uid and not sequence.saved:
            if not n and sequence.ranges:
                raise BadSequence("no messages in the mailbox")
            for _, hi in sequence.bounds(n):
                if hi > n:
                    raise BadSequence(f"message sequence number {hi} does not exist")
        out = []
        largest = self.uids[-1] if n else 0
        for u in uids:
            i = self.index_of(u)
            if i is None:
                continue
            if sequence.saved:
                named = u in self.saved
            else:
                named = sequence.contains(u, largest) if uid else sequence.contains(i + 1, n)
            if named:
                out.append(i)
        return out

    # -- changes reported by the store -----------------------------------------------------

    def note_new(self, uids: tuple[int, ...]) -> None:
        last = self.uids[-1] if self.uids else 0
        self.pending_new.update(u for u in uids if u > last)

    def note_expunged(self, uids: tuple[int, ...]) -> None:
        self.pending_expunge.update(uids)

    def note_flags(self, uids: tuple[int, ...], flags: tuple[frozenset[str], ...]) -> None:
        for uid, value in zip(uids, flags, strict=False):
            if self.echo.get(uid) == value:
                del self.echo[uid]
            else:
                self.pending_flags.add(uid)

    def take_expunges(self) -> list[tuple[int, int]]:
        """Apply pending expunges; the (sequence number, uid) pairs to announce, in
        announcing order (descending, so each number is valid when its EXPUNGE is read)."""
        gone = self.pending_expunge
        self.pending_expunge = set()
        out = []
        for uid in sorted(gone, reverse=True):
            seq = self.seq_of(uid)
            if seq is not None:
                out.append((seq, uid))
            self.pending_new.discard(uid)
            self.pending_flags.discard(uid)
            self.recent.discard(uid)
            self.echo.pop(uid, None)
        if out:
            self.remove_indexes([seq - 1 for seq, _ in out])
        return out

    def _own_uids(self) -> None:
        """Copy a shared sequence map (memcpy) before the first change to it."""
        if self.uids_shared:
            self.uids = array("I", self.uids)
            self.uids_shared = False

    def remove_indexes(self, indexes: list[int]) -> None:
        if len(indexes) <= 64:  # a few: each a memmove, not a pass in Python
            self._own_uids()
            for i in sorted(set(indexes), reverse=True):
                del self.uids[i]
            return
        drop = set(indexes)
        self.uids = array("I", [u for i, u in enumerate(self.uids) if i not in drop])
        self.uids_shared = False

    def take_new(self) -> bool:
        """Add announced-able new messages; True when EXISTS must be sent."""
        fresh = sorted(self.pending_new - self.pending_expunge)
        self.pending_new.clear()
        last = self.uids[-1] if self.uids else 0
        fresh = [u for u in fresh if u > last]
        if fresh:
            self._own_uids()
            self.uids.extend(fresh)
        return bool(fresh)

    def take_flags(self) -> list[int]:
        uids = sorted(self.pending_flags - self.pending_expunge)
        self.pending_flags.clear()
        return uids
