"""Issue 15 item 5: pathological MIME nesting. A message nested 1,000 levels deep is
refused at end of DATA with a permanent, explained 554 5.6.0 (it used to get 451 4.3.0
from a RecursionError, so the sender retried for days); nesting within the limit
(maild.util.mime.MAX_DEPTH, 100) is delivered and IMAP SEARCH finds text 20 and 50
levels down; a message beyond the limit APPENDed over IMAP still gets BODYSTRUCTURE and
SEARCH answers."""

from __future__ import annotations

import imaplib
import re
import ssl

import pytest

from maild.util.mime import MAX_DEPTH
from tests.conftest import MaildServer
from tests.smtp.conftest import Transcript, messages


def nested(levels: int, kind: str, needle: str) -> bytes:
    """A message whose text part (holding ``needle``) is ``levels`` parts deep, through
    multipart/mixed or message/rfc822 parts."""
    inner = f"Content-Type: text/plain; charset=utf-8\r\n\r\n{needle}\r\n"
    for i in range(levels):
        if kind == "multipart":
            inner = (f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n'
                     f"--b{i}\r\n{inner}\r\n--b{i}--\r\n")
        else:
            inner = f"Content-Type: message/rfc822\r\n\r\nSubject: level {i}\r\n{inner}"
    return (f"From: a@remote.example\r\nTo: bob@example.test\r\nSubject: nested {kind} {levels}\r\n"
            f"MIME-Version: 1.0\r\n{inner}").encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tls_files, password_hashes):  # type: ignore[no-untyped-def]
    srv = MaildServer(tmp_path_factory.mktemp("nesting"), tls_files, password_hashes, {})
    yield srv
    assert srv.stop() == 0
    assert srv.fsck().returncode == 0


@pytest.fixture
def mx(server: MaildServer) -> Transcript:
    t = Transcript(server.host, server.ports["smtp"])
    t.greeting()
    t.cmd("EHLO client.remote.example", 250)
    return t


def _imap(server: MaildServer) -> imaplib.IMAP4_SSL:
    context = ssl.create_default_context(cafile=str(server.cafile))
    imap = imaplib.IMAP4_SSL(server.host, server.ports["imaps"], ssl_context=context, timeout=60)
    imap.login("bob@example.test", "bob-secret")
    return imap


@pytest.mark.parametrize("kind", ["multipart", "message"])
def test_a_thousand_levels_are_refused_permanently(mx: Transcript, server: MaildServer,
                                                   kind: str) -> None:
    reply = mx.message("a@remote.example", ["bob@example.test"],
                       nested(1000, kind, f"thousand {kind}"))
    assert reply.code == 554, mx.dump()
    assert reply.text == f"5.6.0 MIME parts nested more than {MAX_DEPTH} levels deep"
    # Just past the limit is refused the same way; at the limit it is delivered.
    reply = mx.message("a@remote.example", ["bob@example.test"], nested(MAX_DEPTH + 1, kind, "x"))
    assert reply.code == 554, mx.dump()
    reply = mx.message("a@remote.example", ["bob@example.test"],
                       nested(MAX_DEPTH, kind, f"at the limit {kind}"))
    assert reply.code == 250, mx.dump()
    mx.cmd("QUIT", 221)
    stored = messages(server, "bob@example.test")
    assert not [m for m in stored if f"thousand {kind}".encode() in m]
    assert [m for m in stored if f"at the limit {kind}".encode() in m]


@pytest.mark.parametrize("levels", [20, 35, 50])
def test_search_finds_text_nested_deep(mx: Transcript, server: MaildServer, levels: int) -> None:
    needle = f"needle at level {levels} xq"
    for kind in ("multipart", "message"):
        reply = mx.message("a@remote.example", ["bob@example.test"], nested(levels, kind, needle))
        assert reply.code == 250, mx.dump()
    mx.cmd("QUIT", 221)
    with _imap(server) as imap:
        imap.select("INBOX", readonly=True)
        typ, data = imap.uid("SEARCH", "BODY", f'"{needle}"')
        assert typ == "OK"
        found = data[0].split()
        typ, data = imap.uid("SEARCH", "SUBJECT", f'"nested" BODY "{needle}"')
        assert typ == "OK" and len(found) == 2 and data[0].split() == found
        typ, data = imap.uid("SEARCH", "TEXT", f'"{needle}"')
        assert typ == "OK" and data[0].split() == found


@pytest.mark.parametrize("kind", ["multipart", "message"])
def test_imap_answers_for_a_thousand_levels_appended(server: MaildServer, kind: str) -> None:
    raw = nested(1000, kind, f"appended {kind} depth")
    with _imap(server) as imap:
        typ, data = imap.append("INBOX", None, None, raw)
        assert typ == "OK", data
        uid = re.search(rb"APPENDUID \d+ (\d+)", data[0]).group(1).decode()  # type: ignore[union-attr]
        imap.select("INBOX")
        typ, data = imap.uid("FETCH", uid, "(BODYSTRUCTURE BODY ENVELOPE)")
        assert typ == "OK", data
        text = b"".join(d if isinstance(d, bytes) else b"".join(d) for d in data)
        # Parts beyond MAX_DEPTH are opaque: the structure stops there.
        opening = re.search(rb"BODYSTRUCTURE (\(+)", text)
        assert opening is not None
        assert len(opening.group(1)) <= MAX_DEPTH + 2
        typ, data = imap.uid("SEARCH", "BODY", f'"appended {kind} depth"')
        assert typ == "OK"  # answered; the text is beyond the limit, so not found
        typ, data = imap.uid("FETCH", uid, "(BODY.PEEK[1.1.1])")
        assert typ == "OK"
        typ, _ = imap.noop()
        assert typ == "OK"  # the session survived
