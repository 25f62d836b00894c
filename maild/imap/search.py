"""SEARCH evaluation (RFC 3501 §6.4.4, RFC 7162 §3.1.5) over the store's indexes.

Flags, sizes, dates and modseqs come from the message records, the address and subject
keys from the stored envelope; only BODY, TEXT and other HEADER fields read the message
itself, and only for the messages the cheaper keys have not already ruled out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import TYPE_CHECKING, cast

from maild.imap import mime, objectid, savedate
from maild.imap.commands import SearchKey, SearchOp, SequenceSet
from maild.store.codec import EnvelopeFilter, StoredEnvelope
from maild.store.types import SEEN, Envelope, MessageMeta, NotFound
from maild.util import address

if TYPE_CHECKING:
    from maild.store import Store

_ENVELOPE_HEADERS = {"from": "from_", "to": "to", "cc": "cc", "bcc": "bcc", "subject": "subject",
                     "date": "date", "message-id": "message_id", "in-reply-to": "in_reply_to",
                     "sender": "sender", "reply-to": "reply_to", "references": "references"}
# Address fields: SEARCH FROM/TO/CC/BCC match the parsed addresses too (RFC 3501 §6.4.4
# "contains the specified string"; a comment or folding may split the address's text).
_ADDRESS_FIELDS = {"from_", "to", "cc", "bcc", "sender", "reply_to"}
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


class _Message:
    """Lazily loaded facts about one message during a search."""

    def __init__(self, store: Store, user: str, mailbox_id: int, uid: int, seq: int,
                 meta: MessageMeta | None, stored: StoredEnvelope | None = None) -> None:
        self.store = store
        self.user = user
        self.mailbox_id = mailbox_id
        self.uid = uid
        self.seq = seq
        self.meta = meta
        self._stored = stored  # from the search's scan of the mailbox's envelopes
        self._envelope: Envelope | None = None
        self._raw: bytes | None = None
        self._text: dict[str, str] = {}

    def envelope(self) -> Envelope:
        if self._envelope is None:
            self._envelope = (self._stored.envelope if self._stored is not None
                              else self.store.envelope(self.user, self.mailbox_id, self.uid))
        return self._envelope

    def envelope_may_contain(self, needle: str, attr: str) -> bool:
        return self._stored is None or _needle_filter(needle, attr in _ADDRESS_FIELDS).admits_stored(self._stored)

    def raw(self) -> bytes:
        if self._raw is None:
            self._raw = self.store.read(self.user, self.mailbox_id, self.uid, verify=False)
        return self._raw

    def cached(self, name: str, make: Callable[[], str]) -> str:
        if name not in self._text:
            self._text[name] = make().casefold()
        return self._text[name]


def _internal_date(meta: MessageMeta) -> date:
    return datetime.fromtimestamp(meta.internal_date, UTC).date()


def _sent_date(msg: _Message) -> date | None:
    value = msg.envelope().date
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).date()  # RFC 3501: disregarding time and zone
    except (TypeError, ValueError, IndexError):
        return None


def _header_match(msg: _Message, name: str, needle: str) -> bool:
    attr = _ENVELOPE_HEADERS.get(name.lower())
    if attr is not None:
        if not msg.envelope_may_contain(needle, attr):
            return False
        value = getattr(msg.envelope(), attr)
        if value is None:
            return False
        folded = needle.casefold()
        if folded in msg.cached("h:" + attr, lambda: mime.header_text(value)):
            return True
        # The parsed addresses only when the text did not match and could differ from them
        # (comments, quotes, groups, routes, spacing); one plain mailbox is its own parse.
        return attr in _ADDRESS_FIELDS and not address.is_simple(value) \
            and folded in msg.cached("a:" + attr, lambda: _address_text(value))
    else:
        values = [v.casefold() for v in mime.header_values(msg.raw(), name)]
        if not values:
            return False
    return any(needle.casefold() in v for v in values)


def matches(key: SearchKey, msg: _Message, largest_seq: int, largest_uid: int) -> bool:
    op = key.op
    meta = msg.meta
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
        return _header_match(msg, name, needle)
    if op is SearchOp.BODY:
        return str(key.value).casefold() in msg.cached("body", lambda: mime.body_text(msg.raw()))
    if op is SearchOp.TEXT:
        needle = str(key.value).casefold()
        return (needle in msg.cached("headers", lambda: mime.all_headers_text(msg.raw()))
                or needle in msg.cached("body", lambda: mime.body_text(msg.raw())))
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
    if clauses:
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
        msg = _Message(store, user, mailbox_id, uid, i + 1, meta, stored)
        try:
            if matches(key, msg, largest_seq, largest_uid):
                out.append((i + 1, uid, meta.modseq))
        except (NotFound, FileNotFoundError):
            continue  # expunged by another session while we read it (RFC 2180 §4.1)
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


def _address_text(value: str) -> str:
    """The parsed addresses of a header as ``Name <local@domain>, ...`` (names decoded,
    comments gone, a group by its name)."""
    out = []
    for a in address.parse(value):
        if a.is_group_end:
            continue
        name = mime.header_text(a.name) if a.name else ""
        out.append(f"{name} <{a.addr_spec}>" if name and not a.is_group_start else a.addr_spec)
    return ", ".join(out)


def _needle_clauses(needle: str, addresses: bool) -> list[list[str]]:
    """What the stored envelope must contain for ``needle`` to match: the needle, or for an
    address field each of its pieces between '@', '.' and spaces (which comments and
    folding may separate in the header)."""
    if not addresses:
        return [[needle]]
    return [[piece] for piece in re.split(r"[@.\s]+", needle) if piece]


@lru_cache(maxsize=256)
def _needle_filter(needle: str, addresses: bool = False) -> EnvelopeFilter:
    """The filter for a header key's text, made once (it is asked once per message)."""
    return EnvelopeFilter(_needle_clauses(needle, addresses))


def _required_clauses(key: SearchKey) -> list[list[str]]:
    """Texts some stored envelope field must contain for ``key`` to match, as clauses each
    satisfied by any one of its texts (every clause must be). From envelope header keys,
    under AND and OR: Thunderbird's quick search is ``OR OR FROM x SUBJECT x TO x``."""
    if key.op is SearchOp.HEADER:
        name, needle = cast(tuple[str, str], key.value)
        attr = _ENVELOPE_HEADERS.get(name.lower())
        return _needle_clauses(needle, attr in _ADDRESS_FIELDS) if attr is not None else []
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
