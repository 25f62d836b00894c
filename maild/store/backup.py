"""Hot backup, verification and restore of a data directory (``maild backup``/``restore``).

A backup runs beside a serving daemon (LMDB is multi-process safe) and never stops it.

Layout of a backup directory ``DIR``::

    DIR/pool/ab/<sha256>            every blob file of every snapshot, once (content-addressed)
    DIR/<UTC stamp>/manifest.json   what the snapshot holds (written last: a snapshot
                                    without one is incomplete and ignored)
    DIR/<UTC stamp>/directory/lmdb/data.mdb, DIR/<UTC stamp>/shards/NN/lmdb/data.mdb
    DIR/<UTC stamp>/{directory,shards/NN}/blobs/ab/<sha256>   hard links into the pool
    DIR/LATEST                      the name of the newest complete snapshot

Implementation notes (invariants):

- Consistency: a read transaction is begun on every environment (directory and shards)
  before any is copied, so all copies show the store as of one moment (within microseconds:
  the transactions begin one after another), and each copy is LMDB's own compacting copy of
  its transaction (``mdb_env_copy2`` with ``MDB_CP_COMPACT``), never a file copy of a live map.
  A message acknowledged before the backup began is committed, hence in every snapshot.
- Blobs: the blob files a snapshot needs are the keys of each environment's ``blobref``
  table in that same transaction, less the bodies kept inline (``blobdata``). Blob files
  are immutable once named (content-addressed, atomic rename), so a hard link is as good as
  a copy; the pool links to the live file when it is on the same file system, and copies it
  (fsync) otherwise. A blob already in the pool (from an earlier snapshot) is not copied
  again: that is the incremental part. A file removed between the read transaction and its
  link (its message expunged meanwhile) is listed in the manifest as ``gone`` and the
  verification repairs the copy by dropping those records; no acknowledged, unexpunged
  message is affected.
- Nothing here writes to the live data directory.
- Verification rehashes every pool file a snapshot names (its name is its sha256) and runs
  fsck on a scratch restore of the snapshot (environments copied, blob files linked), so
  the backup itself is never opened by LMDB for writing.
- Restore refuses a data directory holding anything but empty directories.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from maild.store.blobs import fsync_dir
from maild.store.types import StoreError

if TYPE_CHECKING:
    from maild.config import StoreConfig
    from maild.store import Store

MANIFEST = "manifest.json"
LATEST = "LATEST"
FORMAT = 1


class BackupError(StoreError):
    """A backup, verification or restore that cannot proceed; the text says what to do."""


@dataclasses.dataclass
class Progress:
    """Progress lines on a stream (stderr), at most one every ``interval`` seconds."""

    out: TextIO | None = None
    interval: float = 1.0
    _last: float = 0.0

    def say(self, text: str, force: bool = False) -> None:
        if self.out is None:
            return
        now = time.monotonic()
        if force or now - self._last >= self.interval:
            self._last = now
            print(text, file=self.out, flush=True)


@dataclasses.dataclass
class BackupReport:
    snapshot: Path
    environments: int = 0
    blobs: int = 0
    copied: int = 0  # new to the pool, copied
    linked: int = 0  # new to the pool, hard-linked to the live file
    reused: int = 0  # already in the pool from an earlier snapshot
    gone: int = 0  # removed (expunged) between the snapshot and its link
    bytes_new: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"backup {self.snapshot.name}: {self.environments} environments, {self.blobs} blobs "
                f"({self.reused} already in the pool, {self.linked} linked, {self.copied} copied, "
                f"{self.bytes_new / 1e6:.1f} MB new, {self.gone} expunged meanwhile) "
                f"in {self.seconds:.1f} s")


def _pool_path(root: Path, sha: str) -> Path:
    return root / "pool" / sha[:2] / sha


def _copy_file(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".part")
    with open(src, "rb") as fin, open(tmp, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
        fout.flush()
        os.fsync(fout.fileno())
    os.replace(tmp, dst)


def _link_or_copy(src: Path, dst: Path) -> str:
    """Give ``dst`` the bytes of ``src``: 'linked' or 'copied'."""
    try:
        os.link(src, dst)
        return "linked"
    except OSError as exc:
        if exc.errno not in (18, 1, 31):  # EXDEV, EPERM (no links here), EMLINK
            raise
    _copy_file(src, dst)
    return "copied"


def _environments(store: Store) -> list[tuple[str, Any, dict[str, Any], Path]]:
    """(relative path, environment, databases, blob directory) of every environment."""
    envs = [("directory", store.directory.env, store.directory.dbs, store.directory.blobs.root)]
    envs += [(f"shards/{s.index:02d}", s.env, s.dbs, s.blobs.root) for s in store.shards]
    return envs


def backup(store: Store, root: Path, progress: Progress | None = None) -> BackupReport:
    """Take a snapshot of ``store`` into the backup directory ``root`` (made if missing)."""
    progress = progress or Progress()
    started = time.time()
    root.mkdir(parents=True, exist_ok=True)
    (root / "pool").mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    snapshot = root / stamp
    n = 1
    while snapshot.exists():
        n += 1
        snapshot = root / f"{stamp}.{n}"
    snapshot.mkdir()
    report = BackupReport(snapshot)
    envs = _environments(store)
    # One moment for all: every read transaction begins before any copy (module notes).
    txns = [env.begin(buffers=False) for _, env, _, _ in envs]
    needed: list[tuple[str, list[str]]] = []
    manifest: dict[str, Any] = {"format": FORMAT, "started": started, "shards": len(store.shards),
                                "environments": {}}
    try:
        for (rel, env, dbs, _), txn in zip(envs, txns, strict=True):
            target = snapshot / rel / "lmdb"
            target.mkdir(parents=True)
            progress.say(f"backup: copying {rel} ({env.info()['last_pgno'] * env.stat()['psize'] / 1e6:.1f} MB)",
                         force=True)
            env.copy(str(target), compact=True, txn=txn)  # mdb_env_copy2 from the snapshot txn
            shas = []
            inline = dbs.get("blobdata")
            for key in txn.cursor(db=dbs["blobref"]).iternext(keys=True, values=False):
                if inline is not None and txn.get(key, db=inline) is not None:
                    continue
                shas.append(bytes(key).hex())
            needed.append((rel, shas))
            report.environments += 1
    finally:
        for txn in txns:
            txn.abort()
    total = sum(len(s) for _, s in needed)
    for (rel, shas), (_, _, _, blob_root) in zip(needed, envs, strict=True):
        gone: list[str] = []
        made_dirs: set[Path] = set()
        for sha in shas:
            pooled = _pool_path(root, sha)
            if pooled.exists():
                report.reused += 1
            else:
                pooled.parent.mkdir(exist_ok=True)
                live = blob_root / sha[:2] / sha
                try:
                    how = _link_or_copy(live, pooled)
                except FileNotFoundError:
                    gone.append(sha)
                    report.gone += 1
                    continue
                setattr(report, how, getattr(report, how) + 1)
                report.bytes_new += pooled.stat().st_size
                made_dirs.add(pooled.parent)
            mine = snapshot / rel / "blobs" / sha[:2] / sha
            mine.parent.mkdir(parents=True, exist_ok=True)
            os.link(pooled, mine)
            report.blobs += 1
            rate = report.bytes_new / max(time.time() - started, 1e-3) / 1e6
            progress.say(f"backup: blobs {report.blobs + report.gone}/{total}, "
                         f"{report.bytes_new / 1e6:.1f} MB new, {rate:.1f} MB/s")
        for d in made_dirs:
            fsync_dir(d)
        manifest["environments"][rel] = {"blobs": len(shas) - len(gone), "gone": gone}
    report.seconds = time.time() - started
    manifest.update(finished=time.time(), report=dataclasses.asdict(report) | {"snapshot": stamp})
    _write_atomic(snapshot / MANIFEST, json.dumps(manifest, indent=1).encode())
    _write_atomic(root / LATEST, (snapshot.name + "\n").encode())
    progress.say(report.summary(), force=True)
    return report


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def snapshot_dir(path: Path) -> Path:
    """The snapshot ``path`` names: a snapshot itself, or a backup directory's newest one."""
    if (path / MANIFEST).exists():
        return path
    latest = path / LATEST
    if latest.exists():
        snap = path / latest.read_text().strip()
        if (snap / MANIFEST).exists():
            return snap
    raise BackupError(f"{path} is not a maild backup (no {MANIFEST} and no {LATEST}): "
                      "name a directory written by 'maild backup'")


def manifest_of(snapshot: Path) -> dict[str, Any]:
    return dict(json.loads((snapshot / MANIFEST).read_text()))


def _is_empty(path: Path) -> bool:
    if not path.exists():
        return True
    return all(p.is_dir() and _is_empty(p) for p in path.iterdir())


def restore(snapshot: Path, data_dir: Path, progress: Progress | None = None, link_blobs: bool = False) -> int:
    """Copy ``snapshot`` into ``data_dir`` (which must be empty); the number of blob files.
    With ``link_blobs`` (verification's scratch copy) blob files are hard-linked where the
    file system allows: they are never written in place."""
    progress = progress or Progress()
    if not _is_empty(data_dir):
        raise BackupError(f"{data_dir} is not empty: restore only into an empty data directory "
                          "(stop maild, move the old data directory aside, create an empty one, "
                          "then run 'maild restore' again)")
    manifest = manifest_of(snapshot)
    data_dir.mkdir(parents=True, exist_ok=True)
    count = 0
    for rel in manifest["environments"]:
        src, dst = snapshot / rel, data_dir / rel
        (dst / "lmdb").mkdir(parents=True, exist_ok=True)
        _copy_file(src / "lmdb" / "data.mdb", dst / "lmdb" / "data.mdb")
        fsync_dir(dst / "lmdb")
        (dst / "blobs").mkdir(exist_ok=True)
        if (src / "blobs").exists():
            for sub in sorted((src / "blobs").iterdir()):
                (dst / "blobs" / sub.name).mkdir(exist_ok=True)
                for blob in sub.iterdir():
                    if link_blobs:
                        _link_or_copy(blob, dst / "blobs" / sub.name / blob.name)
                    else:
                        _copy_file(blob, dst / "blobs" / sub.name / blob.name)
                    count += 1
                    progress.say(f"restore: {rel}: {count} blob files")
                fsync_dir(dst / "blobs" / sub.name)
    progress.say(f"restore: {len(manifest['environments'])} environments, {count} blob files "
                 f"into {data_dir}", force=True)
    return count


@dataclasses.dataclass
class VerifyReport:
    blobs: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)
    fsck: str = ""


def verify(snapshot: Path, config: StoreConfig, open_store: Callable[[Path, StoreConfig], Store],
           progress: Progress | None = None) -> VerifyReport:
    """Rehash every blob of ``snapshot`` and fsck a scratch restore of it."""
    from maild.store.fsck import fsck

    progress = progress or Progress()
    report = VerifyReport()
    manifest = manifest_of(snapshot)
    gone = sum(len(e["gone"]) for e in manifest["environments"].values())
    for rel in manifest["environments"]:
        blobs = snapshot / rel / "blobs"
        if not blobs.exists():
            continue
        for sub in sorted(blobs.iterdir()):
            for blob in sorted(sub.iterdir()):
                digest = hashlib.sha256()
                with open(blob, "rb") as fh:
                    while chunk := fh.read(1 << 20):
                        digest.update(chunk)
                if digest.hexdigest() != blob.name:
                    report.problems.append(f"{rel}: blob {blob.name} is damaged "
                                           f"(its content hashes to {digest.hexdigest()})")
                report.blobs += 1
                progress.say(f"verify: {report.blobs} blobs hashed")
    scratch_parent = snapshot.parent
    with tempfile.TemporaryDirectory(prefix=".verify-", dir=scratch_parent) as scratch:
        data = Path(scratch) / "data"
        restore(snapshot, data, link_blobs=True)
        store = open_store(data, dataclasses.replace(config, shards=manifest["shards"]))
        try:
            result = fsck(store, repair=bool(gone))
        finally:
            store.close()
    report.fsck = result.summary()
    if gone:
        report.fsck += f" ({gone} message bodies expunged during the backup dropped from the copy)"
    else:
        report.problems.extend(result.problems)
    report.problems.extend(result.unrepaired)
    return report


def default_progress() -> Progress:
    return Progress(sys.stderr)
