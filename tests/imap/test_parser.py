"""Unit tests of the IMAP grammar (maild.imap.parser) and the framer's limits."""

from __future__ import annotations

from datetime import UTC, date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maild.imap import parser as parser_module
from maild.imap.commands import (
    Append,
    Create,
    Fetch,
    FetchAtt,
    ListCommand,
    Login,
    Search,
    SearchKey,
    SearchOp,
    Section,
    Select,
    SequenceSet,
    StoreFlags,
    StoreMode,
    UidExpunge,
)
from maild.imap.framer import Complete, Framer, NeedContinuation, Rejected
from maild.imap.names import BadName
from maild.imap.parser import ParseError, parse_command
from maild.util.mutf7 import decode_mailbox, encode_mailbox


def error(data: bytes) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse_command(data)
    return info.value


def test_tags_atoms_and_strings() -> None:
    assert parse_command(b'a1 LOGIN alice "pass \\"word\\""') == Login("a1", "LOGIN", "alice", 'pass "word"')
    assert parse_command(b"A.2 login {5}\r\nalice {3+}\r\npw!") == Login("A.2", "LOGIN", "alice", "pw!")
    assert error(b"+ NOOP").tag is None  # "+" is not a tag character
    assert error(b"a+ NOOP").text == "expected a space"
    assert error(b"t1 NOSUCH").text.startswith("unknown command")
    assert error(b"t1 LOGIN alice").tag == "t1"
    assert error(b'x LOGIN "a\rb" c').text.startswith("CR, LF")
    assert error(b"x LOGIN {10}\r\nabc x").text == "literal shorter than announced"
    assert error(b"x LOGIN \"\xff\" y").text == "string is not valid UTF-8"


def test_sequence_sets() -> None:
    cmd = parse_command(b"a FETCH 1:3,5,7:*,* FLAGS")
    assert isinstance(cmd, Fetch)
    assert cmd.sequence == SequenceSet(((1, 3), (5, 5), (7, None), (None, None)))
    assert list(cmd.sequence.bounds(10)) == [(1, 3), (5, 5), (7, 10), (10, 10)]
    assert SequenceSet(((9, 2),)).contains(5, 10)
    assert error(b"a FETCH 0 FLAGS").text == "message number must not be 0"
    assert error(b"a FETCH 1: FLAGS").text.startswith("expected message number")
    assert error(b"a FETCH 4294967296 FLAGS").text == "message number out of range"


def test_fetch_attributes_and_macros() -> None:
    cmd = parse_command(b"a UID FETCH 1:* (FLAGS BODY.PEEK[1.2.HEADER.FIELDS.NOT (X-A \"b\")]<10.20>"
                        b" BODY[] RFC822.HEADER) (CHANGEDSINCE 12345678901)")
    assert isinstance(cmd, Fetch) and cmd.uid and cmd.changed_since == 12345678901
    assert cmd.attributes == (
        FetchAtt("FLAGS"),
        FetchAtt("BODY", Section((1, 2), "HEADER.FIELDS.NOT", ("X-A", "b")), True, (10, 20)),
        FetchAtt("BODY", Section(), False),
        FetchAtt("RFC822.HEADER"),
        FetchAtt("UID"),  # RFC 3501 §6.4.8
        FetchAtt("MODSEQ"),  # RFC 7162 §3.1.4.1
    )
    assert str(cmd.attributes[1].section) == "1.2.HEADER.FIELDS.NOT (X-A b)"
    full = parse_command(b"a FETCH 1 full")
    assert isinstance(full, Fetch) and full.macro
    assert [a.name for a in full.attributes] == ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"]
    assert parse_command(b"a FETCH 2 BODY[3.MIME]").attributes[0].section == Section((3,), "MIME")  # type: ignore[attr-defined]
    assert FetchAtt("BODY", Section()).sets_seen and not FetchAtt("BODY", Section(), peek=True).sets_seen
    assert error(b"a FETCH 1 BODY[MIME]").text == "bad section MIME"
    assert error(b"a FETCH 1 (FLAGS BOGUS)").text == "unknown fetch attribute BOGUS"
    assert error(b"a FETCH 1 BODY[HEADER.FIELDS ()]").text == "empty header list"
    assert error(b"a FETCH 1 BODY[]<5.0>").text == "partial length must not be 0"


def test_search_keys() -> None:
    cmd = parse_command(b'a UID SEARCH CHARSET UTF-8 OR FROM "b\xc3\xb6b" (SUBJECT x NOT SEEN) '
                        b"SINCE 1-Feb-2024 UNKEYWORD $Junk 2:4 LARGER 100 HEADER X-Spam yes MODSEQ 5")
    assert isinstance(cmd, Search) and cmd.uid and cmd.charset == "UTF-8"
    keys = cmd.key.children
    assert keys[0] == SearchKey(SearchOp.OR, children=(
        SearchKey(SearchOp.HEADER, ("From", "böb")),
        SearchKey(SearchOp.AND, children=(SearchKey(SearchOp.HEADER, ("Subject", "x")),
                                          SearchKey(SearchOp.NOT, children=(SearchKey(SearchOp.FLAG, "\\Seen"),)))),
    ))
    assert keys[1] == SearchKey(SearchOp.SINCE, date(2024, 2, 1))
    assert keys[2] == SearchKey(SearchOp.NOT, children=(SearchKey(SearchOp.FLAG, "$Junk"),))
    assert keys[3] == SearchKey(SearchOp.SEQ, SequenceSet(((2, 4),)))
    assert keys[4] == SearchKey(SearchOp.LARGER, 100)
    assert keys[5] == SearchKey(SearchOp.HEADER, ("X-Spam", "yes"))
    assert keys[6] == SearchKey(SearchOp.MODSEQ, 5)
    every = (b"a SEARCH ALL ANSWERED BCC x BEFORE 1-Jan-2020 BODY y CC z DELETED DRAFT FLAGGED "
             b"FROM f KEYWORD k NEW NOT OLD ON 2-Mar-2021 RECENT SEEN SENTBEFORE 1-Jan-2020 "
             b"SENTON 1-Jan-2020 SENTSINCE 1-Jan-2020 SMALLER 9 TEXT t TO u UID 1:* UNANSWERED "
             b"UNDELETED UNDRAFT UNFLAGGED UNSEEN MODSEQ \"/flags/\\\\draft\" all 620162338")
    assert len(parse_command(every).key.children) == 29  # type: ignore[attr-defined]
    esearch = parse_command(b"a SEARCH RETURN (MIN COUNT) UNSEEN")
    assert isinstance(esearch, Search) and esearch.returns == ("MIN", "COUNT")
    assert error(b"a SEARCH").text == "expected a space"
    assert error(b"a SEARCH (SEEN").text == 'expected ")"'
    assert error(b"a SEARCH SINCE 30-Feb-2020").text == "invalid date"
    assert error(b"a SEARCH NOPE").text == "unknown search key NOPE"


def test_nesting_depth_is_limited() -> None:
    assert error(b"a SEARCH " + b"(" * 40 + b"ALL" + b")" * 40).text == "too deeply nested"
    assert error(b"a SEARCH " + b"NOT " * 40 + b"ALL").text == "too deeply nested"
    assert isinstance(parse_command(b"a SEARCH " + b"(" * 10 + b"ALL" + b")" * 10), Search)


def test_store() -> None:
    cmd = parse_command(b"a UID STORE 1:2 (UNCHANGEDSINCE 7) -FLAGS.SILENT (\\Deleted $Later)")
    assert cmd == StoreFlags("a", "UID STORE", True, SequenceSet(((1, 2),)), StoreMode.REMOVE, True,
                        frozenset({"\\Deleted", "$Later"}), 7)
    plain = parse_command(b"a STORE 3 FLAGS \\seen")
    assert isinstance(plain, StoreFlags) and plain.flags == frozenset({"\\Seen"}) and plain.mode is StoreMode.REPLACE
    assert error(b"a STORE 1 +FLAGS (\\Recent)").text == "\\Recent is not a settable flag"
    assert error(b"a STORE 1 LABELS (x)").text == "expected FLAGS, +FLAGS or -FLAGS"


def test_list_extended_and_status() -> None:
    cmd = parse_command(b'a LIST (SUBSCRIBED RECURSIVEMATCH) "" ("INBOX" "Sent/%") '
                        b"RETURN (CHILDREN SPECIAL-USE STATUS (MESSAGES UNSEEN))")
    assert cmd == ListCommand("a", "LIST", "", ("INBOX", "Sent/%"), frozenset({"SUBSCRIBED", "RECURSIVEMATCH"}),
                              frozenset({"CHILDREN", "SPECIAL-USE", "STATUS"}), ("MESSAGES", "UNSEEN"), True)
    plain = parse_command(b'a LSUB "" *')
    assert isinstance(plain, ListCommand) and not plain.extended and plain.patterns == ("*",)
    assert error(b'a LIST (RECURSIVEMATCH) "" *').text == "RECURSIVEMATCH needs another selection option"
    assert error(b"a STATUS INBOX (MESSAGES BOGUS)").text == "unknown STATUS item BOGUS"


def test_append_select_create_expunge() -> None:
    cmd = parse_command(b'a APPEND Sent (\\Seen) " 7-Feb-2024 21:52:25 -0800" {5}\r\nHello')
    assert isinstance(cmd, Append) and cmd.message == b"Hello" and cmd.flags == frozenset({"\\Seen"})
    assert cmd.date is not None and cmd.date.utcoffset() == -timedelta(hours=8)
    assert cmd.date.astimezone(UTC).day == 8
    assert error(b"a APPEND INBOX Hello").text == "APPEND needs the message as a literal"
    assert parse_command(b"a EXAMINE inbox (CONDSTORE)") == Select("a", "EXAMINE", "INBOX", True, True)
    assert parse_command(b"a SELECT Entw&APw-rfe") == Select("a", "SELECT", "Entwürfe", False)
    assert parse_command(b"a CREATE Archive/2024 (USE (\\Archive))") == Create(
        "a", "CREATE", "Archive/2024", ("\\Archive",))
    assert parse_command(b"a UID EXPUNGE 3:5") == UidExpunge("a", "UID EXPUNGE", SequenceSet(((3, 5),)))
    # A name the server cannot hold is parsed (the server answers NO, not BAD).
    bad = parse_command(b"a SELECT a//b")
    assert isinstance(bad, Select) and isinstance(bad.mailbox, BadName)
    assert bad.mailbox.reason == "Mailbox name has an empty hierarchy level"
    assert parse_command(b"a SELECT &Jjo").mailbox.reason == "Mailbox name is not valid mUTF-7"  # type: ignore[attr-defined]
    assert parse_command(b"a CREATE Work/") == Create("a", "CREATE", "Work", ())  # RFC 3501 §6.3.3
    assert error(b"a UID LOGIN x y").text == "UID LOGIN is not a command"


def test_modified_utf7_round_trip() -> None:
    assert encode_mailbox("Entwürfe & Co") == "Entw&APw-rfe &- Co"
    assert decode_mailbox("&ZeVnLIqe-") == "日本語"
    with pytest.raises(ValueError):
        decode_mailbox("&AGE-")  # ASCII inside base64


@given(st.text(min_size=1, max_size=30).filter(lambda s: "\x00" not in s))
def test_modified_utf7_property(name: str) -> None:
    assert decode_mailbox(encode_mailbox(name)) == name


_TOKENS = st.sampled_from([b"a", b"UID", b"FETCH", b"SEARCH", b"STORE", b"LIST", b"APPEND", b"(", b")",
                           b"[", b"]", b"<", b">", b" ", b"*", b":", b",", b'"', b"\\", b"{3}\r\n",
                           b"{2+}\r\n", b"1", b"0", b"BODY", b"PEEK", b"HEADER.FIELDS", b"NOT", b"OR",
                           b"\xff", b"\r\n", b"INBOX", b"&", b"-", b"+FLAGS", b"RETURN", b"MODSEQ"])


@settings(max_examples=400, deadline=None)
@given(st.lists(_TOKENS, max_size=30))
def test_parser_raises_only_parse_errors(tokens: list[bytes]) -> None:
    try:
        parse_command(b"".join(tokens))
    except ParseError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_parser_on_random_bytes(data: bytes) -> None:
    for prefix in (b"", b"a FETCH ", b"a SEARCH ", b"a LIST "):
        try:
            parse_command(prefix + data)
        except ParseError:
            pass


def test_framer_literals_and_continuations() -> None:
    framer = Framer(max_line=100, max_command=1000, append_limit=50)
    assert framer.feed(b"a LOGIN {5}\r\n") == [NeedContinuation()]
    assert framer.feed(b"alice {3+}\r\nabc\r\nb NOOP\r\n") == [
        Complete(b"a LOGIN {5}\r\nalice {3+}\r\nabc"), Complete(b"b NOOP")]


def test_framer_refuses_before_reading() -> None:
    framer = Framer(max_line=100, max_command=1000, append_limit=50)
    # RFC 7889: an APPEND literal over the limit is refused; the client sends nothing more.
    assert framer.feed(b"a APPEND INBOX {51}\r\n") == [Rejected("a", "message larger than APPENDLIMIT", "TOOBIG")]
    assert framer.feed(b"b NOOP\r\n") == [Complete(b"b NOOP")]
    # a non-synchronizing literal will be sent anyway: the connection must close
    assert framer.feed(b"c APPEND INBOX {51+}\r\n") == [
        Rejected("c", "message larger than APPENDLIMIT", "TOOBIG", fatal=True)]
    framer = Framer(max_line=100, max_command=1000, append_limit=50)
    assert framer.feed(b"d LOGIN {1001}\r\n") == [Rejected("d", "literal too large")]


def test_framer_long_lines_are_skipped() -> None:
    framer = Framer(max_line=20, max_command=1000, append_limit=50)
    assert framer.feed(b"a NOOP " + b"x" * 30) == []
    assert framer.feed(b"y" * 30) == []
    assert framer.feed(b"z\r\nb NOOP\r\n") == [Rejected("a", "line too long"), Complete(b"b NOOP")]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=10))
def test_framer_never_raises(chunks: list[bytes]) -> None:
    framer = Framer(max_line=30, max_command=100, append_limit=60)
    for chunk in chunks:
        for event in framer.feed(chunk):
            assert isinstance(event, (Complete, NeedContinuation, Rejected))


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.none() | st.integers(1, 60), st.none() | st.integers(1, 60)), min_size=1, max_size=12),
       st.integers(1, 60))
def test_sequence_set_membership(ranges: list[tuple[int | None, int | None]], largest: int) -> None:
    """contains() answers as the plain reading of the ranges does, through its index of
    merged ranges for sets of more than four, for another ``largest`` too."""
    sequence = SequenceSet(tuple(ranges))
    for star in (largest, largest + 7):
        spans = list(sequence.bounds(star))
        for value in range(0, 70):
            assert sequence.contains(value, star) == any(lo <= value <= hi for lo, hi in spans)


def test_sequence_set_of_ten_thousand_ranges_is_one_value() -> None:
    text = ",".join(f"{n}:{n + 1}" for n in range(1, 40_000, 4))
    cmd = parse_command(f"a UID FETCH {text} FLAGS".encode())
    assert isinstance(cmd, Fetch) and len(cmd.sequence.ranges) == 10_000
    assert cmd.sequence.contains(39_998, 1) and not cmd.sequence.contains(39_999, 1)
    assert cmd.sequence == SequenceSet(cmd.sequence.ranges)  # the index is no part of the value


def test_a_repeated_command_is_the_same_command_under_its_new_tag() -> None:
    first = parse_command(b"a1 UID FETCH 1:20 (UID FLAGS RFC822.SIZE ENVELOPE)")
    again = parse_command(b"b77 UID FETCH 1:20 (UID FLAGS RFC822.SIZE ENVELOPE)")
    assert isinstance(again, Fetch) and again.tag == "b77" and first.tag == "a1"
    assert again == Fetch(**{**first.__dict__, "tag": "b77"})
    # A mailbox name is decoded per the session's UTF8=ACCEPT (RFC 6855 §3: no modified
    # UTF-7 then), so the two parses are never shared.
    plain = parse_command(b"c SELECT &AOQ-")
    utf8 = parse_command(b"d SELECT &AOQ-", utf8=True)
    assert isinstance(plain, Select) and isinstance(utf8, Select)
    assert (plain.mailbox, utf8.mailbox) == ("\u00e4", "&AOQ-")
    with pytest.raises(ParseError):  # an error is never kept as a command
        parse_command(b"e FETCH 1:20 (UID FLAGS")
    with pytest.raises(ParseError):
        parse_command(b"f FETCH 1:20 (UID FLAGS")


def _events(framer: Framer, chunks: list[bytes]) -> list[object]:
    return [event for chunk in chunks for event in framer.feed(chunk)]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b"a NOOP", b"b SELECT {3}", b"{5+}", b"}", b"\r", b"\n", b"\r\n", b"x" * 25,
                                 b" ", b"c1 UID FETCH 1:* FLAGS", b"\r\r\n", b"}\r\n", b"a NOOP\r\n",
                                 b"b SELECT {3}\r\n", b"c LOGIN a {2+}\r\n", b"d NOOP {1}\r\r\n"]), max_size=12))
def test_framer_cuts_the_same_commands_from_whole_lines_as_from_pieces(parts: list[bytes]) -> None:
    """A whole line fed at once takes a shortcut (Framer.feed): the same events as when its
    last octet comes apart, which always goes through the buffer."""
    whole = Framer(max_line=30, max_command=100, append_limit=60)
    split = Framer(max_line=30, max_command=100, append_limit=60)
    assert _events(whole, parts) == _events(split, [piece for p in parts for piece in (p[:-1], p[-1:])])


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=6).filter(lambda t: b" " not in t),
       st.sampled_from([b" NOOP", b" SELECT INBOX", b" UID FETCH 1:* (FLAGS)", b" STATUS x (MESSAGES)", b" NOOP x"]))
def test_a_kept_parse_is_used_only_under_a_valid_tag(tag: bytes, rest: bytes) -> None:
    """A repeated command's kept parse is looked up before the tag is read: whatever the
    tag, the answer is that of a parse from scratch."""
    def outcome(data: bytes) -> object:
        try:
            return parse_command(data)
        except ParseError as exc:
            return ("BAD", exc.tag, exc.text)

    parser_module._PARSED.clear()
    fresh = outcome(tag + rest)
    outcome(b"kept" + rest)  # now kept (when valid)
    assert outcome(tag + rest) == fresh
