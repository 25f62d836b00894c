"""The packed per-mailbox index (maild/store/views.py): always what the message records say,
after every kind of change, by this Store or by another Store (another process) over the
same data directory."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

from maild.config import StoreConfig
from maild.store import Store, views
from maild.store.codec import jload, mbox_key
from maild.store.types import FlagMode
from tests.store.conftest import result

ALICE = "alice@example.test"
RAW = b"From: Carol <carol@example.org>\r\nSubject: hello\r\n\r\nbody\r\n"


def expected(store: Store, mid: int) -> list[tuple[int, int, frozenset[str], int]]:
    """(uid, modseq, flags, size) of every message, read from the records themselves."""
    return [(m.uid, m.modseq, m.flags, m.size) for m in store.messages(ALICE, mid)]


def columns(index: views.MailboxIndex) -> list[tuple[int, int, frozenset[str], int]]:
    return [(index.uids[i], index.modseqs[i], index.flags_at(i), index.sizes[i]) for i in range(len(index))]


def check(store: Store, mid: int) -> views.MailboxIndex:
    index = store.mailbox_index(ALICE, mid)
    assert index is not None
    assert columns(index) == expected(store, mid)
    box = store.mailbox_by_id(ALICE, mid)
    assert (index.uidvalidity, index.uidnext, index.highestmodseq) == \
        (box.uidvalidity, box.uidnext, box.highestmodseq)
    shard = store.shards[store.user(ALICE).shard]
    with shard.env.begin() as txn:
        record = jload(txn.get(mbox_key(store.user(ALICE).id, mid), db=shard.dbs["mbox"]))
        rebuilt = views.build(txn, shard.dbs, store.user(ALICE).id, mid, record)
    assert columns(rebuilt) == columns(index), "an incremental refresh must equal a rebuild"
    # Flag counts: made once, then carried forward by each refresh.
    flags = Counter(f for m in store.messages(ALICE, mid) for f in m.flags)
    for flag in ("\\Seen", "\\Deleted", "\\Flagged", "$Label1"):
        assert index.count_flag(flag) == flags[flag], flag
    return index


def test_index_follows_every_change_in_this_store(store: Store) -> None:
    mid = store.require_mailbox(ALICE, "INBOX").id
    trash = store.require_mailbox(ALICE, "Trash").id
    assert len(check(store, mid)) == 0
    for i in range(5):
        result(store.append(ALICE, mid, RAW + b"x" * i, {"\\Seen"} if i % 2 else ()))
    first = check(store, mid)
    assert store.mailbox_index(ALICE, mid) is first, "unchanged: the same snapshot"
    result(store.set_flags(ALICE, mid, [2, 4], {"$Label1", "\\Flagged"}, FlagMode.ADD))
    second = check(store, mid)
    assert second is not first and first.flags_at(1) == {"\\Seen"}, "an old snapshot never changes"
    assert second.count_flag("\\Flagged") == 2 and second.count_flag("$Label1") == 2
    # Flags alone changed: the message order is the older snapshot's very arrays, so a
    # sequence map taken from ``first`` is known to be current by identity.
    assert second.uids is first.uids and second.tags is first.tags
    kept = list(first.uids), list(first.sizes)
    result(store.expunge(ALICE, mid, [1, 3]))
    third = check(store, mid)
    assert list(third.uids) == [2, 4, 5] and third.uids is not second.uids
    assert (list(first.uids), list(first.sizes)) == kept  # the shared arrays were copied, not changed
    assert list(second.uids) == [1, 2, 3, 4, 5]
    result(store.move(ALICE, mid, [4], trash))
    assert list(check(store, mid).uids) == [2, 5]
    assert list(check(store, trash).uids) == [1]
    result(store.copy(ALICE, trash, [1], mid))
    assert list(check(store, mid).uids) == [2, 5, 6]
    result(store.set_flags(ALICE, mid, [6], {"\\Seen"}, FlagMode.REPLACE))
    assert check(store, mid).flags_at(2) == {"\\Seen"}


def test_index_sees_another_store_over_the_same_data_dir(store: Store, tmp_path: Path) -> None:
    """Another process (or worker) writes: the next read in this one shows it."""
    mid = store.require_mailbox(ALICE, "INBOX").id
    for _ in range(3):
        result(store.append(ALICE, mid, RAW))
    check(store, mid)
    other = ("from pathlib import Path; from maild.store import Store; from maild.store.types import FlagMode; "
             "from tests.store.conftest import SMALL, result; "
             f"s = Store(Path({str(tmp_path / 'data')!r}), SMALL); "
             f"result(s.append({ALICE!r}, {mid}, b'Subject: x\\r\\n\\r\\nbody\\r\\n')); "
             f"result(s.set_flags({ALICE!r}, {mid}, [1], {{'\\\\Deleted'}}, FlagMode.ADD)); "
             f"result(s.expunge({ALICE!r}, {mid}, [2])); s.close()")
    subprocess.run([sys.executable, "-c", other], check=True, cwd=Path(__file__).parents[2], timeout=60)
    index = check(store, mid)
    assert list(index.uids) == [1, 3, 4] and index.flags_at(0) == {"\\Deleted"}
    assert store.uids(ALICE, mid) == [1, 3, 4]


def test_index_rebuilt_after_many_changes_and_bounded(tmp_path: Path) -> None:
    config = StoreConfig(shards=1, map_size_mb=256, directory_map_size_mb=64, mailbox_index_mb=0)
    s = Store(tmp_path / "data", config)
    try:
        s.domain_add("example.test")
        s.user_add(ALICE, "hash")
        mid = s.require_mailbox(ALICE, "INBOX").id
        for _ in range(3):
            result(s.append(ALICE, mid, RAW))
        index = s.mailbox_index(ALICE, mid)
        assert index is not None and list(index.uids) == [1, 2, 3]
        assert s.shards[0].indexes.nbytes == 0, "mailbox_index_mb = 0 keeps nothing"
    finally:
        s.close()
    s = Store(tmp_path / "data", StoreConfig(shards=1, map_size_mb=256, directory_map_size_mb=64))
    try:
        mid = s.require_mailbox(ALICE, "INBOX").id
        check(s, mid)
        result(s.set_flags(ALICE, mid, [1, 2, 3], {"\\Seen"}, FlagMode.ADD))  # more than a quarter: rebuilt
        check(s, mid)
    finally:
        s.close()


def test_one_state_is_one_snapshot_object(store: Store) -> None:
    """Two readers that build the same mailbox state (two threads missing the cache at
    once) end up sharing the first snapshot kept: a session's sequence map from one is then
    the other's by identity (maild/imap/fastfetch.py), and memory holds one copy."""
    mid = store.require_mailbox(ALICE, "INBOX").id
    for i in range(3):
        result(store.append(ALICE, mid, RAW + b"x" * i))
    first = check(store, mid)
    shard = store.shards[store.user(ALICE).shard]
    user_id = store.user(ALICE).id
    with shard.env.begin() as txn:
        raw = txn.get(mbox_key(user_id, mid), db=shard.dbs["mbox"])
        twin = views.build(txn, shard.dbs, user_id, mid, jload(raw))
        assert twin is not first and list(twin.uids) == list(first.uids)
        kept = shard.indexes.put(mbox_key(user_id, mid), bytes(raw), twin)
    assert kept is first and store.mailbox_index(ALICE, mid) is first
    result(store.append(ALICE, mid, RAW))  # a new state is a new object, as before
    assert store.mailbox_index(ALICE, mid) is not first
