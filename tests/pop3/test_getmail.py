"""Debian getmail6 pulls mail over POP3 on 995: ``read_all = false`` with
``delete = false`` fetches only new mail (UIDL); ``delete = true`` empties the server."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import MaildServer
from tests.pop3.conftest import Account, FileMda, deliver, message, stored

pytestmark = pytest.mark.skipif(shutil.which("getmail") is None, reason="getmail6 not installed (make deps-debian)")


def getmail(server: MaildServer, account: Account, home: Path, delete: bool) -> list[bytes]:
    """Run getmail once; its MDA writes each message to a file in home/out. Returns the
    messages this run delivered. (getmail refuses Maildir delivery as root, and tests run
    as root in CI, so the destination is an external MDA.)"""
    mda = FileMda(home)
    rc = home / "getmailrc"
    rc.write_text(
        "[retriever]\n"
        "type = SimplePOP3SSLRetriever\n"
        f"server = {server.host}\n"
        f"port = {server.ports['pop3s']}\n"
        f"username = {account.address}\n"
        f"password = {account.password}\n"
        f"ca_certs = {server.cafile}\n"
        "ssl_cert_hostname = localhost\n"
        "[destination]\n"
        "type = MDA_external\n"
        f"path = {mda.script}\n"
        "allow_root_commands = true\n"
        "[options]\n"
        "verbose = 0\n"
        "read_all = false\n"
        f"delete = {'true' if delete else 'false'}\n")
    result = subprocess.run(["getmail", "--getmaildir", str(home), "--rcfile", str(rc)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return mda.new_messages()


def test_new_mail_only_with_messages_left_on_the_server(server: MaildServer, account: Account,
                                                        tmp_path: Path) -> None:
    for n in range(3):
        deliver(server, account.address, message(n, b"..\r\n.x\r\nbody\r\n"))
    got = getmail(server, account, tmp_path, delete=False)
    assert len(got) == 3
    assert all(m.replace(b"\r\n", b"\n").endswith(b"\n..\n.x\nbody\n") for m in got)
    assert getmail(server, account, tmp_path, delete=False) == []
    deliver(server, account.address, message(7))
    (new,) = getmail(server, account, tmp_path, delete=False)
    assert b"Message-ID: <m7@remote.example>" in new
    assert len(stored(server, account.address)) == 4


def test_delete_empties_the_server(server: MaildServer, account: Account, tmp_path: Path) -> None:
    for n in range(2):
        deliver(server, account.address, message(n))
    assert len(getmail(server, account, tmp_path, delete=True)) == 2
    assert stored(server, account.address) == {}
