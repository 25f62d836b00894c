"""State the worker processes of one daemon share (docs/architecture.md, "Processes"): a
small table in a shared memory file that the supervisor makes and every worker maps.

What it holds is ephemeral — connection counts, POP3 maildrop locks, message-rate token
buckets, login-failure counts per client IP — so it lives as long as the daemon, never on
disk past it, and costs a lock and a few memory reads per question, not a store commit.

Implementation notes (invariants):

- A slot per key (the 16-byte BLAKE2b digest of the key's text; all zero: never used),
  found by linear probing from the digest, at most PROBES slots. A slot holds one count
  per worker (int32) and two numbers (float64) whose meaning is the caller's.
- A key's count is the sum of its workers' counts. A worker only ever changes its own
  count, so when a worker dies the supervisor zeroes its counts
  (:meth:`SharedTable.clear_worker`) before starting its replacement: the connections and
  locks of a dead worker go with it.
- A slot with every count zero and its numbers unset (time 0) or older than IDLE seconds is
  free: a new key may take it. Lookups probe the whole chain for the key before taking a
  free slot, so a key is never in two slots. A full chain answers as if the key were new
  and not recorded (fail open), logged once: bounded memory under a flood of addresses.
- Every operation runs under an exclusive ``flock`` of the file, so a read-modify-write is
  atomic across the processes; the lock is released by the kernel if a process dies.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import mmap
import os
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

log = logging.getLogger("maild.shared")

SLOTS = 1 << 15
PROBES = 64
IDLE = 3600.0  # seconds after which an unused slot's numbers are forgotten
_DIGEST = 16
_FLOATS = struct.Struct("=dd")
R = TypeVar("R")


class SharedTable:
    """One mapped table; ``worker`` is this process's column (the supervisor uses none)."""

    def __init__(self, path: Path | str, workers: int, worker: int | None = None, *, create: bool = False) -> None:
        self.path = Path(path)
        self.workers = workers
        self.worker = worker
        self._counts = struct.Struct(f"={workers}i")
        self.slot_size = _DIGEST + self._counts.size + _FLOATS.size
        size = SLOTS * self.slot_size
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        self._fd = os.open(self.path, flags, 0o600)
        if create:
            os.ftruncate(self._fd, size)
        self._map = mmap.mmap(self._fd, size)
        self._warned = False

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    # -- slots ------------------------------------------------------------------------

    def _find(self, key: str, now: float) -> int | None:
        """The offset of ``key``'s slot, claimed if it had none; None when its chain is full."""
        digest = hashlib.blake2b(key.encode(), digest_size=_DIGEST).digest()
        start = int.from_bytes(digest[:8], "little") % SLOTS
        free = None
        for step in range(PROBES):
            offset = ((start + step) % SLOTS) * self.slot_size
            held = self._map[offset:offset + _DIGEST]
            if held == digest:
                return offset
            empty = held == bytes(_DIGEST)
            if free is None and (empty or self._idle(offset, now)):
                free = offset
            if empty:
                break
        if free is None:
            if not self._warned:
                self._warned = True
                log.warning("shared table full around %r: new keys are not counted across workers", key)
            return None
        self._map[free:free + _DIGEST] = digest
        self._map[free + _DIGEST:free + self.slot_size] = bytes(self.slot_size - _DIGEST)
        return free

    def _idle(self, offset: int, now: float) -> bool:
        if any(self._counts.unpack_from(self._map, offset + _DIGEST)):
            return False
        _, then = _FLOATS.unpack_from(self._map, offset + _DIGEST + self._counts.size)
        return then == 0.0 or now - then > IDLE

    def _total(self, offset: int) -> int:
        return sum(self._counts.unpack_from(self._map, offset + _DIGEST))

    def _add(self, offset: int, delta: int) -> None:
        assert self.worker is not None, "the supervisor counts nothing"
        at = offset + _DIGEST + 4 * self.worker
        (value,) = struct.unpack_from("=i", self._map, at)
        struct.pack_into("=i", self._map, at, max(value + delta, 0))

    # -- counts -----------------------------------------------------------------------

    def acquire(self, limits: list[tuple[str, int]]) -> bool:
        """One more for this worker on every key, if each key's total is below its limit
        (all or none, atomically); False when one is at its limit."""
        now = time.time()
        with self._locked():
            offsets = [(self._find(key, now), limit) for key, limit in limits]
            if any(offset is not None and self._total(offset) >= limit for offset, limit in offsets):
                return False
            for offset, _ in offsets:
                if offset is not None:
                    self._add(offset, 1)
            return True

    def release(self, keys: list[str]) -> None:
        """One less for this worker on every key."""
        now = time.time()
        with self._locked():
            for key in keys:
                offset = self._find(key, now)
                if offset is not None:
                    self._add(offset, -1)

    def total(self, key: str) -> int:
        with self._locked():
            offset = self._find(key, time.time())
            return 0 if offset is None else self._total(offset)

    def clear_worker(self, worker: int) -> None:
        """Zero a dead worker's counts (the supervisor, before restarting it)."""
        with self._locked():
            for slot in range(SLOTS):
                struct.pack_into("=i", self._map, slot * self.slot_size + _DIGEST + 4 * worker, 0)

    # -- numbers ----------------------------------------------------------------------

    def update(self, key: str, change: Callable[[float, float, float], tuple[float, float, R]],
               default: R) -> R:
        """``change(value, time, now) -> (value, time, result)`` on ``key``'s numbers
        (0.0, 0.0 for a new key), atomically; ``default`` when the table has no room."""
        now = time.time()
        with self._locked():
            offset = self._find(key, now)
            if offset is None:
                return default
            at = offset + _DIGEST + self._counts.size
            value, then = _FLOATS.unpack_from(self._map, at)
            value, then, result = change(value, then, now)
            _FLOATS.pack_into(self._map, at, value, then)
            return result
