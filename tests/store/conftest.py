from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from maild.config import StoreConfig
from maild.store import Store
from maild.store.fsck import fsck

SMALL = StoreConfig(shards=2, map_size_mb=256, directory_map_size_mb=64)


def result(d):  # type: ignore[no-untyped-def]
    """The value of an already-fired Deferred (the store without a reactor), or raise."""
    out: list = []
    d.addBoth(out.append)
    assert out, "Deferred did not fire"
    value = out[0]
    if hasattr(value, "raiseException"):
        value.raiseException()
    return value


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A two-shard store with alice and bob; at teardown fsck must find it consistent, so
    every store test also checks that its operations left the indexes, counters and
    reference counts right."""
    s = Store(tmp_path / "data", SMALL)
    s.domain_add("example.test")
    s.user_add("alice@example.test", "hash")
    s.user_add("bob@example.test", "hash")
    try:
        yield s
        problems = fsck(s).problems
        assert problems == [], f"fsck at teardown: {problems}"
    finally:
        s.close()
