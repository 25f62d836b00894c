"""offlineimap3 (Debian offlineimap3) pulling a mailbox over IMAPS into a Maildir."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.imap.conftest import Account, Transcript, append, message

pytestmark = pytest.mark.skipif(shutil.which("offlineimap") is None, reason="offlineimap3 missing")


def test_offlineimap_sync(imap_server: Any, connect: Callable[..., Transcript], account: Account,
                          tmp_path: Path) -> None:
    s = connect()
    append(s, "INBOX", message("one"), "\\Seen")
    append(s, "INBOX", message("two"), "\\Flagged")
    local = tmp_path / "mail"
    config = tmp_path / "offlineimaprc"
    config.write_text(f"""
[general]
accounts = maild
metadata = {tmp_path}/meta

[Account maild]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = {local}

[Repository remote]
type = IMAP
remotehost = localhost
remoteport = {imap_server.ports["imaps"]}
remoteuser = {account.address}
remotepass = {account.password}
ssl = yes
sslcacertfile = {imap_server.cafile}
folderfilter = lambda name: name == "INBOX"
""")

    def run() -> None:
        result = subprocess.run(["offlineimap", "-c", str(config), "-o", "-u", "basic"],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and "ERROR" not in result.stdout + result.stderr, \
            result.stdout + result.stderr

    run()
    files = [p for p in (local / "INBOX").rglob("*") if p.is_file() and p.parent.name in ("cur", "new")]
    assert len(files) == 2
    flags = sorted(p.name.rsplit(",", 1)[-1] for p in files)
    assert flags == ["F", "S"]
    # a local flag change goes back to the server
    seen = next(p for p in files if p.name.endswith(",F"))
    seen.rename(seen.with_name(seen.name + "S"))
    run()
    s.ok("EXAMINE INBOX")
    assert sorted(s.ok("FETCH 1:* FLAGS")) == [b"* 1 FETCH (FLAGS (\\Seen))",
                                              b"* 2 FETCH (FLAGS (\\Flagged \\Seen))"]
