"""fsck finds damage precisely; --repair rebuilds what can be rebuilt."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from maild.store import Store, codec
from maild.store.fsck import fsck
from tests.store.conftest import SMALL, result

ALICE = "alice@example.test"


def _fill(store: Store, size: int = 0) -> int:
    mid = store.require_mailbox(ALICE, "INBOX").id
    for i in range(5):
        result(store.append(ALICE, mid, f"Subject: {i}\r\n\r\nbody {i}\r\n".encode() + b"x" * size))
    return mid


def test_clean_store_is_clean(store: Store) -> None:
    _fill(store)
    _fill(store, size=50_000)
    report = fsck(store)
    assert report.problems == [] and report.messages == 10 and report.blobs == 5


def test_damaged_inline_body_is_found(store: Store) -> None:
    mid = _fill(store)
    meta = store.message(ALICE, mid, 2)
    shard = store.shards[store.user(ALICE).shard]
    shard.writer.run(lambda b: b.txn.put(bytes.fromhex(meta.blob), b"garbage", db=b.dbs["blobdata"]))
    report = fsck(store)
    [problem] = report.problems
    assert meta.blob in problem and "checksum mismatch" in problem and "uid 2" in problem
    fsck(store, repair=True)
    assert fsck(store).problems == [] and store.uids(ALICE, mid) == [1, 3, 4, 5]


def test_flipped_blob_byte_is_found_and_repair_drops_the_message(store: Store) -> None:
    mid = _fill(store, size=50_000)
    meta = store.message(ALICE, mid, 3)
    path = store.shards[store.user(ALICE).shard].blobs.path(meta.blob)
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    report = fsck(store)
    # One problem, with its consequences: not also the refcount, counters and usage.
    [problem] = report.problems
    assert "checksum mismatch" in problem and meta.blob in problem, problem
    assert "1 message(s) lost their body (uid 3 in 'INBOX' of alice@example.test)" in problem, problem
    fsck(store, repair=True)
    assert fsck(store).problems == []
    assert store.uids(ALICE, mid) == [1, 2, 4, 5]


def test_damaged_index_is_rebuilt(store: Store) -> None:
    mid = _fill(store)
    user = store.user(ALICE)
    shard = store.shards[user.shard]

    def damage(b) -> None:  # type: ignore[no-untyped-def]
        b.txn.delete(codec.msg_key(user.id, mid, 2), db=b.dbs["unseen"])
        b.txn.put(b"\x00" * 32, codec.u64(7), db=b.dbs["blobref"])
    shard.writer.run(damage)
    problems = fsck(store).problems
    assert any("unseen index" in p for p in problems)
    assert any("refcount for unreferenced blob" in p for p in problems)
    fsck(store, repair=True)
    assert fsck(store).problems == []
    assert store.unseen_uids(ALICE, mid) == [1, 2, 3, 4, 5]


def test_truncated_lmdb_file_is_reported_in_one_line(tmp_path: Path) -> None:
    Store(tmp_path / "data", SMALL).close()
    data_mdb = tmp_path / "data" / "shards" / "00" / "lmdb" / "data.mdb"
    with open(data_mdb, "r+b") as fh:
        fh.truncate(100)
    config = tmp_path / "m.toml"
    config.write_text(f'hostname = "x.test"\ndata_dir = "{tmp_path / "data"}"\n[store]\nshards = 2\n'
                      '[smtp]\nlisten = []\n[submission]\nlisten = []\ntls_listen = []\n[imap]\nlisten = []\n'
                      'tls_listen = []\n[pop3]\nlisten = []\ntls_listen = []\n')
    proc = subprocess.run([sys.executable, "-m", "maild.cli", "-c", str(config), "fsck"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "shard 0" in proc.stderr and "cannot be opened" in proc.stderr
    assert "Traceback" not in proc.stderr
