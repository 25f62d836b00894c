"""GET /v1/search (IMAP SEARCH's own matching: case-insensitive substrings of subject,
from, to, body) and GET /v1/folders/{id}/threads (THREAD=REFERENCES, RFC 5256), each
checked against the IMAP answer for the same mailbox."""

from __future__ import annotations

import imaplib
import smtplib

from tests.api.conftest import ALICE, Api
from tests.conftest import USERS, MaildServer
from tests.imap.conftest import tls_context


def deliver(server: MaildServer, subject: str, body: str, message_id: str, refs: str = "",
            sender: str = "carol@remote.test") -> None:
    raw = (f"From: {sender}\r\nTo: {ALICE}\r\nSubject: {subject}\r\nMessage-ID: <{message_id}>\r\n"
           + (f"In-Reply-To: <{refs}>\r\nReferences: <{refs}>\r\n" if refs else "")
           + f"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n")
    with smtplib.SMTP(server.host, server.ports["smtp"], timeout=30) as client:
        client.sendmail(sender, [ALICE], raw.encode())


def imap(server: MaildServer, *command: str) -> bytes:
    with imaplib.IMAP4_SSL(server.host, server.ports["imaps"], ssl_context=tls_context(server.cafile)) as conn:
        conn.login(ALICE, USERS[ALICE])
        conn.select("INBOX", readonly=True)
        _, data = conn.uid(*command)
    return data[0] or b""


def uids(messages: list[dict[str, str]]) -> list[int]:
    return [int(m["id"].rsplit(".", 1)[1]) for m in messages]


def test_search_is_imap_search(alice: Api) -> None:
    deliver(alice.server, "Quarterly report", "Numbers for Köln attached", "a@x")
    deliver(alice.server, "Lunch", "Pizza at noon", "b@x", sender="dave@remote.test")
    deliver(alice.server, "Re: Quarterly REPORT", "See the report", "c@x", refs="a@x")
    got = alice.ok("GET", "/v1/search?subject=report")["messages"]
    assert uids(got) == [3, 1]  # newest first
    assert imap(alice.server, "SEARCH", "SUBJECT", "report") == b"1 3"
    assert uids(alice.ok("GET", "/v1/search?body=k%C3%B6ln")["messages"]) == [1]
    assert uids(alice.ok("GET", "/v1/search?from=dave")["messages"]) == [2]
    assert uids(alice.ok("GET", "/v1/search?q=pizza")["messages"]) == [2]
    assert uids(alice.ok("GET", "/v1/search?subject=report&body=see")["messages"]) == [3]
    page = alice.ok("GET", "/v1/search?subject=report&limit=1")
    assert uids(page["messages"]) == [3] and page["next_cursor"]
    assert uids(alice.ok("GET", f"/v1/search?subject=report&cursor={page['next_cursor']}")["messages"]) == [1]
    sent = alice.folder("Sent")
    assert alice.ok("GET", f"/v1/search?subject=report&folder_id={sent['id']}")["messages"] == []
    assert alice.get("/v1/search").problem == "invalid-field"
    assert alice.get("/v1/search?q=x&folder_id=..").problem == "not-found"


def test_threads_are_imap_thread_references(alice: Api) -> None:
    deliver(alice.server, "Plan", "first", "p1@x")
    deliver(alice.server, "Other", "alone", "o1@x")
    deliver(alice.server, "Re: Plan", "second", "p2@x", refs="p1@x")
    deliver(alice.server, "Re: Plan", "third", "p3@x", refs="p2@x")
    assert imap(alice.server, "THREAD", "REFERENCES", "UTF-8", "ALL") == b"(1 3 4)(2)"
    inbox = alice.folder("INBOX")
    threads = alice.ok("GET", f"/v1/folders/{inbox['id']}/threads")["threads"]

    def shape(node: dict[str, object]) -> object:
        return (int(str(node["id"]).rsplit(".", 1)[1]), [shape(c) for c in node["replies"]])  # type: ignore[attr-defined]
    assert [shape(t) for t in threads] == [(1, [(3, [(4, [])])]), (2, [])]
