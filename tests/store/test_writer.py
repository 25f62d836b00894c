"""maild.store.writer: a batch's operations share one commit; one that raises fails alone,
with none of its writes kept, while its neighbours in the same batch commit."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import lmdb
import pytest

from maild.store.writer import Batch, Writer


@pytest.fixture
def writer(tmp_path: Path) -> Any:
    env = lmdb.open(str(tmp_path / "env"), map_size=64 << 20, max_dbs=4)
    dbs = {"data": env.open_db(b"data")}
    w = Writer("test", env, dbs, blob_dir=None, max_batch=64)
    yield w, env, dbs
    w.close()
    env.close()


def _put(key: bytes, fail: bool = False) -> Any:
    def op(b: Batch) -> bytes:
        b.txn.put(key, b"v", db=b.dbs["data"])
        b.changes.append({"key": key.decode()})
        if fail:
            raise ValueError(f"refused {key.decode()}")
        return key
    return op


def test_a_failing_operation_fails_alone_in_its_batch(writer: Any) -> None:
    w, env, dbs = writer
    release = threading.Event()
    w.submit(lambda b: release.wait(10))  # holds the writer so the next four share a batch
    futures: list[Future[Any]] = [w.submit(_put(b"a")), w.submit(_put(b"b", fail=True)),
                                  w.submit(_put(b"c")), w.submit(_put(b"d", fail=True))]
    commits_before = w.commits
    release.set()
    assert futures[0].result(10) == b"a" and futures[2].result(10) == b"c"
    for failed, key in ((futures[1], "b"), (futures[3], "d")):
        with pytest.raises(ValueError, match=f"refused {key}"):
            failed.result(10)
    assert w.commits - commits_before == 1  # the four shared one commit
    with env.begin() as txn:
        assert [k for k, _ in txn.cursor(db=dbs["data"])] == [b"a", b"c"]


def test_changes_are_published_for_committed_operations_only(tmp_path: Path) -> None:
    env = lmdb.open(str(tmp_path / "env"), map_size=64 << 20, max_dbs=4)
    dbs = {"data": env.open_db(b"data")}
    published: list[list[dict[str, Any]]] = []
    w = Writer("test", env, dbs, blob_dir=None, max_batch=64, on_commit=published.append)
    try:
        release = threading.Event()
        w.submit(lambda b: release.wait(10))
        futures = [w.submit(_put(b"x", fail=True)), w.submit(_put(b"y"))]
        release.set()
        assert futures[1].result(10) == b"y"
        with pytest.raises(ValueError):
            futures[0].result(10)
    finally:
        w.close()
        env.close()
    assert [c["key"] for batch in published for c in batch] == ["y"]
