"""The store: the only code that touches LMDB and blob files (see docs/storage.md).

Reads are synchronous. Writes return Deferreds that fire on the reactor thread after the
batch holding them is committed with fsync. With ``reactor=None`` (CLI, fsck, tests run
without a reactor) writes block until committed and return already-fired Deferreds.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
import secrets
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from twisted.internet import defer
from twisted.python import threadable
from twisted.python.failure import Failure

from maild.config import ReplicationConfig, StoreConfig
from maild.store import blobs as blobfiles
from maild.store import changelog, mapped, redo, retry, shared, sweep, wake
from maild.store import operations as ops
from maild.store.changelog import ChangesTrimmed, Follower
from maild.store.codec import MessageRecord, StoredEnvelope
from maild.store.directory import Directory, canonical, split_address
from maild.store.health import Health
from maild.store.health import path_for as health_path
from maild.store.health import read_all as health_files
from maild.store.sending import MessageReader, OpenMessage, message_shape
from maild.store.shard import Shard
from maild.store.types import (
    DEFAULT_MAILBOXES,
    AppendResult,
    BlobDamaged,
    Change,
    CopyResult,
    Domain,
    Envelope,
    ExpungeResult,
    FlagMode,
    FlagResult,
    Mailbox,
    MailboxNotFound,
    MessageMeta,
    NotFound,
    Quota,
    Recipient,
    SpecialUse,
    StoreFull,
    User,
    UserNotFound,
)
from maild.store.views import MailboxIndex
from maild.util.message import envelope_fields, header_end

log = logging.getLogger(__name__)

__all__ = ["ChangesTrimmed", "Follower", "Store", "canonical", "split_address"]


RETRY_LEASE_SECONDS = 600.0  # one attempt at a local-delivery retry entry takes far less
TOKEN_PREFIX = "mdt_"  # API bearer tokens: recognisable in logs and secret scanners


def token_digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


def _of_user(records: list[dict[str, Any]], user: str | None) -> list[dict[str, Any]]:
    """API tokens or webhooks: those of ``user`` (all when None), oldest first per user."""
    address = None if user is None else canonical(user)
    return sorted((r for r in records if address is None or r["user"] == address),
                  key=lambda r: (r["user"], r["created"]))
VERIFIED_FILES_MAX = 20_000  # bodies whose checksum was verified (files by inode), remembered


def shard_for(user_id: int, shards: int) -> int:
    """Stable placement of a new user; recorded in the directory so it can change later."""
    digest = hashlib.blake2b(user_id.to_bytes(8, "big"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


# A message handed to the store: bytes, or pieces stored one after the other (a large
# message is then never joined). Every piece but the last holds whole header fields
# (trace and result headers prepended), so the header section is found without a join.
Message = bytes | Sequence[bytes]


def _header_of(raw: Message) -> bytes:
    """``raw`` (see :data:`Message`) when it is bytes, else its header section joined from
    the pieces without the body: what envelope_fields parses, the body never copied."""
    if isinstance(raw, bytes):
        return raw
    *fields, last = raw
    return b"".join(fields) + last[:header_end(last)]


_T = TypeVar("_T")


def _unlink_then(result: _T, path: Path) -> _T:
    """A Deferred callback: remove a staged file, pass the result (or failure) on."""
    path.unlink(missing_ok=True)
    return result


def _append_result(address: str, written: tuple[int, int, int, int]) -> AppendResult:
    return AppendResult(address, *written)


def _release_then(store: Store, name: str, owner: str, result: _T) -> _T:
    """A Deferred callback: give a lease back, pass the result (or failure) on."""
    store.release_lease(name, owner)
    return result


def _nonempty(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False


def _fire_one(d: defer.Deferred[Any], f: Future[Any]) -> None:
    exc = f.exception()
    if exc is None:
        d.callback(f.result())
    else:
        d.errback(exc)


class _PrefixedReader(io.RawIOBase):
    """prefix bytes followed by a blob file, as one stream (seekable, so IMAP FETCH can
    stream any section of a message from its file)."""

    def __init__(self, prefix: bytes, blob: io.BufferedIOBase) -> None:
        self._whole = memoryview(prefix)
        self._prefix = self._whole
        self._blob = blob

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return len(self._whole) - len(self._prefix) + (self._blob.tell() if not self._prefix else 0)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_SET or offset < 0:
            raise OSError("only absolute positions are supported")
        skip = min(offset, len(self._whole))
        self._prefix = self._whole[skip:]
        self._blob.seek(offset - skip)
        return offset

    def readinto(self, buffer: Any) -> int:
        if self._prefix:
            n = min(len(buffer), len(self._prefix))
            buffer[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        return self._blob.readinto(buffer)

    def close(self) -> None:
        self._blob.close()
        super().close()


def _unlink_staged(staged: tuple[blobfiles.StagedBlob, dict[str, str]] | None) -> None:
    """Remove a staging file (None: its staging failed, and the failure was handled)."""
    if staged is not None and staged[0].path is not None:
        staged[0].path.unlink(missing_ok=True)



def _stamp(sha: str, st: os.stat_result) -> tuple[str, int, int, int]:
    """What a verified body file is remembered by: its name, inode, size and mtime (hard
    links keep them; a rewrite changes them)."""
    return (sha, st.st_ino, st.st_size, st.st_mtime_ns)

class Store:
    def __init__(self, data_dir: Path, config: StoreConfig, reactor: Any = None,
                 replication: ReplicationConfig | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.config = config
        self.reactor = reactor
        redo_log = self._replication_state(replication)
        self._subscribers: list[Callable[[Change], None]] = []
        # Written into every change record this Store logs (changelog.py invariant 2).
        self.token = os.urandom(6).hex()
        self._bell: wake.Bell | None = None
        self._fire_lock = threading.Lock()
        self._user_cache: dict[str, tuple[User, int]] = {}  # address -> (user, directory txn id)
        self._enqueue_listeners: list[Callable[[], None]] = []
        self._pending: list[Callable[[], None]] = []  # for the reactor thread (_in_reactor)
        self.tmp_dir = self._claim_tmp_dir()
        # State the processes over this data directory share (shared.py): opened on use.
        self.shared = shared.SharedState(self.data_dir / "run")
        self.counters = self.shared.counters
        # The serving daemon tells `maild status` what state its store is in (health.py).
        self.health = Health(health_path(self.data_dir) if reactor is not None else None)
        max_batch = config.max_batch if config.group_commit else 1
        map_size = config.map_size_mb * 1024 * 1024
        self.directory = Directory(self.data_dir / "directory",
                                   config.directory_map_size_mb * 1024 * 1024, max_batch,
                                   config.shards, self.health, self._directory_required, redo_log,
                                   # results on the reactor: sync replication gates them there
                                   None if reactor is None or redo_log is None else self._in_reactor,
                                   meta_sync=config.shared_meta_sync)
        ops_lock = threading.Lock()  # the shard writers take turns running Python (writer.py)
        self.shards: list[Shard] = []
        try:
            for i in range(config.shards):
                self.shards.append(Shard(
                    i, self.data_dir / "shards" / f"{i:02d}", map_size, max_batch, self._committed,
                    None if reactor is None else self._in_reactor, ops_lock, self.health,
                    functools.partial(self._shard_required, i), redo_log, token=self.token,
                    kept=config.changes_kept, retained=config.changes_retained,
                    index_cache_bytes=config.mailbox_index_mb * 1024 * 1024,
                    meta_sync=config.shared_meta_sync))
        except BaseException:
            for shard in self.shards:
                shard.close()
            self.directory.close()
            self.health.close()
            raise
        if self.repl_fence is not None:
            self.set_fence(self.repl_fence)
        self._repolling: set[int] = set()  # shards with a look-again scheduled (_rung)
        self.tails = [changelog.Tail(s.index, s.env, s.dbs["changes"], self.token, self._publish, reactor)
                      for s in self.shards]
        self._stager = ThreadPoolExecutor(max_workers=8, thread_name_prefix="maild-stage")
        self._verified_files: OrderedDict[tuple[str, int, int, int], None] = OrderedDict()
        self._verified_lock = threading.Lock()

    def _directory_required(self) -> str | None:
        """Why an empty or missing directory must not be created anew: shards hold mail."""
        held = [i for i in range(self.config.shards)
                if _nonempty(self.data_dir / "shards" / f"{i:02d}" / "lmdb" / "data.mdb")]
        if not held:
            return None
        return f"shard(s) {', '.join(f'{i:02d}' for i in held)} hold mail of the users it lists"

    def _shard_required(self, index: int) -> str | None:
        """Why an empty or missing shard must not be created anew: the directory lists users on it."""
        users = [u.address for u in self.directory.users() if u.shard == index]
        if not users:
            return None
        more = f" and {len(users) - 3} more" if len(users) > 3 else ""
        return f"the directory lists {len(users)} user(s) on it ({', '.join(users[:3])}{more})"

    def _claim_tmp_dir(self) -> Path:
        """A staging directory of this process; those of dead processes are removed (their
        staged blobs were never referenced, or are linked into a shard already)."""
        root = self.data_dir / "tmp"
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.iterdir():
            if not stale.name.isdigit() or not shared.pid_alive(int(stale.name)):
                shutil.rmtree(stale, ignore_errors=True)
        mine = root / str(os.getpid())
        mine.mkdir(exist_ok=True)
        return mine

    def close(self) -> None:
        """Finish every queued write, then close the environments."""
        self._stager.shutdown(wait=True)
        if self._bell is not None:
            self._bell.close()
            self._bell = None
        for s in self.shards:
            s.close()
        self.directory.close()
        self.health.close()
        self.shared.close()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def release_mapped(self) -> int:
        """Give back the pages of the LMDB maps this process has touched (mapped.py): for
        long bulk jobs, whose resident memory would otherwise grow with the store."""
        files = [self.data_dir / "directory" / "lmdb" / "data.mdb"]
        files += [s.path / "lmdb" / "data.mdb" for s in self.shards]
        return mapped.release(files)

    # -- replication (docs/replication.md) --------------------------------------------

    def _replication_state(self, replication: ReplicationConfig | None) -> Any:
        """Read the node's replication state; return the redo-log factory when replication
        is on (configured, or this data directory replicated before), else None."""
        state = redo.read_state(self.data_dir)
        configured = None if replication is None else replication.role
        if not state:
            if configured in (None, "standalone"):
                self.repl_role, self.repl_epoch, self.repl_fence = "standalone", 0, None
                return None
            # The role is the node's from now on: promote and resync change it, not the
            # configuration, so no process opening this directory mistakes a follower for
            # a leader.
            state = {"epoch": 1, "role": configured, "history": [[1, {}]], "fenced": None}
            redo.write_state(self.data_dir, state)
        # A directory that replicated keeps its log, even configured standalone: a
        # follower may return.
        self.repl_role = state.get("role") or (
            configured if configured not in (None, "standalone") else "leader")
        self.repl_epoch = int(state["epoch"])
        self.repl_fence = state.get("fenced") or (
            "this node is a replication follower" if self.repl_role == "follower" else None)
        retain = redo.DEFAULT_RETAIN if replication is None else replication.retain
        return lambda where, env, dbs: redo.RedoLog(where, env, dbs, retain, lambda: self.repl_epoch)

    def replication_logs(self) -> dict[str, redo.RedoLog]:
        """Each environment's redo log by name ("directory", "shard 00", ...); {} when
        replication is off."""
        out: dict[str, redo.RedoLog] = {}
        if self.directory.redo is not None:
            out["directory"] = self.directory.redo
        for s in self.shards:
            if s.redo is not None:
                out[s.redo.where] = s.redo
        return out

    def _environment(self, where: str) -> tuple[Any, blobfiles.BlobDir]:
        if where == "directory":
            return self.directory.writer, self.directory.blobs
        shard = self.shards[int(where.split()[1])]
        return shard.writer, shard.blobs

    def blob_dir(self, where: str) -> blobfiles.BlobDir:
        return self._environment(where)[1]

    def has_blob(self, where: str, sha: str) -> bool:
        """Whether the environment holds the body ``sha`` (a file, or inline in a shard)."""
        writer, blobs = self._environment(where)
        if blobs.path(sha).exists():
            return True
        if "blobdata" not in writer.dbs:
            return False
        with writer.env.begin() as txn:
            return txn.get(bytes.fromhex(sha), db=writer.dbs["blobdata"]) is not None

    def stage_blob_file(self, path: Path) -> blobfiles.StagedBlob:
        """A fetched body file (fsynced by the caller) as a staged blob, checked."""
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        return blobfiles.StagedBlob(digest.hexdigest(), path, path.stat().st_size)

    def apply_replicated(self, where: str, seq: int, record: bytes,
                         blobs: tuple[blobfiles.StagedBlob, ...] = ()) -> defer.Deferred[int]:
        """Apply the leader's record ``seq`` of environment ``where`` with the staged body
        files it references; fires with the number of operations applied (0: it was
        applied already) after the commit."""
        writer, _ = self._environment(where)
        log = writer.redo
        if log is None:
            return defer.fail(redo.RecordError("replication is off on this node"))
        op = redo.replicated_op(log, seq, record)
        if self.reactor is None or writer.dispatch is None:  # the directory's writer has none
            return self._deferred(writer.submit(op, blobs))
        return writer.submit_deferred(op, blobs)

    def apply_snapshot(self, where: str, step: str, chunk: bytes = b"", position: int = 0, epoch: int = 0,
                       blobs: tuple[blobfiles.StagedBlob, ...] = ()) -> defer.Deferred[int]:
        """One step of copying the leader's snapshot of ``where`` (redo.snapshot_op)."""
        writer, _ = self._environment(where)
        assert writer.redo is not None
        op = redo.snapshot_op(writer.redo, step, chunk, position, epoch)
        if self.reactor is None or writer.dispatch is None:
            return self._deferred(writer.submit(op, blobs))
        return writer.submit_deferred(op, blobs)

    def set_fence(self, reason: str | None) -> None:
        """Refuse (reason) or take (None) ordinary writes on every environment."""
        self.repl_fence = reason
        self.directory.writer.fence = reason
        for s in self.shards:
            s.writer.fence = reason

    # -- plumbing ----------------------------------------------------------------------

    def _deferred(self, future: Future[Any]) -> defer.Deferred[Any]:
        if self.reactor is None:
            try:
                return defer.succeed(future.result())
            except Exception as exc:  # handed to the caller's errback
                return defer.fail(exc)
        d: defer.Deferred[Any] = defer.Deferred()

        def done(f: Future[Any]) -> None:
            if threadable.isInIOThread():  # already done when the callback was added
                _fire_one(d, f)
            else:
                self._in_reactor(lambda: _fire_one(d, f))
        future.add_done_callback(done)
        return d

    def _in_reactor(self, call: Callable[[], None]) -> None:
        """Run ``call`` on the reactor thread, in order with the others. What worker threads
        (shard writers after a commit, the stager) hand over before the reactor gets to it
        shares one wake-up: a wake-up costs the reactor a pipe write and a loop turn."""
        with self._fire_lock:
            self._pending.append(call)
            first = len(self._pending) == 1
        if first:
            self.reactor.callFromThread(self._run_pending)

    def _run_pending(self) -> None:
        with self._fire_lock:
            calls, self._pending = self._pending, []
        for call in calls:
            try:
                call()
            except Exception:  # the rest must still run: each completes someone's work
                log.exception("store completion failed")

    # -- state shared by the processes over this data directory (shared.py) ------------

    def maildrop_lock(self, user: str) -> shared.MaildropLock | None:
        """Exclusive hold on ``user``'s maildrop across every process and session (POP3,
        RFC 1939 §8: the maildrop is locked for the session); None when held elsewhere.
        ``handle.release()``; the kernel releases it when the process dies."""
        return shared.maildrop_lock(self.shared.run_dir, canonical(user))

    def lease(self, name: str, owner: str, ttl_s: float) -> bool:
        """Hold ``name`` (e.g. "queue:<entry id>") for ``owner`` for ``ttl_s`` seconds, or
        renew it; False while another owner holds it (an unexpired lease of a live process)."""
        return self.shared.lease(name, owner, ttl_s)

    def release_lease(self, name: str, owner: str) -> bool:
        return self.shared.release(name, owner)

    def lease_holder(self, name: str) -> str | None:
        return self.shared.lease_holder(name)

    # -- the change log (maild/store/changelog.py) -------------------------------------

    def _committed(self, changes: list[dict[str, Any]]) -> None:
        """A shard writer's commit, after its results were settled (or a replicated one)."""
        self.tails[changes[0]["shard"]].committed(changes)

    def _publish(self, records: list[Change]) -> None:
        for record in records:
            for callback in list(self._subscribers):
                try:
                    callback(record)
                except Exception:
                    log.exception("change subscriber failed")

    def _wake(self) -> None:
        """Start following other processes' commits (wake.py), on first use."""
        if self._bell is None:
            self._bell = wake.Bell({s.index: s.path / "lmdb" / "data.mdb" for s in self.shards},
                                   self._rung, self.reactor)

    def _rung(self, shards: set[int], attempt: int = 0) -> None:
        pending = self._poll_tails(shards)
        # Mostly this wake-up preempted the committing thread on its core between its meta
        # page's write and the publication (wake.py invariant 2): let it run and look again
        # at once, before any timer (the reactor's poll counts whole milliseconds, so
        # REPOLL's first 0.5 ms was 1 ms or more). Timed look-agains go straight to REPOLL.
        yields = wake.YIELDS if attempt == 0 else 0
        while pending and yields:
            yields -= 1
            os.sched_yield()
            pending = self._poll_tails(pending)
        if pending and attempt < len(wake.REPOLL):
            # A commit caught between writing its meta page and publishing it (Tail.poll):
            # its wake-up is spent, so look again shortly rather than at the safety poll.
            # One look-again at a time per shard (under a stream of commits many rings
            # find one in flight).
            if self.reactor is None:
                time.sleep(wake.REPOLL[attempt])
                self._rung(pending, attempt + 1)
            elif pending - self._repolling:
                pending -= self._repolling
                self._repolling |= pending
                self.reactor.callLater(wake.REPOLL[attempt], self._repoll, pending, attempt + 1)

    def _poll_tails(self, shards: set[int]) -> set[int]:
        """Hand over what other processes committed to ``shards``; the shards whose
        newest commit is written but not yet published (to look at again)."""
        pending: set[int] = set()
        for index in shards:
            tail = self.tails[index]
            more = tail.poll()
            while more and self.reactor is None:
                more = tail.poll()
            if more:  # the rest on the next reactor turns, a batch each
                self.reactor.callLater(0, self._rung, {index})
            elif tail.pending:
                pending.add(index)
        return pending

    def _repoll(self, shards: set[int], attempt: int) -> None:
        self._repolling -= shards
        self._rung(shards, attempt)

    def subscribe(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        """Call ``callback`` with every committed change of every shard, by any process over
        this data directory, in seq order per shard (on the reactor thread); this Store's
        own changes right after their results are settled."""
        self._wake()
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    @property
    def shard_count(self) -> int:
        return len(self.shards)

    def log_head(self, shard: int) -> int:
        """The highest committed seq of ``shard``'s change log (0: empty)."""
        return self.shards[shard].log_head()

    def read_changes(self, shard: int, after: int, limit: int = 1000) -> list[Change]:
        """Committed records of ``shard`` with seq > ``after``, ascending, at most ``limit``;
        ChangesTrimmed when some of them were trimmed. Any thread."""
        s = self.shards[shard]
        return [changelog.to_change(r)
                for r in changelog.read_records(s.env, s.dbs["changes"], shard, after, limit)]

    def follow(self, shard: int, after: int, callback: Callable[[list[Change]], None], *,
               cursor: str | None = None,
               on_trimmed: Callable[[ChangesTrimmed], None] | None = None) -> Follower:
        """Call ``callback`` on the reactor thread with every committed record of ``shard``
        after ``after``, in batches, in seq order, no gap, no repeat, whichever process
        committed it. With ``cursor`` the position is kept durably under that name
        (``follower.ack(seq)``) and the log is not trimmed below it (up to
        ``store.changes_retained`` records). ChangesTrimmed at once when records after
        ``after`` are gone already; ``on_trimmed`` when that happens later (the follower
        stops; without it, it is logged)."""
        self.read_changes(shard, after, 1)  # ChangesTrimmed now rather than later
        self._wake()
        tail = self.tails[shard]
        if cursor is not None:
            self._save_cursor(shard, cursor, after)
        follower = Follower(tail, after, callback, cursor, on_trimmed,
                            functools.partial(self._save_cursor, shard))
        follower.start()
        return follower

    def cursor(self, name: str, shard: int) -> int:
        """A named cursor's durable position in ``shard``'s log (0: none)."""
        s = self.shards[shard]
        return changelog.cursor(s.env, s.cursors_db, name)

    def cursors(self, shard: int) -> dict[str, int]:
        s = self.shards[shard]
        return changelog.cursors(s.env, s.cursors_db)

    def drop_cursor(self, name: str, shard: int) -> defer.Deferred[None]:
        """Forget a consumer that is gone, so the log no longer keeps records for it."""
        return self._save_cursor(shard, name, None)

    def _save_cursor(self, shard: int, name: str, seq: int | None) -> defer.Deferred[None]:
        s = self.shards[shard]
        op = changelog.op_set_cursor(s.cursors_db, name, seq)
        if self.reactor is None:
            return self._deferred(s.writer.submit(op))
        return s.writer.submit_deferred(op)

    def _user(self, address: str) -> User:
        """The directory record, remembered while the directory has no newer commit (by
        any process): protocol sessions resolve their user on every read, and a lookup
        costs a JSON decode; the check, a read transaction's id."""
        cached = self._user_cache.get(address)
        if cached is not None and cached[1] == self.directory.as_of():
            return cached[0]
        user, stamp = self.directory.user_as_of(address)
        if user is None:
            self._user_cache.pop(address, None)
            raise UserNotFound(f"no user {address}")
        if len(self._user_cache) > 10_000:
            self._user_cache.clear()
        self._user_cache[address] = (user, stamp)
        return user

    def _shard(self, user: User) -> Shard:
        return self.shards[user.shard]

    def _write(self, user: User, op: Callable[[Any], Any],
               staged: tuple[blobfiles.StagedBlob, ...] = ()) -> defer.Deferred[Any]:
        """Run ``op`` on the user's shard; the Deferred fires after its commit."""
        writer = self._shard(user).writer
        if self.reactor is None:  # command-line use: wait for the commit here
            return self._deferred(writer.submit(op, staged))
        return writer.submit_deferred(op, staged)

    def _stage(self, raw: Message) -> defer.Deferred[tuple[blobfiles.StagedBlob, dict[str, str]]]:
        """Hash and summarise ``raw`` and write it to a staging file with fsync, in a worker
        thread (bodies too large to keep inline, and queued messages)."""
        def work() -> tuple[blobfiles.StagedBlob, dict[str, str]]:
            try:
                staged = blobfiles.stage(self.tmp_dir, raw)
            except StoreFull as exc:
                self.health.write_failed("blob files", str(exc))
                raise
            self.health.write_succeeded("blob files")
            if staged.path is not None:
                # Hashed from the very bytes written: its first read need not hash it again
                # (open(), by inode, size and mtime, which the hard links keep).
                self._remember_verified(_stamp(staged.sha, os.stat(staged.path)))
            return staged, envelope_fields(_header_of(raw))
        if self.reactor is None:
            return defer.maybeDeferred(work)
        return self._deferred(self._stager.submit(work))

    # -- directory ---------------------------------------------------------------------

    def domains(self) -> list[Domain]:
        return self.directory.domains()

    def domain(self, name: str) -> Domain | None:
        return self.directory.domain(name)

    def domain_add(self, name: str) -> Domain:
        return self.directory.domain_add(name)

    def domain_remove(self, name: str) -> None:
        self.directory.domain_remove(name)

    def domain_dkim_keys(self, name: str) -> list[dict[str, Any]]:
        return self.directory.domain_dkim_keys(name)

    def domain_set_dkim_keys(self, name: str, keys: list[dict[str, Any]]) -> None:
        self.directory.domain_set_dkim_keys(name, keys)

    def domain_set_catch_all(self, name: str, address: str | None) -> None:
        self.directory.domain_set_catch_all(name, address)

    def user(self, address: str) -> User | None:
        return self.directory.user(address)

    def users(self) -> list[User]:
        return self.directory.users()

    def user_add(self, address: str, password_hash: str, quota_bytes: int | None = None) -> User:
        if quota_bytes is None:
            quota_bytes = self.config.default_quota_mb * 1024 * 1024
        user = self.directory.user_add(address, password_hash, quota_bytes,
                                       lambda uid: shard_for(uid, len(self.shards)))
        # The directory record is written first; a crash before the mailboxes exist is
        # repaired by running this idempotent partition creation again (fsck --repair).
        self._shard(user).writer.run(ops.op_create_partition(user.id, DEFAULT_MAILBOXES))
        return user

    def ensure_partition(self, user: User) -> None:
        """Give ``user`` an empty partition with the default mailboxes if its shard has none
        (idempotent): after the operator had a damaged shard recreated empty."""
        self._shard(user).writer.run(ops.op_create_partition(user.id, DEFAULT_MAILBOXES))

    def user_remove(self, address: str) -> None:
        self._user_cache.clear()
        user = self.directory.user_remove(address)
        self._shard(user).writer.run(ops.op_purge_partition(user.address, user.id))

    def user_set_password(self, address: str, password_hash: str) -> None:
        self.directory.user_set_password(address, password_hash)

    # API tokens (docs/api.md): the secret is returned once and stored only as its SHA-256
    # (a 256-bit random secret needs no slow hash). Blocking writes: the daemon calls
    # token_add and token_revoke from a worker thread.

    def token_add(self, user: str, name: str = "", expires_days: float = 0.0,
                  now: float | None = None) -> tuple[str, dict[str, Any]]:
        """A new bearer token for ``user``: (the secret, its record without the secret)."""
        address = canonical(user)
        now = time.time() if now is None else now
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        record = {"id": secrets.token_hex(6), "user": address, "name": name[:200], "created": now,
                  "expires": now + expires_days * 86400 if expires_days else 0}
        self.directory.token_add(token_digest(secret), record)
        return secret, record

    def token_user(self, secret: str, now: float | None = None) -> dict[str, Any] | None:
        """The record of a valid, unexpired token whose user still exists, or None."""
        if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
            return None
        record = self.directory.token(token_digest(secret))
        now = time.time() if now is None else now
        if record is None or (record["expires"] and record["expires"] <= now):
            return None
        if self.directory.user(record["user"]) is None:
            return None
        return record

    def tokens(self, user: str | None = None) -> list[dict[str, Any]]:
        return _of_user(self.directory.tokens(), user)

    def token_revoke(self, token_id: str, user: str | None = None) -> None:
        """NotFound when ``token_id`` is no token (of ``user``, when given)."""
        self.directory.token_revoke(token_id, None if user is None else canonical(user))

    # API webhooks (docs/api.md): where a user's events are POSTed, signed with ``secret``.

    def webhook_add(self, user: str, url: str, events: list[str], max_per_user: int = 10) -> dict[str, Any]:
        record = {"id": "w" + secrets.token_hex(8), "user": canonical(user), "url": url, "events": events,
                  "secret": secrets.token_urlsafe(32), "created": time.time()}
        self.directory.webhook_add(record, max_per_user)
        return record

    def webhooks(self, user: str | None = None) -> list[dict[str, Any]]:
        return _of_user(self.directory.webhooks(), user)

    def webhook_remove(self, webhook_id: str, user: str | None = None) -> None:
        """NotFound when ``webhook_id`` is no webhook (of ``user``, when given)."""
        self.directory.webhook_remove(webhook_id, None if user is None else canonical(user))

    def user_set_quota(self, address: str, quota_bytes: int) -> None:
        self._user_cache.clear()
        self.directory.user_set_quota(address, quota_bytes)

    def aliases(self) -> list[tuple[str, list[str]]]:
        return self.directory.aliases()

    def alias_add(self, address: str, targets: list[str]) -> None:
        self.directory.alias_add(address, targets)

    def alias_remove(self, address: str) -> None:
        self.directory.alias_remove(address)

    def resolve_recipient(self, address: str) -> list[str] | None:
        return self.directory.resolve(address)

    def addresses_of(self, user: str) -> set[str]:
        return self.directory.addresses_of(user)

    # -- mailboxes ---------------------------------------------------------------------

    def mailboxes(self, user: str) -> list[Mailbox]:
        u = self._user(user)
        return self._shard(u).mailbox_records(u.id)

    @staticmethod
    def _name(name: str) -> str:
        return "INBOX" if name.upper() == "INBOX" else name

    def mailbox(self, user: str, name: str) -> Mailbox | None:
        u = self._user(user)
        return self._shard(u).mailbox_by_name(u.id, self._name(name))

    def open_mailbox(self, user: str, name: str) -> tuple[Mailbox, MailboxIndex] | None:
        """``name`` and its index (:meth:`mailbox_index`) as of one moment, for SELECT;
        None: no such mailbox."""
        u = self._user(user)
        return self._shard(u).open_mailbox(u.id, self._name(name))

    def mailbox_by_id(self, user: str, mailbox_id: int) -> Mailbox | None:
        u = self._user(user)
        return self._shard(u).mailbox_by_id(u.id, mailbox_id)

    def create_mailbox(self, user: str, name: str, special_use: SpecialUse | None = None) -> defer.Deferred[Mailbox]:
        """Create ``name`` and its missing superiors, all or none (RFC 3501 §6.3.3)."""
        u = self._user(user)
        name = self._name(name)
        d = self._write(u, ops.op_create_mailbox(u.address, u.id, name, special_use))
        d.addCallback(lambda mid: self._shard(u).mailbox_by_id(u.id, mid))
        return d

    def rename_mailbox(self, user: str, old: str, new: str) -> defer.Deferred[None]:
        u = self._user(user)
        return self._write(u, ops.op_rename_mailbox(u.address, u.id, self._name(old), self._name(new)))

    def delete_mailbox(self, user: str, name: str) -> defer.Deferred[None]:
        u = self._user(user)
        return self._write(u, ops.op_delete_mailbox(u.address, u.id, self._name(name)))

    def metadata(self, user: str, mailbox_id: int) -> dict[str, bytes]:
        """A mailbox's metadata entries (RFC 5464), the user's own with mailbox id 0."""
        u = self._user(user)
        return self._shard(u).metadata(u.id, mailbox_id)

    def set_metadata(self, user: str, mailbox_id: int, items: list[tuple[str, bytes | None]],
                     max_entries: int) -> defer.Deferred[None]:
        """Set or (value None) remove entries in one commit, all or none (TooManyEntries,
        MailboxNotFound)."""
        u = self._user(user)
        return self._write(u, ops.op_set_metadata(u.address, u.id, mailbox_id, items, max_entries))

    def set_subscribed(self, user: str, name: str, subscribed: bool) -> defer.Deferred[None]:
        u = self._user(user)
        return self._write(u, ops.op_set_subscribed(u.address, u.id, self._name(name), subscribed))

    def subscriptions(self, user: str) -> list[str]:
        """The user's subscribed names, existing mailboxes or not, in name order."""
        u = self._user(user)
        return self._shard(u).subscriptions(u.id)

    def claim_recent(self, user: str, mailbox_id: int, upto: int) -> defer.Deferred[int]:
        """Claim the messages up to UID ``upto`` as \\Recent for one session; fires with the
        claim before it (RFC 3501 §2.3.2: the messages above that are the caller's)."""
        u = self._user(user)
        return self._write(u, ops.op_claim_recent(u.id, mailbox_id, upto))

    # -- messages: writes --------------------------------------------------------------

    def append(self, user: str, mailbox_id: int, raw: Message, flags: Iterable[str] = frozenset(),
               internal_date: float | None = None) -> defer.Deferred[AppendResult]:
        results = self._deliver(raw, [(self._user(user), mailbox_id, frozenset(flags), b"")], internal_date)
        return results.addCallback(lambda rs: rs[0])

    def append_many(self, user: str, mailbox_id: int,
                    messages: list[tuple[bytes, Iterable[str], float | None]]
                    ) -> defer.Deferred[list[AppendResult]]:
        """Append (raw, flags, internal date) messages in one operation of one commit: all
        of them or, when one fails (quota, the mailbox gone), none (IMAP MULTIAPPEND,
        RFC 3502). The results are in the order given."""
        u = self._user(user)
        staging = [self._stage_one(raw) for raw, _, _ in messages]

        def file(staged: list[tuple[blobfiles.StagedBlob, dict[str, str]]]) -> defer.Deferred[list[AppendResult]]:
            now = time.time()
            appends = [ops.op_append(u.address, u.id, mailbox_id, blob.sha, blob.size, b"", frozenset(flags),
                                     now if date is None else date, envelope, u.quota_bytes, blob.inline,
                                     blob.shape)
                       for (blob, envelope), (_, flags, date) in zip(staged, messages, strict=True)]
            d = self._write(u, ops.op_all(appends), tuple(blob for blob, _ in staged))
            return d.addCallback(lambda rs: [AppendResult(u.address, *r) for r in rs])

        def cleanup(result: Any) -> Any:
            for d in staging:  # every staging file goes, whatever happened
                d.addCallback(_unlink_staged)
            return result
        gathered = defer.gatherResults(staging, consumeErrors=True).addErrback(
            lambda f: f.value.subFailure if isinstance(f.value, defer.FirstError) else f)
        return gathered.addCallback(file).addBoth(cleanup)

    def _stage_one(self, raw: bytes) -> defer.Deferred[tuple[blobfiles.StagedBlob, dict[str, str]]]:
        """A body kept inline, or staged to a file off the reactor (see ``_deliver``)."""
        if len(raw) <= self.config.inline_body_max:
            try:
                return defer.succeed((blobfiles.inline(raw), envelope_fields(raw)))
            except Exception:  # handed to the caller's errback
                return defer.fail()
        return self._stage(raw)

    def deliver(self, raw: Message, recipients: list[Recipient], *,
                queue_failures: bool = False) -> defer.Deferred[list[AppendResult]]:
        """Store ``raw`` once and file it for every recipient (one blob, one fsync per shard).
        ``raw`` may be pieces (see :data:`Message`), written without being joined.
        Recipients it cannot be filed for while others have it go to the local-delivery retry
        queue (see _file); with ``queue_failures`` also when none has it (the message was
        already accepted elsewhere, e.g. queued for remote recipients)."""
        targets = [(self._user(r.user), r.mailbox, frozenset(r.flags), r.prefix) for r in recipients]
        return self._deliver(raw, targets, None, queue_failures)

    def _deliver(self, raw: Message, targets: Sequence[tuple[User, int | str, frozenset[str], bytes]],
                 internal_date: float | None, queue_failures: bool = False) -> defer.Deferred[list[AppendResult]]:
        when = time.time() if internal_date is None else internal_date
        if not isinstance(raw, bytes) and sum(map(len, raw)) <= self.config.inline_body_max:
            raw = b"".join(raw)
        if isinstance(raw, bytes) and len(raw) <= self.config.inline_body_max:
            # Kept inline: hashed and summarised right here, with no Deferred in between
            # (this is the path of most messages, and it runs on the reactor thread).
            try:
                staged, envelope = blobfiles.inline(raw), envelope_fields(raw)
            except Exception:  # handed to the caller's errback
                return defer.fail()
            return self._file(staged, envelope, targets, when, queue_failures)
        return self._stage(raw).addCallback(lambda se: self._file(se[0], se[1], targets, when, queue_failures))

    def _file(self, staged: blobfiles.StagedBlob, envelope: dict[str, str],
              targets: Sequence[tuple[User, int | str, frozenset[str], bytes]],
              when: float, queue_failures: bool = False) -> defer.Deferred[list[AppendResult]]:
        """File a staged body into every target mailbox; the staging file goes afterwards.

        All or nothing for the sender: when it is filed for some targets and fails for the
        others, the others go to the durable local-delivery retry queue (retry.py) and the
        call succeeds, so the sender is answered once and retries nothing. Only when no
        target has it, or the retry queue cannot take the rest, does the call fail."""
        d: defer.Deferred[Any] = self._file_each(staged, envelope, targets, when)

        def settle(outcomes: list[tuple[bool, Any]]) -> Any:
            failed = [(t, v) for t, (ok, v) in zip(targets, outcomes, strict=True) if not ok]
            if len(failed) == len(targets) and not queue_failures:
                return Failure(failed[0][1])
            results = [v if ok else AppendResult(t[0].address, 0, 0, 0, 0)
                       for t, (ok, v) in zip(targets, outcomes, strict=True)]
            if not failed:
                return results
            queued = self._queue_retry(staged, envelope, when, failed)
            return queued.addCallback(lambda _: results)
        d.addCallback(settle)
        if staged.path is not None:
            path = staged.path
            d.addBoth(_unlink_then, path)
        return d

    def _file_each(self, staged: blobfiles.StagedBlob, envelope: dict[str, str],
                   targets: Sequence[tuple[User, int | str, frozenset[str], bytes]],
                   when: float) -> defer.Deferred[list[tuple[bool, Any]]]:
        """(committed, AppendResult or the exception) per target, after every commit."""
        waits: list[defer.Deferred[Any]] = []
        for user, mailbox, flags, prefix in targets:
            op = ops.op_append(user.address, user.id, mailbox, staged.sha, staged.size, prefix,
                               flags, when, envelope, user.quota_bytes, staged.inline, staged.shape)
            waits.append(self._write(user, op, (staged,)).addCallback(
                functools.partial(_append_result, user.address)))
        if len(waits) == 1:  # one target (IMAP APPEND, most deliveries): no DeferredList
            return waits[0].addCallbacks(lambda r: [(True, r)], lambda f: [(False, f.value)])
        gathered = defer.DeferredList(waits, consumeErrors=True)
        return gathered.addCallback(lambda rs: [(ok, v if ok else v.value) for ok, v in rs])

    def _queue_retry(self, staged: blobfiles.StagedBlob, envelope: dict[str, str], when: float,
                     failed: list[tuple[tuple[User, int | str, frozenset[str], bytes], Exception]]
                     ) -> defer.Deferred[str]:
        targets = [retry.target_record(u.address, mailbox, flags, prefix)
                   for (u, mailbox, flags, prefix), _ in failed]
        error = "; ".join(sorted({f"{type(e).__name__}: {e}" for _, e in failed}))
        op = retry.op_add(staged.sha, staged.size, staged.inline, envelope, when, targets, error,
                          time.time())
        d = self._deferred(self.directory.writer.submit(op, () if staged.inline is not None else (staged,)))

        def queued(entry_id: str) -> str:
            log.warning("message %s stored for some recipients, queued for %d more (%s): "
                        "retry entry %s", staged.sha[:12],
                        len(targets), error, entry_id)
            return entry_id
        return d.addCallback(queued)

    def retry_deliveries(self, now: float | None = None) -> defer.Deferred[int]:
        """One attempt at every due entry of the local-delivery retry queue; fires with the
        number of deliveries made. The daemon calls it periodically, in every worker
        process: an entry is attempted by the one holding its lease ("retry:<id>")."""
        now = time.time() if now is None else now
        owner = f"{os.getpid()}:{self.token}"
        waits: list[defer.Deferred[int]] = []
        for entry in retry.due(self.directory.env, self.directory.dbs, now):
            name = f"retry:{entry['id']}"
            if not self.lease(name, owner, RETRY_LEASE_SECONDS):
                continue  # another process is at it
            d = self._retry_entry(entry, now)
            waits.append(d.addBoth(functools.partial(_release_then, self, name, owner)))
        return defer.gatherResults(waits, consumeErrors=True).addCallback(sum)

    def _retry_entry(self, entry: dict[str, Any], now: float) -> defer.Deferred[int]:
        if entry["inline"]:
            body = retry.inline_body(self.directory.env, self.directory.dbs, entry["id"])
            staged = blobfiles.inline(body or b"")
        else:
            staged = blobfiles.StagedBlob(entry["sha"], self.directory.blobs.path(entry["sha"]),
                                          entry["size"])
        targets = []
        for t in entry["targets"]:
            try:
                user = self._user(t["user"])
            except UserNotFound:
                log.error("retry entry %s: user %s no longer exists: not delivered to it",
                          entry["id"], t["user"])
                continue
            mailbox = t["mailbox"]
            if isinstance(mailbox, str) and self.mailbox(user.address, mailbox) is None:
                mailbox = "INBOX"  # the folder it was meant for is gone
            targets.append((user, mailbox, frozenset(t["flags"]), retry.target_prefix(t), t))
        d = self._file_each(staged, entry["envelope"], [t[:4] for t in targets], entry["when"])

        def attempted(outcomes: list[tuple[bool, Any]]) -> defer.Deferred[int]:
            left = [t[4] for t, (ok, _) in zip(targets, outcomes, strict=True) if not ok]
            errors = sorted({f"{type(v).__name__}: {v}" for ok, v in outcomes if not ok})
            done = len(targets) - len(left)
            entry.update(targets=left, attempts=entry["attempts"] + 1,
                         last_error="; ".join(errors) or None,
                         next_attempt=now + retry.next_delay(entry["attempts"] + 1))
            if done:
                log.info("retry entry %s: delivered to %d recipient(s), %d left", entry["id"], done, len(left))
            return self._deferred(self.directory.writer.submit(retry.op_update(entry))).addCallback(
                lambda _: done)
        return d.addCallback(attempted)

    def retry_entries(self) -> list[dict[str, Any]]:
        return retry.entries(self.directory.env, self.directory.dbs)

    def set_flags(self, user: str, mailbox_id: int, uids: Iterable[int], flags: Iterable[str],
                  mode: FlagMode, unchanged_since: int | None = None
                  ) -> defer.Deferred[tuple[list[FlagResult], list[int]]]:
        u = self._user(user)
        op = ops.op_set_flags(u.address, u.id, mailbox_id, sorted(set(uids)), frozenset(flags), mode, unchanged_since)
        return self._write(u, op)

    def copy(self, user: str, src_id: int, uids: Iterable[int], dst_id: int) -> defer.Deferred[CopyResult]:
        return self._copy(user, src_id, uids, dst_id, move=False)

    def move(self, user: str, src_id: int, uids: Iterable[int], dst_id: int) -> defer.Deferred[CopyResult]:
        return self._copy(user, src_id, uids, dst_id, move=True)

    def _copy(self, user: str, src_id: int, uids: Iterable[int], dst_id: int, move: bool) -> defer.Deferred[CopyResult]:
        u = self._user(user)
        op = ops.op_copy(u.address, u.id, src_id, sorted(set(uids)), dst_id, move, u.quota_bytes)
        return self._write(u, op).addCallback(lambda r: CopyResult(r[0], r[1]))

    def expunge(self, user: str, mailbox_id: int, uids: Iterable[int]) -> defer.Deferred[ExpungeResult]:
        u = self._user(user)
        return self._write(u, ops.op_expunge(u.address, u.id, mailbox_id, sorted(set(uids))))

    # -- messages: reads ---------------------------------------------------------------

    def uids(self, user: str, mailbox_id: int) -> list[int]:
        u = self._user(user)
        return self._shard(u).uids(u.id, mailbox_id)

    def mailbox_index(self, user: str, mailbox_id: int) -> MailboxIndex | None:
        """The mailbox's messages as packed columns (uids, modseqs, flags, sizes), current as
        of the call, shared and immutable (maild/store/views.py); None: no such mailbox."""
        u = self._user(user)
        return self._shard(u).mailbox_index(u.id, mailbox_id)

    def messages(self, user: str, mailbox_id: int, uids: Iterable[int] | None = None) -> Iterator[MessageMeta]:
        u = self._user(user)
        return self._shard(u).messages(u.id, mailbox_id, uids)

    def message(self, user: str, mailbox_id: int, uid: int) -> MessageMeta | None:
        return next(self.messages(user, mailbox_id, [uid]), None)

    def envelope(self, user: str, mailbox_id: int, uid: int) -> Envelope:
        u = self._user(user)
        return self._shard(u).envelope(u.id, mailbox_id, uid)

    def envelopes(self, user: str, mailbox_id: int, admit: Callable[[bytes], bool] | None = None
                  ) -> Iterator[tuple[int, StoredEnvelope]]:
        """(uid, envelope, decoded on use) of every message of a mailbox, in uid order; only
        those whose stored bytes ``admit`` accepts (an EnvelopeFilter's), when given."""
        u = self._user(user)
        return self._shard(u).envelopes(u.id, mailbox_id, admit)

    def _locate(self, user: str, mailbox_id: int, uid: int) -> tuple[Shard, MessageRecord, bytes | None]:
        u = self._user(user)
        shard = self._shard(u)
        found = shard.locate(u.id, mailbox_id, uid)
        if found is None:
            raise NotFound(f"no message uid {uid} in mailbox {mailbox_id}")
        return shard, *found

    def open(self, user: str, mailbox_id: int, uid: int) -> BinaryIO:
        """The whole message as a stream, its body verified against its sha256 first (a
        body file verified once is remembered by inode, size and mtime): BlobDamaged."""
        shard, record, body = self._locate(user, mailbox_id, uid)
        if body is not None:
            self._verify(shard, record, body, user, mailbox_id, uid)
            return io.BufferedReader(_PrefixedReader(record.prefix, io.BytesIO(body)))
        sha = record.sha.hex()
        blob = shard.blobs.open(sha)
        try:
            stamp, known = self._file_stamp(sha, blob.fileno())
            if not known:
                digest = hashlib.sha256()
                for chunk in iter(lambda: blob.read(1 << 20), b""):
                    digest.update(chunk)
                if digest.digest() != record.sha:
                    self._damaged(shard, sha, user, mailbox_id, uid)
                blob.seek(0)
                self._remember_verified(stamp)
        except BaseException:
            blob.close()
            raise
        return io.BufferedReader(_PrefixedReader(record.prefix, blob))

    def open_message(self, user: str, mailbox_id: int, uid: int) -> OpenMessage:
        """The whole message as a stream for sending it whole (POP3), with its shape as
        recorded at delivery (maild/store/sending.py). Unlike :meth:`open`, a body file not
        yet verified is hashed as it is read: BlobDamaged comes from the read that reaches
        its end."""
        shard, record, body = self._locate(user, mailbox_id, uid)
        shape = message_shape(record.prefix, record.shape)
        if body is not None:
            self._verify(shard, record, body, user, mailbox_id, uid)
            return OpenMessage(MessageReader(record.prefix, len(body), inline=body), shape)
        sha = record.sha.hex()
        fd = shard.blobs.open_fd(sha)
        try:
            stamp, known = self._file_stamp(sha, fd)
        except BaseException:
            os.close(fd)
            raise
        size = stamp[2]
        if known:
            return OpenMessage(MessageReader(record.prefix, size, fd), shape)
        return OpenMessage(MessageReader(
            record.prefix, size, fd, sha=record.sha,
            damaged=lambda: self._damaged(shard, sha, user, mailbox_id, uid),
            intact=lambda: self._remember_verified(stamp)), shape)

    def read(self, user: str, mailbox_id: int, uid: int, *, verify: bool = True) -> bytes:
        """The whole message, its body verified against its sha256 (BlobDamaged) unless
        ``verify`` is false (SEARCH: it serves no bytes, and a damaged message must not fail
        the search of a whole mailbox)."""
        shard, record, body = self._locate(user, mailbox_id, uid)
        if body is not None:
            if verify:
                self._verify(shard, record, body, user, mailbox_id, uid)
            return record.prefix + body
        # Read into the one bytes object returned (prefix + blob would hold the body twice),
        # the whole file (its size, not the record's: a longer file is damaged too).
        blob = shard.blobs.open(record.sha.hex())
        size = os.fstat(blob.fileno()).st_size
        with io.BufferedReader(_PrefixedReader(record.prefix, blob)) as fh:
            whole = fh.read(len(record.prefix) + size)
        if verify:
            self._verify(shard, record, memoryview(whole)[len(record.prefix):], user, mailbox_id, uid)
        return whole

    def _verify(self, shard: Shard, record: MessageRecord, body: bytes | memoryview, user: str,
                mailbox_id: int, uid: int) -> None:
        """Check an inline body (or a file read whole). Inline bodies verified once are
        remembered like files: LMDB rewrites no value in place, so only a flip at rest could
        change one, which fsck finds."""
        stamp = (record.sha.hex(), -shard.index - 1, len(body), 0)
        with self._verified_lock:
            if stamp in self._verified_files:
                return
        if hashlib.sha256(body).digest() != record.sha:
            self._damaged(shard, record.sha.hex(), user, mailbox_id, uid)
        self._remember_verified(stamp)

    def _file_stamp(self, sha: str, fd: int) -> tuple[tuple[str, int, int, int], bool]:
        """An open body file's stamp, and whether a file of that stamp was verified."""
        stamp = _stamp(sha, os.fstat(fd))
        with self._verified_lock:
            return stamp, stamp in self._verified_files

    def _remember_verified(self, stamp: tuple[str, int, int, int]) -> None:
        with self._verified_lock:
            self._verified_files[stamp] = None
            if len(self._verified_files) > VERIFIED_FILES_MAX:
                self._verified_files.popitem(last=False)

    def _damaged(self, shard: Shard, sha: str, user: str, mailbox_id: int, uid: int) -> None:
        box = shard.mailbox_by_id(self._user(user).id, mailbox_id)
        what = f"uid {uid} in {box.name if box else mailbox_id!r} of {user}"
        self.health.blob_damaged(f"shard {shard.index:02d}", sha, what)
        raise BlobDamaged(f"shard {shard.index:02d}: blob {sha} of {what} is damaged")

    def unseen_uids(self, user: str, mailbox_id: int) -> list[int]:
        u = self._user(user)
        return self._shard(u).unseen_uids(u.id, mailbox_id)

    def first_unseen_uid(self, user: str, mailbox_id: int) -> int | None:
        """The lowest uid without \\Seen (SELECT's [UNSEEN n]), from the unseen index."""
        u = self._user(user)
        return self._shard(u).first_unseen_uid(u.id, mailbox_id)

    def changed_since(self, user: str, mailbox_id: int, modseq: int) -> list[MessageMeta]:
        u = self._user(user)
        return self._shard(u).changed_since(u.id, mailbox_id, modseq)

    def expunged_since(self, user: str, mailbox_id: int, modseq: int) -> list[int]:
        u = self._user(user)
        return self._shard(u).expunged_since(u.id, mailbox_id, modseq)

    def quota(self, user: str) -> Quota:
        u = self._user(user)
        used, count = self._shard(u).usage(u.id)
        return Quota(used, u.quota_bytes, count)

    def require_mailbox(self, user: str, name: str) -> Mailbox:
        mailbox = self.mailbox(user, name)
        if mailbox is None:
            raise MailboxNotFound(f"mailbox {name!r} does not exist")
        return mailbox

    # -- outbound queue ----------------------------------------------------------------

    def enqueue(self, raw: Message, sender: str, recipients: list[str]) -> defer.Deferred[list[str]]:
        staged = self._stage(raw)

        def submit(staged_env: tuple[blobfiles.StagedBlob, dict[str, str]]) -> defer.Deferred[list[str]]:
            staged, _ = staged_env
            assert staged.path is not None
            op = self.directory.op_enqueue(staged.sha, staged.size, sender, recipients, time.time())
            d = self._deferred(self.directory.writer.submit(op, (staged,)))
            d.addBoth(_unlink_then, staged.path)
            return d.addCallback(self._enqueued)

        return staged.addCallback(submit)

    def _enqueued(self, ids: list[str]) -> list[str]:
        for callback in list(self._enqueue_listeners):
            callback()
        return ids

    def on_enqueue(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` (on the reactor thread) after each committed enqueue."""
        self._enqueue_listeners.append(callback)
        return lambda: self._enqueue_listeners.remove(callback) if callback in self._enqueue_listeners else None

    def queue_entries(self) -> list[dict[str, Any]]:
        return self.directory.queue_entries()

    def queue_entry(self, entry_id: str) -> dict[str, Any] | None:
        return self.directory.queue_entry(entry_id)

    def queue_due(self, now: float, limit: int = 100) -> list[dict[str, Any]]:
        return self.directory.queue_due(now, limit)

    def queue_update(self, entry: dict[str, Any]) -> defer.Deferred[None]:
        return self._deferred(self.directory.writer.submit(self.directory.op_queue_update(entry)))

    def queue_message(self, entry: dict[str, Any]) -> bytes:
        return self.directory.blobs.read(entry["blob"])

    # -- housekeeping ------------------------------------------------------------------

    def sweep_orphans(self, min_age: float | None = None) -> int:
        """Remove blob files no message or queue entry refers to that are older than
        ``min_age`` (store.orphan_sweep_age): those a crash left between linking a body and
        committing its record (sweep.py). Blocks: run it in a thread. Returns how many."""
        age = self.config.orphan_sweep_age if min_age is None else min_age
        removed = 0
        for where, env, dbs, writer in [
                *((f"shard {s.index:02d}", s.env, s.dbs, s.writer) for s in self.shards),
                ("directory", self.directory.env, self.directory.dbs, self.directory.writer)]:
            count = sweep.sweep(env, dbs, writer, age)
            if count:
                log.info("%s: removed %d orphan blob file(s) left by interrupted writes", where, count)
            removed += count
        return removed

    # -- statistics --------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        users = self.users()
        per_shard = {s.index: {"users": 0, "messages": 0, "bytes": 0} for s in self.shards}
        for u in users:
            used, count = self.shards[u.shard].usage(u.id)
            row = per_shard[u.shard]
            row["users"] += 1
            row["messages"] += count
            row["bytes"] += used
        queue = self.queue_entries()
        oldest = min((e["created"] for e in queue), default=None)
        # What the serving processes report (this one's own state when it serves).
        state = health_files(self.data_dir, self.health.snapshot() if self.health.path is not None else None)
        return {"domains": len(self.domains()), "users": len(users), "shards": per_shard,
                "queue": {"entries": len(queue),
                          "oldest_age": None if oldest is None else time.time() - oldest},
                "local_retry": retry.describe(self.retry_entries()),
                "free_bytes": shutil.disk_usage(self.data_dir).free,
                "daemon": None if state is None else {"pid": state["pid"], "pids": state["pids"],
                                                      "full": state["full"],
                                                      "damaged_blobs": state["damaged_blobs"]}}
