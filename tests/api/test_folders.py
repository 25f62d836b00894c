"""Folders: list with total and unread counts, create, rename, delete; names and ids
validated (no path tricks), INBOX and special folders protected."""

from __future__ import annotations

import smtplib

from tests.api.conftest import ALICE, Api
from tests.conftest import MaildServer


def deliver(server: MaildServer, to: str, subject: str, body: str = "Hello\r\n") -> None:
    raw = (f"From: carol@remote.test\r\nTo: {to}\r\nSubject: {subject}\r\n"
           f"Message-ID: <{subject.replace(' ', '.')}@remote.test>\r\n\r\n{body}")
    with smtplib.SMTP(server.host, server.ports["smtp"], timeout=30) as client:
        client.sendmail("carol@remote.test", [to], raw.encode())


def test_list_counts(alice: Api) -> None:
    for i in range(3):
        deliver(alice.server, ALICE, f"n{i}")
    inbox = alice.folder("INBOX")
    assert (inbox["total"], inbox["unread"], inbox["role"]) == (3, 3, "inbox")
    roles = {f["role"] for f in alice.ok("GET", "/v1/folders")["folders"]}
    assert {"sent", "drafts", "trash", "junk"} <= roles
    assert alice.ok("GET", f"/v1/folders/{inbox['id']}") == inbox


def test_create_rename_delete(alice: Api) -> None:
    made = alice.ok("POST", "/v1/folders", {"name": "Projects/2026"}, status=201)
    assert made["name"] == "Projects/2026" and made["total"] == 0
    assert alice.request("POST", "/v1/folders", {"name": "Projects/2026"}).problem == "conflict"
    renamed = alice.ok("PATCH", f"/v1/folders/{made['id']}", {"name": "Done"})
    assert renamed["id"] == made["id"] and renamed["name"] == "Done"
    names = [f["name"] for f in alice.ok("GET", "/v1/folders")["folders"]]
    assert "Done" in names and "Projects/2026" not in names
    alice.ok("DELETE", f"/v1/folders/{made['id']}", status=204)
    assert alice.get(f"/v1/folders/{made['id']}").problem == "not-found"


def test_bad_names_and_ids(alice: Api) -> None:
    before = alice.ok("GET", "/v1/folders")
    for name in ("", "../etc", "a//b", "/abs", "x\r\ny", "a/./b", 5, "*"):
        assert alice.request("POST", "/v1/folders", {"name": name}).problem == "invalid-field", name
    for folder_id in ("..", "%2e%2e", "f1%2F..", "1", "f99999", "f-1", "f1'", "f" + "9" * 30):
        assert alice.get(f"/v1/folders/{folder_id}").status == 404, folder_id
    inbox = alice.folder("INBOX")
    assert alice.request("DELETE", f"/v1/folders/{inbox['id']}").problem == "forbidden"
    assert alice.request("PATCH", f"/v1/folders/{inbox['id']}", {"name": "X"}).problem == "forbidden"
    sent = alice.folder("Sent")
    assert alice.request("DELETE", f"/v1/folders/{sent['id']}").problem == "forbidden"
    assert alice.request("POST", "/v1/folders", b"[1]", {"Content-Type": "application/json"}).problem == "bad-json"
    assert alice.request("POST", "/v1/folders", b"name=x", {"Content-Type": "text/plain"}
                         ).problem == "unsupported-media-type"
    assert alice.ok("GET", "/v1/folders") == before
