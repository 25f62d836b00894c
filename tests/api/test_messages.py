"""Messages: listing newest first with cursor pagination and filters, one message decoded
(headers, text, HTML, attachments), its raw source, flags, move, delete - each change seen
over IMAP - and isolation: another user's ids read and change nothing."""

from __future__ import annotations

import imaplib
import smtplib

from tests.api.conftest import ALICE, BOB, Api
from tests.api.test_folders import deliver
from tests.conftest import USERS
from tests.imap.conftest import tls_context

MIME = (b"From: =?utf-8?q?Carol_=C3=84?= <carol@remote.test>\r\nTo: alice@example.test\r\n"
        b"Subject: =?utf-8?b?R3LDvMOfZQ==?=\r\nMessage-ID: <mime@remote.test>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=outer\r\n\r\n"
        b"--outer\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n"
        b"--inner\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"Gr=FC=DFe aus K=F6ln\r\n"
        b"--inner\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"PHA+R3LDvMOfZTwvcD4=\r\n--inner--\r\n"
        b"--outer\r\nContent-Type: application/pdf; name=\"a.pdf\"\r\n"
        b"Content-Disposition: attachment; filename=\"a.pdf\"\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--outer--\r\n")


def imap_flags(user: str, server: object, mailbox: str = "INBOX") -> dict[int, str]:
    s = server
    with imaplib.IMAP4_SSL(s.host, s.ports["imaps"], ssl_context=tls_context(s.cafile)) as imap:  # type: ignore[attr-defined]
        imap.login(user, USERS[user])
        imap.select(mailbox, readonly=True)
        _, data = imap.uid("FETCH", "1:*", "(FLAGS)")
    out = {}
    for line in data:
        if isinstance(line, bytes) and b"UID" in line:
            text = line.decode()
            uid = int(text.split("UID ")[1].split()[0].rstrip(")"))
            out[uid] = " ".join(f for f in text.split("FLAGS (")[1].split(")")[0].split() if f != "\\Recent")
    return out


def uid_of(message_id: str) -> int:
    return int(message_id.rsplit(".", 1)[1])


def test_pages_newest_first_with_filters(alice: Api) -> None:
    for i in range(7):
        deliver(alice.server, ALICE, f"n{i}")
    inbox = alice.folder("INBOX")
    seen, cursor, pages = [], None, 0
    while True:
        page = alice.ok("GET", f"/v1/folders/{inbox['id']}/messages?limit=3" + (f"&cursor={cursor}" if cursor else ""))
        seen += [m["subject"] for m in page["messages"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"n{i}" for i in reversed(range(7))] and pages == 3
    first = alice.ok("GET", f"/v1/folders/{inbox['id']}/messages?limit=2")["messages"]
    alice.ok("PATCH", f"/v1/messages/{first[0]['id']}", {"seen": True, "flagged": True})
    unread = alice.ok("GET", f"/v1/folders/{inbox['id']}/messages?unread=true")["messages"]
    assert len(unread) == 6 and first[0]["id"] not in [m["id"] for m in unread]
    flagged = alice.ok("GET", f"/v1/folders/{inbox['id']}/messages?flagged=true")["messages"]
    assert [m["id"] for m in flagged] == [first[0]["id"]]
    assert alice.ok("GET", f"/v1/folders/{inbox['id']}/messages?since=2999-01-01")["messages"] == []
    assert len(alice.ok("GET", f"/v1/folders/{inbox['id']}/messages?since=2000-01-01T00:00:00Z")["messages"]) == 7
    for bad in ("limit=0", "limit=100000", "cursor=abc", "unread=yes", "since=yesterday"):
        assert alice.get(f"/v1/folders/{inbox['id']}/messages?{bad}").problem == "invalid-field", bad


def test_one_message_decoded_raw_and_attachment(alice: Api) -> None:
    with smtplib.SMTP(alice.server.host, alice.server.ports["smtp"], timeout=30) as client:
        client.sendmail("carol@remote.test", [ALICE], MIME)
    inbox = alice.folder("INBOX")
    (summary,) = alice.ok("GET", f"/v1/folders/{inbox['id']}/messages")["messages"]
    assert summary["subject"] == "Grüße" and summary["from"] == [{"name": "Carol Ä", "address": "carol@remote.test"}]
    message = alice.ok("GET", f"/v1/messages/{summary['id']}")
    assert message["text"].strip() == "Grüße aus Köln" and message["html"] == "<p>Grüße</p>"
    assert [(a["filename"], a["content_type"], a["size"]) for a in message["attachments"]] == \
        [("a.pdf", "application/pdf", 9)]
    assert {"name": "Subject", "value": "Grüße"} in message["headers"]
    raw = alice.request("GET", f"/v1/messages/{summary['id']}/raw")
    assert raw.headers["Content-Type"] == "message/rfc822" and raw.body.endswith(MIME)
    part = message["attachments"][0]["part"]
    assert alice.request("GET", f"/v1/messages/{summary['id']}/attachments/{part}").body == b"%PDF-1.4\n"
    for bad in ("99", "0x1", "..", "-1"):
        assert alice.get(f"/v1/messages/{summary['id']}/attachments/{bad}").status == 404
    assert imap_flags(ALICE, alice.server) == {1: ""}  # reading through the API sets no \Seen


def test_flags_move_delete_seen_over_imap(alice: Api) -> None:
    for i in range(3):
        deliver(alice.server, ALICE, f"m{i}")
    inbox = alice.folder("INBOX")
    one, two, three = alice.ok("GET", f"/v1/folders/{inbox['id']}/messages")["messages"]
    updated = alice.ok("PATCH", f"/v1/messages/{one['id']}",
                       {"seen": True, "flagged": True, "keywords": {"add": ["$Important"]}})
    assert updated["seen"] and updated["flagged"] and updated["keywords"] == ["$Important"]
    flags = imap_flags(ALICE, alice.server)
    assert set(flags[uid_of(one["id"])].split()) == {"\\Seen", "\\Flagged", "$Important"}
    alice.ok("PATCH", f"/v1/messages/{one['id']}", {"seen": False, "keywords": {"remove": ["$Important"]}})
    assert imap_flags(ALICE, alice.server)[uid_of(one["id"])] == "\\Flagged"
    archive = alice.folder("Archive")
    moved = alice.ok("PATCH", f"/v1/messages/{two['id']}", {"folder_id": archive["id"]})
    assert moved["folder_id"] == archive["id"] and moved["id"] != two["id"]
    assert alice.get(f"/v1/messages/{two['id']}").problem == "not-found"
    assert len(imap_flags(ALICE, alice.server, "Archive")) == 1
    alice.ok("DELETE", f"/v1/messages/{three['id']}", status=204)
    assert sorted(imap_flags(ALICE, alice.server)) == [uid_of(one["id"])]
    for body in ({"seen": "yes"}, {"keywords": {"add": ["bad word"]}}, {"colour": "red"},
                 {"seen": True, "keywords": {"add": ["\\Seen"]}}, {"folder_id": "f999"}):
        assert alice.request("PATCH", f"/v1/messages/{one['id']}", body).status in (404, 422), body
    assert imap_flags(ALICE, alice.server)[uid_of(one["id"])] == "\\Flagged"


def test_another_users_ids_read_and_change_nothing(alice: Api, bob: Api) -> None:
    deliver(alice.server, ALICE, "private")
    deliver(alice.server, BOB, "bobs")
    inbox = alice.folder("INBOX")
    (mine,) = alice.ok("GET", f"/v1/folders/{inbox['id']}/messages")["messages"]
    bobs_inbox = bob.folder("INBOX")
    (his,) = bob.ok("GET", f"/v1/folders/{bobs_inbox['id']}/messages")["messages"]
    assert his["subject"] == "bobs"
    # Bob holds Alice's ids: each is looked up in his own partition and is not there.
    for method, path, body in (("GET", f"/v1/messages/{mine['id']}", None),
                               ("GET", f"/v1/messages/{mine['id']}/raw", None),
                               ("PATCH", f"/v1/messages/{mine['id']}", {"seen": True}),
                               ("DELETE", f"/v1/messages/{mine['id']}", None)):
        assert bob.request(method, path, body).problem == "not-found"
    # The same mailbox and uid under his own user id is his own message, not hers.
    bobs_id = his["id"].split(".", 1)[0]
    assert bob.ok("GET", f"/v1/messages/{bobs_id}." + mine["id"].split(".", 1)[1])["subject"] == "bobs"
    for folder in alice.ok("GET", "/v1/folders")["folders"]:
        assert bob.get(f"/v1/folders/{folder['id']}").problem == "not-found"
        assert bob.get(f"/v1/folders/{folder['id']}/messages").problem == "not-found"
    assert alice.ok("GET", f"/v1/messages/{mine['id']}")["subject"] == "private"
    assert imap_flags(ALICE, alice.server) == {1: ""}
    for path in ("/v1/messages/..%2F..%2Fetc%2Fpasswd", "/v1/messages/m1.1.1/../../x", "/v1/../etc/passwd",
                 "/v1/messages/m1.1", "/v1/messages/m1.1.1.1.1", "/v1/messages/m%00"):
        assert bob.get(path).status == 404, path
