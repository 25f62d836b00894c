"""getmail6 (Debian getmail6) pulling mail over IMAPS: every message once, then nothing new."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.imap.conftest import Account, Transcript, append, message

pytestmark = pytest.mark.skipif(shutil.which("getmail") is None, reason="getmail (Debian getmail6) missing")


def test_getmail_pulls_new_mail(imap_server: Any, connect: Callable[..., Transcript], account: Account,
                                tmp_path: Path) -> None:
    s = connect()
    for subject in ("first", "second"):
        append(s, "INBOX", message(subject))
    inbox = tmp_path / "got"
    inbox.mkdir()
    (tmp_path / "getmailrc").write_text(f"""
[retriever]
type = SimpleIMAPSSLRetriever
server = 127.0.0.1
port = {imap_server.ports["imaps"]}
username = {account.address}
password = {account.password}
mailboxes = ("INBOX",)
ca_certs = {imap_server.cafile}
ssl_cert_hostname = localhost

[destination]
# getmail's Maildir/Mbox destinations refuse to run as root (tests run as root)
type = MDA_external
path = /bin/sh
arguments = ("-c", "cat > {inbox}/$(date +%s%N).eml")
allow_root_commands = true

[options]
read_all = false
delete = false
verbose = 0
""")

    def run() -> None:
        result = subprocess.run(["getmail", "--getmaildir", str(tmp_path), "--rcfile", "getmailrc"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr

    run()
    got = sorted(p.read_bytes() for p in inbox.iterdir())
    assert len(got) == 2 and all(b"Subject: " in m for m in got)
    append(s, "INBOX", message("third"))
    run()
    run()
    subjects = sorted(p.read_bytes().split(b"Subject: ")[1].split(b"\r\n")[0].split(b"\n")[0]
                      for p in inbox.iterdir())
    assert subjects == [b"first", b"second", b"third"]
