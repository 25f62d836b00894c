"""maild.store.metasync and the writer's sync after the commit ([store] shared_meta_sync): an
environment opened with MDB_NOMETASYNC commits holding the write lock for one flush; no
operation is answered before an env sync covers its transaction, and one sync covers the
commits of every process (a second MetaSync on the same file stands for another process:
flock is per open file)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import lmdb
import pytest

from maild.config import StoreConfig
from maild.store import Store
from maild.store.metasync import MetaSync
from maild.store.types import StoreFull
from maild.store.writer import Batch, Writer


class _SlowSync:
    """An environment whose env.sync waits for ``release`` and counts its calls."""

    def __init__(self, env: lmdb.Environment) -> None:
        self.env = env
        self.release = threading.Event()
        self.entered = threading.Event()
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def sync(self, force: bool = False) -> None:
        self.calls += 1
        self.entered.set()
        assert self.release.wait(10)
        self.env.sync(force)


def _open(path: Path) -> tuple[lmdb.Environment, dict[str, Any]]:
    env = lmdb.open(str(path), map_size=64 << 20, max_dbs=4, metasync=False)
    return env, {"data": env.open_db(b"data")}


def _put(key: bytes) -> Any:
    def op(b: Batch) -> bytes:
        b.txn.put(key, b"v", db=b.dbs["data"])
        b.changes.append({"key": key.decode()})
        return key
    return op


def test_an_operation_is_answered_and_published_only_after_the_meta_sync(tmp_path: Path) -> None:
    raw, dbs = _open(tmp_path / "env")
    env = _SlowSync(raw)
    published: list[list[dict[str, Any]]] = []
    w = Writer("test", env, dbs, blob_dir=None, max_batch=64, on_commit=published.append)  # type: ignore[arg-type]
    try:
        assert w.meta_sync is not None  # found from the environment's flags
        future = w.submit(_put(b"a"))
        assert env.entered.wait(10)
        # Committed (a reader sees it) but not yet durable: no answer, nothing published.
        with raw.begin() as txn:
            assert txn.get(b"a", db=dbs["data"]) == b"v"
        assert not future.done() and published == []
        ours = raw.info()["last_txnid"]
        # The sync runs outside LMDB's write lock: another writer (process) commits meanwhile.
        with raw.begin(write=True) as txn:
            txn.put(b"other", b"v", db=dbs["data"])
        env.release.set()
        assert future.result(10) == b"a"
        assert published[0] == [{"key": "a"}]
        assert w.meta_sync.synced() >= ours
    finally:
        env.release.set()
        w.close()
        raw.close()


def test_one_sync_covers_the_commits_of_every_process(tmp_path: Path) -> None:
    env, dbs = _open(tmp_path / "env")
    try:
        ours, theirs = MetaSync(env, tmp_path / "synced"), MetaSync(env, tmp_path / "synced")
        for key in (b"a", b"b"):
            with env.begin(write=True) as txn:
                txn.put(key, b"v", db=dbs["data"])
        last = env.info()["last_txnid"]
        ours.wait(last - 1)  # syncs: covers everything committed before it, "b" included
        theirs.wait(last)
        assert (ours.syncs, theirs.syncs) == (1, 0)
        assert theirs.synced() == last
        ours.close()
        theirs.close()
    finally:
        env.close()


def test_a_counter_ahead_of_the_environment_is_reset(tmp_path: Path) -> None:
    # A data.mdb restored from a backup has older transaction ids than the counter saw:
    # trusting it would answer commits that were never synced.
    (tmp_path / "synced").write_bytes((10**9).to_bytes(8, "little"))
    env, dbs = _open(tmp_path / "env")
    try:
        sync = MetaSync(env, tmp_path / "synced")
        assert sync.synced() == 0
        with env.begin(write=True) as txn:
            txn.put(b"a", b"v", db=dbs["data"])
        sync.wait(env.info()["last_txnid"])
        assert sync.syncs == 1
        sync.close()
    finally:
        env.close()


def test_a_failed_sync_fails_the_answers(tmp_path: Path) -> None:
    raw, dbs = _open(tmp_path / "env")

    class Failing(_SlowSync):
        def sync(self, force: bool = False) -> None:
            raise lmdb.DiskError("No space left on device")
    env = Failing(raw)
    w = Writer("test", env, dbs, blob_dir=None, max_batch=64)  # type: ignore[arg-type]
    try:
        with pytest.raises(StoreFull):
            w.submit(_put(b"a")).result(10)
    finally:
        w.close()
        raw.close()


@pytest.mark.parametrize("shared", [True, False])
def test_the_store_opens_its_environments_as_configured(tmp_path: Path, shared: bool) -> None:
    store = Store(tmp_path / "data", StoreConfig(shards=2, map_size_mb=64, directory_map_size_mb=64,
                                                 shared_meta_sync=shared))
    try:
        for writer in [store.directory.writer, *(s.writer for s in store.shards)]:
            assert (writer.meta_sync is not None) is shared
            assert writer.env.flags()["metasync"] is not shared
        store.domain_add("example.test")  # a directory write, answered after its sync
        if shared:
            assert store.directory.writer.meta_sync is not None
            assert store.directory.writer.meta_sync.synced() >= store.directory.env.info()["last_txnid"]
    finally:
        store.close()
