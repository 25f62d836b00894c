"""The on-disk format version is checked at open; a wrong shard count is refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import lmdb
import pytest

from maild.store import Store
from maild.store.types import FormatError, StoreError
from tests.store.conftest import SMALL


def test_newer_format_refuses_to_open(tmp_path: Path) -> None:
    Store(tmp_path, SMALL).close()
    env = lmdb.open(str(tmp_path / "shards" / "01" / "lmdb"), max_dbs=20)
    with env.begin(write=True) as txn:
        txn.put(b"format", b"99", db=env.open_db(b"meta", txn=txn))
    env.close()
    with pytest.raises(FormatError, match="newer than this maild"):
        Store(tmp_path, SMALL)


def test_changed_shard_count_is_refused(tmp_path: Path) -> None:
    Store(tmp_path, SMALL).close()
    with pytest.raises(StoreError, match="set store.shards = 2"):
        Store(tmp_path, dataclasses.replace(SMALL, shards=3))
