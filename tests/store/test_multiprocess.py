"""Several processes over one data directory (issue 21): each with its own Store, its own
writer threads and group commit, LMDB's write lock between them. Change-log seqs and UIDs
come from the database inside the write transaction, the caches check what is committed,
and a map another process grew is adopted (maild/store/mapgate.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from maild.store import Store
from maild.store.fsck import fsck
from maild.store.types import ChangeKind, QuotaExceeded, UserNotFound
from tests.store.conftest import SMALL, result

ALICE = "alice@example.test"
ROOT = Path(__file__).resolve().parents[2]


def run_child(body: str, data: Path, config: str = "SMALL", wait: bool = True) -> subprocess.Popen[str]:
    """A Python process with ``store`` open over ``data`` (``config``: an expression)."""
    script = textwrap.dedent("""
        import json, sys, threading
        from dataclasses import replace
        from pathlib import Path
        from maild.store import Store
        from tests.store.conftest import SMALL, result
        store = Store(Path({data!r}), {config})
    """).format(data=str(data), config=config) + textwrap.dedent(body) + "\nstore.close()\n"
    child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        child.stdout = None
        child.out = out  # type: ignore[attr-defined]
    return child


APPENDER = """
    inbox = store.require_mailbox("alice@example.test", "INBOX")
    uids, lock = [], threading.Lock()
    def work(n):
        for i in range(25):
            r = result(store.append("alice@example.test", inbox.id, b"Subject: %d\\r\\n\\r\\nx\\r\\n" % n))
            with lock:
                uids.append(r.uid)
    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads: t.start()
    for t in threads: t.join()
    print(json.dumps(uids))
"""


def test_two_processes_append_to_one_mailbox_at_once(store: Store, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shard = store.user(ALICE).shard  # type: ignore[union-attr]
    head = store.log_head(shard)
    children = [run_child(APPENDER, data, wait=False) for _ in range(2)]
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        outputs.append(json.loads(out))
    every = [uid for uids in outputs for uid in uids]
    assert sorted(every) == list(range(1, 201))  # unique: no UID given twice
    for uids in outputs:  # each process's own appends got ascending UIDs
        assert sorted(uids) == sorted(set(uids))
    inbox = store.require_mailbox(ALICE, "INBOX")
    assert store.uids(ALICE, inbox.id) == list(range(1, 201))
    assert inbox.uidnext == 201 and inbox.messages == 200
    records = store.read_changes(shard, head, limit=10_000)
    assert [r.seq for r in records] == list(range(head + 1, head + 201))  # no gap, no repeat
    logged = [u for r in records if r.kind is ChangeKind.APPEND for u in r.uids]
    assert logged == list(range(1, 201))  # log order is commit order
    modseqs = [r.modseq for r in records]
    assert modseqs == sorted(modseqs)
    # fsck at teardown (the store fixture)


def test_a_map_grown_by_another_process_is_adopted(tmp_path: Path) -> None:
    data = tmp_path / "data"
    small = replace(SMALL, map_size_mb=4)
    store = Store(data, small)
    try:
        store.domain_add("example.test")
        store.user_add(ALICE, "hash")
        inbox = store.require_mailbox(ALICE, "INBOX")
        shard = store.shards[store.user(ALICE).shard]  # type: ignore[union-attr]
        mapped = shard.env.info()["map_size"]
        # 300 bodies of 30 KB, inline: about 9 MB, past this process's 4 MiB map
        run_child("""
            inbox = store.require_mailbox("alice@example.test", "INBOX")
            for i in range(300):  # different bodies: each is stored
                body = b"Subject: big %d\\r\\n\\r\\n" % i + b"y" * 30_000
                result(store.append("alice@example.test", inbox.id, body))
        """, data, config="replace(SMALL, map_size_mb=64)")
        assert len(store.uids(ALICE, inbox.id)) == 300  # reads work: the map was adopted
        assert shard.env.info()["map_size"] > mapped
        result(store.append(ALICE, inbox.id, b"Subject: after\r\n\r\nz\r\n"))  # and writes
        assert store.require_mailbox(ALICE, "INBOX").messages == 301
        assert fsck(store).problems == []
    finally:
        store.close()


def test_a_user_changed_by_another_process_is_seen_at_once(store: Store, tmp_path: Path) -> None:
    inbox = store.require_mailbox(ALICE, "INBOX")
    result(store.append(ALICE, inbox.id, b"Subject: 1\r\n\r\nx\r\n"))  # the user is cached now
    run_child("""store.user_set_quota("alice@example.test", 10)""", tmp_path / "data")
    with pytest.raises(QuotaExceeded):
        result(store.append(ALICE, inbox.id, b"Subject: 2\r\n\r\nx\r\n"))
    run_child("""store.user_remove("bob@example.test")""", tmp_path / "data")
    with pytest.raises(UserNotFound):
        store.mailboxes("bob@example.test")


def test_body_files_are_linked_holding_the_write_lock(store: Store, tmp_path: Path) -> None:
    """So that no other process removes a shared body file between an append finding it and
    the append's reference committing (writer.py, sweep.py)."""
    inbox = store.require_mailbox(ALICE, "INBOX")
    shard = store.shards[store.user(ALICE).shard]  # type: ignore[union-attr]
    body = b"Subject: large\r\n\r\n" + b"z" * 100_000  # above inline_body_max: a file
    holder = run_child(f"""
        shard = store.shards[store.user({ALICE!r}).shard]
        txn = shard.env.begin(write=True)  # LMDB's write lock, across processes
        print("locked", flush=True)
        sys.stdin.read()
        txn.abort()
    """, tmp_path / "data", wait=False)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    done = threading.Event()
    threading.Thread(target=lambda: (result(store.append(ALICE, inbox.id, body)), done.set()),
                     daemon=True).start()
    time.sleep(0.5)
    assert not done.is_set() and list(shard.blobs.root.rglob("*")) == [
        p for p in shard.blobs.root.rglob("*") if p.is_dir()]  # nothing linked yet
    holder.kill()
    holder.wait(30)
    assert done.wait(30)
    assert len([p for p in shard.blobs.root.rglob("*") if p.is_file()]) == 1


def test_another_process_commit_is_seen_by_open_mailbox(store: Store, tmp_path: Path) -> None:
    """SELECT's kept read is keyed by the snapshot's transaction id, which a commit of any
    process moves."""
    inbox = store.require_mailbox(ALICE, "INBOX")
    before = store.open_mailbox(ALICE, "INBOX")
    assert before is not None and len(before[1].uids) == 0
    run_child("""
        inbox = store.require_mailbox("alice@example.test", "INBOX")
        result(store.append("alice@example.test", inbox.id, b"Subject: x\\r\\n\\r\\nx\\r\\n"))
    """, tmp_path / "data")
    after = store.open_mailbox(ALICE, "INBOX")
    assert after is not None and list(after[1].uids) == [1] and after[0].messages == 1
    assert after[0].id == inbox.id
