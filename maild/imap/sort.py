"""SORT (RFC 5256 §3) with RFC 5957's DISPLAYFROM and DISPLAYTO: the messages a search
key matches, ordered by keys taken from their message records and stored envelopes.

Strings compare under i;ascii-casemap (RFC 5256 §3: ASCII letters folded, other octets
as they are), display names under i;unicode-casemap (RFC 5957 §3, here case folding).
Messages equal under every criterion keep their sequence order, REVERSE or not.

SORT ... ALL of a whole mailbox (a webmail's message list, newest first, on every page)
is answered from a remembered order: every criterion's key is immutable (a message's
envelope, internal date and size never change), so the order of the same uids is the same
order. It is kept beside the uids it was made for and used only for exactly those (the
session's own sequence map: a message added or expunged by anyone makes another list, and
another order); its response lines are kept with it. Orders share ``[imap] sort_cache_mb``
with the keys.
"""

from __future__ import annotations

import calendar
import re
import threading
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from maild.imap import mime
from maild.imap import search as searching
from maild.imap.commands import SearchKey, SearchOp, SortCriterion, SortKey
from maild.store.types import Envelope, MessageMeta
from maild.util import address

if TYPE_CHECKING:
    from maild.store import Store

# RFC 5256 §2.1 ABNF, matched case-insensitively on the decoded subject.
_BLOB = re.compile(r"\[[^\[\]]*\][ \t]*")  # subj-blob: "[" *BLOBCHAR "]" *WSP
_REFWD = re.compile(r"(?:re|fwd?)[ \t]*(?:\[[^\[\]]*\][ \t]*)?:", re.IGNORECASE)  # subj-refwd
_WHITESPACE = re.compile(r"[ \t\r\n]+")


def base_subject(subject: str | None) -> str:
    """The base subject of RFC 5256 §2.1: encoded words decoded, runs of white space made
    one space, and reply and forward markers ("Re:", "Fwd:", "[list]", "(fwd)") removed."""
    return subject_parts(subject)[0]


def subject_parts(subject: str | None) -> tuple[str, bool]:
    """The base subject, and whether the subject marks a reply or forward: whether a
    "Re:"/"Fwd:" leader, a "(fwd)" trailer or a "[fwd: ...]" wrapper came off (RFC 5256
    §2.1; a "[list]" tag alone does not make a reply).

    The steps of §2.1 move two indexes instead of cutting the text, and a run of blobs is
    read once: a hostile subject of thousands of "Re:" or "[x]" costs its length, not its
    length squared."""
    text = _WHITESPACE.sub(" ", mime.header_text(subject or ""))  # step 1
    start, end = 0, len(text)
    reply = False
    while True:
        while True:  # step 2: subj-trailer, "(fwd)" or WSP, as often as it ends the text
            while end > start and text[end - 1] in " \t":
                end -= 1
            if end - start < 5 or text[end - 5:end].lower() != "(fwd)":
                break
            end -= 5
            reply = True
        while True:  # steps 3 to 5
            while start < end and text[start] in " \t":  # a WSP subj-leader
                start += 1
            blob_ends: list[int] = []  # where each blob of the run at ``start`` ends
            while (blob := _BLOB.match(text, blob_ends[-1] if blob_ends else start, end)) is not None:
                blob_ends.append(blob.end())
            refwd = _REFWD.match(text, blob_ends[-1] if blob_ends else start, end)
            if refwd is not None:  # step 3: *subj-blob subj-refwd
                start = refwd.end()
                reply = True
                continue
            # Step 4, repeated: the blobs go one by one while text is left after them. The
            # run has no subj-refwd after it, so no leader can come off in between.
            if blob_ends:
                start = blob_ends[-1] if blob_ends[-1] < end else (blob_ends[-2] if len(blob_ends) > 1 else start)
            break
        # Step 6: "[fwd: subject]" is the subject forwarded.
        if end - start >= 6 and text[start:start + 5].lower() == "[fwd:" and text[end - 1] == "]":
            start, end = start + 5, end - 1
            reply = True
            continue
        return text[start:end], reply


def _ascii_casemap(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape").upper()  # bytes.upper() folds ASCII only


def _addr_mailbox(value: str | None) -> bytes:
    """RFC 5256 §3 FROM, TO, CC: the addr-mailbox (RFC 3501 §7.4.2) of the first address of
    the ENVELOPE: a mailbox's local part, or a group's name for its start marker."""
    first = address.first(value)
    return _ascii_casemap(first.mailbox or "" if first is not None else "")


def _display(value: str | None) -> str:
    """RFC 5957 §3: the first address's display name, or its addr-spec when it has none."""
    first = address.first(value)
    if first is None:
        return ""
    name = mime.header_text(first.name) if first.name else ""
    return (name.strip() or first.addr_spec).casefold()


# The Date header as RFC 5322 §3.3 writes it and nearly every sender does: "Wed, 3 Jan 2024
# 08:00:00 +0000", with an optional comment after the zone. Anything else goes to the
# email package's lenient parser, which takes three times as long.
_RFC5322_DATE = re.compile(r"\s*(?:[A-Za-z]{3},\s*)?(\d{1,2})\s+([A-Za-z]{3})\s+(\d{4})\s+(\d\d):(\d\d)"
                           r"(?::(\d\d))?\s+([+-])(\d\d)(\d\d)\s*(?:\([^()]*\)\s*)?")
_MONTHS = {name: number for number, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}


def sent_timestamp(value: str) -> float | None:
    """A Date header's instant in seconds since the epoch, or None when it is no date."""
    plain = _RFC5322_DATE.fullmatch(value)
    month = _MONTHS.get(plain.group(2).lower()) if plain is not None else None
    if plain is not None and month is not None:
        day, _, year, hour, minute, second, sign, zone_hours, zone_minutes = plain.groups()
        if (int(day) <= calendar.monthrange(int(year), month)[1] and int(hour) <= 23
                and int(minute) <= 59 and int(second or 0) <= 59):
            offset = (int(zone_hours) * 3600 + int(zone_minutes) * 60) * (-1 if sign == "-" else 1)
            return calendar.timegm((int(year), month, int(day), int(hour), int(minute),
                                    int(second or 0), 0, 0, 0)) - offset
    try:
        sent = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    # No zone, or "-0000" (RFC 5322 §3.3: UTC, the sender's zone unknown): UTC, not local.
    return (sent if sent.tzinfo is not None else sent.replace(tzinfo=UTC)).timestamp()


def sent_date(envelope: Envelope, meta: MessageMeta) -> float:
    """RFC 5256 §3 DATE: the Date header in UTC, or the internal date when it has none."""
    sent = sent_timestamp(envelope.date) if envelope.date else None
    return meta.internal_date if sent is None else sent


_ENVELOPE_KEYS: dict[SortKey, Callable[[Envelope, MessageMeta], Any]] = {
    SortKey.CC: lambda env, meta: _addr_mailbox(env.cc),
    SortKey.DATE: sent_date,
    SortKey.FROM: lambda env, meta: _addr_mailbox(env.from_),
    SortKey.SUBJECT: lambda env, meta: _ascii_casemap(base_subject(env.subject)),
    SortKey.TO: lambda env, meta: _addr_mailbox(env.to),
    SortKey.DISPLAYFROM: lambda env, meta: _display(env.from_),
    SortKey.DISPLAYTO: lambda env, meta: _display(env.to),
}
_RECORD_KEYS: dict[SortKey, Callable[[MessageMeta], Any]] = {
    SortKey.ARRIVAL: lambda meta: meta.internal_date,
    SortKey.SIZE: lambda meta: meta.size,
}


def matching(store: Store, user: str, mailbox_id: int, uids: list[int], key: SearchKey
             ) -> tuple[list[tuple[int, int]], dict[int, MessageMeta]]:
    """(sequence number, uid) of the messages of ``uids`` matching ``key``, in sequence
    order, and their records: what SORT and THREAD order."""
    if key.op is SearchOp.ALL:  # the common case: a whole mailbox listed in some order
        matched = [(i + 1, uid) for i, uid in enumerate(uids)]
    else:
        matched = [(seq, uid) for seq, uid, _ in searching.search(store, user, mailbox_id, uids, key)]
    metas = {m.uid: m for m in store.messages(user, mailbox_id, [uid for _, uid in matched])} if matched else {}
    return [(seq, uid) for seq, uid in matched if uid in metas], metas


# user id, UIDVALIDITY, mailbox id, and a SORT criterion or "THREAD" (thread.py's facts)
ListName = tuple[int, int, int, str]
_ENTRY_OVERHEAD = 90  # octets of a uid -> float entry (tracemalloc); bytes and str add their length
_ORDER_ENTRY = 30  # octets a message of a kept order: its seq and uid (8), its numbers in the two lines


class Ordered:
    """SORT's (sequence number, uid) pairs in sorted order, as two packed columns; a kept
    one also keeps the response lines made of it (:func:`response_line`). Never changed
    once returned: sessions of the process share a kept one."""

    __slots__ = ("seqs", "uids", "lines")

    def __init__(self, pairs: Iterable[tuple[int, int]] = ()) -> None:
        listed = list(pairs)
        self.seqs = array("I", [seq for seq, _ in listed])
        self.uids = array("I", [uid for _, uid in listed])
        self.lines: dict[bool, bytes] = {}

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(self.seqs, self.uids, strict=True)

    def __len__(self) -> int:
        return len(self.uids)


def response_line(ordered: Ordered, uid: bool) -> bytes:
    """RFC 5256 §4: ``* SORT`` and the numbers (uids for UID SORT) in sorted order."""
    line = ordered.lines.get(uid)
    if line is None:
        numbers = ordered.uids if uid else ordered.seqs
        line = ordered.lines[uid] = b"* SORT" + "".join(map(" %d".__mod__, numbers)).encode()
    return line


def _size(value: Any) -> int:
    """Octets a cached value holds beyond a float's: its text, a tuple's items."""
    if isinstance(value, bytes | str):
        return len(value)
    if isinstance(value, tuple):
        return sum(8 + _size(item) for item in value)
    return 0


class SortKeyCache:
    """Envelope sort keys of messages, a dict of uid -> key per user, mailbox and
    criterion, kept across SORT commands: a message never changes, so neither do its keys,
    and a webmail sorts the same folder on every page (THREAD keeps its facts here too).
    The user's id (never reused, unlike an address removed and added again) and
    UIDVALIDITY in the name keep a recreated user or mailbox from meeting its
    predecessor's keys. Whole lists go, least recently used first, past ``max_bytes``.
    SORT runs in the reactor's thread pool: a list is replaced, never changed in place,
    under the lock."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._lists: OrderedDict[ListName, tuple[dict[int, Any], int]] = OrderedDict()
        # (list name of the first criterion, the criteria) -> (uids, their order, octets)
        self._orders: OrderedDict[tuple[ListName, tuple[SortCriterion, ...]], tuple[array[int], Ordered, int]] = \
            OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def order(self, name: tuple[ListName, tuple[SortCriterion, ...]], uids: array[int]) -> Ordered | None:
        """The order remembered for exactly ``uids`` under ``name``, if any."""
        with self._lock:
            found = self._orders.get(name)
            if found is None or found[0] != uids:  # array ==: one C comparison
                return None
            self._orders.move_to_end(name)
            return found[1]

    def put_order(self, name: tuple[ListName, tuple[SortCriterion, ...]], uids: array[int],
                  ordered: Ordered) -> None:
        # The uids it was made for (4 octets each) and the order (_ORDER_ENTRY).
        size = len(uids) * (4 + _ORDER_ENTRY)
        with self._lock:
            old = self._orders.pop(name, None)
            if old is not None:
                self._bytes -= old[2]
            if size <= self.max_bytes:
                self._orders[name] = (uids, ordered, size)
                self._bytes += size
                self._evict()

    def resize(self, max_bytes: int) -> None:
        with self._lock:
            self.max_bytes = max_bytes
            self._evict()

    def get(self, name: ListName) -> dict[int, Any]:
        with self._lock:
            found = self._lists.get(name)
            if found is None:
                return {}
            self._lists.move_to_end(name)
            return found[0]

    def put(self, name: ListName, values: dict[int, Any], live: set[int]) -> None:
        """Remember ``values`` beside what the list held; keys of messages no longer
        ``live`` (expunged) go once they are as many as the rest."""
        with self._lock:
            old, size = self._lists.pop(name, ({}, 0))
            self._bytes -= size
            merged = {**old, **values}
            if len(merged) > 2 * len(live):
                merged = {uid: value for uid, value in merged.items() if uid in live}
            size = sum(_ENTRY_OVERHEAD + _size(v) for v in merged.values())
            if size <= self.max_bytes:
                self._lists[name] = (merged, size)
                self._bytes += size
                self._evict()

    def _evict(self) -> None:
        while self._bytes > self.max_bytes and self._orders:  # orders first: remade from the keys
            _, (_, _, size) = self._orders.popitem(last=False)
            self._bytes -= size
        while self._bytes > self.max_bytes:
            _, (_, size) = self._lists.popitem(last=False)
            self._bytes -= size


# One per process, shared by every IMAP session; the IMAP factory sizes it from
# [imap] sort_cache_mb.
CACHE = SortKeyCache(16 * 1024 * 1024)


def cached_values(store: Store, user: str, mailbox_id: int, uids: list[int], metas: dict[int, MessageMeta],
                  lists: dict[ListName, Callable[[Envelope, MessageMeta], Any]]) -> dict[ListName, dict[int, Any]]:
    """For each list, its values for the messages of ``metas``: those in the cache, and
    the rest made from their envelopes (one pass over the mailbox's for all lists) and
    remembered. ``uids`` are the mailbox's: values of messages outside it (expunged) go in
    time."""
    known = {name: CACHE.get(name) for name in lists}
    missing = {uid for uid in metas for values in known.values() if uid not in values}
    if not missing:
        return known
    empty = Envelope()
    envelopes = {uid: stored.envelope for uid, stored in store.envelopes(user, mailbox_id) if uid in missing}
    live = set(uids)
    out = {}
    for name, make in lists.items():
        fresh = {uid: make(envelopes.get(uid, empty), metas[uid]) for uid in missing if uid not in known[name]}
        CACHE.put(name, fresh, live)
        out[name] = {**known[name], **fresh}
    return out


def sort(store: Store, user: str, mailbox_id: int, uidvalidity: int, uids: Sequence[int], key: SearchKey,
         criteria: tuple[SortCriterion, ...]) -> Ordered:
    """(sequence number, uid) of the messages of ``uids`` matching ``key``, sorted. Reads
    every match's record and the envelopes of those whose keys are not in the cache: run
    off the reactor. SORT ... ALL by envelope keys all in the cache reads neither: its
    cost is the sort; a second SORT ... ALL of the same uids by the same criteria (a
    webmail's every page) is not even that (module notes)."""
    owner = store.user(user)
    if owner is None or not uids:
        return Ordered()
    if key.op is SearchOp.ALL:
        packed = uids if isinstance(uids, array) else array("I", uids)
        order_name = ((owner.id, uidvalidity, mailbox_id, "ORDER"), criteria)
        found = CACHE.order(order_name, packed)
        if found is None:
            found = Ordered(_sort(store, user, owner.id, mailbox_id, uidvalidity, uids, key, criteria))
            CACHE.put_order(order_name, packed, found)
        return found
    return Ordered(_sort(store, user, owner.id, mailbox_id, uidvalidity, uids, key, criteria))


def _sort(store: Store, user: str, owner_id: int, mailbox_id: int, uidvalidity: int, given: Sequence[int],
          key: SearchKey, criteria: tuple[SortCriterion, ...]) -> list[tuple[int, int]]:
    uids = given if isinstance(given, list) else list(given)
    names = {c.key: (owner_id, uidvalidity, mailbox_id, c.key) for c in criteria if c.key in _ENVELOPE_KEYS}
    keys: dict[Any, dict[int, Any]] | None = None
    metas: dict[int, MessageMeta] = {}
    if key.op is SearchOp.ALL and not any(c.key in _RECORD_KEYS for c in criteria):
        known = {name: CACHE.get(name) for name in names.values()}
        if all(all(map(values.__contains__, uids)) for values in known.values()):
            keys, rows = known, [(i + 1, uid) for i, uid in enumerate(uids)]
    if keys is None:
        rows, metas = matching(store, user, mailbox_id, uids, key)
        if not rows:
            return []
        keys = cached_values(store, user, mailbox_id, uids, metas,
                            {name: _ENVELOPE_KEYS[k] for k, name in names.items()})
    # Stable sorts of positions from the last criterion to the first: ties keep the order
    # the later criteria, and finally the sequence numbers, gave them (RFC 5256 §3).
    order = list(range(len(rows)))
    row_uids = [uid for _, uid in rows]
    for criterion in reversed(criteria):
        record_key = _RECORD_KEYS.get(criterion.key)
        if record_key is not None:
            values = [record_key(metas[uid]) for uid in row_uids]
        else:
            values = list(map(keys[names[criterion.key]].__getitem__, row_uids))
        order.sort(key=values.__getitem__, reverse=criterion.reverse)
    return list(map(rows.__getitem__, order))
