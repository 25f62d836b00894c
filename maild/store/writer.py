"""One writer thread per LMDB environment, committing operations in batches.

Group commit: the thread takes every operation queued while the previous commit was
fsyncing (up to ``max_batch``), runs them in one transaction, commits once, and only then
completes the operations' futures. When an operation raises, the batch is run again with
each operation in its own nested transaction, so that one fails alone and its neighbours
commit. Many concurrent deliveries share one fsync; the reactor thread never
waits on one.

The shard writers of a store share one lock around the Python part of a batch (running the
operations), not around its commit. py-lmdb releases the GIL on every call, so writers that
run their operations at the same time hand the GIL to each other, and to the reactor,
dozens of times per message; taking turns costs nothing, since only one of them can run
Python at a time anyway. The commits (page writes and fsync) still overlap.

Several processes over one data directory each have their own writers; LMDB's write lock
orders their transactions. Everything a batch numbers (UIDs, modseqs, change-log seqs) is
read inside its transaction, and body files are linked, and unreferenced ones removed,
only while holding that lock (see _write and _committed).

Shared meta sync (``[store] shared_meta_sync``, maild/store/metasync.py): an environment
opened with MDB_NOMETASYNC commits holding LMDB's write lock for one flush instead of two;
the writer then makes the batch durable after releasing the lock (:meth:`MetaSync.wait`:
one fsync, shared with every process's commits meanwhile) before it answers the batch's
operations, publishes its changes or removes the body files it unreferenced. Another
process commits while this one syncs. (A second thread doing the sync while the writer ran
the next batch was measured too: smaller batches, ~10 % more CPU per command, and SMTP
ingest slower on this 2-core machine — docs/performance.md.)

A commit that fails for lack of space (the LMDB map, ENOSPC/EDQUOT from the file system,
or the EIO a short write gives on ext4) fails its operations with :class:`StoreFull`, is
reported once to the store's :class:`~maild.store.health.Health` (one log line, not a
traceback per message) and changes nothing; the next batch simply tries again, so writes
resume by themselves when space returns.

Replication (docs/replication.md): with a redo log, the operations get a recording
wrapper of the transaction and the batch's operations are appended as one record in the
same transaction. A fenced writer (a follower, a fenced leader) fails every operation not
marked ``replicated`` or ``local`` (the node's own state, such as change-log cursors,
which the redo log does not record) with ReadOnlyStore, without running it. In sync mode
the ``gate`` holds the answers of a committed batch until a follower has its record.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lmdb
from twisted.internet import defer
from twisted.python.failure import Failure

from maild.store.blobs import BlobDir, StagedBlob, fsync_dir
from maild.store.metasync import MetaSync
from maild.store.types import ReadOnlyStore, StoreFull
from maild.util import metrics

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """What operations of one batch share: the transaction and post-commit work."""

    txn: lmdb.Transaction[bytes]
    dbs: dict[str, Any]
    changes: list[dict[str, Any]] = field(default_factory=list)
    unlink: set[str] = field(default_factory=set)  # blob names whose refcount reached 0
    logged: bool = False  # changes already in the change log (a replicated record's)
    seq: int = 0  # the redo record this batch wrote (0: none)
    txnid: int = 0  # LMDB's id of the committed transaction (shared meta sync waits for it)


Operation = Callable[[Batch], Any]


Settle = Callable[[bool, Any], None]  # (committed, result or exception)


@dataclass(slots=True)
class _Item:
    op: Operation
    settle: Settle
    blobs: tuple[StagedBlob, ...] = ()
    wait: bool = False  # the submitter blocks: settle in this thread, not through dispatch
    settled: bool = False  # handed to _complete: a later failure of the batch must skip it


def _settle_future(future: Future[Any]) -> Settle:
    def settle(ok: bool, value: Any) -> None:
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
    return settle


def _settle_deferred(d: defer.Deferred[Any]) -> Settle:
    def settle(ok: bool, value: Any) -> None:
        if ok:
            d.callback(value)
        else:
            d.errback(Failure(value))
    return settle


_STOP = object()


class _OperationFailed(Exception):
    """An operation of a batch run without nested transactions raised."""


class Writer:
    def __init__(
        self,
        name: str,
        env: lmdb.Environment,
        dbs: dict[str, Any],
        *,
        blob_dir: BlobDir | None,
        max_batch: int,
        on_commit: Callable[[list[dict[str, Any]]], None] | None = None,
        log_changes: Callable[[Batch], None] | None = None,
        dispatch: Callable[[Callable[[], None]], None] | None = None,
        ops_lock: threading.Lock | None = None,
        health: Any = None,
        redo: Any = None,
        meta_sync: MetaSync | None = None,
    ) -> None:
        self.name = name
        # The environment's name for the operator: "shard 00", "directory".
        self.where = f"shard {name[5:]}" if name.startswith("shard") else name
        self.health = health  # maild.store.health.Health, or None
        self.env = env
        self.dbs = dbs
        self.blob_dir = blob_dir
        self.max_batch = max_batch
        self.on_commit = on_commit
        self.log_changes = log_changes
        # The replication log (maild.store.redo.RedoLog), or None: replication is off.
        self.redo = redo
        # Why this node takes no writes (a follower, a fenced leader); None: it does.
        # Operations marked ``replicated`` (a follower applying the leader's records) run.
        self.fence: str | None = None
        # Sync replication: (environment, record) -> a Deferred that fires when a follower
        # holds the record (or fails: not acknowledged), or None: answer at once.
        self.gate: Callable[[str, int], defer.Deferred[Any] | None] | None = None
        # Where results are delivered (the reactor's callFromThread); None: in this thread.
        # With a dispatcher, waiting on a future from the dispatching thread deadlocks.
        self.dispatch = dispatch
        self._ops_lock: contextlib.AbstractContextManager[Any] = ops_lock or contextlib.nullcontext()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # The environment was opened with MDB_NOMETASYNC: each batch is synced after its
        # commit (module docstring); None: LMDB's commit fsyncs everything itself.
        if meta_sync is None and not env.flags()["metasync"]:
            meta_sync = MetaSync(env, Path(env.path()) / "synced")
        self.meta_sync = meta_sync
        self._thread = threading.Thread(target=self._run, name=f"maild-writer-{name}", daemon=True)
        self._thread.start()
        self.commits = 0
        self.operations = 0

    def submit(self, op: Operation, blobs: tuple[StagedBlob, ...] = ()) -> Future[Any]:
        """Queue ``op``; its future completes in this writer's thread, or through the
        dispatcher when there is one."""
        future: Future[Any] = Future()
        self._queue.put(_Item(op, _settle_future(future), blobs))
        return future

    def submit_deferred(self, op: Operation, blobs: tuple[StagedBlob, ...] = ()) -> defer.Deferred[Any]:
        """Queue ``op``; the Deferred fires on the dispatcher's thread (the reactor), with
        no Future in between: this is the path of every message append."""
        assert self.dispatch is not None, "submit_deferred needs a dispatcher"
        d: defer.Deferred[Any] = defer.Deferred()
        self._queue.put(_Item(op, _settle_deferred(d), blobs))
        return d

    def run(self, op: Operation) -> Any:
        """Run ``op`` and wait for its commit (administrative work; any thread)."""
        future: Future[Any] = Future()
        self._queue.put(_Item(op, _settle_future(future), (), wait=True))
        return future.result()

    def close(self) -> None:
        """Finish everything queued so far, then stop the thread."""
        self._queue.put(_STOP)
        self._thread.join()
        if self.meta_sync is not None:
            # Commits made outside the writer (migrations at open) are durable at close too.
            try:
                self.meta_sync.wait(int(self.env.info()["last_txnid"]))
            except lmdb.Error as exc:  # a failed environment: nothing was answered for it
                log.error("writer %s: syncing at close failed: %s", self.name, _storage_error(exc))
            finally:
                self.meta_sync.close()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                return
            items = [first]
            while len(items) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stopping = True
                    break
                items.append(nxt)
            try:
                self._commit(items)
            except BaseException as exc:  # every waiter must hear about it
                error = _storage_error(exc)
                if isinstance(error, StoreFull):
                    self._report_full(error)
                else:
                    log.exception("writer %s: batch of %d failed", self.name, len(items))
                self._complete([(item, False, error) for item in items if not item.settled], None)

    def _report_full(self, error: BaseException) -> None:
        if self.health is not None:
            self.health.write_failed(self.where, str(error))
        else:
            log.error("%s: %s", self.where, error)

    def _link_blobs(self, items: list[_Item]) -> None:
        if self.blob_dir is None:
            return
        dirs: set[Path] = set()
        for item in items:
            for staged in item.blobs:
                linked = self.blob_dir.link(staged)
                if linked is not None:
                    dirs.add(linked)
        if dirs:
            dirs.add(self.blob_dir.root)
        for directory in dirs:
            fsync_dir(directory)

    @metrics.timed_commit
    def _commit(self, items: list[_Item]) -> None:
        try:
            batch, results = self._write(items, isolate=False)
        except _OperationFailed:
            # An operation raised, and its writes so far went with the whole transaction.
            # Run the batch again, each operation in a nested transaction this time, so
            # that one alone fails. Nested transactions are the exception: each costs
            # LMDB a copy of its dirty pages, and with bodies on overflow pages (above
            # ~2 KB) they took a third of the append throughput.
            batch, results = self._write(items, isolate=True)
        if self.meta_sync is not None:  # the meta page, after the write lock is released
            try:
                self.meta_sync.wait(batch.txnid)
            except BaseException as exc:  # committed, maybe not durable: fail the answers
                error = _storage_error(exc)
                log.error("writer %s: syncing a committed batch failed: %s", self.name, error)
                self._complete([(item, False, error) for item, _, _ in results], batch.changes)
                return
        self._committed(batch, results)

    def _committed(self, batch: Batch, results: list[tuple[_Item, bool, Any]]) -> None:
        """After the batch's commit is durable: count, remove the body files it left
        unreferenced, answer and publish."""
        if self.health is not None and any(ok for _, ok, _ in results):
            self.health.write_succeeded(self.where)
        self.commits += 1
        self.operations += len(results)
        try:
            if batch.unlink and self.blob_dir is not None:
                # Checked and removed holding LMDB's write lock (a transaction that writes
                # nothing): a writer of another process links a name only holding it too
                # (_write), so it either finds the file gone and links its own, or has
                # committed its reference, which is seen here.
                wtxn = self.env.begin(write=True)
                try:
                    for sha in batch.unlink:
                        if wtxn.get(bytes.fromhex(sha), db=self.dbs["blobref"]) is None:
                            self.blob_dir.remove(sha)
                finally:
                    wtxn.abort()
        except Exception:  # committed all the same: its results and changes must go out
            log.exception("writer %s: removing unreferenced blob files failed (fsck/sweep "
                          "removes them later)", self.name)
        self._complete(results, batch.changes, batch.seq)

    def _write(self, items: list[_Item], isolate: bool) -> tuple[Batch, list[tuple[_Item, bool, Any]]]:
        # Leaving the outer block commits (page writes and fsync, outside the lock), or
        # aborts when an exception leaves it. Body files are linked holding LMDB's write
        # lock, so that no process removes a file found here before this batch's reference
        # to it commits (see the removal in _committed; sweep.py).
        with self.env.begin(write=True) as txn:
            self._link_blobs(items)
            with self._ops_lock:
                batch, results = self._apply(txn, items, isolate)
            batch.txnid = txn.id()
            return batch, results

    def _apply(self, txn: lmdb.Transaction[bytes], items: list[_Item],
               isolate: bool) -> tuple[Batch, list[tuple[_Item, bool, Any]]]:
        """Run the operations in ``txn`` and log their changes. Without ``isolate`` the
        first operation to raise aborts the batch (:class:`_OperationFailed`); with it,
        each runs in its own nested transaction and a failure is that operation's result."""
        redo = self.redo
        ops: list[Any] = []
        replicated = False
        batch = Batch(txn if redo is None else redo.wrap(txn, ops), self.dbs)
        results: list[tuple[_Item, bool, Any]] = []
        for item in items:
            if getattr(item.op, "replicated", False):
                replicated = True
            elif self.fence is not None and not getattr(item.op, "local", False):
                results.append((item, False, ReadOnlyStore(self.fence)))
                continue
            if not isolate:
                try:
                    results.append((item, True, item.op(batch)))
                except Exception as exc:
                    raise _OperationFailed from exc
                continue
            child = self.env.begin(write=True, parent=txn)
            mark = (len(batch.changes), set(batch.unlink), len(ops))
            try:
                result = item.op(Batch(child if redo is None else redo.wrap(child, ops), self.dbs,
                                       batch.changes, batch.unlink))
            except Exception as exc:  # handed to the waiter
                child.abort()
                del ops[mark[2]:]
                del batch.changes[mark[0]:]
                batch.unlink = mark[1]
                error = _storage_error(exc)
                if isinstance(error, StoreFull) and not isinstance(exc, StoreFull):
                    self._report_full(error)
                results.append((item, False, error))
            else:
                child.commit()
                results.append((item, True, result))
        if self.log_changes is not None and batch.changes and not batch.logged:
            self.log_changes(batch)
        if redo is not None and ops and not replicated:
            batch.seq = redo.append(txn, ops)  # in the same transaction: committed together or not
        return batch, results

    def _complete(self, results: list[tuple[_Item, bool, Any]], changes: list[dict[str, Any]] | None,
                  seq: int = 0) -> None:
        """Settle a batch's operations (blocked submitters here, the rest through the
        dispatcher) and publish its committed ``changes``."""
        for item, _, _ in results:
            item.settled = True
        def settle(finished: list[tuple[_Item, bool, Any]], publish: bool) -> None:
            # Answer the writers, then broadcast, in one step on the reactor thread: a
            # session learns its own results first (so it can tell its own changes from
            # others'), and no client can act on an OK before other sessions have heard.
            for item, ok, value in finished:
                item.settle(ok, value)
            if publish and self.on_commit is not None and changes:
                self.on_commit(changes)
        def gated() -> None:
            # Sync replication: the answers wait for the follower; a failure of the wait
            # (tempfail) fails the answers, while the change, committed here, is published.
            waiting = [r for r in results if not r[0].wait]
            gate = None if self.gate is None or not seq or self.redo is None else \
                self.gate(self.redo.where, seq)
            if gate is None:
                settle(waiting, True)
                return
            def after(outcome: Any) -> None:
                if isinstance(outcome, Failure):
                    settle([(item, False, outcome.value) if ok else (item, ok, value)
                            for item, ok, value in waiting], True)
                else:
                    settle(waiting, True)
            gate.addBoth(after)
        if self.dispatch is None:
            settle(results, True)
        else:
            settle([r for r in results if r[0].wait], False)
            self.dispatch(gated)


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# py-lmdb raises DiskError for ENOSPC, and a plain Error with strerror's text for the rest;
# ext4 answers a write that could only partly be done for lack of space with EIO.
_NO_SPACE_TEXTS = tuple(os.strerror(e) for e in (*_NO_SPACE, errno.EIO))


def _storage_error(exc: BaseException) -> BaseException:
    """``exc`` as the caller should see it: StoreFull when it says there is no space."""
    if isinstance(exc, lmdb.MapFullError):
        return StoreFull(f"the LMDB map is full (raise store.map_size_mb): {exc}")
    if isinstance(exc, lmdb.PanicError):  # a failed meta page write: only reopening clears it
        return StoreFull(f"the environment refuses writes after a failed write ({exc}): free "
                         "space, then restart maild")
    if isinstance(exc, lmdb.DiskError) or (
            isinstance(exc, lmdb.Error) and any(t in str(exc) for t in _NO_SPACE_TEXTS)):
        return StoreFull(f"file system full: {exc}")
    if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
        return StoreFull(str(exc))
    return exc
