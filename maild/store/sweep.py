"""Removing orphan blob files: files no message (or queue entry) refers to, left by a crash
between linking a body file and committing the record that refers to it (blobs.py).

Safe beside writes in flight:
- only files unchanged (ctime: linking a name to an inode changes it) for ``min_age``
  seconds are candidates, far longer than any link-then-commit takes;
- the removal itself is an operation of the environment's writer: it checks the reference
  counts inside the write transaction and names the files in ``Batch.unlink``, which the
  writer removes only after the commit, holding LMDB's write lock, and only if still
  unreferenced then (writer.py). Every writer, of any process, links names holding that
  lock too: an append that found one of these files already there (a body it shares)
  either committed its reference first, which keeps the file, or runs after the removal
  and links its own.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from typing import Any

from maild.store.writer import Batch, Writer

_SHA = re.compile(r"[0-9a-f]{64}")


def candidates(env: Any, dbs: dict[str, Any], blob_dir: Any, min_age: float, now: float) -> list[str]:
    """Blob names without a reference whose files are older than ``min_age`` (a read
    transaction: cheap to get wrong, checked again by :func:`op_remove`)."""
    found = []
    with env.begin() as txn:
        for name in blob_dir.names():
            if not _SHA.fullmatch(name) or txn.get(bytes.fromhex(name), db=dbs["blobref"]) is not None:
                continue
            try:
                changed = os.stat(blob_dir.path(name)).st_ctime
            except FileNotFoundError:
                continue
            if now - changed >= min_age:
                found.append(name)
    return found


def op_remove(names: list[str], blob_dir: Any, min_age: float) -> Callable[[Batch], int]:
    def op(b: Batch) -> int:
        now = time.time()
        removed = 0
        for name in names:
            if b.txn.get(bytes.fromhex(name), db=b.dbs["blobref"]) is not None:
                continue
            try:
                if now - os.stat(blob_dir.path(name)).st_ctime < min_age:
                    continue
            except FileNotFoundError:
                continue
            b.unlink.add(name)
            removed += 1
        return removed
    return op


def sweep(env: Any, dbs: dict[str, Any], writer: Writer, min_age: float) -> int:
    """Remove the environment's orphan blob files; the number removed (any thread but the
    writer's, which it waits for)."""
    if writer.blob_dir is None:
        return 0
    names = candidates(env, dbs, writer.blob_dir, min_age, time.time())
    if not names:
        return 0
    return int(writer.run(op_remove(names, writer.blob_dir, min_age)))
