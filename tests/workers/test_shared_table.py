"""maild/util/shared.py, the table the workers of one daemon count in (unit tests; each
"worker" is a second mapping of the same file, as in two processes)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from maild.util.limits import TreeConnectionCounter, TreeMaildropLocks, TreeTokenBuckets
from maild.util.shared import SharedTable


def tables(tmp_path: Path, workers: int = 2) -> list[SharedTable]:
    path = tmp_path / "shared"
    first = SharedTable(path, workers, 0, create=True)
    return [first, *(SharedTable(path, workers, i) for i in range(1, workers))]


def test_counts_sum_over_workers_and_a_dead_workers_share_is_cleared(tmp_path: Path) -> None:
    a, b = tables(tmp_path)
    limit = [("imap connections 192.0.2.1", 3)]
    assert a.acquire(limit) and a.acquire(limit) and b.acquire(limit)
    assert not b.acquire(limit) and not a.acquire(limit)  # 3 in the tree
    assert a.total("imap connections 192.0.2.1") == 3
    supervisor = SharedTable(tmp_path / "shared", 2)
    supervisor.clear_worker(0)  # worker 0 died with its two connections
    assert b.total("imap connections 192.0.2.1") == 1
    assert a.acquire(limit)
    b.release(["imap connections 192.0.2.1"])
    b.release(["imap connections 192.0.2.1"])  # never below zero
    assert a.total("imap connections 192.0.2.1") == 1


def test_acquire_is_all_or_nothing(tmp_path: Path) -> None:
    a, b = tables(tmp_path)
    counter_a = TreeConnectionCounter(2, 1, a, "pop3")
    counter_b = TreeConnectionCounter(2, 1, b, "pop3")
    slot = counter_a.acquire("192.0.2.1")
    assert slot is not None
    assert counter_b.acquire("192.0.2.1") is None  # per IP: 1
    assert counter_b.acquire("192.0.2.2") is not None
    assert counter_b.acquire("192.0.2.3") is None  # in total: 2, and 192.0.2.3 got nothing
    assert a.total("pop3 connections 192.0.2.3") == 0
    slot.release()
    slot.release()  # once
    assert counter_b.acquire("192.0.2.3") is not None


def test_maildrop_lock_and_token_buckets(tmp_path: Path) -> None:
    a, b = tables(tmp_path)
    lock_a, lock_b = TreeMaildropLocks(a), TreeMaildropLocks(b)
    assert lock_a.acquire("alice@example.test")
    assert not lock_b.acquire("alice@example.test")
    assert lock_b.acquire("bob@example.test")
    lock_a.release("alice@example.test")
    assert lock_b.acquire("alice@example.test")
    now = [1000.0]
    bucket_a = TreeTokenBuckets(4, lambda: now[0], a, "smtp rate ip")  # 4 a minute
    bucket_b = TreeTokenBuckets(4, lambda: now[0], b, "smtp rate ip")
    assert [bucket_a.take("192.0.2.1"), bucket_b.take("192.0.2.1"), bucket_a.take("192.0.2.1"),
            bucket_b.take("192.0.2.1"), bucket_a.take("192.0.2.1")] == [True, True, True, True, False]
    assert bucket_b.take("192.0.2.2")  # another key, another bucket
    now[0] += 15.0  # one token back
    assert bucket_b.take("192.0.2.1") and not bucket_a.take("192.0.2.1")


def _hammer(path: str, worker: int, rounds: int) -> tuple[int, int]:
    """(times this process held the count, times it saw another hold it at the same time)."""
    table = SharedTable(path, 2, worker)
    won = clashes = 0
    for _ in range(rounds):
        if table.acquire([("race", 1)]):
            won += 1
            clashes += table.total("race") != 1
            table.release(["race"])
    return won, clashes


def test_atomic_across_processes(tmp_path: Path) -> None:
    """Two processes taking and giving back a limit-1 count never both hold it."""
    a, _ = tables(tmp_path)
    with multiprocessing.get_context("fork").Pool(2) as pool:
        results = pool.starmap(_hammer, [(str(a.path), 0, 2000), (str(a.path), 1, 2000)])
    assert all(won > 0 for won, _ in results) and sum(clashes for _, clashes in results) == 0
    assert a.total("race") == 0
