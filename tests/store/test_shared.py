"""State shared by the processes over one data directory (maild/store/shared.py): maildrop
locks (RFC 1939 §8), counters and gauges for limits, leases; each checked across real
processes, including one killed with SIGKILL."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from maild.store import Store
from maild.store.shared import SharedState
from tests.store.conftest import SMALL

ALICE = "alice@example.test"
ROOT = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def state(tmp_path: Path) -> Iterator[tuple[SharedState, Clock]]:
    clock = Clock()
    s = SharedState(tmp_path / "run", clock)
    yield s, clock
    s.close()


def holder(data: Path, body: str) -> subprocess.Popen[str]:
    """A process with a Store over ``data`` that runs ``body``, prints "ready" and waits
    for its stdin to close (or to be killed)."""
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from maild.store import Store
        from tests.store.conftest import SMALL
        store = Store(Path({str(data)!r}), SMALL)
    """) + textwrap.dedent(body) + textwrap.dedent("""
        print("ready", flush=True)
        sys.stdin.read()
        store.close()
    """)
    child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    return child


def finish(child: subprocess.Popen[str], kill: bool = False) -> None:
    if kill:
        child.send_signal(signal.SIGKILL)
    else:
        assert child.stdin is not None
        child.stdin.close()
    child.wait(30)


def test_maildrop_lock_is_exclusive_in_a_process_and_across_processes(store: Store, tmp_path: Path) -> None:
    lock = store.maildrop_lock(ALICE)
    assert lock is not None and lock.held
    assert store.maildrop_lock("Alice@Example.TEST") is None  # one maildrop, however written
    assert store.maildrop_lock("bob@example.test") is not None  # another user's is free
    lock.release()
    lock.release()  # once, however often called
    assert not lock.held
    child = holder(tmp_path / "data", f"lock = store.maildrop_lock({ALICE!r}); assert lock is not None")
    try:
        assert store.maildrop_lock(ALICE) is None  # held by the other process
    finally:
        finish(child, kill=True)  # dies holding it: the kernel releases it
    again = store.maildrop_lock(ALICE)
    assert again is not None
    again.release()


def test_window_counters(state: tuple[SharedState, Clock]) -> None:
    s, clock = state
    counters = s.counters
    assert [counters.hit("auth-fail", "192.0.2.1", 60) for _ in range(3)] == [1, 2, 3]
    assert counters.peek("auth-fail", "192.0.2.1", 60) == 3
    assert counters.peek("auth-fail", "192.0.2.2", 60) == 0
    assert counters.peek("smtp-rate", "192.0.2.1", 60) == 0  # namespaces apart
    clock.now += 59
    assert counters.hit("auth-fail", "192.0.2.1", 60, n=2) == 5
    clock.now += 1  # the window ended
    assert counters.peek("auth-fail", "192.0.2.1", 60) == 0
    assert counters.hit("auth-fail", "192.0.2.1", 60) == 1
    counters.reset("auth-fail", "192.0.2.1")
    assert counters.peek("auth-fail", "192.0.2.1", 60) == 0
    counters.hit("auth-fail", "192.0.2.3", 60)
    assert s.prune() == 0
    clock.now += 3600
    assert s.prune() == 1  # ended windows go


def test_token_bucket(state: tuple[SharedState, Clock]) -> None:
    s, clock = state
    take = s.counters.take
    assert [take("smtp-msg", "192.0.2.1", 3) for _ in range(4)] == [True, True, True, False]
    assert take("smtp-msg", "192.0.2.9", 3)  # another key has its own bucket
    clock.now += 20  # one token back (3 a minute)
    assert take("smtp-msg", "192.0.2.1", 3) and not take("smtp-msg", "192.0.2.1", 3)
    assert all(take("smtp-msg", "x", 0) for _ in range(100))  # 0: unlimited


def test_counters_and_gauges_across_processes(store: Store, tmp_path: Path) -> None:
    child = holder(tmp_path / "data", """
        for _ in range(5):
            store.counters.hit("auth-fail", "192.0.2.1", 600)
        assert store.counters.add("imap-conn", "192.0.2.1", 3) == 3
    """)
    try:
        assert store.counters.hit("auth-fail", "192.0.2.1", 600) == 6
        assert store.counters.add("imap-conn", "192.0.2.1", 2) == 5
        assert store.counters.total("imap-conn", "192.0.2.1") == 5
    finally:
        finish(child, kill=True)
    # the dead process's connections are not counted; its hits were real and stay
    assert store.counters.total("imap-conn", "192.0.2.1") == 2
    assert store.counters.add("imap-conn", "192.0.2.1", -2) == 0
    assert store.counters.peek("auth-fail", "192.0.2.1", 600) == 6


def test_leases(state: tuple[SharedState, Clock]) -> None:
    s, clock = state
    assert s.lease("queue:1", "worker-a", 30)
    assert s.lease("queue:1", "worker-a", 30)  # renewed
    assert not s.lease("queue:1", "worker-b", 30)
    assert s.lease_holder("queue:1") == "worker-a"
    assert s.lease("queue:2", "worker-b", 30)  # another name
    assert not s.release("queue:1", "worker-b")  # not its lease
    clock.now += 31  # expired: anyone may take it
    assert s.lease_holder("queue:1") is None
    assert s.lease("queue:1", "worker-b", 30)
    assert s.release("queue:1", "worker-b")
    assert s.lease_holder("queue:1") is None
    assert s.lease("queue:1", "worker-a", 30)


def test_a_lease_of_a_dead_process_is_free_at_once(store: Store, tmp_path: Path) -> None:
    child = holder(tmp_path / "data", """assert store.lease("queue:abc", "child", 3600)""")
    try:
        assert not store.lease("queue:abc", "parent", 60)
        assert store.lease_holder("queue:abc") == "child"
    finally:
        finish(child, kill=True)
    assert store.lease("queue:abc", "parent", 60)


def test_state_is_kept_while_a_process_has_it_open_and_emptied_after(tmp_path: Path) -> None:
    data = tmp_path / "data"
    Store(data, SMALL).close()
    child = holder(data, """store.counters.hit("n", "k", 3600)""")
    try:
        second = Store(data, SMALL)
        assert second.counters.hit("n", "k", 3600) == 2  # shared with the live process
        second.close()
    finally:
        finish(child)
    # nobody has it open now: the next process starts it empty (what a crash left is gone)
    third = Store(data, SMALL)
    try:
        assert third.counters.peek("n", "k", 3600) == 0
    finally:
        third.close()
