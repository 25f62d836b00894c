"""An LMDB environment that follows a map grown by another process (MDB_MAP_RESIZED).

Implementation notes — invariants a contributor must keep:

1. Every process maps an environment with its own ``map_size`` (the configured one, at
   least what the file uses). When another process, configured larger, commits data past
   the end of this process's map, every new transaction here fails with MDB_MAP_RESIZED
   until this process adopts the new size (``mdb_env_set_mapsize(0)``), which remaps the
   file: legal only while no transaction of this process is active (LMDB does not check;
   a reader on the old mapping would read unmapped memory).
2. :class:`Env` wraps ``begin``: a begin in progress is counted, and the adoption raises
   a flag that makes new begins wait, so no begin runs while it remaps; active read transactions
   are those of this process's reader slots with a transaction id (``env.readers()``), and
   LMDB itself refuses (EINVAL) while this process has a write transaction. New
   transactions cannot start meanwhile (they fail with MDB_MAP_RESIZED too), so the active
   ones drain; a begin waits for that up to ``ADOPT_WAIT`` seconds, then fails with
   StoreError (a read transaction held open that long is a bug of its own).
3. Everything else is the wrapped environment's (``__getattr__``); transactions are
   plain py-lmdb transactions.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import lmdb

from maild.store.types import StoreError

log = logging.getLogger(__name__)

ADOPT_WAIT = 10.0  # seconds a begin waits for this process's transactions to end


class Env:
    def __init__(self, raw: lmdb.Environment, what: str) -> None:
        self.raw = raw
        self.what = what
        self._gate = threading.Lock()  # one adoption at a time
        # Begins in progress, one item each: list.append and list.pop are atomic under
        # the GIL, and cost a fraction of a lock (every read runs through here).
        self._beginning: list[None] = []
        self._adopting = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)

    def begin(self, *args: Any, **kwargs: Any) -> lmdb.Transaction[bytes]:
        txn = self._try(args, kwargs)
        if txn is not None:
            return txn
        deadline = time.monotonic() + ADOPT_WAIT
        while True:
            self.adopt()
            txn = self._try(args, kwargs)
            if txn is not None:
                return txn
            if time.monotonic() > deadline:
                raise StoreError(f"{self.what}: another process grew the LMDB map and a "
                                 f"transaction of this one stayed open for {ADOPT_WAIT:.0f} s: "
                                 "the new size is not adopted yet") from None
            time.sleep(0.002)

    def _try(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> lmdb.Transaction[bytes] | None:
        """A transaction, or None while the map must be (or is being) adopted. Counts
        first, then looks at the flag; adopt() sets the flag first, then looks at the
        count: one of the two sees the other (invariant 2)."""
        beginning = self._beginning
        beginning.append(None)
        try:
            if not self._adopting:
                return self.raw.begin(*args, **kwargs)
        except lmdb.MapResizedError:
            pass
        finally:
            beginning.pop()
        return None

    def adopt(self) -> bool:
        """Adopt the map size the environment has now, if no transaction of this process
        is active (invariant 2); True when done."""
        with self._gate:
            self._adopting = True
            try:
                if self._beginning or self._readers_active():
                    return False
                before = self.raw.info()["map_size"]
                try:
                    self.raw.set_mapsize(0)
                except lmdb.Error:  # this process has a write transaction
                    return False
                after = self.raw.info()["map_size"]
            finally:
                self._adopting = False
        if after != before:
            log.warning("%s: another process grew the LMDB map: %d MiB mapped now (was %d MiB)",
                        self.what, after >> 20, before >> 20)
        return True

    def _readers_active(self) -> bool:
        pid = str(os.getpid())
        for line in self.raw.readers().splitlines()[1:]:
            fields = line.split()
            if len(fields) == 3 and fields[0] == pid and fields[2] != "-":
                return True
        return False
