"""The outbound queue in the directory environment: entries per destination domain, due
scans, per-recipient updates, removal releasing the blob."""

from __future__ import annotations

from maild.store import Store
from tests.store.conftest import result

RAW = b"Subject: q\r\n\r\nbody\r\n"


def test_enqueue_one_entry_per_domain(store: Store) -> None:
    ids = result(store.enqueue(RAW, "alice@example.test", ["a@one.test", "b@two.test", "c@one.test"]))
    entries = {store.queue_entry(i)["domain"]: store.queue_entry(i) for i in ids}  # type: ignore[index]
    assert [r["address"] for r in entries["one.test"]["recipients"]] == ["a@one.test", "c@one.test"]
    assert [r["state"] for r in entries["two.test"]["recipients"]] == ["pending"]
    assert store.queue_entry("0000000000000000") is None
    assert store.queue_message(entries["one.test"]) == RAW


def test_due_update_and_removal(store: Store) -> None:
    (entry_id,) = result(store.enqueue(RAW, "", ["a@one.test", "b@one.test"]))
    entry = store.queue_entry(entry_id)
    assert entry is not None
    now = entry["created"]
    assert [e["id"] for e in store.queue_due(now)] == [entry_id]
    entry["recipients"][0]["state"] = "delivered"
    entry["next_attempt"] = now + 300
    result(store.queue_update(entry))
    assert store.queue_due(now + 299) == []
    assert store.queue_entry(entry_id)["recipients"][0]["state"] == "delivered"  # type: ignore[index]
    entry["recipients"][1]["state"] = "bounced"
    result(store.queue_update(entry))
    assert store.queue_entry(entry_id) is None and store.queue_entries() == []
    assert [p for p in store.directory.blobs.root.rglob("*") if p.is_file()] == []  # released
