"""A full file system under the store (not a full LMDB map: test_store_full.py) answers the
insufficient-storage codes on every path, logs one clear line, shows in `maild status`, and
service resumes by itself when space returns.

The data directory is a small tmpfs the test mounts (root can; elsewhere the test skips).
LMDB fails such a commit with lmdb.DiskError (ENOSPC) or, for a partial write, EIO; before, small (inline) messages got
`451 4.3.0 Internal error` with a traceback each, and IMAP APPEND `NO [SERVERBUG]`.
"""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MaildServer
from tests.reliability.conftest import imap_session, pop3_session

FS_MB = 24


@pytest.fixture
def small_fs_server(tmp_path: Path, tls_files: tuple[Path, Path, Path],
                    password_hashes: dict[str, str]) -> Iterator[Callable[..., MaildServer]]:
    """A maild whose data_dir is a FS_MB tmpfs; config and log stay on the normal disk."""
    root = tmp_path / "maild"
    data = root / "data"
    data.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_MB}m", "tmpfs", str(data)],
                             capture_output=True, text=True)
    # The suite runs as root (make test, CI): a refused mount is a failure, not a skip.
    assert mounted.returncode == 0, f"cannot mount a small tmpfs (run as root): {mounted.stderr.strip()}"
    servers: list[MaildServer] = []

    def make(**overrides: dict[str, Any]) -> MaildServer:
        server = MaildServer(root, tls_files, password_hashes, overrides)
        servers.append(server)
        return server
    try:
        yield make
        for server in servers:
            assert server.stop() in (0, -signal.SIGKILL), server.log()[-3000:]
            check = server.fsck()
            assert check.returncode == 0, check.stdout + check.stderr
    finally:
        subprocess.run(["umount", "-l", str(data)], capture_output=True)


def _message(i: int, size: int = 6000) -> bytes:
    lines = b"".join(os.urandom(36).hex().encode() + b"\r\n" for _ in range(size // 74))
    return f"From: s@remote.example\r\nTo: alice@example.test\r\nSubject: fill {i}\r\n\r\n".encode() + lines


def _send(server: MaildServer, raw: bytes, rcpts: list[str] | None = None) -> tuple[int, bytes]:
    with smtplib.SMTP(server.host, server.ports["smtp"], timeout=30) as smtp:
        smtp.ehlo("client.remote.example")
        try:
            smtp.sendmail("s@remote.example", rcpts or ["alice@example.test"], raw)
        except smtplib.SMTPResponseException as exc:
            return exc.smtp_code, exc.smtp_error
        return 250, b""


def _fill(path: Path, leave: int) -> None:
    """Write a file taking all but ``leave`` octets of the file system's free space."""
    free = os.statvfs(path).f_bavail * os.statvfs(path).f_frsize
    with open(path / "filler", "wb") as fh:
        fh.write(b"\0" * max(free - leave, 0))


def test_full_file_system_answers_452_and_no_overquota_then_resumes(small_fs_server) -> None:  # type: ignore[no-untyped-def]
    server = small_fs_server(store={"shards": 2, "map_size_mb": 1024, "directory_map_size_mb": 256})
    assert _send(server, _message(0))[0] == 250
    _fill(server.data_dir, leave=256 * 1024)
    accepted = 1
    refused = 0
    for i in range(1, 400):
        code, text = _send(server, _message(i))  # 6 KB: kept inline in LMDB
        if code == 250:
            accepted += 1
            continue
        assert (code, text[:5]) == (452, b"4.3.1"), (code, text)
        refused += 1
        if refused == 5:
            break
    else:
        raise AssertionError("the file system never filled up")
    # Before IMAP: SELECT's \Recent claim is a small write that may still fit, and any
    # write that succeeds clears the condition.
    status = server.cli("status")
    assert status.returncode == 0, status.stderr
    # The cause is named: LMDB reports ENOSPC ("No space left on device") or, for a write
    # that could only partly be done, EIO; either way maild calls it "file system full".
    assert "STORE FULL: shard" in status.stdout and "file system full" in status.stdout, server.log()[-4000:]

    imap = imap_session(server)
    try:
        raw = _message(1000, 3000)
        # RFC 5530 §3: LIMIT (an implementation limit: the server's storage), not SERVERBUG.
        _, result = imap.command(f"APPEND INBOX {{{len(raw)}+}}\r\n".encode() + raw)
        assert result.startswith(b"NO [LIMIT]") or result.startswith(b"NO [OVERQUOTA]"), result
        imap.ok("SELECT INBOX")  # reading goes on
    finally:
        imap.close()

    pop = pop3_session(server)  # POP3 reads on; its \Seen update may or may not fit
    try:
        _, lines = pop.multi("RETR 1")
        assert b"Subject: fill 0" in lines
        assert pop.cmd("QUIT").startswith("+OK")
    finally:
        pop.close()

    log = server.log()
    assert "Traceback" not in log
    assert log.count("no space left for writes") == 1, log[-3000:]  # one line, not one per message

    (server.data_dir / "filler").unlink()
    assert _send(server, _message(2000))[0] == 250  # no restart: it resumed by itself
    accepted += 1
    status = server.cli("status")
    assert "STORE FULL" not in status.stdout, status.stdout
    server.stop()
    store = server.store()
    try:
        assert store.require_mailbox("alice@example.test", "INBOX").messages == accepted
    finally:
        store.close()
