"""The maild command: domains, users, aliases, status, fsck; one-line errors."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from maild.auth import verify_password
from maild.config import load
from maild.store import Store
from tests.test_config import MINIMAL, NO_LISTENERS


@pytest.fixture
def cli(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "maild.toml"
    path.write_text((MINIMAL + "[store]\nshards = 2\nmap_size_mb = 256\ndirectory_map_size_mb = 64\n"
                     + NO_LISTENERS).replace("{data}", str(tmp_path / "data")))

    def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "maild.cli", "-c", str(path), *args],
                              input=input, capture_output=True, text=True, timeout=60)
    run.path = path  # type: ignore[attr-defined]
    return run


def test_domain_user_alias_lifecycle(cli) -> None:  # type: ignore[no-untyped-def]
    assert cli("domain", "add", "Example.TEST").returncode == 0
    assert cli("domain", "list").stdout.split() == ["example.test"]
    added = cli("user", "add", "Alice@example.test", "--password-stdin", input="correct horse\n")
    assert added.returncode == 0 and "alice@example.test" in added.stdout
    assert "alice@example.test" in cli("user", "list").stdout
    assert cli("alias", "add", "info@example.test", "alice@example.test").returncode == 0
    assert cli("alias", "list").stdout.strip() == "info@example.test -> alice@example.test"
    assert cli("user", "passwd", "alice@example.test", "--password-stdin", input="battery staple\n").returncode == 0
    cfg = load(cli.path)
    store = Store(cfg.data_dir, cfg.store)
    try:
        user = store.user("alice@example.test")
        assert user is not None and user.password_hash.startswith("$argon2id$")
        assert verify_password(user.password_hash, "battery staple")
        assert [m.name for m in store.mailboxes(user.address)][0] == "INBOX"
    finally:
        store.close()
    status = cli("status")
    assert status.returncode == 0 and "users 1" in status.stdout
    assert cli("fsck").returncode == 0
    assert cli("alias", "remove", "info@example.test").returncode == 0
    assert cli("user", "remove", "alice@example.test").returncode == 0
    assert cli("domain", "remove", "example.test").returncode == 0


@pytest.mark.parametrize("args, stdin, message", [
    (("user", "add", "bob@nowhere.test", "--password-stdin"), "long enough\n", "domain nowhere.test is not local"),
    (("user", "add", "bob@example.test", "--password-stdin"), "short\n", "at least 8 characters"),
    (("user", "remove", "ghost@example.test"), None, "no user ghost@example.test"),
    (("alias", "remove", "ghost@example.test"), None, "no alias ghost@example.test"),
    (("domain", "add", "not a domain"), None, "not a domain name"),
])
def test_errors_are_one_line(cli, args, stdin, message) -> None:  # type: ignore[no-untyped-def]
    cli("domain", "add", "example.test")
    proc = cli(*args, input=stdin)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("maild: ") and message in lines[0]


def test_serve_stops_cleanly_on_sigterm(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    proc = subprocess.Popen([sys.executable, "-m", "maild.cli", "-c", str(cli.path), "serve"],
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 30
    for line in proc.stderr:
        if "maild ready" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
