"""POST /v1/messages: the submission path itself (RFC 6409 through maild/smtp/submit.py):
the sender owns From, DKIM signing, the outbound queue, local delivery and the \\Seen copy
in Sent, all checked over real protocols (IMAP for the mailboxes, a real remote SMTP server
for the queue), and the queue status of what was sent."""

from __future__ import annotations

import base64
import imaplib
import json
import secrets
import uuid
from collections.abc import Callable
from typing import Any

from maild.config import Address, DnsConfig
from maild.dns.resolver import Resolver
from maild.mailauth import dkim
from tests.api.conftest import ALICE, BOB, Api, new_token
from tests.conftest import USERS, MaildServer
from tests.fixtures.dns import DnsZone
from tests.imap.conftest import tls_context
from tests.outbound.conftest import REMOTE, Remotes, mx_zone, remotes, wait_until  # noqa: F401 (fixture)


def imap_messages(server: MaildServer, user: str, mailbox: str) -> list[tuple[bytes, bytes]]:
    """(flags line, RFC822) of every message of a mailbox, over IMAPS."""
    with imaplib.IMAP4_SSL(server.host, server.ports["imaps"], ssl_context=tls_context(server.cafile)) as imap:
        imap.login(user, USERS[user])
        imap.select(mailbox, readonly=True)
        _, data = imap.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])")
        return [(item[0], item[1]) for item in data if isinstance(item, tuple)]


def test_send_reaches_the_remote_signed_local_inbox_and_sent(api_factory: Callable[..., MaildServer],
                                                            dns_zone: DnsZone, remotes: Remotes) -> None:  # noqa: F811
    server = api_factory(dns={"nameservers": [dns_zone.nameserver], "timeout": 2.0},
                         outbound={"port": remotes.port, "poll_interval": 0.1, "connect_timeout": 5.0})
    keys: list[dict[str, Any]] = dkim.generate_keys("example.test")
    server.set_dkim_keys("example.test", keys)
    for key in keys:
        dns_zone.set(f"{key['selector']}._domainkey.example.test", "TXT", key["public_record"])
    mx = remotes.start("127.0.0.2")
    mx_zone(dns_zone, (10, "mx1.remote.test", "127.0.0.2"))
    api = Api(server, tls=True)
    api.token = new_token(api)
    subject = f"api send {uuid.uuid4().hex[:8]}"
    sent = api.ok("POST", "/v1/messages", {
        "from": {"name": "Alice Ä", "address": ALICE}, "to": [f"carol@{REMOTE}"], "cc": [BOB],
        "bcc": ["alice@example.test"], "subject": subject, "text": "Hi Carol,\n.leading dot\n",
        "html": "<p>Hi Carol</p>"}, status=202)
    assert sent["recipients"] == 3 and sent["message_id"].endswith("@mx.example.test>")
    (got,) = mx.wait_for(1)
    assert got.rcpt_tos == [f"carol@{REMOTE}"]
    assert b"Bcc" not in got.content and f"Subject: {subject}".encode() in got.content
    resolver = Resolver(DnsConfig([Address(dns_zone.host, dns_zone.port)], 2.0))
    assert [r.result for r in dkim.verify_sync(got.content, resolver)] == ["pass", "pass"]
    bob_inbox = imap_messages(server, BOB, "INBOX")
    assert len(bob_inbox) == 1 and f"Subject: {subject}".encode() in bob_inbox[0][1]
    (copy,) = imap_messages(server, ALICE, "Sent")
    assert b"\\Seen" in copy[0] and sent["message_id"].encode() in copy[1]
    assert len(imap_messages(server, ALICE, "INBOX")) == 1  # the Bcc to herself
    wait_until(lambda: api.ok("GET", f"/v1/queue/{sent['queue_id']}")["state"] == "done", what="delivered")


def test_queue_status_while_deferred(api_factory: Callable[..., MaildServer], dns_zone: DnsZone) -> None:
    server = api_factory(dns={"nameservers": [dns_zone.nameserver], "timeout": 2.0},
                         outbound={"port": 9, "poll_interval": 0.1, "connect_timeout": 1.0})
    mx_zone(dns_zone, (10, "mx1.remote.test", "127.0.0.2"))  # refused: stays deferred
    api = Api(server)
    api.token = new_token(api)
    sent = api.ok("POST", "/v1/messages", {"to": [f"dave@{REMOTE}"], "subject": "s", "text": "t"}, status=202)
    status = api.ok("GET", f"/v1/queue/{sent['queue_id']}")
    assert status["state"] == "queued"
    assert [r["address"] for r in status["recipients"]] == [f"dave@{REMOTE}"]
    bob = Api(server, token=new_token(api, BOB))
    assert bob.get(f"/v1/queue/{sent['queue_id']}").problem == "not-found"  # not his
    assert api.get("/v1/queue/..%2F..%2Fetc").problem == "not-found"


def test_sender_must_own_from(alice: Api) -> None:
    resp = alice.request("POST", "/v1/messages", {"from": BOB, "to": [ALICE], "subject": "x", "text": "y"})
    assert resp.status == 403 and resp.problem == "sender-not-owned"
    inbox = alice.folder("INBOX")
    assert inbox["total"] == 0


def test_bad_requests_change_nothing(alice: Api) -> None:
    assert alice.request("POST", "/v1/messages", b"{not json", {"Content-Type": "application/json"}
                         ).problem == "bad-json"
    assert alice.request("POST", "/v1/messages", b"to=x", {"Content-Type": "application/x-www-form-urlencoded"}
                         ).problem == "unsupported-media-type"
    for body, field in (({"to": []}, "to"), ({"to": ["not an address"]}, "to[0]"),
                        ({"to": [ALICE], "subject": "a\r\nBcc: evil@x.test"}, "subject"),
                        ({"to": [{"name": "x\r\ny", "address": ALICE}]}, "to[0]"),
                        ({"to": [ALICE], "text": 5}, "text")):
        resp = alice.request("POST", "/v1/messages", body)
        assert resp.status == 422 and resp.problem == "invalid-field", body
        assert resp.json["detail"].startswith(field)
    assert alice.request("POST", "/v1/messages", {"to": ["nobody@example.test"], "text": "x"}
                         ).problem == "message-refused"
    assert all(f["total"] == 0 for f in alice.ok("GET", "/v1/folders")["folders"])


def multipart(fields: list[tuple[str, str | None, str, bytes]]) -> tuple[bytes, str]:
    boundary = secrets.token_hex(16)
    out = []
    for name, filename, content_type, data in fields:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: {content_type}\r\n\r\n"
                   .encode() + data + b"\r\n")
    return b"".join(out) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_multipart_with_attachments_and_the_25_mb_limit(alice: Api) -> None:
    pdf = b"%PDF-1.4\n" + secrets.token_bytes(3000)
    body, content_type = multipart([
        ("message", None, "application/json", json.dumps({"to": [ALICE], "subject": "files", "text": "see"}).encode()),
        ("file", "report.pdf", "application/pdf", pdf),
        ("file", "notes.txt", "text/plain", "grüße\n".encode())])
    alice.ok("POST", "/v1/messages", body, status=202, headers={"Content-Type": content_type})
    inbox = alice.folder("INBOX")
    (summary,) = alice.ok("GET", f"/v1/folders/{inbox['id']}/messages")["messages"]
    message = alice.ok("GET", f"/v1/messages/{summary['id']}")
    assert message["text"].strip() == "see"
    names = {a["filename"]: a for a in message["attachments"]}
    assert set(names) == {"report.pdf", "notes.txt"}
    got = alice.request("GET", f"/v1/messages/{summary['id']}/attachments/{names['report.pdf']['part']}")
    assert got.status == 200 and got.body == pdf and got.headers["Content-Type"] == "application/pdf"
    assert "attachment" in got.headers["Content-Disposition"]
    # A message of 24.5 MB (18 MB of attachment, base64 in the request and in the message)
    # is accepted ...
    big = secrets.token_bytes(18 * 1024 * 1024)
    alice.ok("POST", "/v1/messages", {"to": [ALICE], "subject": "big", "text": "x", "attachments": [
        {"filename": "big.bin", "content_type": "application/octet-stream",
         "content_base64": base64.b64encode(big).decode()}]}, status=202)
    # ... and a body over the limit is refused 413 while it arrives, nothing stored.
    over, content_type = multipart([("message", None, "application/json", b'{"to": ["alice@example.test"]}'),
                                    ("file", "huge.bin", "application/octet-stream", bytes(35 * 1024 * 1024))])
    try:
        resp = alice.request("POST", "/v1/messages", over, headers={"Content-Type": content_type})
        assert resp.status == 413 and resp.problem == "too-large"
    except (ConnectionResetError, BrokenPipeError):
        pass  # the server closed the connection after its 413, before the client finished sending
    assert alice.folder("INBOX")["total"] == 2
    # A request within the body limit whose message is over 25 MB: 413 too.
    over, content_type = multipart([("message", None, "application/json", b'{"to": ["alice@example.test"]}'),
                                    ("file", "huge.bin", "application/octet-stream", bytes(26 * 1024 * 1024))])
    resp = alice.request("POST", "/v1/messages", over, headers={"Content-Type": content_type})
    assert resp.status == 413 and resp.problem == "too-large"
    assert alice.folder("INBOX")["total"] == 2


def test_send_shares_the_submission_rate_per_user(api_factory: Callable[..., MaildServer]) -> None:
    server = api_factory(submission={"messages_per_minute_per_user": 2})
    api = Api(server)
    api.token = new_token(api)
    for _ in range(2):
        api.ok("POST", "/v1/messages", {"to": [BOB], "text": "x"}, status=202)
    resp = api.request("POST", "/v1/messages", {"to": [BOB], "text": "x"})
    assert resp.status == 429 and resp.problem == "rate-limited" and resp.headers["Retry-After"]
    assert Api(server, token=new_token(api, BOB)).folder("INBOX")["total"] == 2
