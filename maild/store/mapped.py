"""The pages of LMDB's memory maps a process holds, and giving them back.

LMDB reads through a read-only shared map of ``data.mdb`` (we never open with
``writemap``: writes go through ``pwrite`` from the writer's own buffers). Every page a
read or a B-tree descent touched stays in the process's resident set (``RssFile`` in
``/proc/self/status``) until the map is closed, so a long bulk job (``maild import`` of a
5 GB mbox, ``maild export``) grows with the store it walks, not with its own work: 870 MB
for a 200,000-message import whose own heap was 40 MB.

``release`` drops those pages from this process with ``madvise(MADV_DONTNEED)`` on the
address ranges ``/proc/self/maps`` lists for the store's data files. For a shared file
mapping that only removes the page-table entries: the data stays in the page cache and in
the file, a later read faults the page in again (from the cache), no write can be lost
(the map is read-only, so it holds no dirty page), and readers in other threads are
unaffected beyond that fault. Environments stay open; nothing is committed or re-read.
Where there is no ``/proc/self/maps`` (not Linux) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterable
from pathlib import Path

MADV_DONTNEED = 4  # <sys/mman.h> on Linux
_libc: ctypes.CDLL | None = None


def _madvise() -> ctypes._NamedFuncPointer:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        _libc.madvise.restype = ctypes.c_int
    return _libc.madvise


def resident_file_kib() -> int:
    """This process's resident file-backed memory (``RssFile``), in KiB; 0 if unknown."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("RssFile:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def release(files: Iterable[Path]) -> int:
    """Drop this process's mapped pages of ``files`` (LMDB data files); the octets of map
    address space advised (not all of it was resident)."""
    wanted = {os.path.realpath(f) for f in files}
    try:
        with open("/proc/self/maps") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return 0
    madvise = _madvise()
    advised = 0
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or fields[5] not in wanted or "w" in fields[1]:
            continue  # a writable map could hold dirty pages: never advise one
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if madvise(start, end - start, MADV_DONTNEED) == 0:
            advised += end - start
    return advised
