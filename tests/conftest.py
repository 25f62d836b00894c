"""Shared fixtures: TLS files, a real `maild serve` on free loopback ports, and the real
peers the suite drives (DNS server, clamd, rspamd) registered below."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("tests.fixtures")  # imported below, before pytest_plugins

from maild import config as configmod  # noqa: E402
from maild.auth import hash_password  # noqa: E402
from maild.store import Store  # noqa: E402
from tests.fixtures.dns import shared_zone  # noqa: E402
from tests.fixtures.ports import free_port  # noqa: E402

pytest_plugins = ["tests.fixtures.dns", "tests.fixtures.clamd", "tests.fixtures.rspamd"]

USERS = {"alice@example.test": "alice-secret", "bob@example.test": "bob-secret"}
PROTOCOL_PORTS = {  # fixture port name -> (config section, key)
    "smtp": ("smtp", "listen"),
    "submission": ("submission", "listen"),
    "submissions": ("submission", "tls_listen"),
    "imap": ("imap", "listen"),
    "imaps": ("imap", "tls_listen"),
    "pop3": ("pop3", "listen"),
    "pop3s": ("pop3", "tls_listen"),
}
ROOT = Path(__file__).resolve().parent.parent


def to_toml(data: dict[str, Any]) -> str:
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (str, Path)):
            return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise TypeError(v)

    lines = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for section, table in data.items():
        if isinstance(table, dict):
            lines.append(f"\n[{section}]")
            lines.extend(f"{k} = {value(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(cert, key, cafile): a leaf certificate for localhost and 127.0.0.1 signed by a
    development CA made beside it (ca.pem), as `make run` does."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run([sys.executable, "-m", "maild.cli", "dev-cert", "--hostname", "localhost",
                    "--cert", str(cert), "--key", str(key)], check=True, capture_output=True)
    return cert, key, d / "ca.pem"


@pytest.fixture(scope="session")
def password_hashes() -> dict[str, str]:
    return {address: hash_password(password) for address, password in USERS.items()}


class MaildServer:
    """A real `maild serve` subprocess on free 127.0.0.1 ports."""

    host = "127.0.0.1"

    def __init__(self, root: Path, tls: tuple[Path, Path, Path], hashes: dict[str, str],
                 overrides: dict[str, dict[str, Any]]) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.config_path = root / "maild.toml"
        self.log_path = root / "maild.log"
        self.cafile = tls[2]
        self.ports: dict[str, int] = {}
        data: dict[str, Any] = {"hostname": "mx.example.test", "data_dir": str(self.data_dir),
                                "tls": {"cert_file": str(tls[0]), "key_file": str(tls[1])},
                                "store": {"shards": 2, "map_size_mb": 1024, "directory_map_size_mb": 256},
                                "auth": {"failure_delay": 0.2, "max_failure_delay": 1.0},
                                # One process unless a test asks for workers (tests/workers/):
                                # the suite stays fast on two cores.
                                "server": {"workers": 1},
                                # Every query goes to the suite's own DNS server on loopback
                                # (unknown names: NXDOMAIN), never to the host's resolver.
                                "dns": {"nameservers": [shared_zone().nameserver], "timeout": 2.0}}
        for section in ("smtp", "submission", "imap", "pop3", "api"):
            data[section] = {"listen": [], "tls_listen": []}
        for name, (section, key) in PROTOCOL_PORTS.items():
            self.ports[name] = free_port()
            data[section][key] = [f"127.0.0.1:{self.ports[name]}"]
        for section, table in overrides.items():
            if isinstance(table, dict):
                data.setdefault(section, {}).update(table)
            else:
                data[section] = table
        self.config_path.write_text(to_toml(data))
        self.config = configmod.load(self.config_path)
        store = Store(self.data_dir, self.config.store)
        try:
            store.domain_add("example.test")
            for address, password_hash in hashes.items():
                store.user_add(address, password_hash)
        finally:
            store.close()
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def cli(self, *args: str, input: str | None = None, check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "maild.cli", "-c", str(self.config_path), *args],
                              input=input, capture_output=True, text=True, check=check, timeout=120)

    def start(self) -> None:
        """Start `maild serve` and wait for its "ready" line (all listeners bound)."""
        for _attempt in range(3):
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "maild.cli", "-c", str(self.config_path), "serve"],
                    stdout=log, stderr=subprocess.STDOUT, cwd=self.root)
            deadline = time.monotonic() + 30
            while True:
                with open(self.log_path, "rb") as fh:
                    fh.seek(offset)
                    started = fh.read()
                if b"maild ready" in started:
                    return
                if self.process.poll() is not None:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"maild did not become ready:\n{self.log()}")
                time.sleep(0.02)
            if b"Address already in use" not in started:
                raise RuntimeError(f"maild exited with {self.process.returncode}:\n{self.log()}")
            self._new_ports()  # another process took a port between choosing and binding
        raise RuntimeError(f"maild could not bind its ports:\n{self.log()}")

    def _new_ports(self) -> None:
        text = self.config_path.read_text()
        for name, port in list(self.ports.items()):
            self.ports[name] = free_port()
            text = text.replace(f'"127.0.0.1:{port}"', f'"127.0.0.1:{self.ports[name]}"')
        self.config_path.write_text(text)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, exactly like a crash. With workers, the supervisor's
        kill takes its workers with it (PR_SET_PDEATHSIG); returns once they are gone."""
        assert self.process is not None
        workers = self.worker_pids()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        wait_gone(workers)

    def worker_pids(self) -> list[int]:
        """The worker processes of a supervisor ([server] workers > 1), oldest first; [] for
        a single process."""
        if self.process is None or self.process.poll() is not None:
            return []
        return children(self.process.pid)

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise RuntimeError(f"maild did not stop on SIGTERM:\n{self.log()}") from None
        return self.process.returncode

    def restart(self) -> None:
        self.stop()
        self.start()

    def store(self) -> Store:
        """Open the store in this process (only while the daemon is stopped, or read-only use)."""
        return Store(self.data_dir, self.config.store)

    def fsck(self) -> subprocess.CompletedProcess[str]:
        return self.cli("fsck")

    def set_dkim_keys(self, domain: str, keys: list[dict[str, Any]]) -> None:
        """Give ``domain`` these DKIM keys (the daemon is restarted around the write)."""
        self.stop()
        store = self.store()
        try:
            store.domain_set_dkim_keys(domain, keys)
        finally:
            store.close()
        self.start()


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (from /proc), in the order they started."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return sorted((int(p) for p in text.split() if _alive(int(p))), key=lambda p: int(_stat(p, 19) or 0))


def _stat(pid: int, field: int, task: int | None = None) -> str | None:
    """A field of a thread's stat after the command name (0: the state), None when gone."""
    try:
        return Path(f"/proc/{pid}/task/{task or pid}/stat").read_text().rsplit(")", 1)[1].split()[field]
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    """Running, not a zombie. A killed process's leader thread turns zombie before its other
    threads have exited and let go of the files (sockets) they share: every thread counts."""
    try:
        tasks = [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        return False
    return any(_stat(pid, 0, t) not in (None, "Z", "X") for t in tasks)


def wait_gone(pids: list[int], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {[p for p in pids if _alive(p)]} still alive")
        time.sleep(0.01)


@pytest.fixture
def maild_factory(tmp_path: Path, tls_files: tuple[Path, Path, Path],
                  password_hashes: dict[str, str]) -> Iterator[Callable[..., MaildServer]]:
    servers: list[MaildServer] = []

    def make(**overrides: dict[str, Any]) -> MaildServer:
        root = tmp_path / f"maild{len(servers)}"
        root.mkdir()
        server = MaildServer(root, tls_files, password_hashes, overrides)
        servers.append(server)
        return server

    yield make
    problems = []
    for server in servers:
        code = server.stop()
        if code not in (0, -signal.SIGKILL):
            problems.append(f"maild exited with {code}:\n{server.log()[-4000:]}")
        result = server.fsck()
        if result.returncode != 0:
            problems.append(f"maild fsck found problems:\n{result.stdout}{result.stderr}")
    if problems:
        pytest.fail("\n".join(problems))


@pytest.fixture
def maild_server(maild_factory: Callable[..., MaildServer]) -> MaildServer:
    return maild_factory()


def pytest_report_header() -> list[str]:
    tools = ["swaks", "mbsync", "fetchmail", "clamd", "rspamd", "redis-server", "smtp-source"]
    return ["real peers: " + ", ".join(f"{t}={'yes' if shutil.which(t) else 'MISSING'}" for t in tools),
            f"cpus: {os.cpu_count()}"]
