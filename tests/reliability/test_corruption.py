"""Damaged files are detected at start-up and by fsck, named precisely, and repaired where
the remaining data allows (in the spirit of Cyrus reconstruct and mox verifydata)."""

from __future__ import annotations

import os
import smtplib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MaildServer


def _deliver(server: MaildServer, subject: str, size: int) -> None:
    body = b"".join(os.urandom(30).hex().encode() + b"\r\n" for _ in range(size // 62 + 1))
    raw = f"From: a@remote.example\r\nTo: alice@example.test\r\nSubject: {subject}\r\n\r\n".encode() + body
    with smtplib.SMTP(server.host, server.ports["smtp"], timeout=30) as smtp:
        smtp.sendmail("a@remote.example", ["alice@example.test"], raw)


def _serve_once(server: MaildServer) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "maild.cli", "-c", str(server.config_path), "serve"],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("damage", ["truncate", "flip-meta"])
def test_damaged_lmdb_refuses_to_start_and_names_the_shard(maild_factory, damage: str) -> None:  # type: ignore[no-untyped-def]
    server = maild_factory()
    _deliver(server, "one", 100)
    server.stop()
    shard = server.store()
    index = shard.user("alice@example.test").shard
    shard.close()
    data = server.data_dir / "shards" / f"{index:02d}" / "lmdb" / "data.mdb"
    with open(data, "r+b") as fh:
        if damage == "truncate":
            fh.truncate(1000)
        else:
            for offset in (16, 4096 + 16):  # both meta pages: magic and version
                fh.seek(offset)
                fh.write(b"\xde\xad\xbe\xef")
    proc = _serve_once(server)
    assert proc.returncode != 0
    assert f"shard {index}" in proc.stderr and "cannot be opened" in proc.stderr
    assert "Traceback" not in proc.stderr
    check = server.cli("fsck")
    assert check.returncode != 0 and f"shard {index}" in check.stderr
    # The fixture's own fsck would fail too: restore a clean shard for its teardown.
    for name in ("data.mdb", "lock.mdb"):
        (data.parent / name).unlink()
    _remove_user_from_directory(server, index)


def _remove_user_from_directory(server: MaildServer, index: int) -> None:
    store = server.store()
    try:
        for user in store.users():
            if user.shard == index:
                store.directory.user_remove(user.address)
    finally:
        store.close()


def test_flipped_blob_is_named_and_repair_keeps_the_rest(maild_factory) -> None:  # type: ignore[no-untyped-def]
    server = maild_factory()
    for n in range(3):
        _deliver(server, f"big {n}", 60_000)  # above inline_body_max: blob files
    server.stop()
    blobs = sorted(p for p in server.data_dir.glob("shards/*/blobs/*/*"))
    assert len(blobs) == 3
    victim: Path = blobs[1]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    check = server.cli("fsck")
    assert check.returncode == 1
    assert f"blob {victim.name} is damaged (checksum mismatch)" in check.stdout
    assert "lost its body" in check.stdout and "alice@example.test" in check.stdout
    repair = server.cli("fsck", "--repair")
    assert "dropped 1 message(s) whose body is lost" in repair.stdout
    assert server.cli("fsck").returncode == 0
    server.start()
    store_check = server.cli("status", "--json")
    assert '"messages": 2' in store_check.stdout
