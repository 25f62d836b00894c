"""SEARCH evaluation (RFC 3501 §6.4.4, RFC 7162 §3.1.5) over the store's indexes.

Flags, sizes, dates and modseqs come from the message records, the address and subject
keys from the stored envelope; only BODY, TEXT and other HEADER fields read the message
itself, and only for the messages the cheaper keys have not already ruled out. With the
search service running (maild/search), the text keys' candidates come from its index
(plus every message it does not cover yet); the one matcher (maild/search/match.py)
decides every candidate, so the answer is the scan's either way (docs/search.md).
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, cast

from maild import search as search_service
from maild.imap import objectid, savedate
from maild.imap.commands import SearchKey, SearchOp, SequenceSet
from maild.search.index import BODY, ENVELOPE_FIELDS, HEADERS, NAMES, Needle
from maild.search.match import (
    ADDRESS_FIELDS,
    ENVELOPE_HEADERS,
    Message,
    body_contains,
    header_contains,
    needle_clauses,
    text_contains,
)
from maild.store.codec import EnvelopeFilter, StoredEnvelope
from maild.store.types import SEEN, MessageMeta, NotFound

if TYPE_CHECKING:
    from maild.search.service import MailboxReader
    from maild.store import Store

log = logging.getLogger(__name__)

_MESSAGE_OPS = {SearchOp.BODY, SearchOp.TEXT, SearchOp.HEADER, SearchOp.SENTBEFORE, SearchOp.SENTON,
                SearchOp.SENTSINCE, SearchOp.THREADID}
# OR keys whose implied clauses (one per pair of the sides' clauses) prefilter a SEARCH,
# up to this many; past it the search reads every envelope.
MAX_OR_CLAUSES = 16
_ENVELOPE_OPS = {SearchOp.HEADER, SearchOp.SENTBEFORE, SearchOp.SENTON, SearchOp.SENTSINCE, SearchOp.THREADID}


def _walk(key: SearchKey) -> list[SearchKey]:
    out = [key]
    for child in key.children:
        out.extend(_walk(child))
    return out


def reads_messages(key: SearchKey) -> bool:
    """True when ``key`` needs per-message envelope or content reads (then the caller runs
    the search off the reactor thread: 100k envelope reads take seconds)."""
    return any(k.op in _MESSAGE_OPS for k in _walk(key))


def only_unseen(key: SearchKey) -> bool:
    """UNSEEN alone: answered from the unseen index."""
    return (key.op is SearchOp.NOT and key.children[0].op is SearchOp.FLAG
            and key.children[0].value == SEEN)


def _internal_date(meta: MessageMeta) -> date:
    return datetime.fromtimestamp(meta.internal_date, UTC).date()


def _sent_date(msg: Message) -> date | None:
    value = msg.envelope().date
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).date()  # RFC 3501: disregarding time and zone
    except (TypeError, ValueError, IndexError):
        return None


def matches(key: SearchKey, msg: Message, largest_seq: int, largest_uid: int) -> bool:
    op = key.op
    meta = msg.meta
    if msg.known is not None and op in _TEXT_OPS:
        known = msg.known.get(id(key))
        if known is not None:
            return msg.uid in known  # the index's exact answer (docs/search.md)
    if op is SearchOp.ALL:
        return True
    if op is SearchOp.AND:
        return all(matches(k, msg, largest_seq, largest_uid) for k in key.children)
    if op is SearchOp.OR:
        return any(matches(k, msg, largest_seq, largest_uid) for k in key.children)
    if op is SearchOp.NOT:
        return not matches(key.children[0], msg, largest_seq, largest_uid)
    if op is SearchOp.SEQ:
        return key.value.contains(msg.seq, largest_seq)  # type: ignore[attr-defined]
    if op is SearchOp.UID:
        return key.value.contains(msg.uid, largest_uid)  # type: ignore[attr-defined]
    if op is SearchOp.RECENT:
        return False  # a session's \Recent is bound to its UIDs first (bind_recent)
    if op is SearchOp.HEADER:
        name, needle = cast(tuple[str, str], key.value)
        return header_contains(msg, name, needle)
    if op is SearchOp.BODY:
        return body_contains(msg, str(key.value))
    if op is SearchOp.TEXT:
        return text_contains(msg, str(key.value))
    if op is SearchOp.THREADID and meta is not None:  # RFC 8474 §6
        return objectid.thread_id(msg.envelope(), meta) == key.value
    if op in (SearchOp.SENTBEFORE, SearchOp.SENTON, SearchOp.SENTSINCE):
        sent = _sent_date(msg)
        if sent is None:
            return False
        return _compare(op, sent, key.value)  # type: ignore[arg-type]
    if meta is None:
        return False
    if op is SearchOp.FLAG:
        return key.value in meta.flags
    if op in (SearchOp.BEFORE, SearchOp.ON, SearchOp.SINCE):
        return _compare(op, _internal_date(meta), key.value)  # type: ignore[arg-type]
    if op is SearchOp.LARGER:
        return meta.size > key.value  # type: ignore[operator]
    if op is SearchOp.SMALLER:
        return meta.size < key.value  # type: ignore[operator]
    if op is SearchOp.MODSEQ:
        return meta.modseq >= key.value  # type: ignore[operator]
    if op is SearchOp.EMAILID:  # RFC 8474 §6
        return objectid.email_id(meta) == key.value
    if op in (SearchOp.SAVEDBEFORE, SearchOp.SAVEDON, SearchOp.SAVEDSINCE):  # RFC 8514 §5
        return _compare(op, savedate.save_day(meta), key.value)  # type: ignore[arg-type]
    if op is SearchOp.SAVEDATESUPPORTED:
        return True  # every mailbox keeps save dates
    raise AssertionError(f"unhandled search key {op}")


def _compare(op: SearchOp, value: date, target: date) -> bool:
    if op in (SearchOp.BEFORE, SearchOp.SENTBEFORE, SearchOp.SAVEDBEFORE):
        return value < target
    if op in (SearchOp.ON, SearchOp.SENTON, SearchOp.SAVEDON):
        return value == target
    return value >= target


def search(store: Store, user: str, mailbox_id: int, uids: list[int], key: SearchKey) -> list[tuple[int, int, int]]:
    """(sequence number, uid, modseq) of the messages of ``uids`` matching ``key``.
    May read envelopes and blobs: callers run it off the reactor thread when
    :func:`reads_messages`."""
    if not uids:
        return []
    if only_unseen(key):
        # The unseen index alone (expunged messages have left it); no MODSEQ is answered
        # for a search without a MODSEQ key, so no message record is read.
        unseen = set(store.unseen_uids(user, mailbox_id))
        return [(i + 1, u, 0) for i, u in enumerate(uids) if u in unseen]
    clauses = _required_clauses(key)
    rows: Iterable[tuple[int, int, StoredEnvelope | None]]
    answer = _index_filter(store, user, mailbox_id, uids, key)
    if answer is not None:
        # The search index's candidates and what it does not cover yet; the matcher below
        # decides each, or the index where it answers exactly (docs/search.md).
        if _text_only(key):
            # No key reads a message record: existence from the uid list, no MODSEQ
            # answered (no MODSEQ key), as for UNSEEN above.
            return _text_search(store, user, mailbox_id, uids, key, answer)
        rows = answer.rows(uids)
        metas = {m.uid: m for m in store.messages(user, mailbox_id, [uid for _, uid, _ in rows])}
    elif clauses:
        # Every match has, for each clause, one of its texts in some envelope field. One
        # pass over the stored envelopes keeps the messages that may; the rest of the
        # mailbox is ruled out unread.
        candidates = dict(store.envelopes(user, mailbox_id, EnvelopeFilter(clauses).admits))
        rows = [(i, uid, candidates[uid]) for i, uid in enumerate(uids) if uid in candidates]
        metas = {m.uid: m for m in store.messages(user, mailbox_id, [uid for _, uid, _ in rows])}
    else:
        # One pass over the message records: flags, dates, sizes, and the modseq CONDSTORE
        # needs for every answer; envelopes, when a key reads them, in a pass beside it.
        metas = {m.uid: m for m in store.messages(user, mailbox_id)}
        reads_envelopes = any(k.op in _ENVELOPE_OPS for k in _walk(key))
        rows = _beside(uids, store.envelopes(user, mailbox_id) if reads_envelopes else iter(()))
    largest_seq, largest_uid = len(uids), uids[-1]
    out = []
    for i, uid, stored in rows:
        meta = metas.get(uid)
        if meta is None:
            continue  # expunged by another session, not yet announced
        msg = Message(store, user, mailbox_id, uid, i + 1, meta, stored)
        if answer is not None and answer.known and answer.reader.vouches_for(uid):
            msg.known = answer.known
        try:
            if matches(key, msg, largest_seq, largest_uid):
                out.append((i + 1, uid, meta.modseq))
        except (NotFound, FileNotFoundError):
            continue  # expunged by another session while we read it (RFC 2180 §4.1)
    return out


_TEXT_OPS = {SearchOp.BODY, SearchOp.TEXT, SearchOp.HEADER}
_LOGIC_OPS = {SearchOp.AND, SearchOp.OR, SearchOp.NOT, SearchOp.ALL}


def _text_only(key: SearchKey) -> bool:
    return all(k.op in _TEXT_OPS or k.op in _LOGIC_OPS for k in _walk(key))


def _text_search(store: Store, user: str, mailbox_id: int, uids: list[int], key: SearchKey,
                 answer: _IndexAnswer) -> list[tuple[int, int, int]]:
    current: list[int] | None = store.uids(user, mailbox_id)  # ascending
    if current == uids:
        current = None  # nothing expunged unannounced: no existence checks
    largest_seq, largest_uid = len(uids), uids[-1]
    out = []
    reader = answer.reader
    texts = [k for k in _walk(key) if k.op in _TEXT_OPS]
    if not reader.verify_all and all(id(k) in answer.known for k in texts):
        # Every text key answered exactly: the messages the index vouches for are settled
        # by set algebra over its answers, only the others are read (docs/search.md).
        above = bisect.bisect_right(uids, reader.watermark)
        partial = reader.partial()
        universe: set[int] | None = None
        if any(k.op in (SearchOp.NOT, SearchOp.ALL) for k in _walk(key)):
            universe = set(uids[:above]) - partial
        settled = _settle(key, answer.known, universe)
        if len(settled) * 16 > above and not partial and current is None:
            # many, and nothing else to check (the usual case): no call per uid, and in a
            # mailbox without gaps below the watermark a uid's sequence number is its offset
            if above and uids[above - 1] - uids[0] == above - 1:
                low, high = uids[0], uids[above - 1]
                out = [(uid - low + 1, uid, 0) for uid in sorted(settled) if low <= uid <= high]
            else:
                out = [(i + 1, uid, 0) for i, uid in enumerate(uids[:above]) if uid in settled]
        elif len(settled) * 16 > above:  # many: one pass beats a bisection each
            out = [(i + 1, uid, 0) for i, uid in enumerate(uids[:above]) if uid in settled
                   and uid not in partial and _exists(current, uid)]
        else:
            for uid in sorted(settled):
                at = bisect.bisect_left(uids, uid)
                if at < above and uids[at] == uid and uid not in partial and _exists(current, uid):
                    out.append((at + 1, uid, 0))
        unsure: list[tuple[int, int, StoredEnvelope | None]] = [
            (bisect.bisect_left(uids, uid), uid, None) for uid in sorted(partial) if uid <= reader.watermark]
        unsure += [(i, uids[i], None) for i in range(above, len(uids))]
        rows = [r for r in unsure if r[0] < len(uids) and uids[r[0]] == r[1]]
    else:
        rows = answer.rows(uids)
    for i, uid, _ in rows:
        if not _exists(current, uid):
            continue  # expunged by another session, not yet announced
        msg = Message(store, user, mailbox_id, uid, i + 1, None)
        if answer.known and answer.reader.vouches_for(uid):
            msg.known = answer.known
        try:
            if matches(key, msg, largest_seq, largest_uid):
                out.append((i + 1, uid, 0))
        except (NotFound, FileNotFoundError):
            continue  # expunged by another session while we read it (RFC 2180 §4.1)
    out.sort()
    return out


def _exists(current: list[int] | None, uid: int) -> bool:
    """``uid`` is in the mailbox now (``current`` None: the session's list is)."""
    if current is None:
        return True
    at = bisect.bisect_left(current, uid)
    return at < len(current) and current[at] == uid


def _settle(key: SearchKey, known: dict[int, set[int]], universe: set[int] | None) -> set[int]:
    """The uids ``key`` matches among those the index vouches for (``universe``, needed
    only under NOT and ALL), from the exact answers of its text keys."""
    op = key.op
    if op in _TEXT_OPS:
        return known[id(key)]
    if op is SearchOp.ALL:
        assert universe is not None
        return universe
    if op is SearchOp.NOT:
        assert universe is not None
        return universe - _settle(key.children[0], known, universe)
    parts = [_settle(child, known, universe) for child in key.children]
    return set.intersection(*parts) if op is SearchOp.AND else set().union(*parts)


@dataclass
class _IndexAnswer:
    reader: MailboxReader
    hits: set[int]  # indexed messages that may match
    known: dict[int, set[int]]  # id of a text key -> its exact answer among vouched-for messages

    def rows(self, uids: list[int]) -> list[tuple[int, int, StoredEnvelope | None]]:
        """(index in ``uids``, uid, None) of the admitted: the hits (found by bisection,
        not a pass over a 100,000-message mailbox) and every uid above the watermark."""
        out: list[tuple[int, int, StoredEnvelope | None]] = []
        above = bisect.bisect_right(uids, self.reader.watermark)
        for uid in sorted(self.hits):
            at = bisect.bisect_left(uids, uid)
            if at < above and uids[at] == uid:
                out.append((at, uid, None))
        out.extend((i, uids[i], None) for i in range(above, len(uids)))
        return out


def _index_filter(store: Store, user: str, mailbox_id: int, uids: list[int], key: SearchKey
                  ) -> _IndexAnswer | None:
    """Which messages may match ``key``'s text conditions, from the search index: its hits
    and every message it does not cover yet (None when it cannot tell: no index, or no
    text condition every match must meet), and the text keys it answers exactly."""
    service = search_service.of(store)
    if service is None or not any(k.op in _TEXT_OPS for k in _walk(key)):
        return None
    mailbox = store.mailbox_by_id(user, mailbox_id)
    if mailbox is None:
        return None
    try:
        reader = service.reader(user, mailbox_id, mailbox.uidvalidity, len(uids))
        known: dict[int, set[int]] = {}
        hits = _index_hits(reader, key, known)
        if hits is None and known:
            # No constraint for the candidates (NOT BODY x: any message may match), yet
            # the index answers its text keys: every message is a candidate.
            hits = set(uids)
    except Exception:
        log.exception("search index unusable for %s: scanning", user)
        return None
    if hits is None:
        return None
    return _IndexAnswer(reader, hits, known)


def _index_hits(reader: MailboxReader, key: SearchKey, known: dict[int, set[int]]) -> set[int] | None:
    """Indexed messages that may satisfy ``key`` (None: any may): text keys from the
    index, AND as the intersection, OR as the union; NOT and other keys say nothing. The
    text keys whose answer is exact are noted in ``known``."""
    op = key.op
    if op in _TEXT_OPS:
        if op is SearchOp.HEADER:
            name, text = cast(tuple[str, str], key.value)
            attr = ENVELOPE_HEADERS.get(name.lower())
            needles = [Needle(ENVELOPE_FIELDS[attr] if attr else HEADERS, text)]
            exact = attr is not None  # another field's text is one line of the whole header
        else:
            fields = (BODY,) if op is SearchOp.BODY else (HEADERS, BODY, NAMES)
            needles = [Needle(f, str(key.value)) for f in fields]
            exact = True
        found = _union([reader.matching(n) for n in needles])
        if found is not None and exact and all(n.exact for n in needles):
            known[id(key)] = found
        return found
    if op in (SearchOp.AND, SearchOp.OR, SearchOp.NOT):
        parts = [_index_hits(reader, child, known) for child in key.children]
        if op is SearchOp.AND:
            constrained = [h for h in parts if h is not None]
            return set.intersection(*constrained) if constrained else None
        if op is SearchOp.OR:
            return _union(parts)
    return None


def _union(sets: list[set[int] | None]) -> set[int] | None:
    out: set[int] = set()
    for s in sets:
        if s is None:
            return None
        out |= s
    return out


def uid_set_key(uids: set[int] | frozenset[int]) -> SearchKey:
    """A key matching exactly ``uids`` (none when empty)."""
    if not uids:
        return SearchKey(SearchOp.NOT, children=(SearchKey(SearchOp.ALL),))
    ranges: list[tuple[int | None, int | None]] = []
    for uid in sorted(uids):
        if ranges and ranges[-1][1] == uid - 1:
            ranges[-1] = (ranges[-1][0], uid)
        else:
            ranges.append((uid, uid))
    return SearchKey(SearchOp.UID, SequenceSet(tuple(ranges)))


def bind_recent(key: SearchKey, recent: set[int]) -> SearchKey:
    """``key`` with RECENT (NEW and OLD are made of it) replaced by the session's \\Recent
    messages (RFC 3501 §6.4.4): \\Recent is session state, not in any record."""
    if not any(k.op is SearchOp.RECENT for k in _walk(key)):
        return key
    bound = uid_set_key(recent)

    def replace(k: SearchKey) -> SearchKey:
        if k.op is SearchOp.RECENT:
            return bound
        if not k.children:
            return k
        return SearchKey(k.op, k.value, tuple(replace(c) for c in k.children))
    return replace(key)


def _required_clauses(key: SearchKey) -> list[list[str]]:
    """Texts some stored envelope field must contain for ``key`` to match, as clauses each
    satisfied by any one of its texts (every clause must be). From envelope header keys,
    under AND and OR: Thunderbird's quick search is ``OR OR FROM x SUBJECT x TO x``."""
    if key.op is SearchOp.HEADER:
        name, needle = cast(tuple[str, str], key.value)
        attr = ENVELOPE_HEADERS.get(name.lower())
        return needle_clauses(needle, attr in ADDRESS_FIELDS) if attr is not None else []
    if key.op is SearchOp.AND:
        return [clause for child in key.children for clause in _required_clauses(child)]
    if key.op is SearchOp.OR:
        left, right = (_required_clauses(child) for child in key.children)
        # A match satisfies every clause of one side, so each pair's union holds.
        if left and right and len(left) * len(right) <= MAX_OR_CLAUSES:
            return [a + b for a in left for b in right]
    return []


def _beside(uids: list[int], envelopes: Iterator[tuple[int, StoredEnvelope]]
            ) -> Iterator[tuple[int, int, StoredEnvelope | None]]:
    """(index, uid, its stored envelope or None), walking ``envelopes`` (in uid order, like
    ``uids``) alongside instead of a transaction per message."""
    pending = next(envelopes, None)
    for i, uid in enumerate(uids):
        while pending is not None and pending[0] < uid:
            pending = next(envelopes, None)
        yield i, uid, pending[1] if pending is not None and pending[0] == uid else None


# The HTTP API's search (maild/api, handed this function by the wiring: front ends do not
# import each other) is IMAP SEARCH itself, not a second matcher.
TEXT_FIELDS = {"subject": "Subject", "from": "From", "to": "To", "cc": "Cc"}


def text_search(store: Store, user: str, mailbox_id: int, fields: dict[str, str]) -> list[int]:
    """UIDs of the mailbox's messages matching every one of ``fields`` ({"subject" | "from" |
    "to" | "cc" | "body" | "text": substring}) as SEARCH SUBJECT / FROM / TO / CC / BODY /
    TEXT does (RFC 3501 §6.4.4: case-insensitive substring). Reads messages: off the reactor."""
    keys = [SearchKey(SearchOp.HEADER, (TEXT_FIELDS[name], value)) if name in TEXT_FIELDS
            else SearchKey(SearchOp(name.upper()), value) for name, value in fields.items()]
    key = keys[0] if len(keys) == 1 else SearchKey(SearchOp.AND, children=tuple(keys))
    return [uid for _, uid, _ in search(store, user, mailbox_id, store.uids(user, mailbox_id), key)]
