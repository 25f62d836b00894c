"""Append, read, flags, copy, move, expunge: the store's message API and its invariants."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from maild.store import Store
from maild.store.fsck import fsck
from maild.store.types import FlagMode, QuotaExceeded, Recipient
from tests.store.conftest import result

ALICE, BOB = "alice@example.test", "bob@example.test"
RAW = b"From: Carol <carol@example.org>\r\nTo: alice@example.test\r\nSubject: hello\r\n" \
      b"Message-ID: <1@example.org>\r\n\r\nbody\r\n"
LARGE = RAW + b"x" * 40_000 + b"\r\n"  # above inline_body_max: a blob file


def inbox(store: Store, user: str = ALICE) -> int:
    return store.require_mailbox(user, "INBOX").id


def test_default_mailboxes_with_special_use(store: Store) -> None:
    boxes = {m.name: m.special_use for m in store.mailboxes(ALICE)}
    assert set(boxes) == {"INBOX", "Sent", "Drafts", "Junk", "Trash", "Archive"}
    assert boxes["Sent"] == "\\Sent" and boxes["Junk"] == "\\Junk" and boxes["INBOX"] is None


def test_append_then_read_back_identical(store: Store) -> None:
    r = result(store.append(ALICE, inbox(store), RAW, {"\\Flagged"}))
    assert r.uid == 1 and r.modseq > 1
    assert store.read(ALICE, r.mailbox_id, 1) == RAW
    meta = store.message(ALICE, r.mailbox_id, 1)
    assert meta is not None and meta.size == len(RAW) and meta.flags == {"\\Flagged"}
    env = store.envelope(ALICE, r.mailbox_id, 1)
    assert env.subject == "hello" and env.from_ == "Carol <carol@example.org>" and env.message_id == "<1@example.org>"
    box = store.mailbox(ALICE, "inbox")
    assert box is not None and (box.messages, box.unseen, box.uidnext, box.size) == (1, 1, 2, len(RAW))
    assert store.unseen_uids(ALICE, box.id) == [1] and store.first_unseen_uid(ALICE, box.id) == 1


def test_uids_increase_and_never_reuse(store: Store) -> None:
    mid = inbox(store)
    for _ in range(3):
        result(store.append(ALICE, mid, RAW))
    result(store.expunge(ALICE, mid, [3]))
    assert result(store.append(ALICE, mid, RAW)).uid == 4
    assert store.uids(ALICE, mid) == [1, 2, 4]


def test_uid_list_follows_every_change(store: Store, tmp_path: Path) -> None:
    """uids() is remembered against the mailbox record: appends, expunges and moves show at
    once, and so do writes by another process."""
    mid, trash = inbox(store), store.require_mailbox(ALICE, "Trash").id
    for _ in range(3):
        result(store.append(ALICE, mid, RAW))
    assert store.uids(ALICE, mid) == [1, 2, 3]
    result(store.append(ALICE, mid, RAW))
    assert store.uids(ALICE, mid) == [1, 2, 3, 4]
    result(store.expunge(ALICE, mid, [2]))
    assert store.uids(ALICE, mid) == [1, 3, 4]
    result(store.set_flags(ALICE, mid, [1], {"\\Seen"}, FlagMode.ADD))
    assert store.uids(ALICE, mid) == [1, 3, 4]
    result(store.move(ALICE, mid, [1], trash))
    assert store.uids(ALICE, mid) == [3, 4] and store.uids(ALICE, trash) == [1]
    other = ("from pathlib import Path; from maild.store import Store; "
             "from tests.store.conftest import SMALL, result; "
             f"s = Store(Path({str(tmp_path / 'data')!r}), SMALL); "
             f"result(s.append({ALICE!r}, {mid}, b'Subject: x\\r\\n\\r\\nbody\\r\\n')); s.close()")
    subprocess.run([sys.executable, "-c", other], check=True, cwd=Path(__file__).parents[2], timeout=60)
    assert store.uids(ALICE, mid) == [3, 4, 5]


def test_deliver_stores_one_blob_for_many_recipients(store: Store) -> None:
    assert store.user(ALICE).shard != store.user(BOB).shard
    results = result(store.deliver(LARGE, [Recipient(ALICE, prefix=b"Delivered-To: alice@example.test\r\n"),
                                         Recipient(BOB, prefix=b"Delivered-To: bob@example.test\r\n")]))
    assert [r.user for r in results] == [ALICE, BOB]
    assert store.read(ALICE, results[0].mailbox_id, 1) == b"Delivered-To: alice@example.test\r\n" + LARGE
    assert store.read(BOB, results[1].mailbox_id, 1) == b"Delivered-To: bob@example.test\r\n" + LARGE
    files = [p for p in store.data_dir.rglob("*") if p.is_file() and p.parent.parent.name == "blobs"]
    assert len({p.stat().st_ino for p in files}) == 1, "the body must exist once on disk"


def test_flags_modseq_and_unseen_index(store: Store) -> None:
    mid = inbox(store)
    result(store.append(ALICE, mid, RAW))
    before = store.mailbox_by_id(ALICE, mid).highestmodseq
    changed, failed = result(store.set_flags(ALICE, mid, [1], {"\\Seen", "$label1"}, FlagMode.ADD))
    assert failed == [] and changed[0].flags == {"\\Seen", "$label1"} and changed[0].modseq > before
    assert store.unseen_uids(ALICE, mid) == [] and store.first_unseen_uid(ALICE, mid) is None
    assert [m.uid for m in store.changed_since(ALICE, mid, before)] == [1]
    # RFC 7162 UNCHANGEDSINCE: a message modified since is reported, not changed.
    changed, failed = result(store.set_flags(ALICE, mid, [1], {"\\Seen"}, FlagMode.REMOVE, unchanged_since=before))
    assert changed == [] and failed == [1]
    result(store.set_flags(ALICE, mid, [1], {"\\Seen"}, FlagMode.REMOVE))
    assert store.unseen_uids(ALICE, mid) == [1]
    assert store.mailbox_by_id(ALICE, mid).unseen == 1


def test_copy_move_expunge_and_blob_lifetime(store: Store) -> None:
    mid = inbox(store)
    trash = store.require_mailbox(ALICE, "Trash").id
    r = result(store.append(ALICE, mid, LARGE))
    copied = result(store.copy(ALICE, mid, [1], trash))
    assert copied.pairs == [(1, 1)]
    moved = result(store.move(ALICE, mid, [1], trash))
    assert moved.pairs == [(1, 2)] and store.uids(ALICE, mid) == [] and store.uids(ALICE, trash) == [1, 2]
    assert store.expunged_since(ALICE, mid, r.modseq) == [1]
    blob = store.message(ALICE, trash, 1).blob
    path = store.shards[store.user(ALICE).shard].blobs.path(blob)
    result(store.expunge(ALICE, trash, [1]))
    assert path.exists(), "one reference is left"
    result(store.expunge(ALICE, trash, [2]))
    assert not path.exists(), "the last reference removes the file"
    assert store.quota(ALICE).used_bytes == 0
    assert not fsck(store).problems


def test_quota_refuses_and_changes_nothing(store: Store) -> None:
    store.user_set_quota(ALICE, len(RAW) + 10)
    mid = inbox(store)
    result(store.append(ALICE, mid, RAW))
    with pytest.raises(QuotaExceeded):
        result(store.append(ALICE, mid, RAW))
    assert store.uids(ALICE, mid) == [1]
    assert not fsck(store).problems


def test_messages_of_a_uid_set(store: Store) -> None:
    """messages(uids) answers the uids that exist, once each and in uid order, whether it
    reads them in one cursor pass (dense sets) or looks each up (sparse ones), and never a
    message of the next mailbox or user in the key space."""
    mid, trash, bobs = inbox(store), store.require_mailbox(ALICE, "Trash").id, inbox(store, BOB)
    for _ in range(40):
        result(store.append(ALICE, mid, RAW))
    for box, user in ((trash, ALICE), (bobs, BOB)):
        for _ in range(45):
            result(store.append(user, box, RAW))
    result(store.expunge(ALICE, mid, [3, 17, 18, 40]))
    everything = list(store.messages(ALICE, mid))
    assert [m.uid for m in everything] == [u for u in range(1, 41) if u not in (3, 17, 18, 40)]
    for wanted in ([], range(1, 60), [40, 2, 2, 39, 1], [1, 39], range(5, 21), [4, 6, 8, 10, 30], [5, 6, 8, 9, 10],
                   [0xFFFFFFFF], [39, 0xFFFFFFFF]):
        expected = [m for m in everything if m.uid in set(wanted)]
        assert list(store.messages(ALICE, mid, wanted)) == expected, wanted


def test_users_are_isolated(store: Store) -> None:
    result(store.append(ALICE, inbox(store), RAW))
    assert store.uids(BOB, inbox(store, BOB)) == []
    assert all(m.messages == 0 for m in store.mailboxes(BOB))


def test_user_remove_frees_its_blobs(store: Store) -> None:
    result(store.append(ALICE, inbox(store), RAW))
    store.user_remove(ALICE)
    assert store.user(ALICE) is None
    report = fsck(store)
    assert not report.problems and report.messages == 0
