"""Helpers for the search tests against a real daemon."""

from __future__ import annotations

import imaplib
import json
import re
import time
from typing import Any

from tests.conftest import MaildServer
from tests.imap.conftest import tls_context

USER, PASSWORD = "alice@example.test", "alice-secret"


def client(server: MaildServer) -> imaplib.IMAP4_SSL:
    c = imaplib.IMAP4_SSL(server.host, server.ports["imaps"], ssl_context=tls_context(server.cafile), timeout=30)
    c.login(USER, PASSWORD)
    return c


def status(server: MaildServer) -> list[dict[str, Any]]:
    result = server.cli("status", "--json")
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)["search"]
    return rows


def wait_indexed(server: MaildServer, timeout: float = 60.0) -> list[dict[str, Any]]:
    """Until every shard's index has caught up with its change log."""
    deadline = time.monotonic() + timeout
    while True:
        rows = status(server)
        if all(r["lag"] == 0 for r in rows):
            return rows
        assert time.monotonic() < deadline, f"index not caught up: {rows}\n{server.log()[-3000:]}"
        time.sleep(0.3)


def uids(c: imaplib.IMAP4_SSL, *criteria: str) -> list[int]:
    typ, data = c.uid("SEARCH", *criteria)
    assert typ == "OK", data
    return [int(n) for n in (data[0] or b"").split()]


def numbers(response: bytes) -> list[int]:
    return [int(n) for n in re.findall(rb"\d+", response)]
