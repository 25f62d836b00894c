"""Logs (maild/util/journal.py): under systemd (JOURNAL_STREAM names our stderr) every record
goes to journald's native socket with structured fields — here a socket the test binds —
the SMTP transaction's line carries its queue id, and no password or message body is ever
logged, to the journal or to stderr."""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from maild.util.journal import JournalHandler, parse
from tests.conftest import MaildServer

PASSWORD = "Hunter2-never-logged"
BODY_MARK = "BODY-MARKER-7f3a9c"


def collect(sock: socket.socket, until: Callable[[list[dict[str, str]]], bool], seconds: float = 20
            ) -> list[dict[str, str]]:
    records: list[dict[str, str]] = []
    deadline = time.monotonic() + seconds
    while not until(records) and time.monotonic() < deadline:
        try:
            records.append(parse(sock.recv(1 << 20)))
        except TimeoutError:
            continue
    return records


def test_journal_fields_and_nothing_secret(maild_factory: Callable[..., MaildServer], tmp_path: Path) -> None:
    server = maild_factory(submission={"allow_plaintext_auth_on_loopback": True})
    server.stop()
    journal_path = tmp_path / "journal.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(journal_path))
    sock.settimeout(0.2)
    stderr_path = tmp_path / "stderr"
    with open(stderr_path, "wb") as stderr:
        st = os.fstat(stderr.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
               "MAILD_JOURNAL_SOCKET": str(journal_path)}
        process = subprocess.Popen([sys.executable, "-m", "maild.cli", "-c", str(server.config_path), "serve"],
                                   stdout=stderr, stderr=stderr, env=env, cwd=server.root)
    try:
        records = collect(sock, lambda rs: any("maild ready" in r["MESSAGE"] for r in rs))
        assert any("maild ready" in r["MESSAGE"] for r in records), stderr_path.read_text()
        ready = next(r for r in records if "maild ready" in r["MESSAGE"])
        assert ready["PRIORITY"] == "6" and ready["SYSLOG_IDENTIFIER"] == "maild"
        assert ready["CODE_FILE"].endswith("daemon.py") and ready["LOGGER"] == "maild"

        with smtplib.SMTP(server.host, server.ports["submission"], timeout=30) as client:
            client.ehlo()
            try:
                client.login("alice@example.test", PASSWORD)
            except smtplib.SMTPAuthenticationError:
                pass
        with smtplib.SMTP(server.host, server.ports["smtp"], timeout=30) as client:
            reply = client.sendmail("someone@remote.example", ["alice@example.test"],
                                    f"Subject: hello\r\nFrom: someone@remote.example\r\n\r\n{BODY_MARK}\r\n")
        assert reply == {}
        records += collect(sock, lambda rs: any(r.get("MAILD_QUEUE_ID") for r in rs))
        accepted = next(r for r in records if r.get("MAILD_QUEUE_ID"))
        assert accepted["MESSAGE"].startswith(f"maild.smtp.server: accepted {accepted['MAILD_QUEUE_ID']}")
        assert "authentication failed" in " ".join(r["MESSAGE"] for r in records)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    records += collect(sock, lambda rs: False, 0.5)
    sock.close()
    everything = repr(records) + stderr_path.read_text(errors="replace")
    assert PASSWORD not in everything
    assert BODY_MARK not in everything
    assert "Traceback" not in stderr_path.read_text(errors="replace")
    server.start()  # for the fixture's fsck and stop


def test_multiline_fields(tmp_path: Path) -> None:
    import logging

    path = tmp_path / "j.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    handler = JournalHandler(str(path))
    record = logging.LogRecord("maild.test", logging.ERROR, __file__, 1, "two\nlines %s", ("é",), None)
    record.maild_queue_id = "Q1"
    handler.emit(record)
    fields = parse(sock.recv(65536))
    assert fields["MESSAGE"] == "two\nlines é" and fields["PRIORITY"] == "3"
    assert fields["MAILD_QUEUE_ID"] == "Q1"
    handler.close()
    sock.close()
