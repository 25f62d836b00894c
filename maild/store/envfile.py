"""Checks of an LMDB environment's data file made before LMDB maps it.

LMDB maps ``data.mdb`` and trusts its meta pages: a file cut short (a full disk during a
copy, a restore interrupted) is mapped past its end, and the first read there kills the
process with SIGBUS, with no message at all. Each meta page records the last page its
transaction uses (``mm_last_pg``) and the page size, so the size the file must at least
have is known before mapping: we refuse a shorter file with a message that names the
environment and what to do.

An empty or missing data file is a new environment to LMDB, which creates it empty. That is
right for a new store, and a disaster for a shard the directory says holds users: their
mail would silently be gone and new mail would go to an empty partition. The store says
which environments must already exist (``required``); those are never created anew.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

from maild.store.types import FormatError

MDB_MAGIC = 0xBEEFC0DE
# Offsets in a meta page (64-bit LMDB, lmdb's mdb.c): the 16-octet page header, then
# MDB_meta: magic u32, version u32, address, mapsize, two MDB_db of 48 octets (the first,
# the free list's, holds the page size in md_pad), last page number, transaction id.
_MAGIC, _PSIZE, _LAST_PG, _TXNID = 16, 40, 136, 144
_WHAT_TO_DO = "restore it from a backup or a replica; 'maild fsck' reports the rest once it opens"
# Created by the operator next to data.mdb: start this environment empty, knowingly giving up
# what it held (then remove its users or restore their mail); removed once used.
RECREATE_MARKER = "recreate-empty"


def _meta(header: bytes, base: int) -> tuple[int, int, int] | None:
    """(page size, last page, txnid) of the meta page at ``base``, or None if it is not one."""
    if len(header) < base + _TXNID + 8 or struct.unpack_from("<I", header, base + _MAGIC)[0] != MDB_MAGIC:
        return None
    psize = struct.unpack_from("<I", header, base + _PSIZE)[0]
    last_pg, txnid = struct.unpack_from("<QQ", header, base + _LAST_PG)
    return psize, last_pg, txnid


Required = Callable[[], str | None]  # why the environment must exist already, or None


def check(lmdb_dir: Path, what: str, required: Required | None) -> None:
    """Raise FormatError when ``lmdb_dir/data.mdb`` is shorter than its own meta pages say,
    or missing or empty while ``required()`` says why it must exist."""
    data = lmdb_dir / "data.mdb"
    try:
        size = data.stat().st_size
    except FileNotFoundError:
        size = -1
    if size <= 0:
        marker = lmdb_dir / RECREATE_MARKER
        if marker.exists():
            marker.unlink()
            return
        reason = required() if required is not None else None
        if reason is not None:
            state = "missing" if size < 0 else "empty (0 octets)"
            raise FormatError(f"{what}: {data} is {state}, but {reason}. maild will not create "
                              f"it anew, which would lose that mail: {_WHAT_TO_DO}. To start it "
                              f"empty instead, giving that mail up, create {marker}")
        return
    with open(data, "rb") as fh:
        header = fh.read(2 * 65536)
    first = _meta(header, 0)
    if first is None:
        return  # not LMDB's magic: LMDB itself refuses it ("cannot be opened")
    psize = first[0]
    if psize < 512 or psize & (psize - 1):
        return
    metas = [m for m in (first, _meta(header, psize)) if m is not None]
    if size < 2 * psize:
        needed = 2 * psize
    else:
        _, last_pg, _ = max(metas, key=lambda m: m[2])  # the newer transaction is current
        needed = (last_pg + 1) * psize
    if size < needed:
        raise FormatError(f"{what}: {data} is truncated: it holds {size} octets, but its last "
                          f"committed transaction needs {needed}: {_WHAT_TO_DO}")
