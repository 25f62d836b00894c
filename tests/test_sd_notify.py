"""systemd's notify protocol (sd_notify(3)) seen through a NOTIFY_SOCKET this test creates:
READY=1 once every listener is up, WATCHDOG=1 from the reactor every half WATCHDOG_USEC,
none while the reactor is wedged, STOPPING=1 on SIGTERM; and the sysusers.d file makes the
`maild` user."""

from __future__ import annotations

import os
import shutil
import signal
import smtplib
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import MaildServer

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.1)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # 0.4 s: a ping every 0.2 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield sock
    sock.close()


def received(sock: socket.socket, seconds: float) -> list[tuple[float, str]]:
    found = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            data = sock.recv(4096)
        except TimeoutError:
            continue
        found.append((time.monotonic(), data.decode()))
    return found


def test_ready_watchdog_stopping(maild_factory: Callable[..., MaildServer],
                                 notify_socket: socket.socket) -> None:
    server = maild_factory()  # returns once the log says "maild ready"
    messages = received(notify_socket, 1.5)
    texts = [m for _, m in messages]
    assert "READY=1" in texts
    pings = [t for t, m in messages if m == "WATCHDOG=1"]
    assert len(pings) >= 5, texts  # every 0.2 s
    assert max(b - a for a, b in zip(pings, pings[1:], strict=False)) < 0.4
    # The daemon still serves while pinging.
    with smtplib.SMTP(server.host, server.ports["smtp"], timeout=10) as client:
        assert client.noop()[0] == 250
    # A wedged reactor (SIGSTOP stands in for a blocking call) sends no ping.
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP)
    try:
        received(notify_socket, 0.1)  # what was on its way
        assert [m for _, m in received(notify_socket, 0.8)] == []
    finally:
        server.process.send_signal(signal.SIGCONT)
    assert "WATCHDOG=1" in [m for _, m in received(notify_socket, 0.6)]
    assert server.stop() == 0
    assert "STOPPING=1" in [m for _, m in received(notify_socket, 0.5)]


def test_no_watchdog_for_another_pid(maild_factory: Callable[..., MaildServer], notify_socket: socket.socket,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_PID", "1")  # systemd meant another process
    maild_factory()
    texts = [m for _, m in received(notify_socket, 0.8)]
    assert "READY=1" in texts and "WATCHDOG=1" not in texts


def test_unit_watchdog_and_sysusers(tmp_path: Path) -> None:
    unit = (ROOT / "systemd" / "maild.service").read_text()
    assert "\nType=notify\n" in unit and "\nWatchdogSec=60s\n" in unit
    assert shutil.which("systemd-sysusers"), "systemd-sysusers missing: `make test` installs Debian's systemd"
    (tmp_path / "etc").mkdir()
    subprocess.run(["systemd-sysusers", f"--root={tmp_path}", str(ROOT / "systemd" / "maild.sysusers.conf")],
                   check=True, capture_output=True, timeout=30)
    passwd = (tmp_path / "etc" / "passwd").read_text()
    user = next(line.split(":") for line in passwd.splitlines() if line.startswith("maild:"))
    assert user[5:] == ["/var/lib/maild", "/usr/sbin/nologin"]
    assert int(user[2]) < 1000  # a system user
    assert os.path.exists(tmp_path / "etc" / "group")
