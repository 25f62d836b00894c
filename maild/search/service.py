"""The search service: the indexer thread and the searches it serves (docs/search.md).

Implementation notes — invariants a contributor must keep:

1. The indexer is one thread (never the reactor's) following every shard's change log from
   the cursor committed in that shard's index (index.py note 4): APPEND indexes the
   messages, EXPUNGE and MAILBOX_DELETE (and USER_DELETE, where the log has it) delete
   theirs. Ingest never waits for it.
2. One process writes a shard's index (tantivy's writer lock); another process's service
   (a worker, the CLI) only reads it, re-reading the committed state each search.
3. An index without a cursor (new, damaged and made anew, or its log position trimmed
   away) is rebuilt from the store: the log head is noted first, every mailbox read, then
   the log replayed from the noted head; until then searches scan what it does not cover.
4. A search admits the index's candidates and every message above the mailbox's
   watermark. The exact matcher (match.py) decides each, except where the index's answer
   is the matcher's by construction (an exact needle, a document the index vouches for:
   docs/search.md "Exactness"); ``[search] verify_all`` makes it decide every one.
5. Memory stays bounded: at most ``batch`` change records and one message's text at a time
   in Python, tantivy's writer heap set by ``[search] writer_memory_mb``.
6. A shard's log is read (and what it holds committed to the index, one tantivy commit)
   when an indexed change of any process is announced (``store.subscribe``) or at each
   ``poll_interval``, at most once per COMMIT_INTERVAL while changes keep coming and at
   once again while a read fills a whole batch (a backlog): the commits' cost is paced,
   never the coverage (note 4).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from maild.config import SearchConfig
from maild.search import changes as changelog
from maild.search.index import BODY, ENVELOPE_FIELDS, HEADERS, NAMES, Needle, ShardIndex, field_texts
from maild.search.match import ENVELOPE_HEADERS, Message, body_contains, header_contains, text_contains
from maild.store.types import ChangeKind, Mailbox, NotFound
from maild.util.text import attachment_names

if TYPE_CHECKING:
    from maild.store import Store

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (messages done, messages in all)

_SERVICES: weakref.WeakKeyDictionary[Any, SearchService] = weakref.WeakKeyDictionary()


# Under a stream of changes a shard's log is read, its records applied and committed at
# most this often (a change after a quiet spell is indexed at once, a full batch is
# followed at once). Each tantivy commit writes and syncs a segment, reloads the reader
# and feeds the merges, ~5-15 ms of CPU: at 0.2 s the commits and their merges cost about
# as much as indexing the messages themselves (docs/performance.md, "The indexer's
# cost"). SEARCH does not wait for it: what is above a mailbox's watermark is admitted and
# matched exactly (note 4), so this only bounds how long a message is read by the matcher
# rather than answered by the index.
COMMIT_INTERVAL = 1.0
# A shard whose index another process writes (its writer lock held) is tried again this
# often: that process may have stopped.
WRITER_RETRY = 2.0
# Records that change nothing in the index (FLAGS, mailbox renames...) advance the cursor in
# memory; it is committed when there is other work or after this many seconds.
CURSOR_INTERVAL = 1.0
INDEXED = frozenset({ChangeKind.APPEND, ChangeKind.EXPUNGE, ChangeKind.MAILBOX_DELETE, ChangeKind.USER_DELETE})

REQUEST = "reindex-request"  # written by `maild reindex` while a daemon holds the writer
PROGRESS = "reindex-progress"


def of(store: Store) -> SearchService | None:
    """The search service the daemon runs over ``store`` (None: no index, scan)."""
    return _SERVICES.get(store)


def index_path(data_dir: Path, shard: int) -> Path:
    return Path(data_dir) / "search" / f"{shard:02d}"


@dataclass
class MailboxReader:
    """One mailbox seen through one committed state of its shard's index."""

    index: ShardIndex
    searcher: Any
    user: str
    mailbox_id: int
    uidvalidity: int
    watermark: int  # uids above it are not in the index: admitted unread
    limit: int
    verify_all: bool = False  # [search] verify_all: never take the index's word for a match
    _partial: set[int] | None = None

    def partial(self) -> set[int]:
        """The mailbox's documents marked partial (index.py note 2)."""
        if self._partial is None:
            self._partial = self.index.partial_uids(self.searcher, self.user, self.mailbox_id,
                                                    self.uidvalidity, self.limit)
        return self._partial

    def vouches_for(self, uid: int) -> bool:
        """Whether the index's exact answers hold for this message: indexed (at or below
        the watermark) and not marked partial."""
        if self.verify_all or uid > self.watermark:
            return False
        return uid not in self.partial()

    def matching(self, needle: Needle) -> set[int] | None:
        """Uids of indexed messages whose field may contain the text; None: no index
        answer for it (the empty text, which every message holds)."""
        if not needle.text:
            return None
        try:
            query = self.index.query(needle)
            return self.index.uids(self.searcher, self.user, self.mailbox_id, self.uidvalidity,
                                   query, self.limit)
        except ValueError:
            # A shingle phrase whose first or last word expands to more terms than tantivy
            # takes (a word of one letter, say): the grams answer it as exactly.
            return self.index.uids(self.searcher, self.user, self.mailbox_id, self.uidvalidity,
                                   self.index.query(needle, by_shingles=False), self.limit)


# API search fields -> the index fields whose texts each compares
API_FIELDS: dict[str, tuple[str, ...]] = {
    "body": (BODY,), "text": (HEADERS, BODY, NAMES), "subject": (ENVELOPE_FIELDS["subject"],),
    "from": (ENVELOPE_FIELDS["from_"],), "to": (ENVELOPE_FIELDS["to"],), "cc": (ENVELOPE_FIELDS["cc"],),
    "bcc": (ENVELOPE_FIELDS["bcc"],), "attachment": (NAMES,)}


class SearchService:
    def __init__(self, store: Store, config: SearchConfig, *, create: bool = True) -> None:
        """``create=False``: only look at the indexes there are (the CLI's reports)."""
        self.store = store
        self.config = config
        self.indexes = [ShardIndex(index_path(store.data_dir, i), config.max_text_chars, create)
                        for i in range(len(store.shards))]
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.rebuilding: dict[int, tuple[int, int]] = {}  # shard -> progress
        self._rebuild_requested: set[int] = set()
        self._position: dict[int, int] = {}  # shard -> log position past records needing nothing
        self._committed_at: dict[int, float] = {}  # shard -> monotonic time of its last commit
        self._dirty: set[int] = set()  # shards with an indexed change since their log was last read
        self._backlog: set[int] = set()  # shards whose last read filled a whole batch
        _SERVICES[store] = self

    # -- the indexer ------------------------------------------------------------------------

    def start(self) -> None:
        """Follow the change logs in a thread; a commit in this process wakes it at once."""
        self._unsubscribe = self.store.subscribe(self._changed)
        self._thread = threading.Thread(target=self._run, name="maild-search", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for ix in self.indexes:
            ix.release_writer()

    def _changed(self, change: Any) -> None:
        """A committed change, of this process or another (the reactor's thread): wake the
        indexer once per shard with something to index; the rest (FLAGS, renames) only
        moves the cursor, which the poll takes care of."""
        if change.kind in INDEXED and change.shard not in self._dirty:
            self._dirty.add(change.shard)
            self._wake.set()

    def _run(self) -> None:
        """Step each shard when it has indexed changes (or at each poll), at most once per
        COMMIT_INTERVAL while they keep coming, at once while a backlog lasts."""
        due = [0.0] * len(self.indexes)  # monotonic time a shard may be stepped again
        looked = [float("-inf")] * len(self.indexes)  # ... its log was last read
        while not self._stop.is_set():
            worked = False
            timeout = self.config.poll_interval
            for shard, ix in enumerate(self.indexes):
                if self._stop.is_set():
                    break
                now = time.monotonic()
                wanted = shard in self._dirty or shard in self._backlog or shard in self._rebuild_requested
                ready = due[shard] if wanted else max(due[shard], looked[shard] + self.config.poll_interval)
                if now < ready:
                    timeout = min(timeout, ready - now)
                    continue
                self._dirty.discard(shard)  # before reading: a change from now on marks it again
                looked[shard] = now
                try:
                    if not ix.acquire_writer(self.config.writer_memory_mb * 1024 * 1024):
                        due[shard] = now + WRITER_RETRY  # another process indexes this shard
                        continue
                    if self._requested(shard) or self.step(shard):
                        worked = True
                        due[shard] = now + (0.0 if shard in self._backlog else COMMIT_INTERVAL)
                except (OSError, ValueError) as exc:  # tantivy's I/O errors: a full disk, say
                    log.error("search indexing of shard %02d failed (%s); retrying in 5 s", shard, exc)
                    ix.release_writer()
                    self._stop.wait(5.0)
                except Exception:
                    log.exception("search indexing of shard %02d failed; retrying", shard)
                    ix.release_writer()
                    self._stop.wait(5.0)
            if not worked:
                self._wake.wait(max(timeout, 0.0))
                self._wake.clear()

    def request_rebuild(self, shard: int) -> None:
        self._rebuild_requested.add(shard)
        self._wake.set()

    def _requested(self, shard: int) -> bool:
        """`maild reindex` asked (a request file, the daemon holding the writer): rebuild,
        writing progress where the command reads it, and remove the request when done."""
        request = self.indexes[shard].path / REQUEST
        try:
            users = json.loads(request.read_text()).get("users")
        except FileNotFoundError:
            return False
        except (OSError, ValueError, AttributeError):
            users = None
        progress_file = self.indexes[shard].path / PROGRESS

        def progress(done: int, total: int) -> None:
            tmp = progress_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"done": done, "total": total}))
            tmp.replace(progress_file)
        log.info("search: reindexing shard %02d%s on request", shard, f" for {', '.join(users)}" if users else "")
        progress(0, 0)
        self.rebuild(shard, progress, users)
        request.unlink(missing_ok=True)
        return True

    def step(self, shard: int, progress: Progress | None = None) -> bool:
        """Index what the shard's log holds past the cursor (a batch); rebuild first when
        the index has no cursor or its position was trimmed. True when it did work."""
        ix = self.indexes[shard]
        cursor = ix.cursor_or_none()
        identity = changelog.shard_identity(self.store, shard)
        built_from = ix.identity()
        if cursor is not None and built_from is not None and built_from != identity:
            log.warning("search: shard %02d is another environment than its index was built from "
                        "(restored or resynced): rebuilding", shard)
            cursor = None
        if cursor is None or shard in self._rebuild_requested:
            self._rebuild_requested.discard(shard)
            self._position.pop(shard, None)
            self.rebuild(shard, progress)
            return True
        position = max(cursor, self._position.get(shard, 0))
        try:
            records = changelog.read_changes(self.store, shard, position, self.config.batch)
            if len(records) >= self.config.batch:
                self._backlog.add(shard)
            else:
                self._backlog.discard(shard)
        except changelog.Trimmed:
            log.warning("search: the change log of shard %02d was trimmed past the index: rebuilding", shard)
            self._position.pop(shard, None)
            self.rebuild(shard, progress)
            return True
        if not records:
            if position > cursor and time.monotonic() - self._committed_at.get(shard, 0.0) >= CURSOR_INTERVAL:
                self._commit(ix, shard, position, identity)
            return False
        if not any(r.kind in INDEXED for r in records):
            self._position[shard] = records[-1].seq
            return True
        self._apply(ix, records)
        self._commit(ix, shard, records[-1].seq, identity)
        return True

    def _commit(self, ix: ShardIndex, shard: int, position: int, identity: int | None) -> None:
        ix.commit(position, identity)
        self._position.pop(shard, None)
        self._committed_at[shard] = time.monotonic()

    def _apply(self, ix: ShardIndex, records: Iterable[Any]) -> None:
        mailboxes: dict[tuple[str, int], Mailbox | None] = {}
        for change in records:
            if change.kind is ChangeKind.APPEND:
                k = (change.user, change.mailbox_id)
                if k not in mailboxes:
                    mailboxes[k] = self._mailbox(change.user, change.mailbox_id)
                mailbox = mailboxes[k]
                if mailbox is None:
                    continue  # deleted since: its MAILBOX_DELETE follows
                for uid in change.uids:
                    self._index_message(ix, change.user, mailbox, uid)
                if change.uids:
                    ix.set_watermark(change.user, mailbox.id, mailbox.uidvalidity, max(change.uids))
            elif change.kind is ChangeKind.EXPUNGE:
                for uid in change.uids:
                    ix.delete_message(change.user, change.mailbox_id, uid)
            elif change.kind is ChangeKind.MAILBOX_DELETE:
                mailboxes.pop((change.user, change.mailbox_id), None)
                ix.delete_mailbox(change.user, change.mailbox_id)
            elif change.kind is ChangeKind.USER_DELETE:
                mailboxes = {k: v for k, v in mailboxes.items() if k[0] != change.user}
                ix.delete_user(change.user)

    def _mailbox(self, user: str, mailbox_id: int) -> Mailbox | None:
        try:
            return self.store.mailbox_by_id(user, mailbox_id)
        except Exception:  # the user was removed meanwhile
            return None

    def _index_message(self, ix: ShardIndex, user: str, mailbox: Mailbox, uid: int,
                       envelope: Any = None) -> bool:
        try:
            raw = self.store.read(user, mailbox.id, uid, verify=False)
            env = envelope if envelope is not None else self.store.envelope(user, mailbox.id, uid)
        except (NotFound, FileNotFoundError):
            return False  # expunged since
        except Exception as exc:
            log.warning("search: %s mailbox %d uid %d unreadable (%s): admitted by every search",
                        user, mailbox.id, uid, exc)
            ix.add_unreadable(user, mailbox.id, mailbox.uidvalidity, uid)
            return True
        ix.add(user, mailbox.id, mailbox.uidvalidity, uid, field_texts(raw, env))
        return True

    def rebuild(self, shard: int, progress: Progress | None = None, users: list[str] | None = None) -> int:
        """Index the shard's mail anew from the store (all of it, or ``users``'), then
        follow the log from the head noted before reading. Commits every ``batch``
        messages (memory stays bounded); returns the messages indexed."""
        ix = self.indexes[shard]
        if users is not None and ix.cursor_or_none() is None:
            users = None  # an index without a cursor is rebuilt whole
        head = changelog.log_head(self.store, shard)
        targets = [u for u in self.store.users() if u.shard == shard
                   and (users is None or u.address in users)]
        keep_cursor = users is not None and ix.cursor_or_none() is not None
        if users is None:
            ix.delete_all()
        else:
            for address in users:
                ix.delete_user(address)
        plan = [(u.address, m) for u in targets for m in self.store.mailboxes(u.address)]
        counts = {(a, m.id): len(self.store.uids(a, m.id)) for a, m in plan}
        total, done = sum(counts.values()), 0
        self.rebuilding[shard] = (0, total)
        pending = 0
        for address, mailbox in plan:
            highest = 0
            for uid, stored in self.store.envelopes(address, mailbox.id):
                if self._stop.is_set():
                    return done
                self._index_message(ix, address, mailbox, uid, stored.envelope)
                highest = max(highest, uid)
                done += 1
                pending += 1
                if pending >= self.config.batch:
                    ix.commit(None)
                    # Resident memory stays bounded: the LMDB pages read so far go back.
                    self.store.release_mapped()
                    pending = 0
                    self.rebuilding[shard] = (done, total)
                    if progress is not None:
                        progress(done, total)
            if highest:
                ix.set_watermark(address, mailbox.id, mailbox.uidvalidity, highest)
        # A user's reindex keeps following from where the index was; a whole one from the
        # head noted before the first read (what came after is replayed).
        ix.commit(None if keep_cursor else head, changelog.shard_identity(self.store, shard))
        self.rebuilding.pop(shard, None)
        if progress is not None:
            progress(done, total)
        return done

    # -- searching ----------------------------------------------------------------------------

    def reader(self, user: str, mailbox_id: int, uidvalidity: int, limit: int) -> MailboxReader:
        """The mailbox as the latest committed state of its shard's index holds it."""
        u = self.store.user(user)
        if u is None:
            raise NotFound(f"no user {user}")
        ix = self.indexes[u.shard]
        if not ix.writable:
            ix.refresh()  # another process writes it
        searcher = ix.searcher()
        return MailboxReader(ix, searcher, user, mailbox_id, uidvalidity,
                             ix.watermark(searcher, user, mailbox_id, uidvalidity), limit,
                             self.config.verify_all)

    def search(self, user: str, mailbox_id: int | None, text: str,
               fields: Iterable[str] = ("text",)) -> dict[int, list[int]]:
        """The HTTP API's search: mailbox id -> uids (ascending) of the messages of the
        mailbox (every mailbox of the user when None) in which any of ``fields`` ("text",
        "body", "subject", "from", "to", "cc", "bcc", "attachment") contains ``text``,
        case-insensitively (RFC 3501 §6.4.4 semantics: the same answer as IMAP SEARCH).
        Blocking: call it off the reactor thread."""
        wanted = [f for f in fields if f in API_FIELDS]
        if not wanted:
            raise ValueError(f"no search field among {sorted(fields)}")
        boxes = self.store.mailboxes(user) if mailbox_id is None else \
            [m for m in [self.store.mailbox_by_id(user, mailbox_id)] if m is not None]
        out: dict[int, list[int]] = {}
        for mailbox in boxes:
            uids = self.store.uids(user, mailbox.id)
            if not uids:
                continue
            admitted = self.candidates(user, mailbox, uids, [Needle(f, text) for name in wanted
                                                            for f in API_FIELDS[name]])
            found = []
            for uid in uids:
                if admitted is not None and not admitted(uid):
                    continue
                msg = Message(self.store, user, mailbox.id, uid, 0, None)
                try:
                    if any(_api_match(msg, name, text) for name in wanted):
                        found.append(uid)
                except (NotFound, FileNotFoundError):
                    continue
            if found:
                out[mailbox.id] = found
        return out

    def candidates(self, user: str, mailbox: Mailbox, uids: list[int],
                   needles: list[Needle]) -> Callable[[int], bool] | None:
        """Which of the mailbox's messages may contain any of the needles (None: all)."""
        try:
            reader = self.reader(user, mailbox.id, mailbox.uidvalidity, len(uids))
            hits: set[int] = set()
            for needle in needles:
                found = reader.matching(needle)
                if found is None:
                    return None
                hits |= found
        except Exception:
            log.exception("search index unusable for %s: scanning", user)
            return None
        watermark = reader.watermark
        return lambda uid: uid > watermark or uid in hits

    # -- the operator's view ------------------------------------------------------------------

    def lag(self) -> list[dict[str, Any]]:
        """Per shard: the log head, the index's cursor, the records not yet indexed."""
        out = []
        for shard, ix in enumerate(self.indexes):
            if not ix.writable:
                ix.refresh()
            head = changelog.log_head(self.store, shard)
            cursor = ix.cursor_or_none()
            out.append({"shard": shard, "head": head, "cursor": cursor,
                        "lag": None if cursor is None else max(head - cursor, 0),
                        "bytes": ix.size_bytes(), "rebuilding": self.rebuilding.get(shard)})
        return out

    def drift(self, shard: int) -> list[str]:
        """What the shard's index says that the store does not: an indexed message that is
        gone (only once the index has caught up with the log), a message at or below its
        mailbox's watermark that is not indexed."""
        ix = self.indexes[shard]
        if not ix.writable:
            ix.refresh()
        if ix.index is None:
            return []  # not built yet (or made anew): searches scan, the daemon builds it
        searcher = ix.searcher()
        cursor = ix.cursor_or_none()
        caught_up = cursor is not None and cursor >= changelog.log_head(self.store, shard)
        problems = []
        for u in self.store.users():
            if u.shard != shard:
                continue
            for m in self.store.mailboxes(u.address):
                stored = self.store.uids(u.address, m.id)
                watermark = ix.watermark(searcher, u.address, m.id, m.uidvalidity)
                indexed = ix.mailbox_uids(searcher, u.address, m.id, m.uidvalidity, len(stored) + 1)
                missing = [uid for uid in stored if uid <= watermark and uid not in indexed]
                gone = sorted(indexed - set(stored)) if caught_up else []
                where = f"search index shard {shard:02d}: {u.address} {m.name!r}"
                if missing:
                    problems.append(f"{where}: {len(missing)} message(s) not indexed below uid "
                                    f"{watermark} (first uid {missing[0]})")
                if gone:
                    problems.append(f"{where}: {len(gone)} indexed message(s) no longer in the "
                                    f"mailbox (first uid {gone[0]})")
        return problems


def _api_match(msg: Message, name: str, text: str) -> bool:
    if name == "body":
        return body_contains(msg, text)
    if name == "text":
        return text_contains(msg, text)
    if name == "attachment":
        return text.casefold() in msg.cached("names", lambda: "\n".join(attachment_names(msg.raw())))
    header = {v: k for k, v in ENVELOPE_HEADERS.items()}[{"from": "from_"}.get(name, name)]
    return header_contains(msg, header, text)


def wait_caught_up(service: SearchService, timeout: float = 30.0) -> bool:
    """True once every shard's index has reached its log head (tests, the CLI)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(row["lag"] == 0 for row in service.lag()):
            return True
        time.sleep(0.05)
    return False
