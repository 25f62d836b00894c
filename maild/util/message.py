"""The one RFC 5322 header parser: every part of maild reads header fields through it.

SMTP (the author checks at end of DATA), mail authentication (DKIM, DMARC's From domain),
the filters, delivery, the store's envelope and IMAP (ENVELOPE, BODYSTRUCTURE,
HEADER.FIELDS, SEARCH) all see the same fields, so what a user is shown as From is what
DMARC judged (issue 16: two parsers that disagreed on a line without a colon were a DMARC
bypass).

The rules (RFC 5322 §2.1, §2.2, §3.6.8, §4.5):

- The header section ends at the first empty line (CRLF or bare LF); without one, the whole
  text is header.
- A field starts with a line ``name *WSP ":"`` (ftext name, obs-optional's WSP before the
  colon) and takes every following line that starts with WSP (folding, §2.2.3).
- Any other line before the empty line is not a field. It is skipped, never taken for the
  end of the header, and remembered in :attr:`Header.stray`: a header section in which a
  field follows such a line is ambiguous (a reader that stops at the line sees other
  fields), and :func:`author_problem` says so.

Values are unfolded, stripped and decoded as UTF-8 with undecodable bytes kept as
surrogates (``surrogateescape``), so the exact octets can be recovered.
"""

from __future__ import annotations

import builtins
import re
from dataclasses import dataclass, field
from email.header import decode_header, make_header

from maild.util import address

_FOLD = re.compile(r"\r?\n(?=[ \t])")

# Octets of a header section (a message's or a MIME part's) read for fields: the SMTP
# server refuses a message with a larger one (554 5.6.0), so parsing stays bounded.
MAX_HEADER = 1024 * 1024

_ENVELOPE_FIELDS = {
    "date": "date",
    "subject": "subject",
    "from": "from_",
    "sender": "sender",
    "reply-to": "reply_to",
    "to": "to",
    "cc": "cc",
    "bcc": "bcc",
    "in-reply-to": "in_reply_to",
    "message-id": "message_id",
    "references": "references",
}


def header_end(raw: bytes, start: int = 0, end: int | None = None) -> int:
    """The offset where the body starts: after the first empty line at or after ``start``
    (``end`` when there is none). Two substring searches: a regular expression that may
    start at every octet took several µs per message."""
    stop = len(raw) if end is None else end
    if raw.startswith(b"\r\n", start) and start + 2 <= stop:
        return start + 2
    if raw.startswith(b"\n", start) and start < stop:
        return start + 1
    crlf = raw.find(b"\n\r\n", start, stop)
    lf = raw.find(b"\n\n", start, crlf + 1 if crlf >= 0 else stop)  # only one before it counts
    if crlf < 0 and lf < 0:
        return stop
    return crlf + 3 if lf < 0 or 0 <= crlf < lf else lf + 2


def split_header(raw: bytes) -> tuple[bytes, bytes]:
    """(header section including its terminating empty line, body)."""
    end = header_end(raw)
    return raw[:end], raw[end:]


class Field:
    """One header field: its name, its unfolded value (decoded when first asked for) and
    the offsets of its octets in the message, line breaks included."""

    __slots__ = ("name", "lname", "start", "end", "_raw", "_value_start", "_value")

    def __init__(self, name: str, value: str | None, start: int, end: int,
                 raw: bytes = b"", value_start: int = 0) -> None:
        self.name = name  # as written, without the WSP before the colon
        self.lname = name.lower()
        self.start = start
        self.end = end
        self._raw = raw
        self._value_start = value_start
        self._value = value

    @property
    def value(self) -> str:
        """Unfolded (RFC 5322 §2.2.3: the line breaks before WSP removed) and stripped."""
        if self._value is None:
            value = self._raw[self._value_start:self.end].decode("utf-8", "surrogateescape")
            if "\n" in value.rstrip("\r\n"):
                value = _FOLD.sub("", value)
            self._value = value.strip()
        return self._value

    def __repr__(self) -> str:
        return f"Field({self.name!r}, {self.value!r}, {self.start}, {self.end})"


@dataclass(slots=True)
class Header:
    raw: bytes  # the whole message (not copied)
    start: int  # where the header section starts in ``raw``
    end: int  # where the body starts (after the empty line, when there is one)
    fields: list[Field] = field(default_factory=list)
    stray: list[int] = field(default_factory=list)  # offsets of lines that are not fields
    truncated: bool = False  # fields past parse_header's max_bytes were not read

    @property
    def bytes(self) -> bytes:
        """The header section's octets, its empty line included."""
        return self.raw[self.start:self.end]

    def field_bytes(self, f: Field) -> builtins.bytes:
        return self.raw[f.start:f.end]

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [f.value for f in self.fields if f.lname == name]

    def first(self, name: str) -> str | None:
        name = name.lower()
        for f in self.fields:
            if f.lname == name:
                return f.value
        return None

    def pairs(self) -> list[tuple[str, str]]:
        return [(f.name, f.value) for f in self.fields]

    @property
    def ambiguous(self) -> bool:
        """A field follows a line that is not a field: readers that stop at that line and
        readers that skip it see different fields."""
        return bool(self.stray) and bool(self.fields) and self.fields[-1].start > self.stray[0]

    def without(self, drop: list[Field]) -> builtins.bytes:
        """The message with the given fields cut out: one new copy, joined from views of
        ``raw`` (slices would copy the body once more before the join)."""
        if not drop:
            return self.raw
        view = memoryview(self.raw)
        out, pos = [], 0
        for f in sorted(drop, key=lambda f: f.start):
            out.append(view[pos:f.start])
            pos = f.end
        out.append(view[pos:])
        return b"".join(out)


# One match per line of the header section: a field (RFC 5322 §3.6.8 ftext name, §4.5.8
# obs-optional WSP before the colon) with its continuation lines (group 1 its name, group 2
# its value), or a line that is not a field, or the empty line.
_LINE = re.compile(rb"([!-9;-~]+)[ \t]*:((?:[^\n]*\n(?=[ \t]))*[^\n]*\n?)|[^\n]*\n?")


def parse_header(raw: bytes, start: int = 0, end: int | None = None,
                 max_bytes: int | None = None) -> Header:
    """The header section of the message (or MIME part) at ``raw[start:end]``; with
    ``max_bytes``, fields are read from its first ``max_bytes`` octets only (``end`` is
    still where the body starts; ``truncated`` says so)."""
    stop = header_end(raw, start, end)
    header = Header(raw, start, stop)
    fields, stray = header.fields, header.stray
    scan = stop
    if max_bytes is not None and stop - start > max_bytes:
        scan = start + max_bytes
        header.truncated = True
    for match in _LINE.finditer(raw, start, scan):
        name = match.group(1)
        if name is not None:
            fields.append(Field(name.decode("ascii"), None, match.start(), match.end(), raw,
                                match.start(2)))
        elif match.end() > match.start():
            if raw[match.start():match.end()] in (b"\r\n", b"\n"):
                break
            stray.append(match.start())
    return header


def header_fields(header: bytes) -> list[tuple[str, str]]:
    """Unfolded (name, value) pairs of a header section, in order."""
    return parse_header(header).pairs()


def envelope_fields(raw: bytes | Header) -> dict[str, str]:
    """The first occurrence of each RFC 3501 envelope header, raw (RFC 2047 left encoded),
    keyed by the attribute names of ``maild.store.types.Envelope``."""
    header = raw if isinstance(raw, Header) else parse_header(raw, max_bytes=MAX_HEADER)
    values: dict[str, str] = {}
    for f in header.fields:
        attr = _ENVELOPE_FIELDS.get(f.lname)
        if attr and attr not in values:
            values[attr] = f.value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return values


# -- addresses and the author (RFC 5322 §3.4, §3.6.2; RFC 7489 §6.6.1) ---------------------

def addresses(value: str) -> list[str]:
    """The addr-specs of an address-list value (groups flattened, display names dropped),
    read by the one address parser IMAP's ENVELOPE, SORT and SEARCH use
    (:mod:`maild.util.address`), so the From DMARC judges is the From a user is shown. An
    address without a domain comes back without "@" (no valid author)."""
    text = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    out = []
    for a in address.parse(text):
        if a.is_group_start or a.is_group_end or not a.mailbox:
            continue
        out.append(a.mailbox if a.host == address.MISSING_DOMAIN else f"{a.mailbox}@{a.host}")
    return out


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".")


def author_problem(header: Header) -> str | None:
    """Why the header section does not name one author unambiguously (public text), or
    None. The From field is what DMARC evaluates and what a user is shown, so it must be
    one field (RFC 5322 §3.6: exactly one From; RFC 7489 §6.6.1), read the same by every
    reader (no field after a line that is not a field), holding addresses with a domain,
    all of one domain (the one DMARC evaluates), and, when it holds several, accompanied
    by one Sender (RFC 5322 §3.6.2)."""
    if header.ambiguous:
        return "Message header has a line that is not a header field"
    froms = header.get_all("from")
    if not froms:
        return "Message has no From header field"
    if len(froms) > 1:
        return "Message has more than one From header field"
    authors = addresses(froms[0])
    if not authors or any("@" not in a or not _domain(a) for a in authors):
        return "From header field has no valid address"
    if len({_domain(a) for a in authors}) > 1:
        # DMARC evaluates one domain (RFC 7489 §6.6.1): with several, some author shown to
        # the user would go unjudged.
        return "From header field has addresses in several domains"
    if len(authors) > 1:
        senders = header.get_all("sender")
        if len(senders) != 1 or len(addresses(senders[0])) != 1:
            return "From header field has several addresses and no single Sender"
    return None


def from_domain(header: Header) -> str | None:
    """The RFC5322.From domain DMARC evaluates (RFC 7489 §6.6.1), or None when there is
    not exactly one From field naming addresses of exactly one domain. Ambiguous header
    sections are refused at end of DATA before DMARC runs (:func:`author_problem`)."""
    froms = header.get_all("from")
    if len(froms) != 1:
        return None
    domains = {_domain(a) for a in addresses(froms[0]) if "@" in a}
    if len(domains) != 1:
        return None
    return domains.pop() or None


# RFC 5322 §3.6.2 originator fields and §3.6.6 resent fields: whoever submits must own
# every address in each of them (RFC 6409 §8.1).
ORIGINATOR_FIELDS = ("from", "sender", "resent-from", "resent-sender")


def decoded_words(text: str) -> str:
    """``text`` with RFC 2047 encoded words decoded, as a mail client shows it."""
    if "=?" not in text:
        return text
    try:
        return str(make_header(decode_header(text)))
    except (ValueError, LookupError, UnicodeError):
        return text


# An address as a display name may spell one (``"bob@example.test" <alice@example.test>``).
_NAMED_ADDRESS = re.compile(r"[^\s<>\"(),;:@]+@[^\s<>\"(),;:@]+")


def originators(header: Header) -> dict[str, list[str]]:
    """{field name: its addresses} for every originator field present, with the addresses
    a display name spells: a user is shown those too, so whoever submits must own them."""
    out: dict[str, list[str]] = {}
    for f in header.fields:
        if f.lname in ORIGINATOR_FIELDS:
            text = f.value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            found = out.setdefault(f.lname, [])
            for a in address.parse(text):
                if a.name:
                    found.extend(_NAMED_ADDRESS.findall(decoded_words(a.name)))
            found.extend(addresses(f.value))
    return out
