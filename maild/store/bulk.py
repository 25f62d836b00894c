"""Bulk appends for import (``maild import``): many messages, one group commit.

``Store.append`` waits for each commit when there is no reactor (the command line), so an
import of 200,000 messages would pay 200,000 fsyncs. Here a batch of appends is queued on
the user's shard writer at once and waited for together: the writer commits them in as few
transactions as its ``max_batch`` allows, and each append is acknowledged (returned) only
after its commit, as every append is. Bodies above ``store.inline_body_max`` are staged as
blob files first (fsync), exactly as ``Store.append`` stages them.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from maild.store import blobs as blobfiles
from maild.store import operations as ops
from maild.util.message import envelope_fields

if TYPE_CHECKING:
    from maild.store import Store


@dataclass(frozen=True)
class BulkItem:
    mailbox_id: int
    raw: bytes
    flags: frozenset[str]
    internal_date: float


def append_batch(store: Store, user: str, items: Sequence[BulkItem]) -> list[tuple[str, int | Exception]]:
    """Append ``items`` for ``user``; for each, (sha256 hex of the body, uid) once committed,
    or (sha, the exception) when that append failed (quota, a mailbox deleted meanwhile)."""
    u = store._user(user)
    writer = store.shards[u.shard].writer
    futures: list[tuple[str, Future[Any] | Exception]] = []
    staged_files = []
    try:
        for item in items:
            try:
                if len(item.raw) <= store.config.inline_body_max:
                    staged = blobfiles.inline(item.raw)
                else:
                    staged = blobfiles.stage(store.tmp_dir, item.raw)
                    staged_files.append(staged.path)
                op = ops.op_append(u.address, u.id, item.mailbox_id, staged.sha, staged.size, b"",
                                   item.flags, item.internal_date, envelope_fields(item.raw),
                                   u.quota_bytes, staged.inline, staged.shape)
                futures.append((staged.sha, writer.submit(op, (staged,))))
            except Exception as exc:  # this message only (e.g. the blob file system is full)
                futures.append(("", exc))
        results: list[tuple[str, int | Exception]] = []
        for sha, f in futures:
            if isinstance(f, Exception):
                results.append((sha, f))
                continue
            error = f.exception()
            results.append((sha, error if isinstance(error, Exception) else f.result()[2]))
        return results
    finally:
        for path in staged_files:
            if path is not None:
                path.unlink(missing_ok=True)
