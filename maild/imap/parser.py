"""The IMAP command grammar (RFC 3501 §9, RFC 9051 §9 and the extensions maild offers),
parsed at the edge into typed command objects.

:func:`parse_command` turns one complete command (without its final CRLF, as cut by
:class:`maild.imap.framer.Framer`) into a command dataclass of :mod:`maild.imap.commands`,
or raises :class:`ParseError` with the reason to put in the tagged BAD. It never raises
anything else, whatever the input (property-tested).

Mailbox names arrive in modified UTF-7 (RFC 3501 §5.1.3) and are decoded here; the rest of
maild sees Unicode names with "/" as the hierarchy delimiter.

A parse depends only on the octets and the session's UTF8=ACCEPT; so the parse of a
repeated read or flag command is kept by the octets after its tag (``_PARSED``, bounded)
and handed out again under the new tag. Commands are frozen dataclasses of immutable
values; a command object must never be changed after parsing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import TypeVar

from maild.imap import names
from maild.imap.commands import (
    Append,
    AppendMessage,
    Authenticate,
    CancelUpdate,
    Command,
    Compress,
    Copy,
    Create,
    Enable,
    EventGroup,
    Fetch,
    FetchAtt,
    GetMetadata,
    Id,
    ListCommand,
    Login,
    MailboxCommand,
    MultiAppend,
    Notify,
    Qresync,
    QuotaCommand,
    Rename,
    Search,
    SearchKey,
    SearchOp,
    Section,
    Select,
    SequenceSet,
    SetMetadata,
    Simple,
    Sort,
    SortCriterion,
    SortKey,
    Status,
    StoreFlags,
    StoreMode,
    Thread,
    UidExpunge,
)

T = TypeVar("T")

MAX_DEPTH = 32  # parenthesised search keys / lists nested deeper than this are refused
MAX_NUMBER = 2**32 - 1  # RFC 3501 §9 number: unsigned 32-bit
MAX_NUMBER64 = 2**63 - 1  # RFC 7162 §7 mod-sequence-value

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
# RFC 3501 §9: ATOM-CHAR is any CHAR except atom-specials.
_ATOM_SPECIALS = frozenset(b'(){ %*"\\]') | frozenset(range(0x20)) | {0x7F}
_TAG_SPECIALS = _ATOM_SPECIALS | {ord("+")}
_ASTRING_SPECIALS = _ATOM_SPECIALS - {ord("]")}
_LIST_SPECIALS = _ASTRING_SPECIALS - {ord("%"), ord("*")}


class ParseError(Exception):
    """A syntax error: ``text`` goes into ``<tag> BAD <text>`` (tag ``*`` if unknown)."""

    def __init__(self, text: str, tag: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.tag = tag


_SIMPLE_ATTS = ("FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE",
                "RFC822", "RFC822.HEADER", "RFC822.TEXT", "MODSEQ",
                "EMAILID", "THREADID",  # RFC 8474 §5
                "SAVEDATE")  # RFC 8514 §4
# RFC 3501 §6.4.5 macros.
_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}


_FLAG_KEYS = {"ANSWERED": "\\Answered", "DELETED": "\\Deleted", "DRAFT": "\\Draft",
              "FLAGGED": "\\Flagged", "SEEN": "\\Seen"}
_STRING_HEADER_KEYS = ("BCC", "CC", "FROM", "SUBJECT", "TO")
_DATE_KEYS = ("BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE",
              "SAVEDBEFORE", "SAVEDON", "SAVEDSINCE")  # RFC 8514 §5


THREAD_ALGORITHMS = ("ORDEREDSUBJECT", "REFERENCES")


# -- the reader ---------------------------------------------------------------------------------

# _Reader._run's compiled pattern per (specials, eight_bit): a handful of fixed sets.
_RUNS: dict[tuple[frozenset[int], bool], re.Pattern[bytes]] = {}


def _run_pattern(specials: frozenset[int], eight_bit: bool) -> re.Pattern[bytes]:
    """The regular expression of a run of octets not in ``specials`` (nor 8-bit, unless
    ``eight_bit``)."""
    key = (specials, eight_bit)
    pattern = _RUNS.get(key)
    if pattern is None:
        excluded = b"".join(re.escape(bytes([c])) for c in sorted(specials))
        pattern = _RUNS[key] = re.compile(b"[^" + excluded + (b"" if eight_bit else b"\x80-\xff") + b"]*")
    return pattern


@dataclass
class _Reader:
    data: bytes
    pos: int = 0
    depth: int = 0
    tag: str | None = None
    utf8: bool = False  # UTF8=ACCEPT enabled: mailbox names are UTF-8, not mUTF-7 (RFC 6855 §3)

    def error(self, text: str) -> ParseError:
        return ParseError(text, self.tag)

    def peek(self) -> int | None:
        return self.data[self.pos] if self.pos < len(self.data) else None

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def expect(self, token: bytes, what: str | None = None) -> None:
        if not self.data.startswith(token, self.pos):
            raise self.error(f"expected {what or token.decode()}")
        self.pos += len(token)

    def sp(self) -> None:
        self.expect(b" ", "a space")

    def maybe(self, token: bytes) -> bool:
        if self.data.startswith(token, self.pos):
            self.pos += len(token)
            return True
        return False

    def maybe_ci(self, word: str) -> bool:
        end = self.pos + len(word)
        if self.data[self.pos:end].upper() == word.encode():
            self.pos = end
            return True
        return False

    def end(self) -> None:
        if not self.at_end():
            raise self.error("unexpected characters at the end of the command")

    def _run(self, specials: frozenset[int], eight_bit: bool = False) -> bytes:
        """The longest run of octets from here not in ``specials`` (nor 8-bit, unless
        ``eight_bit``): one regular-expression match, not a loop over the octets."""
        match = _run_pattern(specials, eight_bit).match(self.data, self.pos)
        assert match is not None  # a starred class matches the empty run
        self.pos = match.end()
        return match.group()

    def atom(self, what: str = "an atom") -> str:
        raw = self._run(_ATOM_SPECIALS)
        if not raw:
            raise self.error(f"expected {what}")
        return raw.decode("ascii")

    def word(self) -> str:
        """An atom, upper-cased (keywords of the grammar)."""
        return self.atom("a keyword").upper()

    def number(self, limit: int = MAX_NUMBER, what: str = "a number") -> int:
        start = self.pos
        while self.pos < len(self.data) and 0x30 <= self.data[self.pos] <= 0x39:
            self.pos += 1
        digits = self.data[start:self.pos]
        if not digits or len(digits) > 20:
            raise self.error(f"expected {what}")
        value = int(digits)
        if value > limit:
            raise self.error(f"{what} out of range")
        return value

    def nz_number(self, limit: int = MAX_NUMBER, what: str = "a number") -> int:
        value = self.number(limit, what)
        if value == 0:
            raise self.error(f"{what} must not be 0")
        return value

    def literal(self) -> bytes:
        self.expect(b"{")
        size = self.number(what="literal size")
        self.maybe(b"+")
        self.expect(b"}\r\n", "CRLF after the literal size")
        if self.pos + size > len(self.data):
            raise self.error("literal shorter than announced")
        value = self.data[self.pos:self.pos + size]
        self.pos += size
        return value

    def literal8(self) -> bytes:
        """RFC 3516 §4.1 literal8, ``~{n}`` (``~{n+}`` with LITERAL+, RFC 7888 §4)."""
        self.expect(b"~", "a literal8")
        return self.literal()

    def quoted(self) -> bytes:
        self.expect(b'"')
        out = bytearray()
        data = self.data
        while True:
            if self.pos >= len(data):
                raise self.error("unterminated quoted string")
            c = data[self.pos]
            self.pos += 1
            if c == 0x22:
                return bytes(out)
            if c == 0x5C:
                if self.pos >= len(data) or data[self.pos] not in (0x22, 0x5C):
                    raise self.error("bad escape in quoted string")
                c = data[self.pos]
                self.pos += 1
            elif c in (0x0D, 0x0A, 0x00):
                raise self.error("CR, LF or NUL in quoted string")
            out.append(c)

    def string_bytes(self) -> bytes:
        c = self.peek()
        if c == 0x22:
            return self.quoted()
        if c == 0x7B:
            return self.literal()
        raise self.error("expected a string")

    def astring_bytes(self, specials: frozenset[int] = _ASTRING_SPECIALS) -> bytes:
        c = self.peek()
        if c in (0x22, 0x7B):
            return self.string_bytes()
        # 8-bit atoms: RFC 3501 says 7-bit, but clients send UTF-8 search strings and names
        # unquoted (RFC 9051 §4.3 allows UTF-8); callers validate the UTF-8.
        raw = self._run(specials, eight_bit=True)
        if not raw:
            raise self.error("expected a string or atom")
        return raw

    def astring(self) -> str:
        return _utf8(self.astring_bytes(), self)

    def nstring_or_nil(self) -> str | None:
        if self.maybe_ci("NIL"):
            return None
        return _utf8(self.string_bytes(), self)

    def mailbox(self, trailing_separator: bool = False) -> str:
        """A mailbox name; one the server cannot hold is a :class:`names.BadName` (the
        command answers NO, not BAD). ``trailing_separator``: CREATE's, ignored (RFC 3501
        §6.3.3)."""
        raw = self.astring_bytes()
        if trailing_separator and raw.endswith(b"/") and raw.strip(b"/"):
            raw = raw[:-1]
        return names.decode(_utf8(raw, self), self.utf8)  # bytes that are not UTF-8 are a syntax error

    def list_mailbox(self) -> str:
        """A LIST reference or pattern; one not valid mUTF-7 is a :class:`names.BadName`
        that matches nothing."""
        c = self.peek()
        raw = self.string_bytes() if c in (0x22, 0x7B) else self._run(_LIST_SPECIALS)
        decoded = names.pattern(raw, self.utf8)
        return names.BadName(raw.decode("utf-8", "replace"), "Not valid mUTF-7") if decoded is None else decoded

    def open_paren(self) -> None:
        self.expect(b"(", '"("')
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error("too deeply nested")

    def close_paren(self) -> None:
        self.expect(b")", '")"')
        self.depth -= 1

    def paren_list(self, item: Callable[[], T]) -> list[T]:
        """``(item SP item ...)``, possibly empty."""
        self.open_paren()
        out: list[T] = []
        if not self.maybe(b")"):
            while True:
                out.append(item())
                if self.maybe(b")"):
                    break
                self.sp()
        self.depth -= 1
        return out

    def special_use(self) -> str:
        self.expect(b"\\", "a special-use flag")
        return "\\" + self.atom("a special-use flag")

    def flag(self) -> str:
        if self.maybe(b"\\"):
            name = self.atom("a flag name")
            system = {"ANSWERED": "\\Answered", "FLAGGED": "\\Flagged", "DELETED": "\\Deleted",
                      "SEEN": "\\Seen", "DRAFT": "\\Draft"}.get(name.upper())
            if system is None:
                raise self.error(f"\\{name} is not a settable flag")
            return system
        return self.atom("a flag")

    def flag_list(self) -> frozenset[str]:
        return frozenset(self.paren_list(self.flag))

    def sequence_set(self, saved_ok: bool = True) -> SequenceSet:
        if saved_ok and self.maybe(b"$"):
            return SequenceSet((), saved=True)  # RFC 5182 §2.1: "$" stands alone
        ranges: list[tuple[int | None, int | None]] = []
        while True:
            a = self._seq_number()
            b = self._seq_number() if self.maybe(b":") else a
            ranges.append((a, b))
            if not self.maybe(b","):
                break
            if len(ranges) > 10000:
                raise self.error("sequence set too long")
        return SequenceSet(tuple(ranges))

    def _seq_number(self) -> int | None:
        if self.maybe(b"*"):
            return None
        return self.nz_number(what="message number")

    def date(self) -> datetime:
        """RFC 3501 §9 date: date-text or DQUOTE date-text DQUOTE (day-month-year)."""
        quoted = self.maybe(b'"')
        day = self.number(31, "day")
        self.expect(b"-", "date")
        month = self._month()
        self.expect(b"-", "date")
        year = self.number(9999, "year")
        if quoted:
            self.expect(b'"')
        try:
            return datetime(year, month, day, tzinfo=UTC)
        except ValueError:
            raise self.error("invalid date") from None

    def _month(self) -> int:
        raw = self.data[self.pos:self.pos + 3].upper()
        try:
            month = _MONTHS.index(raw.decode("ascii", "replace")) + 1
        except ValueError:
            raise self.error("bad month name") from None
        self.pos += 3
        return month

    def date_time(self) -> datetime:
        """RFC 3501 §9 date-time: "dd-Mon-yyyy hh:mm:ss +zzzz" (day may be space-padded)."""
        self.expect(b'"', "a quoted date-time")
        if self.maybe(b" "):
            day = self.number(9, "day")
        else:
            day = self.number(31, "day")
        self.expect(b"-", "date-time")
        month = self._month()
        self.expect(b"-", "date-time")
        year = self.number(9999, "year")
        self.sp()
        hour = self.number(23, "hour")
        self.expect(b":", "time")
        minute = self.number(59, "minute")
        self.expect(b":", "time")
        second = self.number(60, "second")
        self.sp()
        sign = self.peek()
        if sign not in (0x2B, 0x2D):
            raise self.error("expected a zone")
        self.pos += 1
        zone_raw = self.data[self.pos:self.pos + 4]
        if len(zone_raw) != 4 or not zone_raw.isdigit():
            raise self.error("bad zone")
        self.pos += 4
        self.expect(b'"')
        offset = timedelta(hours=int(zone_raw[:2]), minutes=int(zone_raw[2:]))
        if offset >= timedelta(hours=24):
            raise self.error("bad zone")
        try:
            return datetime(year, month, day, hour, minute, min(second, 59),
                            tzinfo=timezone(-offset if sign == 0x2D else offset))
        except ValueError:
            raise self.error("invalid date-time") from None


def _utf8(raw: bytes, reader: _Reader) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise reader.error("string is not valid UTF-8") from None


# -- command grammar ------------------------------------------------------------------------

def parse_command(data: bytes, utf8: bool = False) -> Command:
    """Parse one complete command (literals inline, no final CRLF); ``utf8``: the session
    enabled UTF8=ACCEPT (RFC 6855)."""
    space = data.find(b" ")
    if space > 0:
        parsed = _PARSED.get((data[space:], utf8))
        if parsed is not None and _TAG_RUN.fullmatch(data, 0, space):
            return _retagged(parsed, data[:space].decode("ascii"))  # as below, without a reader
    r = _Reader(data, utf8=utf8)
    tag_raw = r._run(_TAG_SPECIALS)
    if not tag_raw:
        raise ParseError("missing or invalid tag")
    r.tag = tag_raw.decode("ascii")
    if r.at_end():
        raise r.error("missing command")
    key = (data[r.pos:], utf8)
    parsed = _PARSED.get(key)
    if parsed is not None:
        return _retagged(parsed, r.tag)
    command = _parse_rest(r)
    if len(key[0]) <= PARSED_MAX_LENGTH and command.name in _REPEATED:
        if len(_PARSED) >= PARSED_KEPT:
            _PARSED.clear()
        _PARSED[key] = command
    return command


# Clients repeat the same commands with new tags (a FETCH of the newest messages, a UID
# STORE, STATUS of every folder, NOOP): their parse is kept by the octets after the tag.
# Commands are frozen dataclasses of immutable values, so a kept one is shared, retagged.
_REPEATED = frozenset({"NOOP", "CHECK", "SELECT", "EXAMINE", "STATUS", "FETCH", "UID FETCH", "STORE",
                       "UID STORE", "SEARCH", "UID SEARCH", "LIST", "LSUB", "IDLE", "UNSELECT", "CLOSE"})
PARSED_KEPT = 1024
PARSED_MAX_LENGTH = 256
_PARSED: dict[tuple[bytes, bool], Command] = {}
_TAG_RUN = _run_pattern(_TAG_SPECIALS, False)


def _retagged(command: Command, tag: str) -> Command:
    copy = object.__new__(type(command))
    copy.__dict__.update(command.__dict__)
    object.__setattr__(copy, "tag", tag)
    return copy


def _parse_rest(r: _Reader) -> Command:
    assert r.tag is not None
    r.sp()
    name = r.word()
    uid = False
    if name == "UID":
        r.sp()
        name = r.word()
        if name not in ("FETCH", "STORE", "SEARCH", "SORT", "THREAD", "COPY", "MOVE", "EXPUNGE"):
            raise r.error(f"UID {name} is not a command")
        uid = True
    parser = _COMMANDS.get(name)
    if parser is None:
        raise r.error(f"unknown command {name[:40]}")
    command = parser(r, r.tag, ("UID " + name) if uid else name, uid)
    r.end()
    return command


def _simple(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    return Simple(tag, name)


def _login(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    r.sp()
    user = r.astring()
    r.sp()
    password = r.astring()
    return Login(tag, name, user, password)


def _authenticate(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    r.sp()
    mechanism = r.word()
    initial = None
    if r.maybe(b" "):
        initial = b"" if r.maybe(b"=") else r._run(_ATOM_SPECIALS)
        if not r.at_end():
            raise r.error("bad initial response")
    return Authenticate(tag, name, mechanism, initial)


def _id(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    r.sp()
    if r.maybe_ci("NIL"):
        return Id(tag, name, None)
    items = r.paren_list(r.nstring_or_nil)
    if len(items) % 2 or len(items) > 60:
        raise r.error("ID takes up to 30 field/value pairs")
    params: dict[str, str | None] = {}
    for key, value in zip(items[::2], items[1::2], strict=True):
        if key is None:
            raise r.error("ID field name must be a string")
        params[key] = value
    return Id(tag, name, params)


def _enable(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    caps = []
    while r.maybe(b" "):
        caps.append(r.word())
    if not caps:
        raise r.error("ENABLE needs a capability")
    return Enable(tag, name, tuple(caps))


MAX_ENTRY_NAME = 256  # octets of a metadata entry name
_ENTRY = re.compile(rb"/(private|shared)(/[\x21-\x24\x26-\x29\x2b-\x2e\x30-\x7e]+)+\Z", re.IGNORECASE)


def _metadata_mailbox(r: _Reader) -> str:
    """A mailbox name, or "" for the server's (the user's own) entries (RFC 5464 §4)."""
    if r.data.startswith(b'""', r.pos):
        r.pos += 2
        return ""
    return r.mailbox()


def _entry(r: _Reader) -> str:
    """RFC 5464 §5 entry: /private/... or /shared/..., no "*", "%", "//", trailing "/" or
    control characters; compared without case, kept in lower case."""
    raw = r.astring_bytes()
    if len(raw) > MAX_ENTRY_NAME or not _ENTRY.match(raw):
        raise r.error("bad metadata entry name")
    return raw.decode("ascii").lower()


def _getmetadata(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    # RFC 5464 §5: "GETMETADATA" [SP getmetadata-options] SP mailbox SP entries
    r.sp()
    maxsize = None
    depth = "0"
    if r.peek() == 0x28:
        r.open_paren()
        while True:
            option = r.word()
            r.sp()
            if option == "MAXSIZE" and maxsize is None:
                maxsize = r.number(what="MAXSIZE")
            elif option == "DEPTH":
                depth = r.word()
                if depth not in ("0", "1", "INFINITY"):
                    raise r.error("DEPTH is 0, 1 or infinity")
            else:
                raise r.error(f"unknown GETMETADATA option {option[:40]}")
            if r.maybe(b")"):
                break
            r.sp()
        r.depth -= 1
        r.sp()
    mailbox = _metadata_mailbox(r)
    r.sp()
    entries = r.paren_list(lambda: _entry(r)) if r.peek() == 0x28 else [_entry(r)]
    if not entries:
        raise r.error("GETMETADATA needs an entry")
    return GetMetadata(tag, name, mailbox, tuple(entries), maxsize, depth)


def _setmetadata(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    # RFC 5464 §5: "SETMETADATA" SP mailbox SP "(" entry-value *(SP entry-value) ")",
    # entry-value = entry SP value, value = nstring / literal8
    r.sp()
    mailbox = _metadata_mailbox(r)
    r.sp()

    def entry_value() -> tuple[str, bytes | None]:
        entry = _entry(r)
        r.sp()
        if r.maybe_ci("NIL"):
            return entry, None
        return entry, r.literal8() if r.peek() == 0x7E else r.string_bytes()
    items = r.paren_list(entry_value)
    if not items:
        raise r.error("SETMETADATA needs an entry")
    return SetMetadata(tag, name, mailbox, tuple(items))


def _cancelupdate(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    tags = []  # RFC 5267 §5: "CANCELUPDATE" 1*(SP quoted)
    while r.maybe(b" "):
        tags.append(_utf8(r.quoted(), r))
    if not tags:
        raise r.error("CANCELUPDATE needs a tag")
    return CancelUpdate(tag, name, tuple(tags))


MAX_EVENT_GROUPS = 64  # event-groups in one NOTIFY
NOTIFY_FILTERS = frozenset({"SELECTED", "SELECTED-DELAYED", "INBOXES", "PERSONAL", "SUBSCRIBED",
                            "SUBTREE", "MAILBOXES"})
# RFC 5465 §8 event names (compared without case), in the RFC's spelling.
NOTIFY_EVENTS = {name.upper(): name for name in (
    "MessageNew", "MessageExpunge", "FlagChange", "AnnotationChange", "MailboxName",
    "SubscriptionChange", "MailboxMetadataChange", "ServerMetadataChange")}


def _notify(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    # RFC 5465 §8: notify = "NOTIFY" SP (notify-set / notify-none);
    # notify-set = "SET" [status-indicator] SP event-groups; status-indicator = SP "STATUS"
    r.sp()
    word = r.word()
    if word == "NONE":
        return Notify(tag, name, None)
    if word != "SET":
        raise r.error("NOTIFY takes SET or NONE")
    r.sp()
    status = r.maybe_ci("STATUS ")
    groups = [_event_group(r)]
    while r.maybe(b" "):
        if len(groups) >= MAX_EVENT_GROUPS:
            raise r.error("too many NOTIFY event groups")
        groups.append(_event_group(r))
    return Notify(tag, name, tuple(groups), status)


def _event_group(r: _Reader) -> EventGroup:
    # event-group = "(" filter-mailboxes SP events ")"; filter-mailboxes = "selected" /
    # "selected-delayed" / "inboxes" / "personal" / "subscribed" /
    # ("subtree" / "mailboxes") SP one-or-more-mailbox
    r.open_paren()
    kind = r.word()
    if kind not in NOTIFY_FILTERS:
        raise r.error(f"unknown NOTIFY mailbox filter {kind[:40]}")
    mailboxes: list[str] = []
    if kind in ("SUBTREE", "MAILBOXES"):
        r.sp()
        mailboxes = r.paren_list(r.mailbox) if r.peek() == 0x28 else [r.mailbox()]
        if not mailboxes:
            raise r.error("empty mailbox list")
    r.sp()
    events: list[str] = []
    fetch: list[FetchAtt] = []
    if not r.maybe_ci("NONE"):  # events = ( "(" event *(SP event) ")" ) / "NONE"
        r.open_paren()
        while True:
            atom = r.atom("an event")
            event = NOTIFY_EVENTS.get(atom.upper(), atom)
            events.append(event)
            # message-event = ("MessageNew" [SP "(" fetch-att *(SP fetch-att) ")"]) / ...
            if event == "MessageNew" and r.data.startswith(b" (", r.pos):
                r.sp()
                fetch = r.paren_list(lambda: _fetch_att(r))
                if not fetch:
                    raise r.error("empty fetch attribute list")
            if r.maybe(b")"):
                break
            r.sp()
        r.depth -= 1
    r.close_paren()
    return EventGroup(kind, tuple(mailboxes), tuple(events), tuple(fetch))


def _compress(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    r.sp()  # RFC 4978 §5: "COMPRESS" SP algorithm
    return Compress(tag, name, r.word())


def _select(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    r.sp()
    mailbox = r.mailbox()
    condstore = False
    qresync = None
    if r.maybe(b" "):
        for param in r.paren_list(lambda: _select_param(r, name)):
            if isinstance(param, Qresync):
                qresync = param
            else:
                condstore = True
    return Select(tag, name, mailbox, name == "EXAMINE", condstore, qresync)


def _select_param(r: _Reader, command: str) -> Qresync | str:
    word = r.word()
    if word == "CONDSTORE":  # RFC 7162 §3.1.8
        return word
    if word == "QRESYNC":  # RFC 7162 §3.2.5
        r.sp()
        return _qresync(r)
    raise r.error(f"unknown {command} parameter {word[:40]}")


def _qresync(r: _Reader) -> Qresync:
    # "(" uidvalidity SP mod-sequence-value [SP known-uids] [SP seq-match-data] ")"
    r.open_paren()
    uidvalidity = r.nz_number(what="UIDVALIDITY")
    r.sp()
    modseq = r.number(MAX_NUMBER64, "mod-sequence")
    known_uids = seq_match = None
    if r.maybe(b" "):
        if r.peek() != 0x28:
            known_uids = r.sequence_set(saved_ok=False)
        if known_uids is None or r.maybe(b" "):
            r.open_paren()
            known_seqs = r.sequence_set(saved_ok=False)
            r.sp()
            seq_match = (known_seqs, r.sequence_set(saved_ok=False))
            r.close_paren()
    r.close_paren()
    return Qresync(uidvalidity, modseq, known_uids, seq_match)


def _create(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    r.sp()
    mailbox = r.mailbox(trailing_separator=True)
    uses: list[str] = []
    if r.maybe(b" "):
        r.open_paren()
        if not r.maybe_ci("USE"):  # RFC 6154 §3
            raise r.error("unknown CREATE parameter")
        r.sp()
        uses = r.paren_list(r.special_use)
        r.close_paren()
    return Create(tag, name, mailbox, tuple(uses))


def _mailbox_command(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    r.sp()
    return MailboxCommand(tag, name, r.mailbox())


def _rename(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    r.sp()
    old = r.mailbox()
    r.sp()
    return Rename(tag, name, old, r.mailbox())


_SELECTION_OPTIONS = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
_RETURN_OPTIONS = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"})
STATUS_ITEMS = frozenset({"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN",
                          "HIGHESTMODSEQ", "SIZE", "APPENDLIMIT", "MAILBOXID",
                          "DELETED"})  # DELETED: RFC 9051 §6.3.11


def _list(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    r.sp()
    selection: frozenset[str] = frozenset()
    extended = False
    if name == "LIST" and r.peek() == 0x28:
        extended = True  # RFC 5258 §3: list-select-opts
        selection = frozenset(r.paren_list(r.word))
        if selection - _SELECTION_OPTIONS:
            raise r.error(f"unknown LIST selection option {sorted(selection - _SELECTION_OPTIONS)[0][:40]}")
        if "RECURSIVEMATCH" in selection and not selection & {"SUBSCRIBED"}:
            raise r.error("RECURSIVEMATCH needs another selection option")  # RFC 5258 §3
        r.sp()
    reference = r.list_mailbox()
    r.sp()
    if name == "LIST" and r.peek() == 0x28:
        extended = True
        patterns = tuple(r.paren_list(r.list_mailbox))
        if not patterns:
            raise r.error("empty pattern list")
    else:
        patterns = (r.list_mailbox(),)
    returns: set[str] = set()
    status: tuple[str, ...] = ()
    if name == "LIST" and r.maybe(b" "):
        extended = True
        if not r.maybe_ci("RETURN "):
            raise r.error("expected RETURN")
        r.open_paren()
        if not r.maybe(b")"):
            while True:
                option = r.word()
                if option not in _RETURN_OPTIONS:
                    raise r.error(f"unknown LIST return option {option[:40]}")
                returns.add(option)
                if option == "STATUS":  # RFC 5819 §2
                    r.sp()
                    status = tuple(r.paren_list(r.word))
                    if not status or set(status) - STATUS_ITEMS:
                        raise r.error("bad STATUS return items")
                if r.maybe(b")"):
                    break
                r.sp()
        r.depth -= 1
    return ListCommand(tag, name, reference, patterns, selection, frozenset(returns), status, extended)


def _status(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    r.sp()
    mailbox = r.mailbox()
    r.sp()
    items = tuple(r.paren_list(r.word))
    if not items:
        raise r.error("STATUS needs at least one item")
    unknown = set(items) - STATUS_ITEMS
    if unknown:
        raise r.error(f"unknown STATUS item {sorted(unknown)[0][:40]}")
    return Status(tag, name, mailbox, items)


MAX_MULTIAPPEND = 1000  # messages in one MULTIAPPEND
MAX_CATENATE = 256  # parts of one CATENATE


def _append(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    # RFC 3502 §6.3.11: append = "APPEND" SP mailbox 1*append-message
    r.sp()
    mailbox = r.mailbox()
    messages = [_append_message(r)]
    while not r.at_end():
        if len(messages) >= MAX_MULTIAPPEND:
            raise r.error(f"at most {MAX_MULTIAPPEND} messages in one APPEND")
        messages.append(_append_message(r))
    if len(messages) > 1 or messages[0].catenate:
        return MultiAppend(tag, name, mailbox, tuple(messages))
    first = messages[0]
    return Append(tag, name, mailbox, first.flags, first.date, first.message)


def _append_message(r: _Reader) -> AppendMessage:
    # append-message = [SP flag-list] [SP date-time] SP literal
    r.sp()
    flags: frozenset[str] = frozenset()
    date = None
    if r.peek() == 0x28:
        flags = r.flag_list()
        r.sp()
    if r.peek() == 0x22:
        date = r.date_time()
        r.sp()
    if r.maybe_ci("CATENATE "):
        # RFC 4469 §5: "CATENATE" SP "(" cat-part *(SP cat-part) ")"
        parts = r.paren_list(lambda: _cat_part(r))
        if not parts or len(parts) > MAX_CATENATE:
            raise r.error(f"CATENATE takes 1 to {MAX_CATENATE} parts")
        return AppendMessage(flags, date, b"", tuple(parts))
    if r.maybe_ci("UTF8 ("):
        # RFC 6855 §4: append-data =/ "UTF8" SP "(" literal8 ")", after ENABLE UTF8=ACCEPT.
        if not r.utf8:
            raise r.error("UTF8 APPEND data needs ENABLE UTF8=ACCEPT")
        message = r.literal8()
        r.expect(b")", '")"')
        return AppendMessage(flags, date, message)
    if r.peek() == 0x7E:
        return AppendMessage(flags, date, r.literal8())  # RFC 3516 §4.4
    if r.peek() != 0x7B:
        raise r.error("APPEND needs the message as a literal")
    return AppendMessage(flags, date, r.literal())


def _cat_part(r: _Reader) -> tuple[str, bytes]:
    # cat-part = text-literal / url; text-literal = "TEXT" SP literal; url = "URL" SP astring
    word = r.word()
    r.sp()
    if word == "TEXT":
        return word, r.literal8() if r.peek() == 0x7E else r.literal()
    if word == "URL":
        return word, r.astring_bytes()
    raise r.error("a CATENATE part is TEXT or URL")


def _quota(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    r.sp()
    root = r.astring()
    if name == "SETQUOTA":
        r.sp()

        def resource() -> None:  # RFC 2087 §4.1: setquota_resource
            r.atom()
            r.sp()
            r.number(MAX_NUMBER64)

        r.paren_list(resource)
    return QuotaCommand(tag, name, root)


def _fetch(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    r.sp()
    sequence = r.sequence_set()
    r.sp()
    macro = False
    if r.peek() == 0x28:
        atts = r.paren_list(lambda: _fetch_att(r))
        if not atts:
            raise r.error("empty fetch attribute list")
    else:
        word_start = r.pos
        word = r.word()
        if word in _MACROS:
            atts = [FetchAtt(a) for a in _MACROS[word]]
            macro = True
        else:
            r.pos = word_start
            atts = [_fetch_att(r)]
    changed_since = None
    vanished = False
    if r.maybe(b" "):
        for modifier, value in r.paren_list(lambda: _fetch_modifier(r)):
            if modifier == "CHANGEDSINCE" and changed_since is None:
                changed_since = value
            elif modifier == "VANISHED" and not vanished:
                vanished = True
            else:
                raise r.error(f"FETCH modifier {modifier} given twice")
        if vanished and (not uid or changed_since is None):
            raise r.error("VANISHED is a modifier of UID FETCH with CHANGEDSINCE")
    if uid and not any(a.name == "UID" for a in atts):
        atts.append(FetchAtt("UID"))  # RFC 3501 §6.4.8: UID FETCH always returns UID
    if changed_since is not None and not any(a.name == "MODSEQ" for a in atts):
        atts.append(FetchAtt("MODSEQ"))  # RFC 7162 §3.1.4.1
    return Fetch(tag, name, uid, sequence, tuple(atts), changed_since, macro, vanished)


def _fetch_modifier(r: _Reader) -> tuple[str, int | None]:
    word = r.word()
    if word == "CHANGEDSINCE":  # RFC 7162 §3.1.4.1
        r.sp()
        return word, r.number(MAX_NUMBER64, "mod-sequence")
    if word == "VANISHED":  # RFC 7162 §3.2.6
        return word, None
    raise r.error(f"unknown FETCH modifier {word[:40]}")


def _fetch_att(r: _Reader) -> FetchAtt:
    start = r.pos
    raw = r._run(_ATOM_SPECIALS | {ord("["), ord("<")})
    word = raw.decode("ascii").upper()
    if word in ("BODY", "BODY.PEEK") and r.peek() == 0x5B:
        r.pos += 1
        section = _section(r)
        r.expect(b"]", '"]"')
        return FetchAtt("BODY", section, word == "BODY.PEEK", _partial(r))
    if word in ("BINARY", "BINARY.PEEK", "BINARY.SIZE") and r.peek() == 0x5B:
        # RFC 3516 §6: section-binary = "[" [section-part] "]"; BINARY.SIZE has no partial.
        r.pos += 1
        section = _section(r)
        if section.text is not None:
            raise r.error("BINARY takes part numbers only")
        r.expect(b"]", '"]"')
        if word == "BINARY.SIZE":
            return FetchAtt(word, section)
        return FetchAtt("BINARY", section, word == "BINARY.PEEK", _partial(r))
    if word == "PREVIEW":
        # RFC 8970 §5: "PREVIEW" [SP "(" preview-mod *(SP preview-mod) ")"], preview-mod "LAZY"
        if r.data[r.pos:r.pos + 6].upper() == b" (LAZY":
            r.sp()
            if set(r.paren_list(r.word)) != {"LAZY"}:
                raise r.error("unknown PREVIEW modifier")
        return FetchAtt(word)
    if word in _SIMPLE_ATTS or word == "BODY":
        return FetchAtt(word)
    r.pos = start
    raise r.error(f"unknown fetch attribute {word[:40] or 'here'}")


def _partial(r: _Reader) -> tuple[int, int] | None:
    """RFC 3501 §9 partial, ``<origin.count>``, if present."""
    if not r.maybe(b"<"):
        return None
    origin = r.number(what="partial origin")
    r.expect(b".", '"."')
    count = r.nz_number(what="partial length")
    r.expect(b">", '">"')
    return origin, count


def _section(r: _Reader) -> Section:
    part: list[int] = []
    while r.peek() is not None and 0x31 <= r.peek() <= 0x39:  # type: ignore[operator]
        part.append(r.nz_number(what="part number"))
        if len(part) > MAX_DEPTH:
            raise r.error("part number too deep")
        if not r.maybe(b"."):
            return Section(tuple(part))
    if r.peek() == 0x5D:
        if part:
            raise r.error("bad section")
        return Section()
    text = r._run(_ATOM_SPECIALS | {ord("]")}).decode("ascii").upper()
    if text in ("HEADER", "TEXT") or (text == "MIME" and part):
        return Section(tuple(part), text)
    if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        r.sp()
        fields = r.paren_list(lambda: _utf8(r.astring_bytes(), r))
        if not fields:
            raise r.error("empty header list")
        return Section(tuple(part), text, tuple(fields))
    raise r.error(f"bad section {text[:40]}")


def _store(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    r.sp()
    sequence = r.sequence_set()
    r.sp()
    unchanged = None
    if r.peek() == 0x28:
        r.open_paren()
        if not r.maybe_ci("UNCHANGEDSINCE "):  # RFC 7162 §3.1.3
            raise r.error("unknown STORE modifier")
        unchanged = r.number(MAX_NUMBER64, "mod-sequence")
        r.close_paren()
        r.sp()
    item = r.atom("a store item").upper()
    mode = StoreMode.REPLACE
    if item[:1] in ("+", "-"):
        mode = StoreMode(item[0])
        item = item[1:]
    if item not in ("FLAGS", "FLAGS.SILENT"):
        raise r.error("expected FLAGS, +FLAGS or -FLAGS")
    r.sp()
    if r.peek() == 0x28:
        flags = r.flag_list()
    else:
        items = [r.flag()]
        while r.maybe(b" "):
            items.append(r.flag())
        flags = frozenset(items)
    return StoreFlags(tag, name, uid, sequence, mode, item.endswith(".SILENT"), flags, unchanged)


def _copy(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    r.sp()
    sequence = r.sequence_set()
    r.sp()
    return Copy(tag, name, uid, sequence, r.mailbox(), name.endswith("MOVE"))


def _expunge(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    if uid:
        r.sp()
        return UidExpunge(tag, name, r.sequence_set())
    return Simple(tag, name)


_ESEARCH_RETURNS = frozenset({"MIN", "MAX", "ALL", "COUNT", "SAVE"})  # SAVE: RFC 5182 §2.4


_CONTEXT_RETURNS = frozenset({"CONTEXT", "UPDATE"})  # RFC 5267 §4, and PARTIAL


def _return_options(r: _Reader, command: str) -> tuple[tuple[str, ...] | None, tuple[FetchAtt, ...]]:
    """``RETURN (...) SP`` of SEARCH (RFC 4731 §3, RFC 5267 §4) and SORT (RFC 5267 §3.2), if
    present; an empty list means ALL. PARTIAL comes as "PARTIAL lo:hi" (lo <= hi). And
    UPDATE's fetch attributes (RFC 5465 §7)."""
    if not r.maybe_ci("RETURN "):
        return None, ()
    allowed = _ESEARCH_RETURNS | _CONTEXT_RETURNS  # CONTEXT=SEARCH and CONTEXT=SORT
    fetch: list[FetchAtt] = []

    def option() -> str:
        word = r.word()
        if word == "PARTIAL":
            # RFC 5267 §5: partial-range = nz-number ":" nz-number (no "*"; 500:400 = 400:500)
            r.sp()
            low = r.nz_number(what="partial range")
            r.expect(b":", '":"')
            high = r.nz_number(what="partial range")
            return f"PARTIAL {min(low, high)}:{max(low, high)}"
        if word not in allowed:
            raise r.error(f"unknown {command} return option")
        if word == "UPDATE" and r.data.startswith(b" (", r.pos):
            # RFC 5465 §8: modifier-update = "UPDATE" [SP "(" fetch-att *(SP fetch-att) ")"]
            r.sp()
            fetch[:] = r.paren_list(lambda: _fetch_att(r))
            if not fetch:
                raise r.error("empty fetch attribute list")
        return word
    options = tuple(r.paren_list(option))
    if sum(1 for o in options if o == "ALL" or o.startswith("PARTIAL ")) > 1:
        raise r.error("at most one of PARTIAL and ALL")  # RFC 5267 §4.4
    r.sp()
    return options or ("ALL",), tuple(fetch)


def _search(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    r.sp()
    returns, update_fetch = _return_options(r, "SEARCH")
    charset = None
    if r.maybe_ci("CHARSET "):
        charset = r.astring().upper()
        r.sp()
    return Search(tag, name, uid, _search_keys(r), charset, returns, update_fetch)


def _search_keys(r: _Reader) -> SearchKey:
    """One or more search keys separated by spaces, all of which must match."""
    keys = [_search_key(r)]
    while r.maybe(b" "):
        keys.append(_search_key(r))
    return keys[0] if len(keys) == 1 else SearchKey(SearchOp.AND, children=tuple(keys))


def _sort(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    # RFC 5256 §5: SORT SP sort-criteria SP search-criteria, the charset required;
    # RFC 5267 §3.2 (ESORT): optionally RETURN (...) before the criteria.
    r.sp()
    returns, update_fetch = _return_options(r, "SORT")
    criteria = r.paren_list(lambda: _sort_criterion(r))
    if not criteria:
        raise r.error("SORT needs at least one sort criterion")
    r.sp()
    charset = r.astring().upper()
    r.sp()
    return Sort(tag, name, uid, tuple(criteria), charset, _search_keys(r), returns, update_fetch)


def _thread(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    # RFC 5256 §5: THREAD SP thread-alg SP search-charset 1*(SP search-key)
    r.sp()
    algorithm = r.word()
    if algorithm not in THREAD_ALGORITHMS:
        raise r.error(f"unknown threading algorithm {algorithm[:40]}")
    r.sp()
    charset = r.astring().upper()
    r.sp()
    return Thread(tag, name, uid, algorithm, charset, _search_keys(r))


def _sort_criterion(r: _Reader) -> SortCriterion:
    word = r.word()
    reverse = word == "REVERSE"
    if reverse:
        r.sp()
        word = r.word()
    try:
        return SortCriterion(SortKey(word), reverse)
    except ValueError:
        raise r.error(f"unknown sort criterion {word[:40]}") from None


def _search_key(r: _Reader) -> SearchKey:
    c = r.peek()
    if c == 0x28:
        r.open_paren()
        keys = [_search_key(r)]
        while r.maybe(b" "):
            keys.append(_search_key(r))
        r.close_paren()
        return keys[0] if len(keys) == 1 else SearchKey(SearchOp.AND, children=tuple(keys))
    if c is not None and (0x30 <= c <= 0x39 or c in (0x2A, 0x24)):  # "$": RFC 5182 §2.1
        return SearchKey(SearchOp.SEQ, r.sequence_set())
    word = r.word()
    if word in _FLAG_KEYS:
        return SearchKey(SearchOp.FLAG, _FLAG_KEYS[word])
    if word.startswith("UN") and word[2:] in _FLAG_KEYS:
        return _not(SearchKey(SearchOp.FLAG, _FLAG_KEYS[word[2:]]))
    if word in ("ALL", "SAVEDATESUPPORTED"):
        return SearchKey(SearchOp(word))
    if word in ("NEW", "OLD", "RECENT"):
        recent = SearchKey(SearchOp.RECENT)
        if word == "NEW":  # RFC 3501 §6.4.4: RECENT UNSEEN
            return SearchKey(SearchOp.AND, children=(recent, _not(SearchKey(SearchOp.FLAG, "\\Seen"))))
        return _not(recent) if word == "OLD" else recent
    if word in ("KEYWORD", "UNKEYWORD"):
        r.sp()
        key = SearchKey(SearchOp.FLAG, r.flag() if r.peek() == 0x5C else r.atom("a keyword"))
        return key if word == "KEYWORD" else _not(key)
    if word == "NOT":
        r.sp()
        r.depth += 1
        if r.depth > MAX_DEPTH:
            raise r.error("too deeply nested")
        inner = _search_key(r)
        r.depth -= 1
        return _not(inner)
    if word == "OR":
        r.depth += 1
        if r.depth > MAX_DEPTH:
            raise r.error("too deeply nested")
        r.sp()
        a = _search_key(r)
        r.sp()
        b = _search_key(r)
        r.depth -= 1
        return SearchKey(SearchOp.OR, children=(a, b))
    if word in _STRING_HEADER_KEYS:
        r.sp()
        return SearchKey(SearchOp.HEADER, (word.capitalize() if word != "BCC" else "Bcc",
                                           r.astring()))
    if word == "HEADER":
        r.sp()
        field_name = r.astring()
        r.sp()
        return SearchKey(SearchOp.HEADER, (field_name, r.astring()))
    if word in ("BODY", "TEXT"):
        r.sp()
        return SearchKey(SearchOp(word), r.astring())
    if word in _DATE_KEYS:
        r.sp()
        return SearchKey(SearchOp(word), r.date().date())
    if word in ("LARGER", "SMALLER"):
        r.sp()
        return SearchKey(SearchOp(word), r.number())
    if word == "UID":
        r.sp()
        return SearchKey(SearchOp.UID, r.sequence_set())
    if word in ("EMAILID", "THREADID"):  # RFC 8474 §6
        r.sp()
        return SearchKey(SearchOp(word), r.atom("an object id"))
    if word == "MODSEQ":  # RFC 7162 §3.1.5
        r.sp()
        if r.peek() == 0x22:
            r.quoted()  # entry name: per-flag modseqs are not kept; the entry is ignored
            r.sp()
            entry_type = r.word()
            if entry_type not in ("PRIV", "SHARED", "ALL"):
                raise r.error("bad MODSEQ entry type")
            r.sp()
        return SearchKey(SearchOp.MODSEQ, r.number(MAX_NUMBER64, "mod-sequence"))
    raise r.error(f"unknown search key {word[:40]}")


def _not(key: SearchKey) -> SearchKey:
    return SearchKey(SearchOp.NOT, children=(key,))


_COMMANDS = {
    "CAPABILITY": _simple, "NOOP": _simple, "LOGOUT": _simple, "STARTTLS": _simple,
    "CHECK": _simple, "CLOSE": _simple, "UNSELECT": _simple, "IDLE": _simple,
    "NAMESPACE": _simple, "EXPUNGE": _expunge,
    "LOGIN": _login, "AUTHENTICATE": _authenticate, "ID": _id, "ENABLE": _enable,
    "SELECT": _select, "EXAMINE": _select, "CREATE": _create,
    "DELETE": _mailbox_command, "SUBSCRIBE": _mailbox_command,
    "UNSUBSCRIBE": _mailbox_command, "GETQUOTAROOT": _mailbox_command,
    "RENAME": _rename, "LIST": _list, "LSUB": _list, "STATUS": _status, "APPEND": _append,
    "GETQUOTA": _quota, "SETQUOTA": _quota,
    "FETCH": _fetch, "STORE": _store, "COPY": _copy, "MOVE": _copy, "SEARCH": _search,
    "SORT": _sort, "THREAD": _thread, "COMPRESS": _compress,
    "GETMETADATA": _getmetadata, "SETMETADATA": _setmetadata, "CANCELUPDATE": _cancelupdate,
    "NOTIFY": _notify,
}
