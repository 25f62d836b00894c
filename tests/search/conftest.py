"""A store with the search service over it, indexed on demand (no reactor, no thread)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from maild.config import SearchConfig, StoreConfig
from maild.search import SearchService
from maild.store import Store

SMALL = StoreConfig(shards=2, map_size_mb=256, directory_map_size_mb=64)
USER = "alice@example.test"


def catch_up(service: SearchService) -> None:
    """Index everything the change logs hold (what the indexer thread does)."""
    for shard, ix in enumerate(service.indexes):
        assert ix.acquire_writer(32 * 1024 * 1024)
        while service.step(shard):
            pass


@pytest.fixture
def indexed(tmp_path: Path) -> Iterator[tuple[Store, SearchService]]:
    store = Store(tmp_path / "data", SMALL)
    store.domain_add("example.test")
    store.user_add(USER, "hash")
    service = SearchService(store, SearchConfig(batch=50))
    try:
        yield store, service
    finally:
        service.stop()
        store.close()
