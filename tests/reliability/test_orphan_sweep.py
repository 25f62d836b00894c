"""Orphan blob files (a crash between linking a body file and committing the record that
refers to it: 49 after 158 SIGKILLs in the fault campaign) are removed by the daemon at
start-up, not only by `maild fsck --repair`; young ones, which an append in flight may be
about to reference, are kept (maild/store/sweep.py)."""

from __future__ import annotations

import hashlib
import os
import smtplib
import time
from pathlib import Path

from tests.conftest import MaildServer


def _plant(directory: Path, data: bytes) -> Path:
    sha = hashlib.sha256(data).hexdigest()
    path = directory / sha[:2] / sha
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return path


def _wait_for(server: MaildServer, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while text not in server.log():
        assert time.monotonic() < deadline, server.log()[-3000:]
        time.sleep(0.05)


def test_orphans_are_swept_at_start_up(maild_factory) -> None:  # type: ignore[no-untyped-def]
    server = maild_factory(store={"shards": 1, "orphan_sweep_age": 2.0})
    body = b"".join(os.urandom(30).hex().encode() + b"\r\n" for _ in range(1000))
    with smtplib.SMTP(server.host, server.ports["smtp"], timeout=30) as smtp:
        smtp.sendmail("s@remote.example", ["alice@example.test"], b"Subject: big\r\n\r\n" + body)
    server.stop()
    blobs = server.data_dir / "shards" / "00" / "blobs"
    referenced = sorted(blobs.glob("*/*"))
    assert len(referenced) == 1
    old = [_plant(blobs, os.urandom(50_000)) for _ in range(3)]
    old.append(_plant(server.data_dir / "directory" / "blobs", os.urandom(50_000)))
    time.sleep(2.2)
    young = _plant(blobs, os.urandom(50_000))
    server.start()
    _wait_for(server, "shard 00: removed 3 orphan blob file(s)")
    _wait_for(server, "directory: removed 1 orphan blob file(s)")
    assert [p for p in old if p.exists()] == []
    assert young.exists()  # changed 0 s ago: an append may be about to reference it
    assert all(p.exists() for p in referenced)
    server.stop()
    young.unlink()
    check = server.fsck()
    assert check.returncode == 0 and "orphan" not in check.stdout, check.stdout
    server.start()
