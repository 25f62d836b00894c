"""maild/api/changes.py: the feed the events read, over a fake store with the change-log
API (read_changes, log_head, subscribe) and over the real one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from maild.api import changes
from maild.api.changes import ChangeFeed, Trimmed
from maild.store.types import Change, ChangeKind, StoreError


def change(seq: int, user: str = "a@x.test") -> Change:
    return Change(shard=0, seq=seq, kind=ChangeKind.APPEND, user=user, mailbox_id=1, uids=(seq,))


class FakeStore:
    shards = [object()]

    def __init__(self) -> None:
        self.subscribers: list[Callable[[Change], None]] = []

    def subscribe(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        self.subscribers.append(callback)
        return lambda: self.subscribers.remove(callback)

    def commit(self, c: Change) -> None:
        for callback in self.subscribers:
            callback(c)


class DurableStore(FakeStore):
    def __init__(self, records: list[Change], oldest: int) -> None:
        super().__init__()
        self.records = records
        self.oldest = oldest

    def log_head(self, shard: int) -> int:
        return self.records[-1].seq if self.records else 0

    def read_changes(self, shard: int, after: int, limit: int = 1000) -> list[Change]:
        if after + 1 < self.oldest:
            raise StoreError("trimmed")  # ChangesTrimmed is a StoreError
        return [c for c in self.records if c.seq > after][:limit]


def test_live_changes_reach_listeners() -> None:
    store = DurableStore([], oldest=1)
    feed = ChangeFeed(store)
    heard: list[int] = []
    stop = feed.listen(lambda c: heard.append(c.seq))
    store.commit(change(1))
    stop()
    store.commit(change(2))
    assert heard == [1]


def test_durable_log_pages_and_maps_trimmed(monkeypatch: pytest.MonkeyPatch) -> None:
    store = DurableStore([change(s) for s in range(10, 2600)], oldest=10)
    feed = ChangeFeed(store)
    assert feed.head(0) == 2599
    got = feed.read(0, 9)
    assert [c.seq for c in got] == list(range(10, 2600))  # across several read_changes pages
    with pytest.raises(Trimmed):
        feed.read(0, 5)
    with pytest.raises(Trimmed):
        feed.read(0, 3000)
    monkeypatch.setattr(changes, "RETAIN", 1500)
    with pytest.raises(Trimmed):  # too far behind: re-reading is cheaper
        feed.read(0, 9)


def test_store_api_shape(tmp_path: Any) -> None:
    """The real store answers what the feed asks."""
    from maild import config as configmod
    from maild.store import Store
    from tests.conftest import to_toml
    path = tmp_path / "maild.toml"
    path.write_text(to_toml({"hostname": "h", "data_dir": str(tmp_path / "d"),
                             "store": {"shards": 1, "map_size_mb": 64, "directory_map_size_mb": 64}}))
    store = Store(tmp_path / "d", configmod.load(path).store)
    try:
        feed = ChangeFeed(store)
        assert feed.head(0) == 0 and feed.read(0, 0) == []
        feed.close()
    finally:
        store.close()
