"""One shard's search index: a tantivy index in data_dir/search/NN (docs/search.md).

Implementation notes — invariants a contributor must keep:

1. A message is one document keyed ``user NUL mailbox NUL uid``, holding the character
   n-grams (:mod:`maild.search.grams`) of the casefolded texts the matcher compares
   (:func:`field_texts`), one tantivy field per text. Its ``mbv`` term (user, mailbox id,
   UIDVALIDITY) is what a search filters on, so a mailbox or user made anew never meets
   the documents of the old one.
2. A document whose text was cut at ``max_text`` characters, or holds a character the
   n-gram alphabet maps ambiguously (grams.AMBIGUOUS), is marked ``partial``: every query
   admits it, whatever it holds (never a false negative), and it is always verified.
3. Coverage: per mailbox a watermark document holds the highest uid indexed. Every message
   of the mailbox with a uid up to it is in the index (uids grow with commit order and the
   change log is applied in order); those above it are not yet, and a search admits them
   unread (the caller verifies them like every candidate).
4. The change-log position the index reflects is a document too (``cursor``), written in
   the same tantivy commit as the documents it accounts for: a crash loses both or neither,
   and the indexer replays from the committed cursor (adding a document deletes its key
   first, so a replay never doubles one).
5. A search reads coverage and hits from one searcher (one commit's snapshot).
6. The index records which shard environment it was built from (its data file's inode):
   one built from another (a restore, a replication resync) is rebuilt, since the same
   uid may name another message there.
7. The body and header texts are also indexed as word shingles (:mod:`maild.search.shingles`,
   fields ``s_body`` and ``s_hdr``): a needle of two or more words is answered from them,
   as exactly as from the grams. A document whose text cannot be shingled is flagged
   ``noshingle`` and such a query answers it from its grams.
"""

from __future__ import annotations

import fcntl
import logging
import operator
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tantivy

from maild.search import grams, shingles
from maild.search.match import ENVELOPE_HEADERS, envelope_text
from maild.store.types import Envelope
from maild.util.text import all_headers_text, attachment_names, body_text

log = logging.getLogger(__name__)

SCHEMA_VERSION = "3"  # 3: shingles cut by the whitespace tokenizer (shingles.py)
# Index fields for texts: the message's header (TEXT, HEADER), its text parts (BODY, TEXT),
# its attachments' names (TEXT) and each envelope field (FROM, TO, CC, BCC, SUBJECT, HEADER).
BODY, HEADERS, NAMES = "body", "hdr", "names"
ENVELOPE_FIELDS = {attr: "e_" + attr for attr in ENVELOPE_HEADERS.values()}
TEXT_FIELDS = (BODY, HEADERS, NAMES, *ENVELOPE_FIELDS.values())
# Texts also indexed as word shingles (note 7): index field -> its shingle field
SHINGLED = {BODY: "s_body", HEADERS: "s_hdr"}
CURSOR_KEY = "\x00cursor"
IDENTITY_KEY = "\x00shard"  # the environment the index was built from (changes.shard_identity)
_FIRST = operator.itemgetter(0)


def _schema() -> Any:
    sb = tantivy.SchemaBuilder()
    for name in ("key", "user", "mb", "mbv"):
        sb.add_text_field(name, stored=False, tokenizer_name="raw", index_option="basic")
    sb.add_unsigned_field("uid", stored=False, indexed=True, fast=True)
    sb.add_unsigned_field("partial", stored=False, indexed=True, fast=False)
    sb.add_unsigned_field("noshingle", stored=False, indexed=True, fast=False)
    for name in TEXT_FIELDS:
        sb.add_text_field(name, stored=False, tokenizer_name="whitespace", index_option="position")
    for name in SHINGLED.values():
        sb.add_text_field(name, stored=False, tokenizer_name="whitespace", index_option="position")
    return sb.build()


SCHEMA = _schema()


def doc_key(user: str, mailbox_id: int, uid: int) -> str:
    return f"{user}\x00{mailbox_id}\x00{uid}"


def mailbox_term(user: str, mailbox_id: int) -> str:
    return f"{user}\x00{mailbox_id}"


def version_term(user: str, mailbox_id: int, uidvalidity: int) -> str:
    return f"{user}\x00{mailbox_id}\x00{uidvalidity}"


def watermark_key(user: str, mailbox_id: int, uidvalidity: int) -> str:
    return f"\x00w\x00{user}\x00{mailbox_id}\x00{uidvalidity}"


def field_texts(raw: bytes, envelope: Envelope) -> dict[str, str]:
    """Index field -> the casefolded text the matcher compares for it (match.py)."""
    out = {BODY: body_text(raw).casefold(), HEADERS: all_headers_text(raw).casefold(),
           NAMES: "\n".join(attachment_names(raw)).casefold()}
    for attr, name in ENVELOPE_FIELDS.items():
        value = getattr(envelope, attr)
        if value:
            out[name] = envelope_text(attr, value).casefold()
    return out


@dataclass
class Needle:
    """One text condition: ``field`` (an index field) contains ``text``."""

    field: str
    text: str

    @property
    def exact(self) -> bool:
        """Whether the index's answer for it is the matcher's, for a document it vouches
        for: a needle free of ambiguous characters (grams.AMBIGUOUS), and for a field whose
        text joins several with newlines (an address field's two forms, the file names),
        free of newlines (a match never spans two texts)."""
        folded = self.text.casefold()
        if not folded or grams.ambiguous(folded):
            return False
        return self.field in (BODY, HEADERS) or "\n" not in folded


class ShardIndex:
    """The index of one shard: a writer (the indexer's, when this process holds the lock)
    and searches from any thread."""

    def __init__(self, path: Path, max_text: int, create: bool = True) -> None:
        self.path = path
        self.max_text = max_text
        # Without ``create`` (the CLI's reports) a missing or unreadable index stays None:
        # only the indexer makes one anew, under a lock file beside it, so worker processes
        # starting together never remove the one another has just made.
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path.parent / f"{path.name}.lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                self.index = self._open()
        else:
            self.index = self._open_existing()
        self._writer: Any = None
        self._lock = threading.Lock()  # the writer: one thread adds and commits at a time
        self.reader_lock = threading.Lock()

    def _open_existing(self) -> Any:
        try:
            index = tantivy.Index.open(str(self.path))
            index.searcher()
            return index
        except (OSError, ValueError):
            return None

    def _open(self) -> Any:
        """Open the index, making it anew (empty: the indexer rebuilds it) when it is
        missing, of another schema version, or unreadable."""
        version = self.path / "maild-schema"
        if not version.exists() and not self.path.exists():
            self.path.mkdir(parents=True)
            index = tantivy.Index(SCHEMA, path=str(self.path), reuse=False)
            version.write_text(SCHEMA_VERSION + "\n")
            return index
        try:
            if version.read_text().strip() == SCHEMA_VERSION and tantivy.Index.exists(str(self.path)):
                index = tantivy.Index.open(str(self.path))
                index.searcher()  # reads the commit's meta: a damaged one fails here
                return index
        except (OSError, ValueError) as exc:
            log.warning("search index %s unreadable (%s): made anew", self.path, exc)
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)
        index = tantivy.Index(SCHEMA, path=str(self.path), reuse=False)
        version.write_text(SCHEMA_VERSION + "\n")
        return index

    # -- writing (the indexer's thread) ---------------------------------------------------

    def acquire_writer(self, heap_bytes: int) -> bool:
        """Take the index's writer lock (one process writes); False when another holds it."""
        if self._writer is None:
            try:
                self._writer = self.index.writer(heap_bytes, 1)
            except ValueError:
                return False
        return True

    @property
    def writable(self) -> bool:
        return self._writer is not None

    def release_writer(self, wait: bool = False) -> None:
        """Drop what is not committed and the lock; ``wait``: after the merges running
        finish (a benchmark counting their cost)."""
        with self._lock:
            if self._writer is not None:
                self._writer.rollback()
                if wait:
                    self._writer.wait_merging_threads()
                self._writer = None

    def add(self, user: str, mailbox_id: int, uidvalidity: int, uid: int, texts: dict[str, str]) -> None:
        key = doc_key(user, mailbox_id, uid)
        doc = tantivy.Document(key=key, user=user, mb=mailbox_term(user, mailbox_id),
                               mbv=version_term(user, mailbox_id, uidvalidity))
        doc.add_unsigned("uid", uid)
        partial = False  # the index cannot vouch for this document's matches: verify it
        shingled = True  # every shingled text has its shingles (note 7)
        for name, text in texts.items():
            if len(text) > self.max_text:
                text, partial = text[:self.max_text], True
            if text:
                partial = partial or grams.ambiguous(text)
                prepared = grams.prepare(text)  # once for both token strings
                doc.add_text(name, grams.prepared_tokens(prepared))
                if name in SHINGLED:
                    tokens = shingles.shingles(prepared)
                    if tokens is None:
                        shingled = False
                    elif tokens:
                        doc.add_text(SHINGLED[name], tokens)
        if partial:
            doc.add_unsigned("partial", 1)
        if not shingled:
            doc.add_unsigned("noshingle", 1)
        with self._lock:
            self._writer.delete_documents_by_term("key", key)
            self._writer.add_document(doc)

    def add_unreadable(self, user: str, mailbox_id: int, uidvalidity: int, uid: int) -> None:
        """A message whose text could not be read: admitted by every query."""
        key = doc_key(user, mailbox_id, uid)
        doc = tantivy.Document(key=key, user=user, mb=mailbox_term(user, mailbox_id),
                               mbv=version_term(user, mailbox_id, uidvalidity))
        doc.add_unsigned("uid", uid)
        doc.add_unsigned("partial", 1)
        with self._lock:
            self._writer.delete_documents_by_term("key", key)
            self._writer.add_document(doc)

    def delete_message(self, user: str, mailbox_id: int, uid: int) -> None:
        with self._lock:
            self._writer.delete_documents_by_term("key", doc_key(user, mailbox_id, uid))

    def delete_mailbox(self, user: str, mailbox_id: int) -> None:
        """Its messages and its watermark (every UIDVALIDITY)."""
        with self._lock:
            self._writer.delete_documents_by_term("mb", mailbox_term(user, mailbox_id))

    def delete_user(self, user: str) -> None:
        with self._lock:
            self._writer.delete_documents_by_term("user", user)

    def delete_all(self) -> None:
        with self._lock:
            self._writer.delete_all_documents()

    def set_watermark(self, user: str, mailbox_id: int, uidvalidity: int, uid: int) -> None:
        key = watermark_key(user, mailbox_id, uidvalidity)
        doc = tantivy.Document(key=key, user=user, mb=mailbox_term(user, mailbox_id))
        doc.add_unsigned("uid", uid)
        with self._lock:
            self._writer.delete_documents_by_term("key", key)
            self._writer.add_document(doc)

    def commit(self, cursor: int | None, identity: int | None = None) -> None:
        """Make everything added durable, with the change-log position it reflects (None:
        the cursor stays as it is: a rebuild's intermediate commits) and the identity of
        the shard it reflects."""
        with self._lock:
            for key, value in ((CURSOR_KEY, cursor), (IDENTITY_KEY, identity)):
                if value is not None:
                    doc = tantivy.Document(key=key)
                    doc.add_unsigned("uid", value)
                    self._writer.delete_documents_by_term("key", key)
                    self._writer.add_document(doc)
            self._writer.commit()
        self.index.reload()

    # -- reading (any thread) --------------------------------------------------------------

    def searcher(self) -> Any:
        return self.index.searcher()

    def refresh(self) -> None:
        """Pick up commits of another process (the indexer of a worker or the CLI)."""
        if self.index is None:
            self.index = self._open_existing()
        if self.index is not None:
            self.index.reload()

    @staticmethod
    def _value(searcher: Any, key: str) -> int | None:
        hits = searcher.search(tantivy.Query.term_query(SCHEMA, "key", key), 1,
                               count=False, order_by_field="uid").hits
        return int(hits[0][0]) if hits else None

    def cursor_or_none(self, searcher: Any | None = None) -> int | None:
        """The change-log position of the committed index; None: it has none (new, or a
        rebuild is unfinished, or missing)."""
        if self.index is None:
            return None
        return self._value(searcher or self.searcher(), CURSOR_KEY)

    def identity(self) -> int | None:
        return None if self.index is None else self._value(self.searcher(), IDENTITY_KEY)

    def watermark(self, searcher: Any, user: str, mailbox_id: int, uidvalidity: int) -> int:
        """The highest uid of the mailbox in the index (0: none yet)."""
        return self._value(searcher, watermark_key(user, mailbox_id, uidvalidity)) or 0

    def query(self, needle: Needle, by_shingles: bool = True) -> Any:
        """Documents whose ``needle.field`` may contain ``needle.text`` (casefolded), or
        that are partial. A needle of two or more words in a shingled field is looked up
        in its shingles (note 7; ``by_shingles=False``: in the grams only), the documents
        without shingles in their grams."""
        folded = needle.text.casefold()
        text_query = self._gram_query(needle.field, folded)
        regexes = shingles.needle_regexes(folded) if by_shingles and needle.field in SHINGLED else None
        if regexes is not None:
            field = SHINGLED[needle.field]
            words = tantivy.Query.regex_query(SCHEMA, field, regexes[0]) if len(regexes) == 1 else \
                tantivy.Query.regex_phrase_query(SCHEMA, field, list[str | tuple[int, str]](regexes))
            unshingled = tantivy.Query.boolean_query([
                (tantivy.Occur.Must, tantivy.Query.term_query(SCHEMA, "noshingle", 1)),
                (tantivy.Occur.Must, text_query)])
            text_query = tantivy.Query.boolean_query([(tantivy.Occur.Should, words),
                                                      (tantivy.Occur.Should, unshingled)])
        partial = tantivy.Query.term_query(SCHEMA, "partial", 1)
        return tantivy.Query.boolean_query([(tantivy.Occur.Should, text_query),
                                            (tantivy.Occur.Should, partial)])

    @staticmethod
    def _gram_query(field: str, folded: str) -> Any:
        """Documents whose ``field`` holds the casefolded needle, by its grams."""
        if len(folded) >= grams.GRAM:
            words = grams.phrase(folded)
            if len(words) == 1:
                return tantivy.Query.term_query(SCHEMA, field, words[0][1])
            return tantivy.Query.phrase_query(SCHEMA, field, list[str | tuple[int, str]](words))
        return tantivy.Query.regex_query(SCHEMA, field, grams.prefix_regex(folded))

    def partial_uids(self, searcher: Any, user: str, mailbox_id: int, uidvalidity: int, limit: int) -> set[int]:
        """The mailbox's documents the index cannot vouch for (note 2)."""
        return self.uids(searcher, user, mailbox_id, uidvalidity,
                         tantivy.Query.term_query(SCHEMA, "partial", 1), limit)

    def uids(self, searcher: Any, user: str, mailbox_id: int, uidvalidity: int, query: Any,
             limit: int) -> set[int]:
        """The uids of the mailbox's documents matching ``query``."""
        scoped = tantivy.Query.boolean_query([
            (tantivy.Occur.Must, tantivy.Query.term_query(SCHEMA, "mbv", version_term(user, mailbox_id, uidvalidity))),
            (tantivy.Occur.Must, query)])
        limit = max(limit, 1)
        while True:
            result = searcher.search(scoped, limit, count=True, order_by_field="uid")
            if result.count <= limit:
                return set(map(_FIRST, result.hits))  # (uid, address): C speed, 41,000 hits in ~1 ms
            limit = result.count

    def mailbox_uids(self, searcher: Any, user: str, mailbox_id: int, uidvalidity: int, limit: int) -> set[int]:
        """Every uid the index holds for the mailbox (fsck)."""
        return self.uids(searcher, user, mailbox_id, uidvalidity, tantivy.Query.all_query(), limit)

    def size_bytes(self) -> int:
        if not self.path.is_dir():
            return 0
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())
