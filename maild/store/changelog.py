"""The change log as one API for every consumer: read, follow, durable named cursors
(docs/storage.md "The change log"; the contract is FOLLOW_API in docs/storage.md).

Implementation notes — invariants a contributor must keep:

1. Each shard's "changes" database maps a u64 ``seq`` to one JSON change record, written
   in the transaction of the change it records (operations.py). A record's seq is the last
   key of the log plus one, read inside that write transaction: writers of several
   processes interleave, and LMDB's write lock orders them, so seqs are dense and
   ascending over every process. A missing seq below the first kept one was trimmed.
2. Each record carries the writing Store's random token (``"o"``). A Store keeps one
   :class:`Tail` per shard: the highest seq handed to this process's subscribers and
   followers. Records reach it two ways: the shard writer's own commits, handed over right
   after their results are settled (so an IMAP session learns its own result before it
   hears of its own change), and wake-ups (wake.py) for other processes' commits, read
   from the log. Either way the tail hands over exactly the records after its position, in
   order: a gap is read from the log first, a record already handed over is skipped. A
   wake-up stops at a record of this Store's own token not yet handed over: its writer is
   about to hand it over (after ``OWN_WAIT`` seconds the wake-up takes it anyway).
3. A :class:`Follower` has its own position: behind the tail it reads the log in batches
   of ``READ_BATCH`` (one batch per reactor turn), then takes the tail's hand-overs. Its
   callback runs on the reactor thread (without a reactor: the tail's thread, under the
   tail's lock), in seq order, with no gap and no repeat.
4. Named cursors live in the shard's "cursors" database (name -> u64 seq), outside the
   replication redo log: a position is the node's own (a follower's indexer keeps its
   own). They are written by the shard's writer in its group commit (``local``
   operations, run on a fenced node too).
5. Trimming, in the writer transaction that logs records: the log keeps the last
   ``kept`` records and everything after the oldest cursor, but never more than the last
   ``retained`` (the hard bound): a cursor further behind gets ChangesTrimmed and resyncs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import lmdb
from twisted.internet import defer

from maild.store import codec
from maild.store.codec import jdump, jload
from maild.store.types import Change, ChangeKind, StoreError
from maild.store.writer import Batch

log = logging.getLogger(__name__)

TOKEN = "o"  # the record field naming the Store that wrote it
READ_BATCH = 1000  # records read from the log at a time (a follower: per reactor turn)
OWN_WAIT = 5.0  # seconds a wake-up waits for the writer to hand over this Store's own record


class ChangesTrimmed(StoreError):
    """Records after the position asked for were trimmed: resync from a snapshot, then
    follow from the position it gives. ``oldest`` is the first seq still held."""

    def __init__(self, shard: int, after: int, oldest: int) -> None:
        super().__init__(f"shard {shard:02d}: change records after {after} were trimmed "
                         f"(the oldest kept is {oldest})")
        self.shard = shard
        self.after = after
        self.oldest = oldest


def to_change(record: dict[str, Any]) -> Change:
    return Change(shard=record["shard"], seq=record["seq"], kind=ChangeKind(record["kind"]),
                  user=record["user"], mailbox_id=record["mailbox_id"],
                  uids=tuple(record.get("uids", ())), modseq=record.get("modseq", 0),
                  flags=tuple(frozenset(f) for f in record.get("flags", ())),
                  name=record.get("name"), extra=record.get("extra", {}))


def last_seq(txn: lmdb.Transaction[bytes], db: Any) -> int:
    cur = txn.cursor(db=db)
    return codec.read_u64(cur.key()) if cur.last() else 0


def head(env: lmdb.Environment, db: Any) -> int:
    """The highest committed seq (0: the log is empty)."""
    with env.begin() as txn:
        return last_seq(txn, db)


def read_records(env: lmdb.Environment, db: Any, shard: int, after: int, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` records with seq > ``after``, ascending, as stored (ChangesTrimmed)."""
    with env.begin() as txn:
        return _read(txn, db, shard, after, limit)[0]


def _read(txn: lmdb.Transaction[bytes], db: Any, shard: int, after: int, limit: int,
          stop: bytes | None = None) -> tuple[list[dict[str, Any]], int]:
    """(records, 0), or (the records before it, seq) of the first record whose stored
    bytes end with ``stop`` (a Store's token: the last field, written by log_records)."""
    out: list[dict[str, Any]] = []
    cur = txn.cursor(db=db)
    if not cur.set_range(codec.u64(after + 1)):
        return out, 0
    first = codec.read_u64(cur.key())
    if first > after + 1:  # seqs are dense: the ones between were trimmed
        raise ChangesTrimmed(shard, after, first)
    for key, value in cur:
        if stop is not None and value.endswith(stop):
            return out, codec.read_u64(key)
        out.append(jload(value))
        if len(out) >= limit:
            break
    return out, 0


# -- the writer's side --------------------------------------------------------------------

def log_records(b: Batch, shard: int, token: str, changes_db: Any, cursors_db: Any,
                kept: int, retained: int) -> None:
    """Number ``b.changes`` after the log's last record and put them, in the batch's
    transaction; trim what no one needs (invariants 1, 5)."""
    raw = getattr(b.txn, "raw", b.txn)  # reads need no recording (redo.py)
    seq = last_seq(raw, changes_db)
    txnid = raw.id()  # the commit's transaction id, for Tail.committed (not stored)
    for change in b.changes:
        seq += 1
        change["shard"] = shard
        change["seq"] = seq
        change[TOKEN] = token
        b.txn.put(codec.u64(seq), jdump(change), db=changes_db)
        change["txn"] = txnid
    floor = seq + 1 - kept  # records below may go
    if floor <= 1:
        return
    oldest = min((codec.read_u64(v) for v in raw.cursor(db=cursors_db).iternext(keys=False, values=True)),
                 default=None)
    if oldest is not None:
        floor = max(min(floor, oldest + 1), seq + 1 - retained)
    cur = b.txn.cursor(db=changes_db)
    while cur.first() and codec.read_u64(cur.key()) < floor:
        cur.delete()


def local(op: Callable[[Batch], Any]) -> Callable[[Batch], Any]:
    """Mark a writer operation as the node's own state (invariant 4)."""
    op.local = True  # type: ignore[attr-defined]
    return op


def op_set_cursor(cursors_db: Any, name: str, seq: int | None) -> Callable[[Batch], None]:
    """Set (None: remove) a named cursor."""
    def op(b: Batch) -> None:
        raw = getattr(b.txn, "raw", b.txn)
        if seq is None:
            raw.delete(name.encode("utf-8"), db=cursors_db)
        else:
            raw.put(name.encode("utf-8"), codec.u64(seq), db=cursors_db)
    return local(op)


def cursor(env: lmdb.Environment, cursors_db: Any, name: str) -> int:
    with env.begin() as txn:
        raw = txn.get(name.encode("utf-8"), db=cursors_db)
    return 0 if raw is None else codec.read_u64(raw)


def cursors(env: lmdb.Environment, cursors_db: Any) -> dict[str, int]:
    with env.begin() as txn:
        return {bytes(k).decode("utf-8"): codec.read_u64(v) for k, v in txn.cursor(db=cursors_db)}


# -- the reader's side --------------------------------------------------------------------

class Tail:
    """This Store's position in one shard's log, and who hears of what follows (invariant 2)."""

    def __init__(self, index: int, env: lmdb.Environment, db: Any, token: str,
                 publish: Callable[[list[Change]], None], reactor: Any = None) -> None:
        self.index = index
        self.env = env
        self.db = db
        self.token = token
        self.publish = publish
        self.reactor = reactor
        self.lock = threading.RLock()
        self.position = head(env, db)
        self.followers: list[Follower] = []
        self._blocked: tuple[int, float] | None = None  # own record a wake-up waits for, since
        self._mine = b',"' + TOKEN.encode() + b'":"' + token.encode() + b'"}'  # how its records end
        self._txnid = -1  # the snapshot (LMDB txn id) whose records were all handed over
        # A commit whose meta page is written but not yet published to readers (see poll):
        # the wake-up that page write caused has been spent, so the caller polls again soon.
        self.pending = False

    def committed(self, changes: list[dict[str, Any]]) -> None:
        """This Store's writer committed ``changes`` and settled their results."""
        if not changes:
            return
        with self.lock:
            first = changes[0]["seq"]
            if first > self.position + 1:
                self._read_to(first - 1)
            fresh = [to_change(c) for c in changes if c["seq"] > self.position]
            if fresh:
                self._hand(fresh)
            # Everything in the snapshot of this commit is handed over now: its own
            # wake-up (wake.py) need not read the log.
            if self.position == changes[-1]["seq"] and "txn" in changes[-1]:
                self._txnid = max(self._txnid, changes[-1]["txn"])

    def _read_to(self, upto: int) -> None:
        while self.position < upto:
            try:
                rows = read_records(self.env, self.db, self.index, self.position,
                                    min(READ_BATCH, upto - self.position))
            except ChangesTrimmed as exc:
                log.error("%s: this process fell behind the kept log; changes it missed "
                          "are not announced", exc)
                self.position = exc.oldest - 1
                continue
            if not rows:
                return
            self._hand([to_change(r) for r in rows])

    def poll(self) -> bool:
        """Hand over what other processes committed; True when more may be waiting.
        ``pending`` is set when a commit was written but not yet visible: poll again soon."""
        with self.lock:
            self.pending = False
            try:
                with self.env.begin() as txn:
                    # A wake-up for pages written before the commit's meta page, or for a
                    # commit already handed over: the snapshot is the one last read to its end.
                    txnid = txn.id()
                    if txnid == self._txnid:
                        self.pending = self._unpublished(txnid)
                        return False
                    rows, own = _read(txn, self.db, self.index, self.position, READ_BATCH, self._mine)
                    if own:
                        now = time.monotonic()
                        if self._blocked is None or self._blocked[0] != own:
                            self._blocked = (own, now)
                        elif now - self._blocked[1] >= OWN_WAIT:
                            log.warning("shard %02d: change %d was committed here but not handed "
                                        "over by its writer in %.0f s: announced now",
                                        self.index, own, OWN_WAIT)
                            rows, own = _read(txn, self.db, self.index, self.position, READ_BATCH)
            except ChangesTrimmed as exc:
                log.error("%s: this process fell behind the kept log; changes it missed "
                          "are not announced", exc)
                self.position = exc.oldest - 1
                return True
            if rows:
                self._hand([to_change(r) for r in rows])
            more = len(rows) == READ_BATCH
            if not more and not own:
                self._txnid = txnid  # everything in that snapshot was handed over
                self.pending = self._unpublished(txnid)
            return more

    def _unpublished(self, txnid: int) -> bool:
        """Whether a commit newer than snapshot ``txnid`` has its meta page in the data
        file already. LMDB's commit writes the meta page (the write wake.py's inotify
        watch sees) and only then publishes the transaction id to new readers (the lock
        file's shared memory, no file event): a wake-up read in between finds the old
        snapshot, and no further event follows. mdb_env_info reads the meta pages
        themselves, so it sees such a commit."""
        return int(self.env.info()["last_txnid"]) > txnid

    def _hand(self, records: list[Change]) -> None:
        self.position = records[-1].seq
        self.publish(records)
        for follower in list(self.followers):
            follower.offer(records)


class Follower:
    """Calls ``callback`` with every record after a position, in order (invariant 3)."""

    def __init__(self, tail: Tail, after: int, callback: Callable[[list[Change]], None],
                 cursor: str | None, on_trimmed: Callable[[ChangesTrimmed], None] | None,
                 save: Callable[[str, int | None], defer.Deferred[None]]) -> None:
        self.tail = tail
        self.shard = tail.index
        self.position = after
        self.callback = callback
        self.cursor = cursor
        self.on_trimmed = on_trimmed
        self._save = save
        self.closed = False
        self._catching = False
        self._acked = after
        self._saving: defer.Deferred[None] | None = None
        self._waiters: list[defer.Deferred[None]] = []

    def start(self) -> None:
        with self.tail.lock:
            self.tail.followers.append(self)
            self._catch_up()

    def offer(self, records: list[Change]) -> None:
        """The tail's hand-over (on the reactor thread, in order)."""
        if self.closed or self._catching or records[-1].seq <= self.position:
            return
        if records[0].seq > self.position + 1:
            self._catch_up()
            return
        self._call([r for r in records if r.seq > self.position])

    def _call(self, records: list[Change]) -> None:
        self.position = records[-1].seq
        try:
            self.callback(records)
        except Exception:
            log.exception("change-log follower %s of shard %02d failed", self.cursor or "", self.shard)

    def _catch_up(self) -> None:
        if self.closed:
            return
        if self.tail.reactor is None:
            with self.tail.lock:
                while not self.closed and self._step():
                    pass
            return
        self._catching = True
        self.tail.reactor.callLater(0, self._turn)

    def _turn(self) -> None:
        if self.closed:
            return
        if self._step():
            self.tail.reactor.callLater(0, self._turn)
        else:
            self._catching = False

    def _step(self) -> bool:
        """Read one batch after the position; True when there may be more."""
        try:
            rows = read_records(self.tail.env, self.tail.db, self.shard, self.position, READ_BATCH)
        except ChangesTrimmed as exc:
            self.close()
            if self.on_trimmed is None:
                log.error("change-log follower %s: %s; it stops", self.cursor or "", exc)
            else:
                self.on_trimmed(exc)
            return False
        if rows:
            self._call([to_change(r) for r in rows])
        return len(rows) == READ_BATCH

    def ack(self, seq: int) -> defer.Deferred[None]:
        """Keep ``seq`` as the cursor's durable position (consumed up to it); the Deferred
        fires when it is committed. Acks are coalesced: one commit at a time."""
        if self.cursor is None:
            return defer.succeed(None)
        self._acked = max(self._acked, seq)
        d: defer.Deferred[None] = defer.Deferred()
        self._waiters.append(d)
        if self._saving is None:
            self._flush()
        return d

    def _flush(self) -> None:
        assert self.cursor is not None
        waiters, self._waiters = self._waiters, []
        self._saving = self._save(self.cursor, self._acked)

        def done(result: Any) -> Any:
            self._saving = None
            for w in waiters:
                w.callback(None) if not hasattr(result, "raiseException") else w.errback(result)
            if self._waiters:
                self._flush()
            return None
        self._saving.addBoth(done)

    def close(self) -> None:
        self.closed = True
        with self.tail.lock:
            if self in self.tail.followers:
                self.tail.followers.remove(self)
