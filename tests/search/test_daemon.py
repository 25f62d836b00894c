"""The search index in a real `maild serve`: IMAP SEARCH, ESEARCH, SORT and THREAD with
text keys answer from it exactly (RFC 3501 §6.4.4, RFC 4731, RFC 5256), a damaged index
is never wrong, `maild status` shows the lag, `maild reindex` and `maild fsck` see it."""

from __future__ import annotations

import shutil
from collections.abc import Callable

from maild.search.index import ShardIndex
from maild.search.service import index_path
from tests.conftest import MaildServer
from tests.pop3.conftest import uidvalidity
from tests.search.daemon import USER, client, uids, wait_indexed

MAILS = [
    ("Quarterly report", "carol@example.org", "The numbers are inside, see attachment."),
    ("Grüße aus Köln", "dave@example.net", "Straße und Maß: ein Schloß am Rhein."),
    ("Lunch", "carol@example.org", "Shall we meet at noon? Pizza or sushi."),
    ("Re: Quarterly report", "erin@example.com", "Thanks, the NUMBERS look fine."),
]


def _raw(subject: str, sender: str, body: str, html: bool = False) -> bytes:
    from email.header import Header
    ctype = "text/html" if html else "text/plain"
    text = f"<html><body><p>{body.replace('&', '&amp;')}</p></body></html>" if html else body
    return (f"From: Sender <{sender}>\r\nTo: Alice <{USER}>\r\nSubject: {Header(subject, 'utf-8').encode()}\r\n"
            f"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <{abs(hash(subject + body))}@x>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: {ctype}; charset=utf-8\r\n"
            f"Content-Transfer-Encoding: 8bit\r\n\r\n{text}\r\n").encode()


def _fill(server: MaildServer) -> None:
    c = client(server)
    for i, (subject, sender, body) in enumerate(MAILS):
        c.append("INBOX", "(\\Seen)" if i % 2 else "", None, _raw(subject, sender, body, html=(i == 2)))
    c.append("INBOX", "", None, b"From: x@example.org\r\nSubject: attached\r\nMIME-Version: 1.0\r\n"
             b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nsee file\r\n"
             b"--B\r\nContent-Type: application/pdf\r\n"
             b"Content-Disposition: attachment; filename=\"budget-2024.pdf\"\r\n"
             b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--B--\r\n")
    c.logout()


def test_imap_search_answers_from_the_index(maild_server: MaildServer) -> None:
    _fill(maild_server)
    rows = wait_indexed(maild_server)
    assert all(r["cursor"] == r["head"] for r in rows)
    c = client(maild_server)
    c.select("INBOX")
    assert uids(c, "BODY", "numbers") == [1, 4]  # case-insensitive substring
    assert uids(c, "BODY", "umbe") == [1, 4]  # inside a word
    assert uids(c, "BODY", "u") == [1, 2, 3, 4]  # shorter than the grams
    assert uids(c, "BODY", "STRASSE") == [2]  # casefolded: ß is ss
    assert uids(c, "TEXT", "budget-2024") == [5]  # an attachment's file name
    assert uids(c, "BODY", "\"pizza or\"") == [3]  # HTML reduced to text
    assert uids(c, "SUBJECT", "quarterly") == [1, 4]
    assert uids(c, "FROM", "carol") == [1, 3]
    assert uids(c, "FROM", "carol", "UNSEEN") == [1, 3]
    assert uids(c, "OR", "FROM", "erin", "BODY", "rhein") == [2, 4]
    assert uids(c, "NOT", "BODY", "numbers") == [2, 3, 5]
    assert uids(c, "HEADER", "Message-ID", "@x") == [1, 2, 3, 4]
    assert uids(c, "TEXT", "alice") == [1, 2, 3, 4]
    # ESEARCH (RFC 4731), SORT and THREAD with text criteria (RFC 5256)
    typ, _ = c.uid("SEARCH", "RETURN", "(COUNT MIN MAX)", "BODY", "numbers")
    _, data = c.response("ESEARCH")
    assert typ == "OK" and b"COUNT 2" in data[0] and b"MIN 1" in data[0] and b"MAX 4" in data[0], data
    typ, data = c.uid("SORT", "(REVERSE ARRIVAL)", "UTF-8", "BODY", "numbers")
    assert typ == "OK" and data[0].split() == [b"4", b"1"], data
    typ, data = c.uid("THREAD", "REFERENCES", "UTF-8", "SUBJECT", "report")
    assert typ == "OK" and b"1" in data[0] and b"4" in data[0] and b"2" not in data[0], data
    c.logout()


def test_mail_the_index_has_not_seen_is_found_by_reading_it(maild_server: MaildServer) -> None:
    """A missing (deleted) index: answers stay right while it is rebuilt in the background."""
    _fill(maild_server)
    wait_indexed(maild_server)
    maild_server.stop()
    for shard in range(2):
        shutil.rmtree(index_path(maild_server.data_dir, shard))
    (index_path(maild_server.data_dir, 0)).mkdir(parents=True)
    (index_path(maild_server.data_dir, 0) / "meta.json").write_text("{damaged")
    maild_server.start()
    c = client(maild_server)
    c.select("INBOX")
    assert uids(c, "BODY", "numbers") == [1, 4]
    c.append("INBOX", "", None, _raw("late", "zed@example.org", "numbers again"))
    assert uids(c, "BODY", "numbers") == [1, 4, 6]
    wait_indexed(maild_server)
    assert uids(c, "BODY", "numbers") == [1, 4, 6]
    c.logout()


def test_status_reindex_and_fsck_drift(maild_server: MaildServer) -> None:
    _fill(maild_server)
    wait_indexed(maild_server)
    out = maild_server.cli("status").stdout
    assert "search index shard 00: lag 0" in out and "search index shard 01: lag 0" in out, out
    # With the daemon running, reindex asks it and follows its progress.
    result = maild_server.cli("reindex", "--user", USER)
    assert result.returncode == 0 and "reindexed 5 messages of alice@example.test" in result.stdout, result
    assert "5/5 messages" in result.stderr
    maild_server.stop()
    assert maild_server.fsck().returncode == 0
    # Drift: a message the index lost below its watermark, one it holds that is gone.
    shard = next(i for i in range(2) if ShardIndex(index_path(maild_server.data_dir, i), 1000, False).cursor_or_none())
    ix = ShardIndex(index_path(maild_server.data_dir, shard), 1_000_000)
    cursor = ix.cursor_or_none()
    assert cursor and ix.acquire_writer(32 * 1024 * 1024)
    ix.delete_message(USER, 1, 2)
    ix.add(USER, 1, uidvalidity(maild_server, USER), 99, {"body": "ghost"})
    ix.commit(cursor)
    ix.release_writer()
    result = maild_server.fsck()
    assert result.returncode == 1, result.stdout
    assert "1 message(s) not indexed below uid 5 (first uid 2)" in result.stdout
    assert "1 indexed message(s) no longer in the mailbox (first uid 99)" in result.stdout
    # The daemon stopped: reindex does it here.
    result = maild_server.cli("reindex")
    assert result.returncode == 0 and "reindexed 5 messages" in result.stdout, result
    assert maild_server.fsck().returncode == 0
    maild_server.start()
    c = client(maild_server)
    c.select("INBOX")
    assert uids(c, "BODY", "RHEIN") == [2]
    c.logout()


def test_search_disabled_scans(maild_factory: Callable[..., MaildServer]) -> None:
    server = maild_factory(search={"enabled": False})
    _fill(server)
    c = client(server)
    c.select("INBOX")
    assert uids(c, "BODY", "numbers") == [1, 4]
    c.logout()
    assert "search" not in server.cli("status").stdout
    assert not (server.data_dir / "search").exists()


def test_worker_processes_share_the_index(maild_factory: Callable[..., MaildServer]) -> None:
    """With worker processes one writes each shard's index and every one searches it:
    connections landing on any worker get the same, exact answers."""
    server = maild_factory(server={"workers": 2})
    _fill(server)
    wait_indexed(server)
    for _ in range(6):  # connections spread over the workers
        c = client(server)
        c.select("INBOX")
        assert uids(c, "BODY", "numbers") == [1, 4]
        assert uids(c, "FROM", "carol") == [1, 3]
        c.logout()
