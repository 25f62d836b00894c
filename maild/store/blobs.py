"""Content-addressed blob files.

A message body is written once to ``data_dir/tmp`` (fsync), then hard-linked into each
shard that references it (``shards/NN/blobs/ab/<sha256>``), and the shard directories are
fsynced once per batch. Hard links let every shard own and reference-count its own name
while the bytes exist once on disk, however many users on however many shards receive
them. A crash leaves at worst an unreferenced file, which the daemon's sweep removes once it
is old enough (sweep.py) and fsck reports and removes.
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from maild.store.codec import body_shape
from maild.store.types import StoreFull


@dataclass(frozen=True)
class StagedBlob:
    sha: str
    path: Path | None  # in data_dir/tmp, fsynced; None for a body kept inline in LMDB
    size: int
    inline: bytes | None = None  # small bodies live in the shard's LMDB (one group-commit fsync)
    # codec.body_shape's bits, noted in each message record; 0: unknown. Worked out for
    # bodies staged to a file only (in the staging thread): an inline body is hashed on the
    # reactor thread, where three scans would cost three times its hash, and it is small
    # enough for POP3 to scan as it sends it.
    shape: int = 0


def inline(data: bytes) -> StagedBlob:
    return StagedBlob(hashlib.sha256(data).hexdigest(), None, len(data), data)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def stage(tmp_dir: Path, data: bytes | Sequence[bytes]) -> StagedBlob:
    """Write ``data`` (bytes, or pieces written one after the other: a message is never
    joined just to be stored) to a new file in ``tmp_dir`` and fsync it (runs in a worker
    thread)."""
    pieces = [data] if isinstance(data, bytes) else data
    digest = hashlib.sha256()
    for piece in pieces:
        digest.update(piece)
    sha = digest.hexdigest()
    path = tmp_dir / f"{sha}.{uuid.uuid4().hex}"
    try:
        with open(path, "wb") as fh:
            for piece in pieces:
                fh.write(piece)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        path.unlink(missing_ok=True)
        if exc.errno in (28, 122):  # ENOSPC, EDQUOT
            raise StoreFull(f"blob file system full: {exc}") from exc
        raise
    return StagedBlob(sha, path, sum(map(len, pieces)), shape=body_shape(pieces))


class BlobDir:
    """One shard's blob names."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha: str) -> Path:
        return self.root / sha[:2] / sha

    def link(self, staged: StagedBlob) -> Path | None:
        """Give ``staged`` its name in this shard; return the directory to fsync, if any."""
        if staged.path is None:
            return None
        target = self.path(staged.sha)
        if target.exists():
            return None
        target.parent.mkdir(exist_ok=True)
        try:
            os.link(staged.path, target)
        except FileExistsError:
            return None
        except OSError as exc:
            if exc.errno in (28, 122):
                raise StoreFull(f"blob file system full: {exc}") from exc
            raise
        return target.parent

    def remove(self, sha: str) -> None:
        self.path(sha).unlink(missing_ok=True)

    def open(self, sha: str) -> io.BufferedReader:
        # A string path: pathlib's parsing costs more than the open on POP3's RETR path.
        return open(os.path.join(self.root, sha[:2], sha), "rb")

    def open_fd(self, sha: str) -> int:
        """The body file as a bare descriptor (POP3's reader: no buffering layers)."""
        return os.open(os.path.join(self.root, sha[:2], sha), os.O_RDONLY | os.O_CLOEXEC)

    def read(self, sha: str) -> bytes:
        with self.open(sha) as fh:
            return fh.read()

    def names(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.name for sub in self.root.iterdir() if sub.is_dir() for p in sub.iterdir())

    def checksum(self, sha: str) -> str:
        digest = hashlib.sha256()
        with self.open(sha) as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()
