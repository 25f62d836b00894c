"""State the processes over one data directory share and need not keep across a restart:
maildrop locks, counters (rate limits, authentication back-off, connection counts) and
leases (one process delivers a queue entry at a time). docs/storage.md "Shared state".

Implementation notes — invariants a contributor must keep:

1. Maildrop locks are ``flock`` locks on ``data_dir/run/maildrop/<hash>.lock``, one file
   per user, taken non-blocking: exclusive between processes and between two sessions of
   one process (flock belongs to the open file), and released by the kernel when the
   holding process dies, however it dies. The files stay (removing a lock file races with
   a process about to lock it).
2. Counters and leases live in a small LMDB environment, ``data_dir/run/state``, opened on
   first use with ``sync=False``: an operation is one write transaction without fsync
   (tens of microseconds), so it may run on the reactor thread. Nothing there must outlive
   the processes: the first process to open it while no other has it open (an exclusive
   ``flock`` on ``run/state.lock`` succeeds, under the ``run/state.init`` lock) empties it,
   so what an OS crash left half written is never read.
3. Every read-modify-write is one LMDB write transaction: atomic across processes.
4. Times are ``time.monotonic()`` (CLOCK_MONOTONIC, one clock for every process of the
   machine; it restarts at boot, when the environment is emptied anyway).
5. Bounded: expired windows, full token buckets, expired leases and the contributions of
   dead processes are removed every ``PRUNE_EVERY`` operations; the map is
   ``STATE_MAP_MB``, and a full map empties the environment (the state is advisory:
   limits start again) rather than failing a login.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lmdb

log = logging.getLogger(__name__)

STATE_MAP_MB = 256
PRUNE_EVERY = 4096  # operations between two prunes
_WINDOW = struct.Struct("<dQ")  # window start, count
_BUCKET = struct.Struct("<dd")  # tokens, when
_GAUGE = struct.Struct("<q")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- maildrop locks -----------------------------------------------------------------------

class MaildropLock:
    """An exclusive hold on one user's maildrop; :meth:`release` gives it back (once)."""

    def __init__(self, fd: int, user: str) -> None:
        self._fd: int | None = fd
        self.user = user

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the file releases its flock

    def __del__(self) -> None:
        self.release()


def maildrop_lock(run_dir: Path, user: str) -> MaildropLock | None:
    """The maildrop lock of ``user`` (a canonical address), or None when another session,
    in this process or another, holds it (invariant 1)."""
    where = run_dir / "maildrop"
    where.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(user.encode("utf-8")).hexdigest()[:32]
    fd = os.open(where / f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return MaildropLock(fd, user)


# -- counters and leases ------------------------------------------------------------------

def _key(namespace: str, key: str) -> bytes:
    return namespace.encode("utf-8") + b"\0" + key.encode("utf-8")


class SharedState:
    """The run/state environment (invariant 2); ``counters`` and the lease methods."""

    def __init__(self, run_dir: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.run_dir = run_dir
        self.clock = clock
        self._lock = threading.Lock()
        self._env: lmdb.Environment | None = None
        self._dbs: dict[str, Any] = {}
        self._holder: int | None = None  # the fd of our shared flock on state.lock
        self._ops = 0
        self.counters = Counters(self)

    def _open(self) -> tuple[lmdb.Environment, dict[str, Any]]:
        if self._env is not None:
            return self._env, self._dbs
        with self._lock:
            if self._env is None:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                init = os.open(self.run_dir / "state.init", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    fcntl.flock(init, fcntl.LOCK_EX)
                    holder = os.open(self.run_dir / "state.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                    try:
                        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        alone = True
                    except BlockingIOError:
                        alone = False
                    path = self.run_dir / "state"
                    if alone:  # no process has it open: start empty (invariant 2)
                        shutil.rmtree(path, ignore_errors=True)
                    path.mkdir(exist_ok=True)
                    env = lmdb.open(str(path), map_size=STATE_MAP_MB << 20, max_dbs=4, sync=False,
                                    metasync=False, max_readers=1024)
                    self._dbs = {name: env.open_db(name.encode()) for name in ("counters", "gauges", "leases")}
                    fcntl.flock(holder, fcntl.LOCK_SH)
                    self._holder = holder
                    self._env = env
                finally:
                    os.close(init)  # releases the init lock
        assert self._env is not None
        return self._env, self._dbs

    def close(self) -> None:
        with self._lock:
            if self._env is not None:
                self._env.close()
                self._env = None
            if self._holder is not None:
                os.close(self._holder)
                self._holder = None

    def write(self, fn: Callable[[lmdb.Transaction[bytes], dict[str, Any], float], Any]) -> Any:
        """Run ``fn(txn, dbs, now)`` in one write transaction (invariant 3)."""
        env, dbs = self._open()
        self._ops += 1
        if self._ops % PRUNE_EVERY == 0:
            self.prune()
        try:
            with env.begin(write=True) as txn:
                return fn(txn, dbs, self.clock())
        except lmdb.MapFullError:
            log.error("shared state %s is full: emptied (rate limits and leases start again)", self.run_dir)
            with env.begin(write=True) as txn:
                for db in dbs.values():
                    txn.drop(db, delete=False)
            with env.begin(write=True) as txn:
                return fn(txn, dbs, self.clock())

    def read(self, fn: Callable[[lmdb.Transaction[bytes], dict[str, Any], float], Any]) -> Any:
        env, dbs = self._open()
        with env.begin() as txn:
            return fn(txn, dbs, self.clock())

    def prune(self) -> int:
        """Remove what holds no information any more (invariant 5); returns how many."""
        env, dbs = self._open()
        now = self.clock()
        removed = 0
        with env.begin(write=True) as txn:
            cur = txn.cursor(db=dbs["counters"])
            for key, value in list(cur):
                kind, until = value[:1], struct.unpack_from("<d", value, 1)[0]
                if kind in (b"w", b"b") and until <= now:
                    txn.delete(key, db=dbs["counters"])
                    removed += 1
            for key, _ in list(txn.cursor(db=dbs["gauges"])):
                if not pid_alive(int(key.rsplit(b"\0", 1)[1])):
                    txn.delete(key, db=dbs["gauges"])
                    removed += 1
            for key, value in list(txn.cursor(db=dbs["leases"])):
                if json.loads(value)["expires"] <= now:
                    txn.delete(key, db=dbs["leases"])
                    removed += 1
        return removed

    # -- leases --------------------------------------------------------------------------

    def lease(self, name: str, owner: str, ttl_s: float) -> bool:
        """Hold ``name`` for ``owner`` for ``ttl_s`` seconds (a renewal when it holds it
        already); False when another owner holds it: an unexpired lease of a live process."""
        pid = os.getpid()

        def take(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], now: float) -> bool:
            key = name.encode("utf-8")
            raw = txn.get(key, db=dbs["leases"])
            if raw is not None:
                held = json.loads(raw)
                if held["owner"] != owner and held["expires"] > now and (
                        held["pid"] == pid or pid_alive(held["pid"])):
                    return False
            txn.put(key, json.dumps({"owner": owner, "pid": pid, "expires": now + ttl_s}).encode(),
                    db=dbs["leases"])
            return True
        return bool(self.write(take))

    def release(self, name: str, owner: str) -> bool:
        """Give ``name`` back if ``owner`` holds it; True when it did."""
        def drop(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], now: float) -> bool:
            key = name.encode("utf-8")
            raw = txn.get(key, db=dbs["leases"])
            if raw is None or json.loads(raw)["owner"] != owner:
                return False
            return bool(txn.delete(key, db=dbs["leases"]))
        return bool(self.write(drop))

    def lease_holder(self, name: str) -> str | None:
        """Who holds ``name`` now (None: nobody, or an expired or dead holder)."""
        def look(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], now: float) -> str | None:
            raw = txn.get(name.encode("utf-8"), db=dbs["leases"])
            if raw is None:
                return None
            held = json.loads(raw)
            if held["expires"] <= now or not pid_alive(held["pid"]):
                return None
            return str(held["owner"])
        return self.read(look)


class Counters:
    """Counters every process over the data directory shares (``store.counters``); keys
    are (namespace, key), e.g. ("smtp-conn", "192.0.2.1")."""

    def __init__(self, state: SharedState) -> None:
        self._state = state

    def hit(self, namespace: str, key: str, window_s: float, n: int = 1) -> int:
        """Count ``n`` for ``key`` in its current window of ``window_s`` seconds (a fixed
        window starting at the first hit after the last one ended); the count so far."""
        def op(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], now: float) -> int:
            k = _key(namespace, key)
            raw = txn.get(k, db=dbs["counters"])
            start, count = (now, 0)
            if raw is not None and raw[:1] == b"w":
                start, count = _WINDOW.unpack_from(raw, 9)
                if now - start >= window_s:
                    start, count = now, 0
            count += n
            txn.put(k, b"w" + struct.pack("<d", start + window_s) + _WINDOW.pack(start, count), db=dbs["counters"])
            return int(count)
        return int(self._state.write(op))

    def peek(self, namespace: str, key: str, window_s: float) -> int:
        """The count of ``key`` in its current window (0 when it ended, or none)."""
        def op(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], now: float) -> int:
            raw = txn.get(_key(namespace, key), db=dbs["counters"])
            if raw is None or raw[:1] != b"w":
                return 0
            start, count = _WINDOW.unpack_from(raw, 9)
            return 0 if now - start >= window_s else int(count)
        return int(self._state.read(op))

    def reset(self, namespace: str, key: str) -> None:
        """Forget ``key``'s counter, bucket and gauge contributions."""
        def op(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], now: float) -> None:
            k = _key(namespace, key)
            txn.delete(k, db=dbs["counters"])
            cur = txn.cursor(db=dbs["gauges"])
            while cur.set_range(k + b"\0") and cur.key().startswith(k + b"\0"):
                cur.delete()
        self._state.write(op)

    def take(self, namespace: str, key: str, per_minute: int) -> bool:
        """A token bucket per key (as maild.util.limits.TokenBuckets, across processes):
        up to ``per_minute`` tokens, refilled at ``per_minute`` a minute; False when empty.
        0: unlimited."""
        if per_minute <= 0:
            return True
        capacity, rate = float(per_minute), per_minute / 60.0

        def op(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], now: float) -> bool:
            k = _key(namespace, key)
            raw = txn.get(k, db=dbs["counters"])
            tokens, then = capacity, now
            if raw is not None and raw[:1] == b"b":
                tokens, then = _BUCKET.unpack_from(raw, 9)
            tokens = min(capacity, tokens + (now - then) * rate)
            ok = tokens >= 1.0
            if ok:
                tokens -= 1.0
            full_at = now + (capacity - tokens) / rate  # when it holds no information again
            txn.put(k, b"b" + struct.pack("<d", full_at) + _BUCKET.pack(tokens, now), db=dbs["counters"])
            return ok
        return bool(self._state.write(op))

    def add(self, namespace: str, key: str, delta: int) -> int:
        """Add ``delta`` to this process's share of a gauge (connections from an IP); the
        total over live processes. A process's share goes when it dies."""
        pid = os.getpid()

        def op(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], now: float) -> int:
            mine = _key(namespace, key) + b"\0" + str(pid).encode()
            raw = txn.get(mine, db=dbs["gauges"])
            value = (_GAUGE.unpack(raw)[0] if raw else 0) + delta
            if value:
                txn.put(mine, _GAUGE.pack(value), db=dbs["gauges"])
            else:
                txn.delete(mine, db=dbs["gauges"])
            return _total(txn, dbs, _key(namespace, key), pid)
        return int(self._state.write(op))

    def total(self, namespace: str, key: str) -> int:
        """A gauge's total over live processes."""
        return int(self._state.read(lambda txn, dbs, now: _total(txn, dbs, _key(namespace, key), os.getpid())))


def _total(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], k: bytes, pid: int) -> int:
    out = 0
    cur = txn.cursor(db=dbs["gauges"])
    if cur.set_range(k + b"\0"):
        for key, value in cur:
            if not key.startswith(k + b"\0"):
                break
            holder = int(key.rsplit(b"\0", 1)[1])
            if holder == pid or pid_alive(holder):
                out += _GAUGE.unpack(value)[0]
    return out
