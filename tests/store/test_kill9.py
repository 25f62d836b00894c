"""Durability: SIGKILL during concurrent appends loses no acknowledged message."""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from maild.store import Store
from maild.store.fsck import fsck
from tests.store.conftest import SMALL, result

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kill9") / "data"
    store = Store(path, SMALL)
    store.domain_add("example.test")
    store.user_add("alice@example.test", "hash")
    store.close()
    return path


@pytest.mark.parametrize("run", range(10))
def test_sigkill_loses_no_acknowledged_append(data_dir: Path, run: int) -> None:
    rng = random.Random(run)
    proc = subprocess.Popen([sys.executable, "-m", "tests.store.appender", str(data_dir), "50"],
                            stdout=subprocess.PIPE, cwd=ROOT, text=True)
    assert proc.stdout is not None
    acked: dict[int, str] = {}
    kill_after = rng.randint(20, 400)
    for line in proc.stdout:
        _, uid, digest = line.split()
        acked[int(uid)] = digest
        if len(acked) >= kill_after:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    for line in proc.stdout:  # acknowledgements printed before the kill landed
        _, uid, digest = line.split()
        acked[int(uid)] = digest

    store = Store(data_dir, SMALL)
    try:
        mid = store.require_mailbox("alice@example.test", "INBOX").id
        present = set(store.uids("alice@example.test", mid))
        missing = sorted(set(acked) - present)
        assert not missing, f"acknowledged but lost: {missing[:10]}"
        for uid, digest in acked.items():
            assert hashlib.sha256(store.read("alice@example.test", mid, uid)).hexdigest() == digest
        # UIDs never go backwards after a crash.
        new = result(store.append("alice@example.test", mid, b"Subject: after\r\n\r\nx\r\n"))
        assert new.uid > max(present)
        report = fsck(store)
        assert report.problems == [], report.problems
    finally:
        store.close()
