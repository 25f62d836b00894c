"""Cross-process wake-up for change-log followers: a Bell rings when any process commits
to a shard.

Implementation notes — invariants a contributor must keep:

1. The bell watches each shard's LMDB data file with inotify (IN_MODIFY). Every LMDB
   commit writes that file with pwrite (dirty pages, then the meta page that publishes the
   transaction; the store never opens LMDB with ``writemap``), in whatever process it
   runs, so a writer pays nothing for waking the others: no socket, no extra syscall.
2. An event read before the meta page was written may find nothing new; the meta page's
   own write queues another event then. An event read after the meta page's write but
   before LMDB publishes the transaction to readers (the lock file's shared memory, which
   raises no event) finds nothing new either, and nothing follows it: the follower sees the
   written meta page (mdb_env_info) and looks again (changelog.Tail.poll, Store._rung):
   first at once after yielding the core, up to ``YIELDS`` times (mostly the wake-up itself
   preempted the committing thread on its core, inside that window), then after ``REPOLL``
   delays. So a wake-up is never lost, only sometimes early.
   Events of one file coalesce in the kernel while unread: one poll per burst.
3. Besides the events, the bell rings every shard each ``SAFETY_POLL`` seconds (a lost
   inotify queue overflow, a file system without inotify); without inotify at all
   (another OS) it rings every ``FALLBACK_POLL`` seconds instead.
4. With a reactor the bell is a reader of the reactor and rings on the reactor thread;
   without one (command-line use, tests) a daemon thread rings. Either way ``ring`` is
   called with the indexes of the shards that may have new records.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import select
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

IN_MODIFY = 0x2
IN_Q_OVERFLOW = 0x4000
# seconds: every shard is looked at this often anyway (a read transaction that finds the
# snapshot it last read costs microseconds).
SAFETY_POLL = 1.0
# seconds: the looks again at a commit written but not yet published (invariant 2); the
# window is LMDB's few instructions after the meta page's write, unless the committing
# thread is descheduled there.
REPOLL = (0.0005, 0.002, 0.008, 0.032, 0.128)
# Before the first look-again: times to yield the core and look at once (invariant 2).
YIELDS = 2
FALLBACK_POLL = 0.05  # seconds between looks without inotify
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of name)


def _inotify() -> Any:
    """libc with inotify, or None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.inotify_init1  # noqa: B018 - present?
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        return libc
    except (OSError, AttributeError):
        return None


class Bell:
    def __init__(self, files: dict[int, Path], ring: Callable[[set[int]], None], reactor: Any = None) -> None:
        self.ring = ring
        self.reactor = reactor
        self.every = set(files)
        self._fd = -1
        self._watches: dict[int, int] = {}  # watch descriptor -> shard index
        libc = _inotify()
        if libc is not None:
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd >= 0:
                self._fd = fd
                for index, path in files.items():
                    wd = libc.inotify_add_watch(fd, str(path).encode(), IN_MODIFY)
                    if wd < 0:
                        log.warning("no inotify watch on %s (errno %d): looked at every %.0f s",
                                    path, ctypes.get_errno(), SAFETY_POLL)
                    else:
                        self._watches[wd] = index
        self.period = SAFETY_POLL if self._fd >= 0 else FALLBACK_POLL
        self._stop_r, self._stop_w = -1, -1
        self._thread: threading.Thread | None = None
        self._timer: Any = None
        self._closed = False
        if reactor is not None:
            if self._fd >= 0:
                reactor.addReader(self)
            self._timer = reactor.callLater(self.period, self._tick)
        else:
            self._stop_r, self._stop_w = os.pipe()
            self._thread = threading.Thread(target=self._run, name="maild-bell", daemon=True)
            self._thread.start()

    # IReadDescriptor (twisted), for the reactor
    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "maild-bell"

    def connectionLost(self, reason: Any) -> None:
        pass

    def doRead(self) -> None:
        fired = self._drain()
        if fired:
            self._ring(fired)

    def _drain(self) -> set[int]:
        fired: set[int] = set()
        while True:
            try:
                data = os.read(self._fd, 64 * 1024)
            except (BlockingIOError, InterruptedError):
                return fired
            except OSError:
                return fired | self.every
            if not data:
                return fired
            full = len(data) > 60 * 1024  # else that was every event queued: no second read
            at = 0
            while at + _EVENT.size <= len(data):
                wd, mask, _, length = _EVENT.unpack_from(data, at)
                at += _EVENT.size + length
                if mask & IN_Q_OVERFLOW:
                    fired |= self.every
                elif wd in self._watches:
                    fired.add(self._watches[wd])
            if not full:
                return fired

    def _ring(self, shards: set[int]) -> None:
        try:
            self.ring(shards)
        except Exception:
            log.exception("change-log wake-up failed")

    def _tick(self) -> None:
        if self._closed:
            return
        self._ring(set(self.every))
        self._timer = self.reactor.callLater(self.period, self._tick)

    def _run(self) -> None:
        watched = [self._stop_r] + ([self._fd] if self._fd >= 0 else [])
        while True:
            ready, _, _ = select.select(watched, [], [], self.period)
            if self._stop_r in ready:
                return
            self._ring(self._drain() if ready else set(self.every))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.reactor is not None:
            if self._fd >= 0:
                self.reactor.removeReader(self)
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
        elif self._thread is not None:
            os.write(self._stop_w, b"x")
            self._thread.join()
            os.close(self._stop_r)
            os.close(self._stop_w)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
