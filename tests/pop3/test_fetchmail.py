"""Debian fetchmail pulls mail over POP3 with STLS: with ``keep`` and UIDL tracking a
second run downloads nothing; without ``keep`` the mail is deleted from the server."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import MaildServer
from tests.pop3.conftest import Account, FileMda, deliver, message, stored

pytestmark = pytest.mark.skipif(shutil.which("fetchmail") is None, reason="fetchmail not installed (make deps-debian)")

# fetchmail's exit codes (fetchmail(1) EXIT CODES)
MAIL_RETRIEVED = 0
NO_MAIL = 1


def fetchmail(server: MaildServer, account: Account, home: Path, keep: bool) -> tuple[int, list[bytes]]:
    """Run fetchmail once; its MDA writes each message to a file in home/out.
    Returns (exit code, the messages delivered by this run)."""
    mda = FileMda(home)
    rc = home / "fetchmailrc"
    rc.write_text(
        "set no syslog\n"
        f"poll {server.host} with proto POP3 port {server.ports['pop3']} uidl\n"
        f'  user "{account.address}" there with password "{account.password}" is "root" here\n'
        f'  sslproto "tls1.2+" sslcertck sslcertfile "{server.cafile}" sslcommonname "localhost"\n'
        f'  {"keep" if keep else "nokeep"} mda "{mda.script}"\n')
    rc.chmod(0o600)
    env = {**os.environ, "HOME": str(home), "FETCHMAILHOME": str(home)}
    result = subprocess.run(["fetchmail", "--nodetach", "-f", str(rc), "--idfile", str(home / "ids")],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode in (MAIL_RETRIEVED, NO_MAIL), result.stdout + result.stderr
    return result.returncode, mda.new_messages()


def test_keep_with_uidl_downloads_each_message_once(server: MaildServer, account: Account, tmp_path: Path) -> None:
    for n in range(3):
        deliver(server, account.address, message(n, b".dot-stuffed line\r\nbody\r\n"))
    code, got = fetchmail(server, account, tmp_path, keep=True)
    assert code == MAIL_RETRIEVED
    assert sorted(m.split(b"Message-ID: ")[1].split(b"\n")[0].strip() for m in got) == [
        f"<m{n}@remote.example>".encode() for n in range(3)]
    assert all(b"\n.dot-stuffed line\n" in m.replace(b"\r\n", b"\n") for m in got)
    assert len(stored(server, account.address)) == 3  # kept on the server

    code, got = fetchmail(server, account, tmp_path, keep=True)
    assert (code, got) == (NO_MAIL, [])  # UIDLs are stable: nothing twice

    deliver(server, account.address, message(3))
    code, got = fetchmail(server, account, tmp_path, keep=True)
    assert code == MAIL_RETRIEVED
    assert [b"<m3@remote.example>" in m for m in got] == [True]


def test_without_keep_the_server_is_emptied(server: MaildServer, account: Account, tmp_path: Path) -> None:
    for n in range(2):
        deliver(server, account.address, message(n))
    code, got = fetchmail(server, account, tmp_path, keep=False)
    assert code == MAIL_RETRIEVED
    assert len(got) == 2
    assert stored(server, account.address) == {}
    code, got = fetchmail(server, account, tmp_path, keep=False)
    assert (code, got) == (NO_MAIL, [])
