"""Mailbox create, rename (children, INBOX), delete, subscribe."""

from __future__ import annotations

import pytest

from maild.store import Store
from maild.store.types import MailboxExists, MailboxNotFound, SpecialUse
from tests.store.conftest import result

ALICE = "alice@example.test"
BOB = "bob@example.test"
RAW = b"Subject: x\r\n\r\nx\r\n"


def test_create_exists_and_special_use(store: Store) -> None:
    box = result(store.create_mailbox(ALICE, "Work", SpecialUse.FLAGGED))
    assert box.name == "Work" and box.special_use == SpecialUse.FLAGGED and box.uidnext == 1
    with pytest.raises(MailboxExists):
        result(store.create_mailbox(ALICE, "Work"))


def test_uidvalidity_changes_when_recreated(store: Store) -> None:
    first = result(store.create_mailbox(ALICE, "Tmp"))
    result(store.delete_mailbox(ALICE, "Tmp"))
    second = result(store.create_mailbox(ALICE, "Tmp"))
    assert second.uidvalidity > first.uidvalidity


def test_rename_moves_children(store: Store) -> None:
    result(store.create_mailbox(ALICE, "A"))
    result(store.create_mailbox(ALICE, "A/B"))
    result(store.create_mailbox(ALICE, "AB"))
    result(store.rename_mailbox(ALICE, "A", "Z"))
    names = {m.name for m in store.mailboxes(ALICE)}
    assert {"Z", "Z/B", "AB"} <= names and "A" not in names and "A/B" not in names


def test_rename_inbox_moves_messages_and_keeps_inbox(store: Store) -> None:
    inbox = store.require_mailbox(ALICE, "INBOX")
    result(store.append(ALICE, inbox.id, RAW))
    result(store.rename_mailbox(ALICE, "INBOX", "Old"))  # RFC 3501 §6.3.5
    assert store.require_mailbox(ALICE, "INBOX").messages == 0
    assert store.require_mailbox(ALICE, "Old").messages == 1


def test_delete_removes_messages(store: Store) -> None:
    box = result(store.create_mailbox(ALICE, "Gone"))
    result(store.append(ALICE, box.id, RAW))
    result(store.delete_mailbox(ALICE, "Gone"))
    assert store.mailbox(ALICE, "Gone") is None
    assert store.quota(ALICE).messages == 0
    with pytest.raises(MailboxNotFound):
        result(store.delete_mailbox(ALICE, "Gone"))


def test_subscribe(store: Store) -> None:
    assert "Junk" in store.subscriptions(ALICE)  # the default folders start subscribed
    result(store.set_subscribed(ALICE, "Junk", False))
    assert "Junk" not in store.subscriptions(ALICE)
    result(store.set_subscribed(ALICE, "Not/There", True))  # a name, not a mailbox
    assert "Not/There" in store.subscriptions(ALICE)
    assert store.mailbox(ALICE, "Not/There") is None


def test_create_makes_parents_atomically(store: Store) -> None:
    result(store.create_mailbox(ALICE, "A/B/C"))
    assert {"A", "A/B", "A/B/C"} <= {m.name for m in store.mailboxes(ALICE)}
    assert "A/B/C" not in store.subscriptions(ALICE)
    with pytest.raises(MailboxExists):
        result(store.create_mailbox(ALICE, "A/B/C"))


def test_claim_recent(store: Store) -> None:
    inbox = store.require_mailbox(ALICE, "INBOX")
    assert result(store.claim_recent(ALICE, inbox.id, 5)) == 0
    assert result(store.claim_recent(ALICE, inbox.id, 3)) == 5  # never goes back
    assert result(store.claim_recent(ALICE, inbox.id, 8)) == 5
    assert store.require_mailbox(ALICE, "INBOX").recent_uid == 8


def test_open_mailbox_reads_the_mailbox_and_its_index_as_of_now(store: Store) -> None:
    """SELECT's read (Store.open_mailbox): kept while nothing was committed to the shard,
    read anew after any commit (here: an append, a rename)."""
    inbox = store.require_mailbox(ALICE, "INBOX")
    first = store.open_mailbox(ALICE, "inbox")  # INBOX is case-insensitive (RFC 3501 §5.1)
    assert first is not None and first[0] == inbox and len(first[1].uids) == 0
    again = store.open_mailbox(ALICE, "INBOX")
    assert again is not None and again[0] is first[0] and again[1] is first[1]  # nothing committed since
    result(store.append(ALICE, inbox.id, RAW))
    after = store.open_mailbox(ALICE, "INBOX")
    assert after is not None and list(after[1].uids) == [1] and after[0].messages == 1
    result(store.create_mailbox(ALICE, "Box"))
    assert store.open_mailbox(ALICE, "Box") is not None
    result(store.rename_mailbox(ALICE, "Box", "Other"))
    assert store.open_mailbox(ALICE, "Box") is None
    assert store.open_mailbox(ALICE, "Other") is not None
    assert store.open_mailbox(BOB, "Other") is None
