"""THREAD and UID THREAD (RFC 5256 §4): ORDEREDSUBJECT and REFERENCES."""

from __future__ import annotations

import imaplib

from maild.imap.thread import _Message, _references, _render
from tests.imap.conftest import Transcript, append


def mail(subject: str, date: str, message_id: str | None = None, references: str | None = None,
         in_reply_to: str | None = None) -> bytes:
    headers = [f"Subject: {subject}", f"Date: {date} +0000", "From: bob@example.test"]
    headers += [f"Message-ID: {message_id}"] if message_id else []
    headers += [f"References: {references}"] if references else []
    headers += [f"In-Reply-To: {in_reply_to}"] if in_reply_to else []
    return ("\r\n".join(headers) + "\r\n\r\nhi\r\n").encode()


def fill(imap: Transcript) -> None:
    """Nine messages, uid = sequence number + 1 (a first message was expunged)."""
    append(imap, "INBOX", mail("gone", "Sun, 31 Dec 2023 00:00:00"), "\\Deleted")
    for raw in [
        mail("Party", "Mon, 1 Jan 2024 10:00:00", "<a@x>"),
        mail("Re: Party", "Mon, 1 Jan 2024 11:00:00", "<b@x>", "<a@x>", "<a@x>"),
        mail("Re: Party", "Mon, 1 Jan 2024 12:00:00", "<c@x>", "<a@x> <b@x>"),
        mail("Re: Party", "Mon, 1 Jan 2024 13:00:00", "<d@x>", None, "<a@x>"),  # In-Reply-To alone
        mail("Lunch", "Mon, 1 Jan 2024 09:00:00", "<e@x>"),
        mail("Re: Trip", "Tue, 2 Jan 2024 10:00:00", "<f@x>", "<missing@x>"),
        mail("Re: Trip", "Wed, 3 Jan 2024 10:00:00", "<g@x>", "<missing@x>"),
        mail("Lunch", "Thu, 4 Jan 2024 10:00:00"),  # no Message-ID
        mail("Re: Party", "Fri, 5 Jan 2024 10:00:00", "<i@x>"),  # no references: by subject
    ]:
        append(imap, "INBOX", raw)
    imap.ok("SELECT INBOX")
    imap.ok("EXPUNGE")


def thread(imap: Transcript, command: str) -> bytes:
    (line,) = [line for line in imap.ok(command) if line.startswith(b"* THREAD")]
    return line


def test_references(imap: Transcript) -> None:
    fill(imap)
    # Lunch: two unrelated messages with one subject, siblings under a dummy; Party: b
    # answers a and c answers b, d answers a, i joins by subject; Trip: two answers to a
    # message not in the mailbox. Threads in the order of their first message's date.
    assert thread(imap, "THREAD REFERENCES UTF-8 ALL") == b"* THREAD ((5)(8))(1 (2 3)(4)(9))((6)(7))"
    assert thread(imap, "UID THREAD REFERENCES UTF-8 ALL") == b"* THREAD ((6)(9))(2 (3 4)(5)(10))((7)(8))"
    assert thread(imap, "THREAD REFERENCES US-ASCII SUBJECT party") == b"* THREAD (1 (2 3)(4)(9))"
    assert thread(imap, "THREAD REFERENCES UTF-8 SUBJECT nothing") == b"* THREAD"
    # A new answer to Lunch joins its thread; the facts of the others come from the cache.
    append(imap, "INBOX", mail("Re: Lunch", "Sat, 6 Jan 2024 10:00:00", "<j@x>", "<e@x>"))
    imap.ok("NOOP")
    assert thread(imap, "THREAD REFERENCES UTF-8 ALL") == b"* THREAD ((5 10)(8))(1 (2 3)(4)(9))((6)(7))"


def test_ordered_subject(imap: Transcript) -> None:
    fill(imap)
    assert thread(imap, "THREAD ORDEREDSUBJECT UTF-8 ALL") == b"* THREAD (5 8)(1 (2)(3)(4)(9))(6 7)"


def test_loops_and_duplicate_message_ids(imap: Transcript) -> None:
    for raw in [
        mail("one", "Mon, 1 Jan 2024 10:00:00", "<j@x>", "<k@x>"),
        mail("two", "Mon, 1 Jan 2024 11:00:00", "<k@x>", "<j@x>"),  # each refers to the other
        mail("three", "Mon, 1 Jan 2024 12:00:00", "<l@x>", "<l@x>"),  # and to itself
        mail("four", "Mon, 1 Jan 2024 13:00:00", "<l@x>"),  # a Message-ID seen before
    ]:
        append(imap, "INBOX", raw)
    imap.ok("SELECT INBOX")
    assert thread(imap, "THREAD REFERENCES UTF-8 ALL") == b"* THREAD (2 1)(3)(4)"


def test_errors(imap: Transcript) -> None:
    capabilities = imap.ok("CAPABILITY")[0].split()
    assert b"THREAD=REFERENCES" in capabilities and b"THREAD=ORDEREDSUBJECT" in capabilities
    imap.ok("SELECT INBOX")
    assert thread(imap, "THREAD REFERENCES UTF-8 ALL") == b"* THREAD"
    imap.bad("THREAD JWZ UTF-8 ALL")
    imap.bad("THREAD REFERENCES ALL")  # the charset is required
    imap.no("THREAD REFERENCES KOI8-R ALL", code="BADCHARSET")


def test_imaplib(imaplib_client: imaplib.IMAP4_SSL) -> None:
    imaplib_client.append("INBOX", None, None, mail("Plan", "Mon, 1 Jan 2024 10:00:00", "<p@x>"))
    imaplib_client.append("INBOX", None, None, mail("Re: Plan", "Mon, 1 Jan 2024 11:00:00", "<q@x>", "<p@x>"))
    imaplib_client.select("INBOX")
    assert imaplib_client.thread("REFERENCES", "UTF-8", "ALL") == ("OK", [b"(1 2)"])


def test_a_reply_chain_thousands_deep() -> None:
    """Each message answers the one before, the first answers a message that is not there:
    no recursion limit is met, and the missing message's dummy gives way to its one child."""
    messages = [_Message(n, n, float(n), "CHAIN", True, f"<m{n}@x>", (f"<m{n - 1}@x>",))
                for n in range(1, 3001)]
    (root,) = _references(messages)
    assert _render(root) == b" ".join(b"%d" % n for n in range(1, 3001))


def test_two_dummies_with_one_subject_become_one_thread(imap: Transcript) -> None:
    """Two answers each to two messages not in the mailbox, all "Re: Boat": the two dummy
    roots merge (RFC 5256 §4 step 5), their children siblings by date."""
    for n, missing in ((1, "<gone1@x>"), (2, "<gone2@x>"), (3, "<gone1@x>"), (4, "<gone2@x>")):
        append(imap, "INBOX", mail("Re: Boat", f"Mon, {n} Jan 2024 10:00:00", f"<boat{n}@x>", missing))
    imap.ok("SELECT INBOX")
    assert thread(imap, "THREAD REFERENCES UTF-8 ALL") == b"* THREAD ((1)(2)(3)(4))"
