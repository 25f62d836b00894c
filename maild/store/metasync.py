"""The meta-page fsync of an LMDB environment, done after the write lock is released and
shared by the commits of every process over the environment.

LMDB's commit (sync=True, metasync=True) writes the transaction's pages, fdatasyncs them,
then writes the meta page through a descriptor opened O_DSYNC — two flushes of the disk's
cache, both while holding the environment's write lock, which every process over the data
directory shares. With several worker processes writing to one shard, that lock is what
bounds the tree's commits per second (docs/performance.md, "Worker processes").

Opened with MDB_NOMETASYNC (``metasync=False``), a commit does the first flush only and
leaves the meta page in the page cache. LMDB's documentation: "This optimization maintains
database integrity, but a system crash may undo the last committed transaction. I.e. it
preserves the ACI (atomicity, consistency, isolation) but not D (durability)". The D comes
back from :meth:`MetaSync.wait`, which the writer calls after the commit and before any of
its operations is answered (the durability contract): one ``mdb_env_sync(force)``
(fdatasync of data.mdb) makes every transaction committed before it durable, whichever
process committed it. (MDB_NOSYNC, which also skips the data flush, could leave a meta
page pointing at pages never written: never used here.)

Implementation notes — invariants a contributor must keep:

1. ``synced`` (8 octets in the file ``<lmdb dir>/synced``, mapped shared by every process)
   never exceeds a transaction id that is durable: it is raised only after an env sync
   returns, and only to the ``last_txnid`` read *before* that sync (a transaction whose
   meta page was in the page cache when the sync started).
2. The file is not trusted across an environment's replacement: at open, a value above the
   environment's own last transaction id (a data.mdb restored from a backup) resets it to
   0, holding the file's lock, so no commit skips its sync on a stale claim.
3. One sync at a time per environment across processes (flock on the file): a waiter that
   finds its transaction covered when it gets the lock returns without syncing — that is
   the group commit across processes. A thread of this process waits on a
   ``threading.Lock`` first (flock is per open file, shared by this process's threads).
4. A transaction whose meta page was written but not yet synced is visible to readers of
   every process (LMDB's doing; another process's change-log follower may read its
   records then, woken by the page write: wake.py). Its own writer acknowledges nothing,
   publishes nothing and removes no body file on its account before ``wait`` returns.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_COUNTER = struct.Struct("<Q")


class MetaSync:
    def __init__(self, env: Any, path: Path) -> None:
        self.env = env
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(self._fd).st_size < _COUNTER.size:
                os.ftruncate(self._fd, _COUNTER.size)
            self._map = mmap.mmap(self._fd, _COUNTER.size)
        except BaseException:
            os.close(self._fd)
            raise
        self._lock = threading.Lock()
        self.syncs = 0  # env syncs this process ran (the rest were covered by another's)
        with self._locked():
            if self.synced() > self.env.info()["last_txnid"]:  # invariant 2
                _COUNTER.pack_into(self._map, 0, 0)

    def synced(self) -> int:
        """The newest transaction id known durable."""
        return int(_COUNTER.unpack_from(self._map, 0)[0])

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:  # this process's threads first: flock is per open file
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def wait(self, txnid: int) -> None:
        """Return once transaction ``txnid`` (committed) is durable (invariants 1, 3)."""
        if self.synced() >= txnid:
            return
        with self._locked():
            if self.synced() >= txnid:  # another process's sync covered it meanwhile
                return
            last = int(self.env.info()["last_txnid"])
            self.env.sync(True)
            self.syncs += 1
            if last > self.synced():
                _COUNTER.pack_into(self._map, 0, last)

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)
