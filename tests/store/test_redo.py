"""The replication (redo) log: a follower applying every environment's records in order
holds exactly the leader's databases and blob files (docs/replication.md)."""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import pytest

from maild.config import ReplicationConfig
from maild.store import Store, redo
from maild.store.fsck import fsck
from maild.store.types import Change, FlagMode, ReadOnlyStore, Recipient
from tests.store.conftest import SMALL, result

ALICE, BOB = "alice@example.test", "bob@example.test"
RAW = b"From: carol@example.org\r\nTo: alice@example.test\r\nSubject: hi\r\n\r\nbody\r\n"
LARGE = RAW + b"x" * 40_000 + b"\r\n"  # a blob file, not inline
LEADER = ReplicationConfig(role="leader")
FOLLOWER = ReplicationConfig(role="follower")


def ship(leader: Store, follower: Store) -> int:
    """Apply every record the follower lacks, fetching the body files it lacks first, as
    maild/replication does over the wire; return how many were applied."""
    applied = 0
    logs = follower.replication_logs()
    for where, log in leader.replication_logs().items():
        while True:
            records = log.records(logs[where].position(), 1 << 20)
            if not records:
                break
            for seq, record in records:
                staged = []
                for sha in redo.blobs_referenced(redo.decode(record)):
                    if not follower.has_blob(where, sha) and leader.blob_dir(where).path(sha).exists():
                        tmp = follower.tmp_dir / f"fetch-{sha}"
                        shutil.copyfile(leader.blob_dir(where).path(sha), tmp)
                        staged.append(follower.stage_blob_file(tmp))
                if result(follower.apply_replicated(where, seq, record, tuple(staged))):
                    applied += 1
    return applied


def content(store: Store) -> dict[str, object]:
    """Every database of every environment but the one meta key that differs, and every blob."""
    out: dict[str, object] = {}
    for where, log in store.replication_logs().items():
        with log.env.begin() as txn:
            out[where] = sorted(log.items(txn))
        blobs = store.blob_dir(where)
        out[where + " blobs"] = {sha: hashlib.sha256(blobs.read(sha)).hexdigest() for sha in blobs.names()}
    return out


@pytest.fixture
def pair(tmp_path: Path):  # type: ignore[no-untyped-def]
    leader = Store(tmp_path / "leader", SMALL, replication=LEADER)
    follower = Store(tmp_path / "follower", SMALL, replication=FOLLOWER)
    try:
        yield leader, follower
    finally:
        leader.close()
        follower.close()


def test_follower_reproduces_leader_exactly(pair: tuple[Store, Store]) -> None:
    leader, follower = pair
    leader.domain_add("example.test")
    leader.user_add(ALICE, "hash")
    leader.user_add(BOB, "hash")
    inbox = leader.require_mailbox(ALICE, "INBOX").id
    for i in range(5):
        result(leader.deliver(RAW + str(i).encode(), [Recipient(ALICE), Recipient(BOB)]))
    result(leader.deliver(LARGE, [Recipient(ALICE)]))
    result(leader.set_flags(ALICE, inbox, [1, 2], {"\\Seen", "$Label"}, FlagMode.ADD))
    result(leader.expunge(ALICE, inbox, [1]))
    leader.alias_add("postmaster@example.test", [ALICE])
    assert ship(leader, follower) > 10
    assert content(follower) == content(leader)
    assert follower.read(ALICE, inbox, 6) == LARGE
    assert ship(leader, follower) == 0  # nothing twice
    # the large body's last reference goes: the follower removes its file too
    result(leader.expunge(ALICE, inbox, [6]))
    ship(leader, follower)
    assert content(follower) == content(leader)
    assert fsck(follower).problems == [] and fsck(leader).problems == []


def test_follower_refuses_local_writes_and_publishes_applied_changes(pair: tuple[Store, Store]) -> None:
    leader, follower = pair
    with pytest.raises(ReadOnlyStore):
        follower.domain_add("example.test")
    leader.domain_add("example.test")
    leader.user_add(ALICE, "hash")
    ship(leader, follower)
    seen: list[Change] = []
    follower.subscribe(seen.append)
    result(leader.deliver(RAW, [Recipient(ALICE)]))
    ship(leader, follower)
    deadline = time.monotonic() + 10  # published after the commit's result, by another thread
    while not seen and time.monotonic() < deadline:
        time.sleep(0.005)
    assert [c.kind.value for c in seen] == ["append"] and seen[0].uids == (1,)
    # the follower numbers its own change log after the applied records (promotion)
    assert follower.log_head(seen[0].shard) == seen[0].seq


def test_gap_and_double_apply(pair: tuple[Store, Store]) -> None:
    leader, follower = pair
    leader.domain_add("example.test")
    leader.domain_add("example.org")
    log = leader.replication_logs()["directory"]
    (one, r1), (two, r2) = log.records(0, 1 << 20)[:2]
    with pytest.raises(redo.RecordError):
        result(follower.apply_replicated("directory", two, r2))
    assert result(follower.apply_replicated("directory", one, r1)) > 0
    assert result(follower.apply_replicated("directory", one, r1)) == 0
    assert follower.replication_logs()["directory"].position() == one
    assert redo.header(r1)[0] == 1  # epoch


def test_records_round_trip_and_retention(tmp_path: Path) -> None:
    ops = [(redo.PUT, "users", b"k", b"v" * 300), (redo.DELETE, "users", b"x", b""),
           (redo.CLEAR, "queue", b"", b"")]
    assert redo.decode(redo.encode(7, ops)) == ops
    with pytest.raises(redo.RecordError):
        redo.decode(redo.encode(7, ops)[:-5])
    store = Store(tmp_path / "d", SMALL, replication=ReplicationConfig(role="leader", retain=64))
    try:
        for i in range(200):
            store.domain_add(f"d{i}.test")
        log = store.replication_logs()["directory"]
        assert log.position() == 200 and 64 <= 200 - log.first() + 1 <= 128
        size, seconds = log.lag(190)
        assert size == sum(len(r) for _, r in log.records(190, 1 << 20)) and 0 <= seconds < 60
        assert log.lag(200) == (0, None)
    finally:
        store.close()


def test_standalone_keeps_no_log(tmp_path: Path) -> None:
    store = Store(tmp_path / "d", SMALL)
    try:
        store.domain_add("example.test")
        assert store.replication_logs() == {}
        assert not (tmp_path / "d" / redo.STATE_FILE).exists()
    finally:
        store.close()


def test_snapshot_copy_then_records(pair: tuple[Store, Store]) -> None:
    """A follower copies each environment whole (begin, chunks, end), an interrupted copy
    is asked for again, then the records after the copy's position follow."""
    leader, follower = pair
    leader.domain_add("example.test")
    leader.user_add(ALICE, "hash")
    result(leader.deliver(LARGE, [Recipient(ALICE)]))
    result(leader.deliver(RAW, [Recipient(ALICE)]))
    logs = follower.replication_logs()
    assert all(log.needs_snapshot() for log in logs.values())
    for where, log in leader.replication_logs().items():
        with log.env.begin() as txn:
            position = log.last(txn)
            items = [(redo.PUT, name, key, value) for name, key, value in log.items(txn)]
        result(follower.apply_snapshot(where, "begin"))
        result(follower.apply_snapshot(where, "put", redo.encode(1, items[: len(items) // 2])))
        assert logs[where].needs_snapshot() and logs[where].position() == 0  # interrupted: again
        result(follower.apply_snapshot(where, "begin"))
        result(follower.apply_snapshot(where, "put", redo.encode(1, items)))
        staged = []
        after: bytes | None = b""
        while after is not None:
            shas, after = logs[where].unbacked_blobs(after)
            for sha in shas:
                tmp = follower.tmp_dir / f"fetch-{sha}"
                shutil.copyfile(leader.blob_dir(where).path(sha), tmp)
                staged.append(follower.stage_blob_file(tmp))
        result(follower.apply_snapshot(where, "end", position=position, epoch=1, blobs=tuple(staged)))
        assert not logs[where].needs_snapshot() and logs[where].position() == position
    result(leader.deliver(RAW + b"again\r\n", [Recipient(ALICE)]))
    ship(leader, follower)
    assert content(follower) == content(leader)
    assert fsck(follower).problems == []


def test_failed_operation_leaves_nothing_in_the_record(pair: tuple[Store, Store]) -> None:
    """An operation that fails in a batch is retried alone in a nested transaction: its
    writes, aborted, must not be in the batch's record either."""
    import time as _time
    leader, follower = pair
    writer = leader.directory.writer
    meta = leader.directory.dbs["meta"]

    def slow(b):  # type: ignore[no-untyped-def]
        _time.sleep(0.3)  # the next three queue up meanwhile: one batch
        b.txn.put(b"slow", b"1", db=meta)

    def good(key: bytes):  # type: ignore[no-untyped-def]
        return lambda b: b.txn.put(key, b"1", db=meta)

    def bad(b):  # type: ignore[no-untyped-def]
        b.txn.put(b"bad", b"1", db=meta)
        raise ValueError("refused")

    first = writer.submit(slow)
    futures = [writer.submit(good(b"a")), writer.submit(bad), writer.submit(good(b"b"))]
    first.result()
    assert futures[0].result() and futures[2].result()
    with pytest.raises(ValueError):
        futures[1].result()
    log = leader.replication_logs()["directory"]
    written = [op for _, record in log.records(0, 1 << 20) for op in redo.decode(record)]
    keys = {key for _, name, key, _ in written if name == "meta"}
    assert {b"slow", b"a", b"b"} <= keys and b"bad" not in keys
    ship(leader, follower)
    assert content(follower) == content(leader)
