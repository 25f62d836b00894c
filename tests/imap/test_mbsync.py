"""mbsync (Debian isync) syncing a mailbox both ways, flags and deletions included; a second
run transfers nothing."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.imap.conftest import Account, Transcript, append, message

pytestmark = pytest.mark.skipif(shutil.which("mbsync") is None, reason="mbsync (Debian isync) missing")


def run_mbsync(config: Path) -> str:
    result = subprocess.run(["mbsync", "-V", "-c", str(config), "-a"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def snapshot(s: Transcript, local: Path) -> tuple[list[bytes], list[str]]:
    """Server state (counts, UIDNEXT, HIGHESTMODSEQ) and the local file names (which carry
    the flags): equal snapshots around a run mean the run transferred nothing."""
    server = s.ok("STATUS INBOX (MESSAGES UIDNEXT HIGHESTMODSEQ)")
    return server, sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file()
                          and p.parent.name in ("cur", "new"))


def test_mbsync_both_ways(imap_server: Any, connect: Callable[..., Transcript], account: Account,
                          tmp_path: Path) -> None:
    s = connect()
    append(s, "INBOX", message("one"))
    append(s, "INBOX", message("two"), "\\Flagged")
    append(s, "INBOX", message("three"))
    local = tmp_path / "mail"
    local.mkdir()
    config = tmp_path / "mbsyncrc"
    config.write_text(f"""
IMAPAccount maild
Host localhost
Port {imap_server.ports["imaps"]}
User {account.address}
Pass {account.password}
SSLType IMAPS
CertificateFile {imap_server.cafile}

IMAPStore remote
Account maild

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns INBOX Archive
Create Both
Expunge Both
SyncState *
Sync All
""")
    run_mbsync(config)
    files = sorted((local / "INBOX" / "cur").iterdir()) + sorted((local / "INBOX" / "new").iterdir())
    assert len(files) == 3
    assert sum(1 for f in files if f.name.endswith("F")) == 1  # \Flagged came along
    # local changes: mark one seen, delete one, add a new message
    by_subject = {re.search(rb"Subject: (\w+)", f.read_bytes()).group(1): f for f in files}  # type: ignore[union-attr]
    one = by_subject[b"one"]
    one.rename(local / "INBOX" / "cur" / (one.name.split(":2,")[0] + ":2,S"))
    by_subject[b"three"].unlink()
    (local / "INBOX" / "new" / "1700000000.local.host").write_bytes(message("from mbsync"))
    run_mbsync(config)
    s.ok("SELECT INBOX")
    lines = s.ok("FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    subjects = {re.search(rb"Subject: ([\w ]+)", line).group(1): line for line in lines}  # type: ignore[union-attr]
    assert set(subjects) == {b"one", b"two", b"from mbsync"}
    assert b"\\Seen" in subjects[b"one"] and b"\\Flagged" in subjects[b"two"]
    # server-side changes come back too
    s.ok("STORE 2 +FLAGS.SILENT (\\Answered)")
    run_mbsync(config)
    assert any(f.name.endswith("FR") for f in (local / "INBOX" / "cur").iterdir())
    # nothing left to do: the next run transfers nothing
    s.ok("UNSELECT")
    before = snapshot(s, local)
    run_mbsync(config)
    assert snapshot(s, local) == before
