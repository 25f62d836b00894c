"""SORT and UID SORT (RFC 5256 §3), DISPLAYFROM and DISPLAYTO (RFC 5957), the base subject
(RFC 5256 §2.1)."""

from __future__ import annotations

import imaplib
from array import array
from collections.abc import Callable
from datetime import UTC
from email.utils import parsedate_to_datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maild.imap.commands import SortCriterion, SortKey
from maild.imap.sort import (
    _ENTRY_OVERHEAD,
    _ORDER_ENTRY,
    Ordered,
    SortKeyCache,
    base_subject,
    sent_timestamp,
    subject_parts,
)
from tests.imap.conftest import Transcript, append, fresh_account, message


def put(imap: Transcript, internal: str, headers: str, body_size: int, flags: str = "") -> int:
    raw = (headers + "\r\n" + "x" * body_size + "\r\n").encode()
    flag_part = f"({flags}) " if flags else ""
    _, result = imap.command(f'APPEND INBOX {flag_part}"{internal} +0000" {{{len(raw)}+}}\r\n'.encode() + raw)
    assert result.startswith(b"OK [APPENDUID "), result
    return int(result.split(b"]")[0].split()[-1])


def fill(imap: Transcript) -> list[int]:
    """Four messages whose every sort key orders them differently; the uids."""
    uids = [
        put(imap, "01-Jan-2024 10:00:00", "From: Zed <walter@example.test>\r\nTo: carol@example.test\r\n"
            "Cc: dave@example.test\r\nSubject: Re: Banana\r\nDate: Wed, 3 Jan 2024 08:00:00 +0000\r\n", 1000),
        put(imap, "02-Jan-2024 10:00:00", "From: Bob <bob@example.test>\r\nTo: Anna <zoe@example.test>\r\n"
            "Subject: apple\r\nDate: Mon, 1 Jan 2024 12:00:00 -0500\r\n", 3000),
        put(imap, "03-Jan-2024 00:00:00", "From: carl@example.test\r\nTo: bob@example.test\r\n"
            "Subject: [list] Fwd: cherry (fwd)\r\n", 2000),  # no Date: the internal date counts
        put(imap, "04-Jan-2024 00:00:00", "From: =?utf-8?q?=C3=81ngel?= <anna@example.test>\r\n"
            "Subject: banana\r\nDate: not a date\r\n", 4000, "\\Seen"),
    ]
    imap.ok("SELECT INBOX")
    return uids


def sort(imap: Transcript, command: str) -> list[int]:
    (line,) = [line for line in imap.ok(command) if line.startswith(b"* SORT")]
    return [int(n) for n in line.split()[2:]]


@pytest.mark.parametrize(("criteria", "order"), [
    ("ARRIVAL", [1, 2, 3, 4]),
    ("DATE", [2, 3, 1, 4]),  # 1 Jan 17:00 UTC, 3 Jan 00:00 (internal), 3 Jan 08:00, 4 Jan (internal)
    ("REVERSE DATE", [4, 1, 3, 2]),
    ("FROM", [4, 2, 3, 1]),  # anna, bob, carl, walter: the local part
    ("DISPLAYFROM", [2, 3, 1, 4]),  # bob, carl@example.test, zed, Ángel
    ("SUBJECT", [2, 1, 4, 3]),  # apple, banana (Re: removed), banana, cherry
    ("REVERSE SUBJECT", [3, 1, 4, 2]),  # the two bananas keep their order
    ("SUBJECT REVERSE ARRIVAL", [2, 4, 1, 3]),
    ("SIZE", [1, 3, 2, 4]),
    ("TO", [4, 3, 1, 2]),  # none first, then bob, carol, zoe
    ("DISPLAYTO", [4, 2, 3, 1]),  # none, Anna, bob@..., carol@...
    ("CC", [2, 3, 4, 1]),
])
def test_each_criterion(imap: Transcript, criteria: str, order: list[int]) -> None:
    fill(imap)
    assert sort(imap, f"SORT ({criteria}) UTF-8 ALL") == order


def test_uid_sort_and_search_criteria(imap: Transcript) -> None:
    uids = fill(imap)
    assert sort(imap, "UID SORT (SIZE) UTF-8 ALL") == [uids[0], uids[2], uids[1], uids[3]]
    assert sort(imap, "SORT (SUBJECT) US-ASCII UNSEEN") == [2, 1, 3]
    assert sort(imap, "SORT (SUBJECT) UTF-8 OR FROM bob FROM walter") == [2, 1]
    assert sort(imap, "SORT (DATE) UTF-8 SUBJECT nothing") == []
    imap.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    imap.ok("EXPUNGE")
    assert sort(imap, "SORT (SIZE) UTF-8 ALL") == [2, 1, 3]


def test_errors(imap: Transcript) -> None:
    assert b"SORT" in b" ".join(imap.ok("CAPABILITY")[0].split()[2:]).split()
    imap.bad("SORT (SUBJECT) UTF-8 ALL")  # no mailbox selected
    fill(imap)
    imap.bad("SORT (COLOUR) UTF-8 ALL")
    imap.bad("SORT () UTF-8 ALL")
    imap.bad("SORT (SUBJECT) ALL")  # the charset is required
    imap.bad("SORT (REVERSE) UTF-8 ALL")
    imap.no("SORT (SUBJECT) KOI8-R ALL", code="BADCHARSET")


def test_imaplib(imaplib_client: imaplib.IMAP4_SSL) -> None:
    for subject in ("b", "Re: a", "c"):
        imaplib_client.append("INBOX", None, None, f"Subject: {subject}\r\n\r\nhi\r\n".encode())
    imaplib_client.select("INBOX")
    typ, data = imaplib_client.sort("(REVERSE SUBJECT)", "UTF-8", "ALL")
    assert typ == "OK" and data == [b"3 1 2"]


@pytest.mark.parametrize(("subject", "base"), [
    ("Re: hello", "hello"),
    ("RE:  [list] Re: Fwd: hello (fwd)", "hello"),
    ("Re [list]: hello", "hello"),  # subj-refwd: "re" *WSP [subj-blob] ":"
    ("[list] [tag] hello", "hello"),
    ("[list]", "[list]"),  # a blob alone is the subject
    ("Fwd: [fwd: hello]", "hello"),
    ("[Fwd: Re: hello (fwd)]", "hello"),
    ("Reply: hello", "Reply: hello"),
    ("re:", ""),
    ("  spaced\tout   words ", "spaced out words"),
    ("=?utf-8?q?Re=3A_Gr=C3=BC=C3=9Fe?=", "Grüße"),
    (None, ""),
])
def test_base_subject(subject: str | None, base: str) -> None:
    assert base_subject(subject) == base


_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


@settings(max_examples=1500, deadline=None)
@given(st.integers(1900, 2100), st.integers(0, 11), st.integers(1, 31), st.integers(0, 23),
       st.integers(0, 59), st.none() | st.integers(0, 59), st.sampled_from(["+0000", "-0000", "+0530", "-1100"]),
       st.booleans(), st.sampled_from(["", " (UTC)", "  "]))
def test_sent_timestamp_reads_dates_as_the_email_package(year: int, month: int, day: int, hour: int, minute: int,
                                                         second: int | None, zone: str, weekday: bool,
                                                         tail: str) -> None:
    """The fast path for RFC 5322 dates gives the email package's instant, and None where
    that finds no date (31 Feb)."""
    value = (("Mon, " if weekday else "") + f"{day} {_MONTHS[month]} {year} {hour:02}:{minute:02}"
             + (f":{second:02}" if second is not None else "") + f" {zone}{tail}")
    try:
        sent = parsedate_to_datetime(value)
        expected: float | None = (sent if sent.tzinfo else sent.replace(tzinfo=UTC)).timestamp()
    except ValueError:
        expected = None
    assert sent_timestamp(value) == expected


def test_sent_timestamp_of_other_shapes() -> None:
    assert sent_timestamp("3 Jan 2024 08:00:00 GMT") == 1704268800.0  # the email package's path
    assert sent_timestamp("Wed, 3 Jan 2024 08:00:00") == 1704268800.0  # no zone: UTC
    assert sent_timestamp("not a date") is None
    assert sent_timestamp("Wed, 31 Feb 2024 08:00:00 +0000") is None


@pytest.mark.parametrize(("subject", "reply"), [
    ("hello", False), ("[list] hello", False), ("  hello  ", False), ("Re: hello", True),
    ("[list] Fwd: hello", True), ("hello (fwd)", True), ("[fwd: hello]", True), ("Reply: hello", False),
])
def test_reply_or_forward(subject: str, reply: bool) -> None:
    assert subject_parts(subject)[1] is reply


def test_sort_keys_cache_holds_lists_and_lets_go() -> None:
    cache = SortKeyCache(max_bytes=3 * 10 * (_ENTRY_OVERHEAD + 4))  # three lists of ten
    names = [(1, 7, 1, SortKey(key)) for key in ("SUBJECT", "FROM", "TO", "CC")]
    live = set(range(10))
    for name in names[:3]:
        cache.put(name, {uid: b"K%03d" % uid for uid in range(10)}, live)
    assert cache.get(names[0])[9] == b"K009"  # now the most recently used
    cache.put(names[3], {uid: b"K%03d" % uid for uid in range(10)}, live)  # FROM's list goes
    assert cache.get(names[1]) == {} and len(cache.get(names[0])) == 10
    cache.put(names[0], {10: b"K010"}, live | {10})  # merged with what the list held
    assert len(cache.get(names[0])) == 11
    cache.put(names[0], {}, {10})  # ten of eleven expunged: their keys go
    assert cache.get(names[0]) == {10: b"K010"}
    cache.resize(0)
    assert cache.get(names[0]) == {}


def test_repeat_sorts_new_messages_and_other_users(imap: Transcript, connect: Callable[..., Transcript]) -> None:
    """The second SORT answers from the cache; a new message joins the cached order; a
    second user's INBOX (the same mailbox id) is sorted by its own subjects."""
    fill(imap)
    assert sort(imap, "SORT (SUBJECT) UTF-8 ALL") == sort(imap, "SORT (SUBJECT) UTF-8 ALL") == [2, 1, 4, 3]
    append(imap, "INBOX", message("aardvark"))
    imap.ok("NOOP")
    assert sort(imap, "SORT (SUBJECT) UTF-8 ALL") == [5, 2, 1, 4, 3]
    other = fresh_account()
    second = connect(user=other.address, password=other.password)
    for subject in ("zebra", "yak", "Re: xerus"):
        append(second, "INBOX", message(subject))
    second.ok("SELECT INBOX")
    assert sort(second, "SORT (SUBJECT) UTF-8 ALL") == [3, 2, 1]
    assert sort(second, "SORT (REVERSE SUBJECT) UTF-8 ALL") == [1, 2, 3]


def test_kept_order_answers_only_for_the_same_uids() -> None:
    """A kept order is used for exactly the uids it was made for; orders go before keys
    when the budget is spent."""
    cache = SortKeyCache(max_bytes=10 * (_ORDER_ENTRY + 4) + 10 * (_ENTRY_OVERHEAD + 4))
    name = ((1, 7, 1, "ORDER"), (SortCriterion(SortKey.DATE, reverse=True),))
    uids = array("I", range(1, 11))
    ordered = Ordered((11 - i, 11 - i) for i in range(1, 11))
    cache.put_order(name, uids, ordered)
    assert cache.order(name, array("I", range(1, 11))) is ordered
    assert cache.order(name, array("I", range(1, 12))) is None  # another message came
    assert cache.order(name, array("I", range(2, 11))) is None  # one was expunged
    assert cache.order((name[0], (SortCriterion(SortKey.DATE),)), uids) is None  # other criteria
    cache.put((1, 7, 1, SortKey.SUBJECT), {uid: b"K" for uid in range(11)}, set(range(11)))
    assert cache.order(name, uids) is None and len(cache.get((1, 7, 1, SortKey.SUBJECT))) == 11


def test_sort_sees_another_sessions_change(imap: Transcript, connect: Callable[..., Transcript]) -> None:
    """A repeated SORT ... ALL (answered from the kept order) follows what another session
    did once this session has been told of it: an expunge and a newer message."""
    uids = fill(imap)
    for _ in range(2):
        assert sort(imap, "SORT (REVERSE DATE) UTF-8 ALL") == [4, 1, 3, 2]
        assert sort(imap, "UID SORT (REVERSE DATE) UTF-8 ALL") == [uids[3], uids[0], uids[2], uids[1]]
    other = connect()
    other.ok("SELECT INBOX")
    other.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    other.ok("EXPUNGE")
    newest = put(other, "05-Jan-2024 00:00:00", "From: x@example.test\r\nSubject: new\r\n"
                 "Date: Tue, 1 Jan 2030 00:00:00 +0000\r\n", 10)
    told = imap.ok("NOOP")
    assert b"* 1 EXPUNGE" in told and b"* 4 EXISTS" in told
    for _ in range(2):
        assert sort(imap, "SORT (REVERSE DATE) UTF-8 ALL") == [4, 3, 2, 1]
        assert sort(imap, "UID SORT (REVERSE DATE) UTF-8 ALL") == [newest, uids[3], uids[2], uids[1]]


def test_base_subject_of_hostile_subjects() -> None:
    """Thousands of markers come off in one pass over the subject (the steps of §2.1 cut
    the text once, not once per marker)."""
    assert base_subject("Re: " * 20_000 + "x") == "x"
    assert base_subject("[tag] " * 20_000 + "x") == "x"
    assert base_subject("[tag]" * 20_000) == "[tag]"
    assert base_subject("x" + " (fwd)" * 20_000) == "x"
    assert base_subject("[fwd: " * 2_000 + "x" + "]" * 2_000) == "x"


def test_address_keys_use_the_envelope_parse(imap: Transcript) -> None:
    """RFC 5256 §3 / RFC 5957 on the RFC 3501 §7.4.2 envelope: a comment is no part of the
    address, a group counts by its name (its start marker's addr-mailbox), a source route
    is not the mailbox."""
    put(imap, "01-Jan-2024 10:00:00", "From: <zack (the one)@ (c) example.test>\r\n"
        "Cc: Zulu: a@example.test;\r\nSubject: 1\r\n", 10)
    put(imap, "02-Jan-2024 10:00:00", "From: <@relay.example:mike@example.test>\r\n"
        "Cc: b@example.test\r\nSubject: 2\r\n", 10)
    put(imap, "03-Jan-2024 10:00:00", "From: (Anna) adam@example.test\r\n"
        "Cc: undisclosed-recipients:;\r\nSubject: 3\r\n", 10)
    imap.ok("SELECT INBOX")
    assert imap.ok("SORT (FROM) UTF-8 ALL") == [b"* SORT 3 2 1"]  # adam, mike, zack
    assert imap.ok("SORT (CC) UTF-8 ALL") == [b"* SORT 2 3 1"]  # b, undisclosed-recipients, Zulu
    # DISPLAYFROM: the comment is the name of an addr-spec that has none (as Dovecot reads
    # it); the others sort by their addr-spec.
    assert imap.ok("SORT (DISPLAYFROM) UTF-8 ALL") == [b"* SORT 3 2 1"]  # Anna, mike@, zack@
