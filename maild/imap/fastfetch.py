"""FETCH of record items (UID, FLAGS, RFC822.SIZE, MODSEQ) and of a message's own header
fields (BODY.PEEK[HEADER...]) for many messages at once, from the store's packed mailbox
index (maild/store/views.py) instead of a record per message: the flag resync every client
runs on connect (FETCH 1:* (UID FLAGS)) and Thunderbird's header fetch of a folder.

Implementation notes — invariants a contributor must keep:

1. Same bytes as the general path (``FetchCommands._fetch_items``): items in the order
   asked, FLAGS with \\Recent where this session holds it, header sections from the FETCH
   cache (``maild/imap/fetchcache.py``, checked against the message's body tag). A change
   to one is a change to both; tests/imap/test_fastfetch.py compares them.
2. Only for FETCHes that change nothing (no \\Seen to set) and have no CHANGEDSINCE; the
   session's own sequence map decides which messages and numbers; a message the index no
   longer holds (expunged by another session, not yet announced) is left out and the
   answer is NO [EXPUNGEISSUED] (RFC 2180 §4.1.3), as in the general path.
3. Record-only answers are kept as formatted lines (:class:`LineCache`) per mailbox and
   item list, for the index snapshot they were made from, up to ``[imap]
   response_cache_mb``: reused while the session's sequence map is a prefix of the
   snapshot's, brought forward from an older snapshot by re-formatting only the messages
   changed since (flag changes, appends), rebuilt after an expunge.
4. Bounded memory: written CHUNK messages at a time, awaiting ``_drain`` after each.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from maild.imap import fetchcache, wire
from maild.imap.commands import FetchAtt, Section
from maild.store.types import MessageMeta, NotFound
from maild.store.views import MailboxIndex

if TYPE_CHECKING:
    from maild.imap.fetch import FetchCommands
    from maild.imap.mailbox import MailboxView

CHUNK = 2048  # messages formatted and written at a time
_LINE_OVERHEAD = 41  # octets a kept line costs besides its text: the bytes object's header, its list slot
_RECORD = {"UID": b"UID %d", "FLAGS": b"FLAGS %s", "RFC822.SIZE": b"RFC822.SIZE %d", "MODSEQ": b"MODSEQ (%d)"}
_HEADER_TEXTS = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"})
RECENT = frozenset({"\\Recent"})


@dataclass(frozen=True)
class Column:
    name: str  # a key of _RECORD, or "SECTION"
    section: Section | None = None
    label: bytes = b""  # BODY[...] for a section


def plan(attributes: tuple[FetchAtt, ...]) -> tuple[Column, ...] | None:
    """The columns of a FETCH this module answers, None for any other FETCH."""
    out = []
    for att in attributes:
        if att.name in _RECORD:
            out.append(Column(att.name))
        elif (att.name == "BODY" and att.peek and att.section is not None and att.partial is None
              and not att.section.part and att.section.text in _HEADER_TEXTS):
            out.append(Column("SECTION", att.section, b"BODY[" + str(att.section).encode("utf-8") + b"]"))
        else:
            return None
    return tuple(out)


def _template(columns: tuple[Column, ...]) -> bytes:
    parts = [c.label + b" {%d}\r\n%s" if c.name == "SECTION" else _RECORD[c.name] for c in columns]
    return b"* %d FETCH (" + b" ".join(parts) + b")\r\n"


def _values(index: MailboxIndex, columns: tuple[Column, ...], positions: Sequence[int],
            flag_bytes: list[bytes], sections: list[list[bytes]],
            recent: tuple[set[int], list[bytes]] | None = None) -> list[list[object]]:
    """Per column, the values of the messages at ``positions`` of the index (a section's
    length and octets are two). ``recent``: the session's \\Recent uids and the flag
    lists with \\Recent added, by flag-set id."""
    out: list[list[object]] = []
    at = 0
    for column in columns:
        if column.name == "UID":
            out.append(list(map(index.uids.__getitem__, positions)))
        elif column.name == "FLAGS":
            ids = map(index.flag_ids.__getitem__, positions)
            if recent is None:
                out.append(list(map(flag_bytes.__getitem__, ids)))
            else:
                held, marked = recent
                out.append([marked[f] if index.uids[p] in held else flag_bytes[f]
                            for p, f in zip(positions, ids, strict=False)])
        elif column.name == "RFC822.SIZE":
            out.append(list(map(index.sizes.__getitem__, positions)))
        elif column.name == "MODSEQ":
            out.append(list(map(index.modseqs.__getitem__, positions)))
        else:
            data = sections[at]
            at += 1
            out.append(list(map(len, data)))
            out.append(list(data))
    return out


class LineCache:
    """Formatted record-only FETCH lines of whole mailboxes (module note 3), least recently
    used first out past ``max_bytes``. Runs on the reactor thread only."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[object, ...], tuple[MailboxIndex, list[bytes], int]] = OrderedDict()
        self._bytes = 0

    def resize(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._evict()

    def get(self, key: tuple[object, ...]) -> tuple[MailboxIndex, list[bytes]] | None:
        found = self._items.get(key)
        if found is None:
            return None
        self._items.move_to_end(key)
        return found[0], found[1]

    def get_size(self, key: tuple[object, ...]) -> int:
        found = self._items.get(key)
        return 0 if found is None else found[2]

    def put(self, key: tuple[object, ...], index: MailboxIndex, lines: list[bytes], size: int) -> None:
        """``size``: the octets of the lines, plus 41 a line (bytes object and list slot)."""
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= old[2]
        if size > self.max_bytes:
            return
        self._items[key] = (index, lines, size)
        self._bytes += size
        self._evict()

    def _evict(self) -> None:
        while self._bytes > self.max_bytes and self._items:
            _, (_, _, size) = self._items.popitem(last=False)
            self._bytes -= size


# One per process, shared by every IMAP session; sized from [imap] response_cache_mb.
LINES = LineCache(32 * 1024 * 1024)


def _flag_bytes(index: MailboxIndex) -> list[bytes]:
    return [wire.flags(s) for s in index.flag_sets]


def _lines(session: FetchCommands, index: MailboxIndex, columns: tuple[Column, ...]) -> list[bytes]:
    """Every message's line of a record-only FETCH, numbered as in the index: from the
    cache, brought forward from an older snapshot, or made."""
    view = session._view()
    key = (session._user(), view.mailbox_id, index.uidvalidity, columns)
    found = LINES.get(key)
    if found is not None and found[0] is index:
        return found[1]
    template = _template(columns)
    flag_bytes = _flag_bytes(index)
    lines: list[bytes] | None = None
    size = 0
    if found is not None:
        old, old_lines = found
        n = len(old)
        if old.uidvalidity == index.uidvalidity and n <= len(index) and (
                index.uids is old.uids or index.uids[:n] == old.uids):
            # No expunge since: the numbers stand; re-format what changed and what is new.
            lines = list(old_lines)
            size = LINES.get_size(key)
            changed = session.store.changed_since(session._user(), view.mailbox_id, old.highestmodseq)
            redo = sorted({i for i in map(index.index_of, (m.uid for m in changed)) if i is not None and i < n})
            for i in redo:
                line = template % (i + 1, *(v[0] for v in _values(index, columns, [i], flag_bytes, [])))
                size += len(line) - len(lines[i])
                lines[i] = line
            fresh = range(n, len(index))
            added = list(map(template.__mod__, zip(range(n + 1, len(index) + 1),
                                                   *_values(index, columns, fresh, flag_bytes, []), strict=True)))
            lines.extend(added)
            size += sum(map(len, added)) + _LINE_OVERHEAD * len(added)
    if lines is None:
        every = _values(index, columns, range(len(index)), flag_bytes, [])
        lines = list(map(template.__mod__, zip(range(1, len(index) + 1), *every, strict=True)))
        size = sum(map(len, lines)) + _LINE_OVERHEAD * len(lines)
    LINES.put(key, index, lines, size)
    return lines


async def answer(session: FetchCommands, view: MailboxView, indexes: Sequence[int],
                 columns: tuple[Column, ...]) -> bool:
    """Answer the FETCH of the messages at ``indexes`` of the session's sequence map; False
    when the index is not available (the general path answers)."""
    from maild.imap.server import _no

    user = session._user()
    index = session.store.mailbox_index(user, view.mailbox_id)
    if index is None:
        return False
    if any(c.name == "FLAGS" for c in columns):
        session._announce_keywords(frozenset().union(*index.flag_sets[32:]))
    n = len(view.uids)
    # The map is the index's own array (taken at SELECT, kept through flag changes: views.py)
    # or else compared, uid by uid.
    prefix = view.uids is index.uids or (
        n <= len(index) and (index.uids == view.uids if n == len(index) else index.uids[:n] == view.uids))
    recent = view.recent
    missing = False
    if prefix and not recent and not any(c.name == "SECTION" for c in columns) and indexes:
        # The resync every client runs: lines kept ready (module note 3).
        lines = _lines(session, index, columns)
        for start in range(0, len(indexes), CHUNK):
            if session._closed:
                return True
            chunk = indexes[start:start + CHUNK]
            if chunk[-1] - chunk[0] + 1 == len(chunk):
                session._write(b"".join(lines[chunk[0]:chunk[-1] + 1]))
            else:
                session._write(b"".join(map(lines.__getitem__, chunk)))
            await session._drain()
        return True
    template = _template(columns)
    flag_bytes = _flag_bytes(index)
    with_recent = [wire.flags(s | RECENT) for s in index.flag_sets] if recent else None
    for start in range(0, len(indexes), CHUNK):
        if session._closed:
            return True
        chunk = indexes[start:start + CHUNK]
        if prefix:
            seqs, positions = [i + 1 for i in chunk], chunk
        else:
            found = [(i + 1, index.index_of(view.uids[i])) for i in chunk]
            missing = missing or any(p is None for _, p in found)
            seqs = [s for s, p in found if p is not None]
            positions = [p for _, p in found if p is not None]
        sections: list[list[bytes]] = []
        for column in columns:
            if column.name == "SECTION":
                data, lost = _sections(session, view, index, positions, column)
                if lost:
                    missing = True
                    keep = [k for k in range(len(positions)) if k not in lost]
                    seqs = [seqs[k] for k in keep]
                    positions = [positions[k] for k in keep]
                    sections = [[d[k] for k in keep] for d in sections]
                    data = [data[k] for k in keep]
                sections.append(data)
        values = _values(index, columns, positions, flag_bytes, sections,
                         None if with_recent is None else (recent, with_recent))
        session._write(b"".join(map(template.__mod__, zip(seqs, *values, strict=False))))
        await session._drain()
    if missing:
        raise _no("Some of the requested messages no longer exist", "EXPUNGEISSUED")
    return True


def _sections(session: FetchCommands, view: MailboxView, index: MailboxIndex, positions: Sequence[int],
              column: Column) -> tuple[list[bytes], set[int]]:
    """The header section of each message at ``positions``: from the FETCH cache when it
    holds it for the same body, else cut from the message (and remembered). Also the
    offsets into ``positions`` of messages gone from the store meanwhile."""
    user = session._user()
    item = str(column.section)
    box = fetchcache.CACHE.entries(user, view.uidvalidity, view.mailbox_id, item)
    uids = [index.uids[p] for p in positions]
    tags = index.tags
    out: list[bytes] = []
    misses: dict[int, int] = {}  # uid -> offset
    for k, (uid, p) in enumerate(zip(uids, positions, strict=True)):
        hit = box.get(uid) if box is not None else None
        if hit is not None and hit[0] == tags[p]:
            out.append(hit[1])
        else:
            out.append(b"")
            misses[uid] = k
    lost: set[int] = set(misses.values())
    if misses:
        assert column.section is not None
        metas: list[MessageMeta] = list(session.store.messages(user, view.mailbox_id, list(misses)))
        for meta in metas:
            k = misses[meta.uid]
            try:
                out[k] = session._cached(meta, item, session._own_header, column.section)
            except (FileNotFoundError, NotFound):
                continue
            lost.discard(k)
    return out, lost
