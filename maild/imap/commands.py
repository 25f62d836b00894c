"""The IMAP command types: what :func:`maild.imap.parser.parse_command` makes of a command
(RFC 3501 §9, RFC 9051 §9 and the extensions maild offers), as frozen dataclasses the
session executes. Values only: the grammar is :mod:`maild.imap.parser`'s.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

# -- sequence sets ------------------------------------------------------------------------

@dataclass(frozen=True)
class SequenceSet:
    """RFC 3501 §9 sequence-set: ranges with ``None`` standing for ``*``. ``saved`` is
    RFC 5182's ``$`` (RFC 9051 §6.4.4): the session's saved search result, which the
    session resolves (``MailboxView.resolve``, ``searchres.bind``); its ``ranges`` are empty."""

    ranges: tuple[tuple[int | None, int | None], ...]
    saved: bool = False
    # contains()'s index of a set of many ranges: (largest, starts, ends) of the ranges
    # merged and ordered, made on first use; not part of the value.
    _index: tuple[int, list[int], list[int]] | None = field(default=None, init=False, repr=False, compare=False)

    def bounds(self, largest: int) -> Iterator[tuple[int, int]]:
        """The ranges as (low, high) with ``*`` replaced by ``largest``."""
        for a, b in self.ranges:
            lo = largest if a is None else a
            hi = largest if b is None else b
            yield (lo, hi) if lo <= hi else (hi, lo)

    def contains(self, value: int, largest: int) -> bool:
        """``value`` is in the set, ``*`` being ``largest``. A binary search once the set
        has more than a few ranges: SEARCH and QRESYNC ask this of every message, and a
        set may hold 10,000 ranges."""
        if len(self.ranges) <= 4:
            return any(lo <= value <= hi for lo, hi in self.bounds(largest))
        index = self._index
        if index is None or index[0] != largest:
            starts: list[int] = []
            ends: list[int] = []
            for lo, hi in sorted(self.bounds(largest)):
                if ends and lo <= ends[-1] + 1:
                    ends[-1] = max(ends[-1], hi)
                else:
                    starts.append(lo)
                    ends.append(hi)
            index = (largest, starts, ends)
            object.__setattr__(self, "_index", index)  # a cache on a frozen value
        i = bisect.bisect_right(index[1], value) - 1
        return i >= 0 and value <= index[2][i]


# -- fetch ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Section:
    """RFC 3501 §6.4.5 section-spec: part numbers and HEADER / HEADER.FIELDS[.NOT] / TEXT /
    MIME (``text`` None for the whole part)."""

    part: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[str, ...] = ()

    def __str__(self) -> str:
        out = ".".join(str(p) for p in self.part)
        if self.text:
            out = f"{out}.{self.text}" if out else self.text
            if self.fields:
                out += " (" + " ".join(self.fields) + ")"
        return out


@dataclass(frozen=True)
class FetchAtt:
    """One fetch attribute. ``name`` is upper case: FLAGS, UID, INTERNALDATE, RFC822.SIZE,
    ENVELOPE, BODY, BODYSTRUCTURE, RFC822, RFC822.HEADER, RFC822.TEXT, MODSEQ, EMAILID,
    THREADID, SAVEDATE, or BODY / BINARY with a ``section`` (then ``peek`` and ``partial``
    apply), or BINARY.SIZE with one (RFC 3516: the section has part numbers only)."""

    name: str
    section: Section | None = None
    peek: bool = False
    partial: tuple[int, int] | None = None  # (origin, octet count)

    @property
    def sets_seen(self) -> bool:
        # RFC 3501 §6.4.5: BODY[...] and RFC822 / RFC822.TEXT set \Seen, BODY.PEEK does not;
        # RFC 3516 §4.2: BINARY[...] does as BODY[...], BINARY.SIZE does not.
        return (self.section is not None and not self.peek and self.name != "BINARY.SIZE") \
            or self.name in ("RFC822", "RFC822.TEXT")


# -- search -----------------------------------------------------------------------------------

class SearchOp(enum.StrEnum):
    """RFC 3501 §6.4.4 search keys (plus MODSEQ, RFC 7162 §3.1.5), normalised: NEW, OLD,
    UN* keys are expressed with NOT."""

    ALL = "ALL"
    AND = "AND"
    OR = "OR"
    NOT = "NOT"
    SEQ = "SEQ"  # value: SequenceSet of message numbers
    UID = "UID"  # value: SequenceSet of uids
    FLAG = "FLAG"  # value: flag name (\Seen, keyword...)
    RECENT = "RECENT"
    HEADER = "HEADER"  # value: (field name, substring)
    BODY = "BODY"
    TEXT = "TEXT"
    BEFORE = "BEFORE"  # value: date (internal date, RFC 3501: disregarding time and zone)
    ON = "ON"
    SINCE = "SINCE"
    SENTBEFORE = "SENTBEFORE"
    SENTON = "SENTON"
    SENTSINCE = "SENTSINCE"
    LARGER = "LARGER"
    SMALLER = "SMALLER"
    MODSEQ = "MODSEQ"
    EMAILID = "EMAILID"  # value: objectid (RFC 8474 §6)
    THREADID = "THREADID"
    SAVEDBEFORE = "SAVEDBEFORE"  # value: date (RFC 8514 §5)
    SAVEDON = "SAVEDON"
    SAVEDSINCE = "SAVEDSINCE"
    SAVEDATESUPPORTED = "SAVEDATESUPPORTED"


@dataclass(frozen=True)
class SearchKey:
    op: SearchOp
    value: object = None
    children: tuple[SearchKey, ...] = ()


class SortKey(enum.StrEnum):
    """RFC 5256 §3 sort criteria, and RFC 5957's DISPLAYFROM and DISPLAYTO."""

    ARRIVAL = "ARRIVAL"
    CC = "CC"
    DATE = "DATE"
    FROM = "FROM"
    SIZE = "SIZE"
    SUBJECT = "SUBJECT"
    TO = "TO"
    DISPLAYFROM = "DISPLAYFROM"
    DISPLAYTO = "DISPLAYTO"


@dataclass(frozen=True)
class SortCriterion:
    key: SortKey
    reverse: bool = False


# -- commands -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Command:
    tag: str
    name: str  # upper case command name, "UID FETCH" etc. for UID forms


@dataclass(frozen=True)
class Simple(Command):
    """CAPABILITY NOOP LOGOUT STARTTLS CHECK CLOSE UNSELECT EXPUNGE IDLE NAMESPACE."""


@dataclass(frozen=True)
class Login(Command):
    username: str
    password: str


@dataclass(frozen=True)
class Authenticate(Command):
    mechanism: str
    initial: bytes | None  # RFC 4959 SASL-IR, still base64; b"" for "="


@dataclass(frozen=True)
class Id(Command):
    params: dict[str, str | None] | None


@dataclass(frozen=True)
class Enable(Command):
    capabilities: tuple[str, ...]


@dataclass(frozen=True)
class GetMetadata(Command):
    """GETMETADATA (RFC 5464 §4.2); ``mailbox`` "" names the server (the user's own entries)."""

    mailbox: str
    entries: tuple[str, ...]  # lower case
    maxsize: int | None = None
    depth: str = "0"  # "0", "1" or "INFINITY"


@dataclass(frozen=True)
class SetMetadata(Command):
    """SETMETADATA (RFC 5464 §4.3): entries (lower case) with values, None to remove."""

    mailbox: str
    items: tuple[tuple[str, bytes | None], ...]


@dataclass(frozen=True)
class CancelUpdate(Command):
    tags: tuple[str, ...]  # RFC 5267 §4.3.5: the searching commands' tags


@dataclass(frozen=True)
class Compress(Command):
    mechanism: str  # RFC 4978 §3, upper case


@dataclass(frozen=True)
class Select(Command):
    mailbox: str
    readonly: bool
    condstore: bool = False
    qresync: Qresync | None = None


@dataclass(frozen=True)
class Qresync:
    """RFC 7162 §3.2.5 SELECT/EXAMINE parameter: what the client last knew of the mailbox."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None
    # The optional message sequence numbers and UIDs the client knew to match; maild keeps
    # every expunge's modseq, so it answers exactly without them.
    seq_match: tuple[SequenceSet, SequenceSet] | None = None


@dataclass(frozen=True)
class Create(Command):
    mailbox: str
    special_use: tuple[str, ...] = ()  # RFC 6154 §3 USE


@dataclass(frozen=True)
class MailboxCommand(Command):
    """DELETE, SUBSCRIBE, UNSUBSCRIBE, GETQUOTAROOT."""

    mailbox: str


@dataclass(frozen=True)
class Rename(Command):
    old: str
    new: str


@dataclass(frozen=True)
class ListCommand(Command):
    """LIST (with RFC 5258 selection/return options, RFC 5819 STATUS) and LSUB."""

    reference: str
    patterns: tuple[str, ...]
    selection: frozenset[str] = frozenset()
    returns: frozenset[str] = frozenset()
    status: tuple[str, ...] = ()
    extended: bool = False  # any RFC 5258 syntax used (then CHILDINFO etc. apply)


@dataclass(frozen=True)
class Status(Command):
    mailbox: str
    items: tuple[str, ...]


@dataclass(frozen=True)
class Append(Command):
    mailbox: str
    flags: frozenset[str]
    date: datetime | None
    message: bytes


@dataclass(frozen=True)
class AppendMessage:
    """One message of a MULTIAPPEND (RFC 3502 §6.3.11): flags, date-time and literal."""

    flags: frozenset[str]
    date: datetime | None
    message: bytes
    # RFC 4469 CATENATE: ("TEXT", octets) and ("URL", url) parts to build the message from
    catenate: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class MultiAppend(Command):
    """APPEND with more than one message (RFC 3502), or with CATENATE (RFC 4469): all are
    appended or none."""

    mailbox: str
    messages: tuple[AppendMessage, ...]


@dataclass(frozen=True)
class QuotaCommand(Command):
    """GETQUOTA root / SETQUOTA root (...) (RFC 9208)."""

    root: str


@dataclass(frozen=True)
class Search(Command):
    uid: bool
    key: SearchKey
    charset: str | None = None
    returns: tuple[str, ...] | None = None  # RFC 4731 ESEARCH RETURN options; None: plain
    update_fetch: tuple[FetchAtt, ...] = ()  # RFC 5465 §7: UPDATE's fetch attributes


@dataclass(frozen=True)
class Sort(Command):
    """SORT / UID SORT (RFC 5256 §3): the messages ``key`` matches, in ``criteria`` order."""

    uid: bool
    criteria: tuple[SortCriterion, ...]
    charset: str
    key: SearchKey
    returns: tuple[str, ...] | None = None  # RFC 5267 §3.2 ESORT RETURN options; None: plain
    update_fetch: tuple[FetchAtt, ...] = ()  # RFC 5465 §7: UPDATE's fetch attributes


@dataclass(frozen=True)
class Thread(Command):
    """THREAD / UID THREAD (RFC 5256 §4) with ORDEREDSUBJECT or REFERENCES."""

    uid: bool
    algorithm: str
    charset: str
    key: SearchKey


@dataclass(frozen=True)
class Fetch(Command):
    uid: bool
    sequence: SequenceSet
    attributes: tuple[FetchAtt, ...]
    changed_since: int | None = None  # RFC 7162 §3.1.4.1
    macro: bool = False
    vanished: bool = False  # RFC 7162 §3.2.6: also VANISHED (EARLIER) for expunged UIDs


class StoreMode(enum.Enum):
    ADD = "+"
    REMOVE = "-"
    REPLACE = ""


@dataclass(frozen=True)
class StoreFlags(Command):
    """STORE / UID STORE (RFC 3501 §6.4.6; UNCHANGEDSINCE, RFC 7162 §3.1.3); not the store's
    :class:`maild.store.Store`."""

    uid: bool
    sequence: SequenceSet
    mode: StoreMode
    silent: bool
    flags: frozenset[str]
    unchanged_since: int | None = None  # RFC 7162 §3.1.3


@dataclass(frozen=True)
class Copy(Command):
    """COPY and MOVE (RFC 6851)."""

    uid: bool
    sequence: SequenceSet
    mailbox: str
    move: bool


@dataclass(frozen=True)
class UidExpunge(Command):
    sequence: SequenceSet  # RFC 4315 §2.1


@dataclass(frozen=True)
class EventGroup:
    """One RFC 5465 §8 event-group: a mailbox filter and the events asked for on it.
    ``filter`` is upper case: SELECTED, SELECTED-DELAYED, INBOXES, PERSONAL, SUBSCRIBED,
    SUBTREE or MAILBOXES (the last two with ``mailboxes``). ``events`` are the known event
    names in RFC 5465's spelling (MessageNew, FlagChange...), any other as the client wrote
    it; empty for NONE. ``fetch``: MessageNew's fetch attributes (§5.2)."""

    filter: str
    mailboxes: tuple[str, ...]
    events: tuple[str, ...]
    fetch: tuple[FetchAtt, ...] = ()


@dataclass(frozen=True)
class Notify(Command):
    """NOTIFY SET [STATUS] event-groups, or NOTIFY NONE (``groups`` None) (RFC 5465 §3.1)."""

    groups: tuple[EventGroup, ...] | None
    status: bool = False
