"""FETCH and UID FETCH (RFC 3501 §6.4.5, RFC 9051 §6.4.5), with CONDSTORE/QRESYNC's
CHANGEDSINCE and VANISHED (RFC 7162), BINARY (RFC 3516), PREVIEW (RFC 8970) and the
OBJECTID items (RFC 8474). :class:`FetchCommands` is a mixin of
:class:`maild.imap.server.ImapSession`, which dispatches ``_do_fetch`` to it; the session
state it reads is declared on the mixin.

Implementation notes — invariants a contributor must keep:

1. Bounded memory: every body section of a message over STREAM_ABOVE is written in
   STREAM_CHUNK pieces (``_stream``), from ``store.open`` or from the one copy of the
   message read for the FETCH (``_raw``), never copied per item. Small responses are
   batched up to STREAM_CHUNK; after each write the command awaits ``_drain``: the
   session is the transport's push producer, so a slow reader pauses the FETCH instead of
   filling memory. Once a literal's length is on the wire an error cannot be a NO: the
   session says BYE and closes.
2. Only what a message can never change goes through the FETCH cache (``_cached``:
   ENVELOPE, BODYSTRUCTURE, PREVIEW, THREADID, its own header fields), keyed by the user and
   the message's full identity; flags, modseqs and anything session-dependent are always
   read afresh. ``self._cache`` holds one message's octets (and MIME tree) for the
   duration of one FETCH only.
3. A FETCH never fails for a message another session expunged meanwhile: that message is
   left out and the answer is NO [EXPUNGEISSUED] (RFC 2180 §4.1.3).
4. BODY[] and the other non-PEEK sections set \\Seen (RFC 3501 §6.4.5) before the
   responses are written, in a writable mailbox only; when FLAGS was not asked for, the
   \\Seen set is reported with the message's FLAGS.
5. FETCHes of record items and own header fields that set nothing are answered by
   ``maild/imap/fastfetch.py`` from the store's packed mailbox index, with the same bytes
   ``_fetch_items`` would assemble; a change to one is a change to both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from maild.imap import binary, fastfetch, fetchcache, mime, objectid, preview, savedate, wire
from maild.imap.commands import Fetch, FetchAtt, Section
from maild.store.types import SEEN, FlagMode, MessageMeta, NotFound

if TYPE_CHECKING:
    from maild.imap.mailbox import MailboxView
    from maild.store import Store

log = logging.getLogger("maild.imap.server")  # the session's logger, as before the move

STREAM_CHUNK = 64 * 1024
STREAM_ABOVE = 256 * 1024  # whole bodies larger than this stream from the blob file
_HEADER_TEXTS = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"})
# FETCH items answered from the message record alone (RFC 9051 §7.5.2, RFC 7162 §3.1.4).
_RECORD_ITEMS: dict[str, Callable[[MessageMeta], bytes]] = {
    "UID": lambda meta: b"UID %d" % meta.uid,
    "FLAGS": lambda meta: b"FLAGS " + wire.flags(meta.flags),
    "RFC822.SIZE": lambda meta: b"RFC822.SIZE %d" % meta.size,
    "MODSEQ": lambda meta: b"MODSEQ (%d)" % meta.modseq,
    "INTERNALDATE": lambda meta: b"INTERNALDATE " + wire.internal_date(meta.internal_date),
    "EMAILID": lambda meta: b"EMAILID (%s)" % objectid.email_id(meta).encode(),  # RFC 8474 §5.1
    "SAVEDATE": savedate.fetch_item,  # RFC 8514 §4
}
class FetchCommands:
    """FETCH's commands and helpers, mixed into :class:`maild.imap.server.ImapSession`."""

    # Session state FETCH reads, set by ImapSession.
    store: Store
    qresync: bool
    _closed: bool
    _cache: tuple[int, bytes, mime.Part | None] | None  # uid, raw, parsed: one FETCH's message

    if TYPE_CHECKING:
        def _view(self) -> MailboxView: ...
        def _user(self) -> str: ...
        def _send(self, line: bytes) -> None: ...
        def _write(self, data: bytes) -> None: ...
        async def _drain(self) -> None: ...
        def _close(self) -> None: ...
        def _enable_condstore(self) -> None: ...
        def _announce_keywords(self, flags: frozenset[str]) -> None: ...

    async def _do_fetch(self, cmd: Fetch) -> None:
        from maild.imap.server import RECENT, _no

        view = self._view()
        user = self._user()
        if cmd.changed_since is None:
            indexes = view.resolve(cmd.sequence, cmd.uid)
        else:
            # RFC 7162 §3.1.4.1: only messages changed since the given mod-sequence, found in
            # the modseq index, then matched against the set: a client resyncing `1:*`
            # costs the changes, not the mailbox.
            changes = self.store.changed_since(user, view.mailbox_id, cmd.changed_since)
            indexes = view.among(cmd.sequence, cmd.uid, [m.uid for m in changes])
        if cmd.vanished:
            self._vanished_earlier(view, cmd)
        if cmd.changed_since is not None or any(a.name == "MODSEQ" for a in cmd.attributes):
            self._enable_condstore()  # RFC 7162 §3.1
        attributes = cmd.attributes
        if self.qresync and not any(a.name == "UID" for a in attributes):
            attributes = (FetchAtt("UID"), *attributes)  # RFC 7162 §3.2.4
        if cmd.changed_since is None and (view.readonly or not any(a.sets_seen for a in attributes)):
            columns = fastfetch.plan(attributes)
            if columns is not None:
                try:
                    if await fastfetch.answer(self, view, indexes, columns):
                        return
                finally:
                    self._cache = None  # one FETCH's message, keyed by UID alone (invariant 2)
        uids = [view.uids[i] for i in indexes]
        if cmd.changed_since is not None:
            wanted = set(uids)
            metas = {m.uid: m for m in changes if m.uid in wanted}
        else:
            metas = {m.uid: m for m in self.store.messages(user, view.mailbox_id, uids)}
        seen_now: set[int] = set()
        if not view.readonly and any(a.sets_seen for a in cmd.attributes):
            unseen = [u for u, m in metas.items() if SEEN not in m.flags]
            if unseen:
                changed, _ = await self.store.set_flags(user, view.mailbox_id, unseen, {SEEN}, FlagMode.ADD)
                for result in changed:
                    view.echo[result.uid] = result.flags
                metas.update({m.uid: m for m in self.store.messages(user, view.mailbox_id, unseen)})
                if not any(a.name == "FLAGS" for a in cmd.attributes):
                    seen_now = {r.uid for r in changed}  # RFC 3501 §6.4.5: report the \Seen we set
        missing = cmd.changed_since is None and len(metas) < len(uids)  # expunged meanwhile
        if view.recent:
            for uid in view.recent.intersection(metas):
                metas[uid] = metas[uid]._replace(flags=metas[uid].flags | RECENT)
        if seen_now or any(a.name == "FLAGS" for a in attributes):
            self._announce_keywords(frozenset().union(*(m.flags for m in metas.values())))
        # What each attribute asks, worked out once for all the messages.
        plan = [(att, _section_of(att)) for att in attributes]
        batch: list[bytes] = []  # small responses are written 64 KB at a time
        batched = 0
        literals: list[_Literal]
        for index, uid in zip(indexes, uids, strict=True):
            meta = metas.get(uid)
            if meta is None or self._closed:
                continue
            try:
                head, literals = self._fetch_items(index + 1, meta, plan + [(FetchAtt("FLAGS"), None)]
                                                   if uid in seen_now else plan)
            except (NotFound, FileNotFoundError):
                # RFC 2180 §4.1.3: expunged by another session since the record was
                # read; the rest is answered, then a NO says what was left out.
                missing = True
                self._cache = None
                continue
            if not literals:
                batch.append(head + b")\r\n")
                batched += len(batch[-1])
                if batched < STREAM_CHUNK:
                    continue
            self._write(b"".join(batch))
            batch.clear()
            batched = 0
            if literals and not await self._stream(head, meta, literals):
                missing = True
            await self._drain()
        self._write(b"".join(batch))
        self._cache = None
        if missing:
            raise _no("Some of the requested messages no longer exist", "EXPUNGEISSUED")

    _do_uid_fetch = _do_fetch

    def _vanished_earlier(self, view: MailboxView, cmd: Fetch) -> None:
        """RFC 7162 §3.2.6: the UIDs of the set expunged since CHANGEDSINCE, before the
        FETCH responses."""
        from maild.imap.server import _bad, _compress

        if not self.qresync:
            raise _bad("ENABLE QRESYNC before using VANISHED")
        assert cmd.changed_since is not None
        gone = self.store.expunged_since(self._user(), view.mailbox_id, cmd.changed_since)
        if gone:
            largest = max(gone[-1], view.uids[-1] if view.uids else 0)  # "*": every UID so far
            gone = [uid for uid in gone if (uid in view.saved if cmd.sequence.saved  # "$": RFC 5182
                                            else cmd.sequence.contains(uid, largest))]
        if gone:
            self._send(b"* VANISHED (EARLIER) " + _compress(gone))

    def _fetch_items(self, seq: int, meta: MessageMeta, plan: list[tuple[FetchAtt, _SectionPlan | None]]
                     ) -> tuple[bytes, list[_Literal]]:
        """``* seq FETCH (items`` without the closing parenthesis, and the body sections
        of a large message, which are streamed after it in their order: every item that
        is not a body section of a message over STREAM_ABOVE comes first (RFC 3501 §7.4.2
        lets the items come in any order)."""
        from maild.imap.server import _no

        parts: list[bytes] = []
        literals: list[_Literal] = []
        large = meta.size > STREAM_ABOVE
        for att, section_plan in plan:
            name = att.name
            item = _RECORD_ITEMS.get(name)
            if item is not None:
                parts.append(item(meta))
            elif name == "ENVELOPE":
                parts.append(b"ENVELOPE " + self._cached(meta, name, self._envelope))
            elif name == "BINARY.SIZE" or (name == "BINARY" and att.section is not None
                                           and (att.section.part or meta.size <= STREAM_ABOVE)):
                try:
                    parts.append(binary.fetch_item(att, meta, self._raw, self._parsed))  # RFC 3516
                except binary.UnknownEncoding:
                    raise _no("Cannot decode the part", "UNKNOWN-CTE") from None
            elif name == "PREVIEW":  # RFC 8970
                parts.append(self._cached(meta, name, lambda m: preview.fetch_item(self._parsed(m))))
            elif name == "THREADID":  # RFC 8474 §5.2
                parts.append(b"THREADID (" + self._cached(meta, name, self._thread_id) + b")")
            elif name in ("BODYSTRUCTURE", "BODY") and att.section is None:
                parts.append(name.encode() + b" " + self._cached(meta, name, self._bodystructure, name))
            else:
                assert section_plan is not None
                label, section, partial, section_name = section_plan
                if large:
                    literals.append(self._section_literal(meta, label, section, partial))
                    continue
                if not section.part and section.text in _HEADER_TEXTS:  # the message's own header
                    data = self._cached(meta, section_name, self._own_header, section)
                else:
                    data = mime.section(self._raw(meta), section, self._parsed(meta) if section.part else None) or b""
                if partial is not None:
                    data = data[partial[0]:partial[0] + partial[1]]
                parts.append(label + b" " + wire.literal(data))
        if literals and self._cache is not None:
            # The spans are known: keep this message's octets (the literals' source), not its
            # MIME tree nor an earlier message.
            self._cache = (meta.uid, self._cache[1], None) if self._cache[0] == meta.uid else None
        return b"* %d FETCH (" % seq + b" ".join(parts), literals

    def _section_literal(self, meta: MessageMeta, label: bytes, section: Section,
                         partial: tuple[int, int] | None) -> _Literal:
        """A body section of a large message as a span to stream: of the blob file for the
        whole message, else of the message read once for this FETCH (``_raw``). Only
        HEADER.FIELDS[.NOT] makes new octets, at most the header's size."""
        if section.text is None and not section.part:
            span: mime.Span | bytes | None = (0, meta.size)
            source = None
        else:
            source = self._raw(meta)
            span = mime.section_span(source, section, self._parsed(meta) if section.part else None)
        if span is None:
            span = b""
        if isinstance(span, bytes):
            source, span = span, (0, len(span))
        start, length = span
        if partial is not None:  # RFC 3501 §6.4.5: <origin.octets> within the section
            origin, length = _partial_range(length, partial)
            start += origin
        return _Literal(label, source, start, length)

    async def _stream(self, head: bytes, meta: MessageMeta, literals: list[_Literal]) -> bool:
        """Write ``head``, then each literal in STREAM_CHUNK pieces with backpressure: from
        the blob file or from the message read for this FETCH, never a copy per item. False
        when the message was expunged before anything was written (RFC 2180 §4.1.3)."""
        user = self._user()
        # Opened (and its body verified) before a byte of this message is on the wire, so a
        # damaged body is the command's NO, not a broken literal.
        opened: BinaryIO | None = None
        if any(literal.source is None for literal in literals):
            try:
                opened = self.store.open(user, self._view().mailbox_id, meta.uid)
            except (NotFound, FileNotFoundError):
                return False
        sep = b"" if head.endswith(b"(") else b" "
        try:
            for literal in literals:
                self._write(head + sep + literal.label + b" {%d}\r\n" % literal.length)
                head, sep = b"", b" "
                if literal.source is not None:
                    view = memoryview(literal.source)
                    end = literal.start + literal.length
                    for at in range(literal.start, end, STREAM_CHUNK):
                        if self._closed:
                            return True
                        self._write(bytes(view[at:min(at + STREAM_CHUNK, end)]))
                        await self._drain()
                    continue
                assert opened is not None
                opened.seek(literal.start)
                left = literal.length
                while left > 0 and not self._closed:
                    chunk = opened.read(min(STREAM_CHUNK, left))
                    if not chunk:
                        raise OSError(f"blob of uid {meta.uid} is {left} octets short")
                    self._write(chunk)
                    left -= len(chunk)
                    await self._drain()
        except Exception:
            # The literal's length is already on the wire: the session cannot go on.
            log.exception("IMAP FETCH stream failed for %s uid %d", user, meta.uid)
            self._send(b"\r\n* BYE Internal error")
            self._close()
            return True
        finally:
            if opened is not None:
                opened.close()
        self._write(b")\r\n")
        return True

    def _cached(self, meta: MessageMeta, item: str, make: Callable[..., bytes], *args: Any) -> bytes:
        """``item`` of an immutable message: from the process's FETCH cache, or
        ``make(meta, *args)``."""
        view = self._view()
        return fetchcache.CACHE.get(self._user(), view.uidvalidity, view.mailbox_id, meta, item, make, *args)

    def _envelope(self, meta: MessageMeta) -> bytes:
        return mime.envelope(self.store.envelope(self._user(), self._view().mailbox_id, meta.uid))

    def _thread_id(self, meta: MessageMeta) -> bytes:
        return objectid.thread_id(self.store.envelope(self._user(), self._view().mailbox_id, meta.uid), meta).encode()

    def _bodystructure(self, meta: MessageMeta, name: str) -> bytes:
        return mime.bodystructure(self._parsed(meta), name == "BODYSTRUCTURE")

    def _own_header(self, meta: MessageMeta, section: Section) -> bytes:
        """HEADER or HEADER.FIELDS[.NOT] of the message itself."""
        return mime.section(self._raw(meta), section) or b""

    def _raw(self, meta: MessageMeta) -> bytes:
        if self._cache is None or self._cache[0] != meta.uid:
            raw = self.store.read(self._user(), self._view().mailbox_id, meta.uid)
            self._cache = (meta.uid, raw, None)
        return self._cache[1]

    def _parsed(self, meta: MessageMeta) -> mime.Part:
        raw = self._raw(meta)
        assert self._cache is not None
        if self._cache[2] is None:
            self._cache = (meta.uid, raw, mime.parse(raw))
        part = self._cache[2]
        assert part is not None
        return part


_SectionPlan = tuple[bytes, Section, tuple[int, int] | None, str]


@dataclass(frozen=True)
class _Literal:
    """One body section to stream: ``length`` octets from ``start`` of ``source``, or of
    the stored message (prefix and blob) when ``source`` is None."""

    label: bytes
    source: bytes | None
    start: int
    length: int


def _section_of(att: FetchAtt) -> _SectionPlan | None:
    """(response label, section, partial, section text) for BODY[...] and the RFC822
    forms, None for other attributes; made once per FETCH, not per message (Thunderbird's
    header fields name fourteen)."""
    if att.section is None and att.name not in ("RFC822", "RFC822.HEADER", "RFC822.TEXT"):
        return None
    if att.name == "RFC822":
        return b"RFC822", Section(), None, ""
    if att.name == "RFC822.HEADER":
        return b"RFC822.HEADER", Section(text="HEADER"), None, "HEADER"
    if att.name == "RFC822.TEXT":
        return b"RFC822.TEXT", Section(text="TEXT"), None, "TEXT"
    assert att.section is not None
    name = str(att.section)
    label = (b"BINARY[" if att.name == "BINARY" else b"BODY[") + name.encode("utf-8") + b"]"
    if att.partial is not None:
        label += b"<%d>" % att.partial[0]  # RFC 3501 §7.4.2: only the origin is returned
    return label, att.section, att.partial, name


def _partial_range(size: int, partial: tuple[int, int] | None) -> tuple[int, int]:
    if partial is None:
        return 0, size
    origin = min(partial[0], size)
    return origin, max(0, min(partial[1], size - origin))
