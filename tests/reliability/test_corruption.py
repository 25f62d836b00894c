"""Damaged files are detected at start-up and by fsck, named precisely, and repaired where
the remaining data allows (in the spirit of Cyrus reconstruct and mox verifydata)."""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MaildServer
from tests.reliability.conftest import imap_session, pop3_session


def _deliver(server: MaildServer, subject: str, size: int) -> None:
    body = b"".join(os.urandom(30).hex().encode() + b"\r\n" for _ in range(size // 62 + 1))
    raw = f"From: a@remote.example\r\nTo: alice@example.test\r\nSubject: {subject}\r\n\r\n".encode() + body
    with smtplib.SMTP(server.host, server.ports["smtp"], timeout=30) as smtp:
        smtp.sendmail("a@remote.example", ["alice@example.test"], raw)


def _serve_once(server: MaildServer) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "maild.cli", "-c", str(server.config_path), "serve"],
                          capture_output=True, text=True, timeout=60)


def _shard_file(server: MaildServer) -> tuple[int, Path]:
    store = server.store()
    try:
        index = store.user("alice@example.test").shard
    finally:
        store.close()
    return index, server.data_dir / "shards" / f"{index:02d}" / "lmdb" / "data.mdb"


def _refused(proc: subprocess.CompletedProcess[str], index: int, words: str) -> None:
    """Exit status 2 with one line naming the shard: not a signal, not a traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert f"shard {index}" in proc.stderr and words in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("damage", ["truncate", "flip-meta"])
def test_damaged_lmdb_refuses_to_start_and_names_the_shard(maild_factory, damage: str) -> None:  # type: ignore[no-untyped-def]
    server = maild_factory()
    _deliver(server, "one", 100)
    server.stop()
    index, data = _shard_file(server)
    saved = data.read_bytes()
    with open(data, "r+b") as fh:
        if damage == "truncate":
            fh.truncate(1000)
        else:
            for offset in (16, 4096 + 16):  # both meta pages: magic and version
                fh.seek(offset)
                fh.write(b"\xde\xad\xbe\xef")
    words = "is truncated" if damage == "truncate" else "cannot be opened"
    _refused(_serve_once(server), index, words)
    _refused(server.cli("fsck"), index, words)
    data.write_bytes(saved)  # restored from the "backup": the fixture's fsck is clean


@pytest.mark.parametrize("size", ["half", "8KiB"])
def test_truncated_data_file_is_refused_before_mapping(maild_factory, size: str) -> None:  # type: ignore[no-untyped-def]
    """Cut short (a copy interrupted, a full disk), data.mdb used to be mapped past its end:
    serve, fsck, status and user list died by SIGBUS without a word. Each now refuses,
    naming the shard and what to do."""
    server = maild_factory()
    for n in range(40):
        _deliver(server, f"m{n}", 20_000)  # inline bodies: the shard's file grows
    server.stop()
    index, data = _shard_file(server)
    saved = data.read_bytes()
    assert len(saved) > 64 * 1024
    with open(data, "r+b") as fh:
        fh.truncate(len(saved) // 2 if size == "half" else 8192)
    _refused(_serve_once(server), index, "is truncated")
    for command in (["fsck"], ["fsck", "--repair"], ["status"], ["user", "list"]):
        proc = server.cli(*command)
        _refused(proc, index, "is truncated")
        assert "restore it from a backup" in proc.stderr
    assert data.stat().st_size < len(saved)  # nothing "repaired" it
    data.write_bytes(saved)
    server.start()
    imap_count = server.store()
    try:
        assert imap_count.require_mailbox("alice@example.test", "INBOX").messages == 40
    finally:
        imap_count.close()


def test_empty_shard_of_existing_users_is_never_created_anew(maild_factory) -> None:  # type: ignore[no-untyped-def]
    """A zero-length data.mdb was silently replaced by an empty shard: its users lost every
    mailbox. Start-up (and every command) now refuses, and the file stays as it was."""
    server = maild_factory()
    _deliver(server, "kept", 60_000)
    server.stop()
    index, data = _shard_file(server)
    saved = data.read_bytes()
    data.write_bytes(b"")
    proc = _serve_once(server)
    _refused(proc, index, "is empty")
    assert "alice@example.test" in proc.stderr and "will not create it anew" in proc.stderr
    _refused(server.cli("fsck", "--repair"), index, "is empty")
    assert data.stat().st_size == 0
    data.unlink()
    _refused(server.cli("user", "list"), index, "is missing")
    assert not data.exists()
    data.write_bytes(saved)


def test_repair_removes_no_blob_while_an_environment_is_not_the_users(maild_factory) -> None:  # type: ignore[no-untyped-def]
    """A shard whose environment is not the one its users' mail is in (recreated empty by an
    older maild, swapped by hand) opens, but its users have no partition: --repair must not
    delete the blob files, which may be the only copies of their bodies."""
    server = maild_factory()
    _deliver(server, "only copy", 60_000)
    server.stop()
    index, data = _shard_file(server)
    lmdb_dir = data.parent
    aside = lmdb_dir.with_name("lmdb.aside")
    lmdb_dir.rename(aside)
    from maild.store.shard import DB_NAMES, open_env
    env, _ = open_env(lmdb_dir, 64 * 1024 * 1024, DB_NAMES, "test")  # an empty environment
    env.close()
    blobs = sorted((lmdb_dir.parent / "blobs").glob("*/*"))
    assert len(blobs) == 1
    repair = server.cli("fsck", "--repair")
    assert repair.returncode != 0
    assert "has no partition" in repair.stdout and "no blob file removed" in repair.stdout, repair.stdout
    assert [p for p in blobs if p.exists()] == blobs
    shutil.rmtree(lmdb_dir)
    aside.rename(lmdb_dir)
    assert server.fsck().returncode == 0


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
    # One problem with its consequences, not one line per counter it upsets.
    assert check.stdout.count("\n") == 2, check.stdout
    assert f"blob {victim.name} is damaged (checksum mismatch)" in check.stdout
    assert "1 message(s) lost their body" in check.stdout and "alice@example.test" in check.stdout
    repair = server.cli("fsck", "--repair")
    assert "dropped 1 message(s) whose body is lost" in repair.stdout
    assert server.cli("fsck").returncode == 0
    server.start()
    store_check = server.cli("status", "--json")
    assert '"messages": 2' in store_check.stdout


def test_flipped_blob_byte_is_served_as_an_error_for_that_message(maild_factory) -> None:  # type: ignore[no-untyped-def]
    """Bodies are verified against their sha256 when read whole: a flipped byte is a clear
    error for that one message on IMAP (NO [SERVERBUG], whether FETCH streams the body from
    its file or reads it whole) and POP3 (-ERR), a log line naming the blob, and a line in
    `maild status`; the other messages are served as before."""
    server = maild_factory(store={"shards": 1})
    _deliver(server, "big", 60_000)  # read whole by FETCH
    _deliver(server, "huge", 300_000)  # streamed by FETCH (above 256 KB)
    _deliver(server, "fine", 60_000)
    server.stop()
    blobs = {p.name: p for p in server.data_dir.glob("shards/*/blobs/*/*")}
    store = server.store()
    try:
        inbox = store.require_mailbox("alice@example.test", "INBOX")
        damaged = [m.blob for m in store.messages("alice@example.test", inbox.id)][:2]
    finally:
        store.close()
    saved = {}
    for sha in damaged:
        saved[sha] = data = blobs[sha].read_bytes()
        flipped = bytearray(data)
        flipped[len(data) // 3] ^= 0x20
        blobs[sha].write_bytes(bytes(flipped))
    server.start()

    imap = imap_session(server)
    try:
        imap.ok("SELECT INBOX")
        for seq in (1, 2):
            _, result = imap.command(f"FETCH {seq} BODY.PEEK[]")
            assert result.startswith(b"NO [SERVERBUG]"), (seq, result)
            assert b"damaged" in result and b"Error" not in result
        lines = imap.ok("FETCH 3 BODY.PEEK[]")
        assert b"Subject: fine" in b"".join(lines)
        imap.ok("LOGOUT")
    finally:
        imap.close()
    pop = pop3_session(server)
    try:
        reply = pop.cmd("RETR 2")
        assert reply.startswith("-ERR [SYS/PERM]") and "damaged" in reply, reply
        _, lines = pop.multi("RETR 3")
        assert b"Subject: fine" in lines
        pop.cmd("QUIT", ok=True)
    finally:
        pop.close()
    log = server.log()
    for sha in damaged:
        assert f"blob {sha} is damaged" in log
    assert "Traceback" not in log
    status = server.cli("status")
    for sha in damaged:
        assert f"DAMAGED BLOB: shard 00: {sha}" in status.stdout, status.stdout
    server.stop()
    for sha in damaged:
        blobs[sha].write_bytes(saved[sha])  # restored from the "backup"
