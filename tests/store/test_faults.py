"""The store under faults, without a daemon: orphan blob files swept safely, bodies verified
on read, the health conditions, the local-delivery retry queue, environments checked before
they are mapped."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from maild.config import StoreConfig
from maild.store import Store, sweep
from maild.store.health import Health, path_for, read_all
from maild.store.health import read as read_health
from maild.store.types import BlobDamaged, FormatError, Recipient, StoreFull
from tests.store.conftest import SMALL, result

ALICE, BOB = "alice@example.test", "bob@example.test"


def _body(n: int, size: int) -> bytes:
    return f"Subject: m{n}\r\n\r\n".encode() + os.urandom(size // 2).hex().encode()


def _plant(store: Store, shard: int, data: bytes) -> Path:
    """A blob file no record refers to, as a crash between link and commit leaves it."""
    sha = hashlib.sha256(data).hexdigest()
    path = store.shards[shard].blobs.path(sha)
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return path


def test_sweep_removes_old_orphans_and_keeps_young_ones_and_referenced(store: Store) -> None:
    inbox = store.require_mailbox(ALICE, "INBOX")
    result(store.append(ALICE, inbox.id, _body(1, 60_000)))  # a referenced blob file
    shard = store.user(ALICE).shard
    orphan = _plant(store, shard, b"orphan")
    assert store.sweep_orphans(min_age=3600) == 0  # young: an append may be linking it now
    assert orphan.exists()
    assert store.sweep_orphans(min_age=0) == 1
    assert not orphan.exists()
    assert len(store.shards[shard].blobs.names()) == 1
    assert store.read(ALICE, inbox.id, 1).startswith(b"Subject: m1")


def test_sweep_never_removes_a_file_an_append_references_meanwhile(store: Store) -> None:
    """The file of a body about to be stored again (deduplicated: the append finds the file
    there and only references it) is a candidate while unreferenced; the removal, run by
    the writer, sees the reference committed first and keeps it."""
    inbox = store.require_mailbox(ALICE, "INBOX")
    body = _body(2, 60_000)
    shard = store.shards[store.user(ALICE).shard]
    orphan = _plant(store, shard.index, body)
    names = sweep.candidates(shard.env, shard.dbs, shard.blobs, 0, time.time())
    assert names == [orphan.name]
    result(store.append(ALICE, inbox.id, body))  # links nothing: the name exists
    assert shard.writer.run(sweep.op_remove(names, shard.blobs, 0)) == 0
    assert orphan.exists()
    assert store.read(ALICE, inbox.id, 1) == body


def test_a_flipped_byte_is_an_error_for_that_message_and_a_health_condition(tmp_path: Path) -> None:
    store = Store(tmp_path / "data", SMALL)
    store.health = Health(tmp_path / "health.json")  # as in the daemon
    try:
        store.domain_add("example.test")
        store.user_add(ALICE, "hash")
        inbox = store.require_mailbox(ALICE, "INBOX")
        result(store.append(ALICE, inbox.id, _body(1, 60_000)))
        result(store.append(ALICE, inbox.id, _body(2, 100)))  # inline
        meta = store.message(ALICE, inbox.id, 1)
        assert meta is not None
        with store.open(ALICE, inbox.id, 1) as fh:  # verified, and remembered as verified
            assert fh.read().startswith(b"Subject: m1")
        path = store.shards[store.user(ALICE).shard].blobs.path(meta.blob)
        data = bytearray(path.read_bytes())
        data[100] ^= 1
        path.write_bytes(bytes(data))  # a new mtime: verified again
        with pytest.raises(BlobDamaged, match=meta.blob):
            store.read(ALICE, inbox.id, 1)
        with pytest.raises(BlobDamaged, match=meta.blob):
            store.open(ALICE, inbox.id, 1)
        assert store.read(ALICE, inbox.id, 2).startswith(b"Subject: m2")
        state = read_health(tmp_path / "health.json")
        assert state is not None
        [damaged] = state["damaged_blobs"]
        assert damaged["blob"] == meta.blob and "uid 1 in 'INBOX' of alice@example.test" in damaged["message"]
    finally:
        store.close()


def test_health_full_condition_is_kept_in_place_and_cleared(tmp_path: Path) -> None:
    health = Health(tmp_path / "health.json")
    size = (tmp_path / "health.json").stat().st_size
    health.write_failed("shard 01", "file system full")
    health.write_failed("shard 01", "file system full")
    state = read_health(tmp_path / "health.json")
    assert state is not None and state["full"]["shard 01"]["error"] == "file system full"
    health.write_succeeded("shard 01")
    state = read_health(tmp_path / "health.json")
    assert state is not None and state["full"] == {}
    assert (tmp_path / "health.json").stat().st_size == size  # rewritten in place
    health.close()
    assert read_health(tmp_path / "health.json") is None  # no daemon answers for it


def test_partial_delivery_queues_the_rest_and_the_retry_delivers_it_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "data", StoreConfig(shards=2, map_size_mb=2, directory_map_size_mb=64))
    try:
        store.domain_add("example.test")
        store.user_add(ALICE, "hash")
        store.user_add(BOB, "hash")
        assert store.user(ALICE).shard != store.user(BOB).shard
        for n in range(1000):  # bob's shard full
            try:
                result(store.deliver(_body(n, 30_000), [Recipient(BOB)]))
            except StoreFull:
                break
        both = _body(9999, 30_000)
        results = result(store.deliver(both, [Recipient(ALICE), Recipient(BOB, prefix=b"X-For: bob\r\n")]))
        assert [r.uid > 0 for r in results] == [True, False]
        [entry] = store.retry_entries()
        assert [t["user"] for t in entry["targets"]] == [BOB]
        assert result(store.retry_deliveries()) == 0  # not due yet
        assert result(store.retry_deliveries(time.time() + 3600)) == 0  # still full: kept
        assert store.retry_entries()[0]["attempts"] == 1
    finally:
        store.close()
    store = Store(tmp_path / "data", StoreConfig(shards=2, map_size_mb=64, directory_map_size_mb=64))
    try:
        # another worker process holds the entry's lease: this one leaves it alone
        assert store.lease(f"retry:{entry['id']}", "another worker", 60)
        assert result(store.retry_deliveries(time.time() + 7200)) == 0
        assert store.release_lease(f"retry:{entry['id']}", "another worker")
        assert result(store.retry_deliveries(time.time() + 7200)) == 1
        assert store.retry_entries() == []
        inbox = store.require_mailbox(BOB, "INBOX")
        assert store.read(BOB, inbox.id, store.uids(BOB, inbox.id)[-1]) == b"X-For: bob\r\n" + both
    finally:
        store.close()


def test_all_recipients_failing_is_still_an_error(store: Store) -> None:
    store.user_set_quota(ALICE, 10)
    store.user_set_quota(BOB, 10)
    store._user_cache.clear()
    with pytest.raises(Exception, match="quota"):
        result(store.deliver(_body(1, 1000), [Recipient(ALICE), Recipient(BOB)]))
    assert store.retry_entries() == []


@pytest.mark.parametrize("cut", [0.5, 8192])
def test_truncated_environment_is_refused_before_mapping(tmp_path: Path, cut: float) -> None:
    store = Store(tmp_path / "data", SMALL)
    store.domain_add("example.test")
    store.user_add(ALICE, "hash")
    inbox = store.require_mailbox(ALICE, "INBOX")
    for n in range(30):
        result(store.append(ALICE, inbox.id, _body(n, 20_000)))
    index = store.user(ALICE).shard
    store.close()
    data = tmp_path / "data" / "shards" / f"{index:02d}" / "lmdb" / "data.mdb"
    size = data.stat().st_size
    with open(data, "r+b") as fh:
        fh.truncate(int(size * cut) if cut < 1 else int(cut))
    with pytest.raises(FormatError, match=f"shard {index}: .* is truncated"):
        Store(tmp_path / "data", SMALL)


def test_directory_emptied_under_shards_with_mail_is_refused(tmp_path: Path) -> None:
    store = Store(tmp_path / "data", SMALL)
    store.domain_add("example.test")
    store.user_add(ALICE, "hash")
    store.close()
    (tmp_path / "data" / "directory" / "lmdb" / "data.mdb").write_bytes(b"")
    with pytest.raises(FormatError, match="directory: .* is empty"):
        Store(tmp_path / "data", SMALL)


def test_an_emptied_shard_starts_anew_only_when_the_operator_says_so(tmp_path: Path) -> None:
    store = Store(tmp_path / "data", SMALL)
    store.domain_add("example.test")
    store.user_add(ALICE, "hash")
    index = store.user(ALICE).shard
    store.close()
    lmdb_dir = tmp_path / "data" / "shards" / f"{index:02d}" / "lmdb"
    (lmdb_dir / "data.mdb").write_bytes(b"")
    with pytest.raises(FormatError, match=f"shard {index}: .* is empty .*1 user.*alice@example.test.*recreate-empty"):
        Store(tmp_path / "data", SMALL)
    (lmdb_dir / "recreate-empty").touch()
    store = Store(tmp_path / "data", SMALL)  # as asked: empty, alice has no partition now
    try:
        assert not (lmdb_dir / "recreate-empty").exists()
        store.ensure_partition(store.user(ALICE))
        assert store.require_mailbox(ALICE, "INBOX").messages == 0
    finally:
        store.close()


def test_each_serving_process_reports_its_own_conditions_and_status_merges_them(tmp_path: Path) -> None:
    """Worker processes: one's damaged blob is not erased by another's report; a dead
    process's file goes."""
    data = tmp_path / "data"
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from maild.store.health import Health, path_for
        health = Health(path_for(Path({str(data)!r})))
        health.blob_damaged("shard 01", "ab" * 32, "uid 7 in 'INBOX' of bob@example.test")
        health.write_failed("shard 00", "file system full")
        print("ready", flush=True)
        sys.stdin.read()
    """)
    child = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        mine = Health(path_for(data))
        mine.write_failed("shard 00", "file system full")
        merged = read_all(data, mine.snapshot())
        assert merged is not None and merged["pids"] == sorted([child.pid, os.getpid()])
        assert merged["full"]["shard 00"]["failures"] == 2  # both processes' refusals
        assert [d["blob"] for d in merged["damaged_blobs"]] == ["ab" * 32]
        mine.write_succeeded("shard 00")  # this process's report does not erase the other's
        merged = read_all(data)
        assert merged is not None and merged["damaged_blobs"] and "shard 00" in merged["full"]
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    merged = read_all(data)
    assert merged is not None and merged["pids"] == [os.getpid()] and merged["full"] == {}
    path_for(data)  # a starting process removes the dead one's file
    assert sorted(p.stem for p in (data / "health").iterdir()) == [str(os.getpid())]
    mine.close()
    assert read_all(data) is None and list((data / "health").iterdir()) == []
