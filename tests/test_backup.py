"""`maild backup`, `maild backup verify` and `maild restore` (docs/operations.md): a backup
taken while SMTP clients deliver to a real daemon, restored into a fresh data directory, has
every message acknowledged before the backup began, byte for byte, and a clean fsck."""

from __future__ import annotations

import imaplib
import re
import shutil
import smtplib
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import USERS, MaildServer

RCPTS = ["alice@example.test", "bob@example.test"]
UNLIMITED = {"smtp": {"messages_per_minute_per_ip": 0}}


def message(n: int, size: int) -> bytes:
    body = b"".join(b"line %d of message %d %s\r\n" % (i, n, b"x" * 40) for i in range(size // 60 + 1))
    return (b"From: load@remote.example\r\nTo: alice@example.test\r\nSubject: backup load %d\r\n"
            b"Message-ID: <load-%d@remote.example>\r\n\r\n" % (n, n)) + body


class Load:
    """SMTP clients delivering until stopped; what was acknowledged, in order."""

    def __init__(self, server: MaildServer, clients: int = 3) -> None:
        self.server = server
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked: list[tuple[float, str]] = []  # (time of the 250, message id)
        self.errors: list[str] = []
        self.counter = 0
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        try:
            with smtplib.SMTP(self.server.host, self.server.ports["smtp"], timeout=30) as client:
                while not self.stop.is_set():
                    with self.lock:
                        self.counter += 1
                        n = self.counter
                    # Every third body is above store.inline_body_max: a blob file.
                    raw = message(n, 40_000 if n % 3 == 0 else 800)
                    client.sendmail("load@remote.example", [RCPTS[n % 2]], raw)
                    with self.lock:
                        self.acked.append((time.monotonic(), f"<load-{n}@remote.example>"))
        except Exception as exc:  # reported by the test
            self.errors.append(repr(exc))

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


def mailbox_by_message_id(server: MaildServer, user: str) -> dict[str, bytes]:
    context = ssl.create_default_context(cafile=str(server.cafile))
    client = imaplib.IMAP4_SSL(server.host, server.ports["imaps"], ssl_context=context, timeout=30)
    try:
        client.login(user, USERS[user])
        client.select("INBOX", readonly=True)
        _, data = client.fetch("1:*", "(BODY.PEEK[])")
        found = {}
        for item in data:
            if isinstance(item, tuple):
                raw = item[1]
                match = re.search(rb"^Message-ID: (<[^>]+>)", raw, re.M | re.I)
                assert match, raw[:300]
                found[match[1].decode()] = raw
        return found
    finally:
        client.logout()


def test_backup_under_load_restores_every_acknowledged_message(
        maild_factory: Callable[..., MaildServer], tmp_path: Path) -> None:
    server = maild_factory(**UNLIMITED)
    backups = tmp_path / "backups"
    with Load(server) as load:
        deadline = time.monotonic() + 30
        while len(load.acked) < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        # A first backup, then deliveries go on and a second, incremental one is taken.
        first = server.cli("backup", str(backups))
        assert first.returncode == 0, first.stderr
        time.sleep(0.5)
        started = time.monotonic()
        with load.lock:
            before = [mid for when, mid in load.acked if when < started]
        second = server.cli("backup", str(backups))
        assert second.returncode == 0, second.stderr
        time.sleep(0.3)  # deliveries go on after the backup, too
    assert not load.errors, load.errors
    assert len(before) >= 60
    assert "backup: copying shards/01" in second.stderr  # progress output
    # The second backup reused the blob files of the first: only new ones went to the pool.
    reused = int(re.search(r"(\d+) already in the pool", second.stdout)[1])
    assert reused > 0, second.stdout
    assert len(list((backups / "pool").rglob("*"))) > 0

    verify = server.cli("backup", "verify", str(backups))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "clean" in verify.stdout

    originals: dict[str, bytes] = {}
    for user in RCPTS:
        originals.update(mailbox_by_message_id(server, user))

    # Restore into a fresh data directory and serve it.
    fresh = maild_factory()
    fresh.stop()
    refused = fresh.cli("restore", str(backups))
    assert refused.returncode != 0 and "not empty" in refused.stderr
    assert "Traceback" not in refused.stderr
    shutil.rmtree(fresh.data_dir)
    restored = fresh.cli("restore", str(backups))
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "fsck:" in restored.stdout and "clean" in restored.stdout
    fresh.start()
    copies: dict[str, bytes] = {}
    for user in RCPTS:
        copies.update(mailbox_by_message_id(fresh, user))
    missing = [mid for mid in before if mid not in copies]
    assert not missing, f"{len(missing)} acknowledged messages missing: {missing[:5]}"
    for mid in before:
        assert copies[mid] == originals[mid], mid  # byte-identical, trace headers and all
    # Nothing is in the copy that the original does not hold.
    assert set(copies) <= set(originals)


def test_verify_finds_a_damaged_blob(maild_server: MaildServer, tmp_path: Path) -> None:
    with smtplib.SMTP(maild_server.host, maild_server.ports["smtp"], timeout=30) as client:
        client.sendmail("load@remote.example", ["alice@example.test"], message(1, 50_000))
    backups = tmp_path / "b"
    assert maild_server.cli("backup", str(backups)).returncode == 0
    snapshot = backups / (backups / "LATEST").read_text().strip()
    blob = next(p for p in snapshot.rglob("blobs/*/*") if p.is_file())
    # The snapshot's name is a hard link (to the pool, and on one file system to the live
    # file): replace it with a damaged copy rather than write through the link.
    data = bytearray(blob.read_bytes())
    data[-3] ^= 0x20
    blob.unlink()
    blob.write_bytes(bytes(data))
    verify = maild_server.cli("backup", "verify", str(backups))
    assert verify.returncode == 1
    assert f"blob {blob.name} is damaged" in verify.stdout


def test_not_a_backup(maild_server: MaildServer, tmp_path: Path) -> None:
    result = maild_server.cli("backup", "verify", str(tmp_path))
    assert result.returncode == 2 and "is not a maild backup" in result.stderr
