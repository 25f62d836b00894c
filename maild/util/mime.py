"""The one MIME structure walker (RFC 2045, RFC 2046), on the raw bytes, without recursion.

:func:`walk` reads a message once, front to back, and answers its parts in document order
as offsets into the message: nothing is copied or decoded, so a 25 MB message costs a list
of small records. It keeps an explicit stack of the open multiparts' boundaries instead of
recursing, so a hostile nesting depth costs no Python stack. Every MIME consumer uses it:
the attachment filter, IMAP BODYSTRUCTURE/BODY[section] and SEARCH, and the SMTP server,
which refuses a message nested deeper than :data:`MAX_DEPTH` at end of DATA (554 5.6.0,
docs/smtp.md).

Depth: the message is depth 0; the parts of a multipart and the message inside a
message/rfc822 part are one deeper than it. A multipart or message part at
:data:`MAX_DEPTH` is not looked into: it is an opaque leaf and ``Structure.too_deep`` is
set. RFC 2046 §5.1.2: a delimiter of an enclosing multipart ends every part inside it,
closed or not.
"""

from __future__ import annotations

import binascii
import re
import urllib.parse
from dataclasses import dataclass

from maild.util.message import MAX_HEADER, Header, parse_header

# Postfix's mime_nesting_limit is 100 too; SEARCH must still reach text 50 levels down.
MAX_DEPTH = 100
MAX_PARTS = 10_000  # the walk stops here: the rest of the message is not looked into

TEXT_PLAIN = ("text", "plain")
MESSAGE_RFC822 = ("message", "rfc822")
_ENCAPSULATED = {("message", "rfc822"), ("message", "global")}

LEAF, MULTIPART, MESSAGE = "leaf", "multipart", "message"


@dataclass(slots=True)
class MimePart:
    header: Header  # offsets into the message: header.start is where the part starts
    end: int  # where its body ends (the line break before a delimiter is not the body's)
    depth: int
    parent: int  # index in Structure.parts, -1 for the message itself
    type: str
    subtype: str
    params: list[tuple[str, str]]  # the Content-Type parameters, RFC 2231 decoded
    kind: str = LEAF  # LEAF, MULTIPART or MESSAGE (message/rfc822 or message/global)
    opaque: bool = False  # a multipart or message part beyond MAX_DEPTH, not looked into

    @property
    def start(self) -> int:
        return self.header.start

    @property
    def body_start(self) -> int:
        return self.header.end

    @property
    def body(self) -> bytes:
        return self.header.raw[self.body_start:self.end]

    def param(self, name: str) -> str | None:
        for key, value in self.params:
            if key == name:
                return value
        return None


@dataclass(slots=True)
class Structure:
    parts: list[MimePart]
    too_deep: bool = False  # some multipart or message part was at MAX_DEPTH
    too_many: bool = False  # the walk stopped at MAX_PARTS parts
    big_header: bool = False  # a part's header is over MAX_HEADER: fields past it unread

    @property
    def depth(self) -> int:
        return max(p.depth for p in self.parts)

    def children(self, index: int) -> list[int]:
        return [i for i in range(index + 1, len(self.parts)) if self.parts[i].parent == index]


# -- header parameters (RFC 2045 §5.1, RFC 2231) ------------------------------------------

_PARAM = re.compile(r"""\s*([^\s=;"]+)\s*=\s*("(?:[^"\\]|\\.)*"?|[^;]*)""", re.DOTALL)
_SECTION = re.compile(r"(.+?)\*(\d+)(\*?)$")


def split_params(value: str) -> tuple[str, list[tuple[str, str]]]:
    """(lower-case main value, [(lower-case attribute, value)]) of a Content-Type or
    Content-Disposition value. Every parameter is kept, duplicates too, in order; RFC 2231
    continuations are joined and charset-encoded values decoded (an attribute ``name*`` and
    ``name*0*...`` all become ``name``). Tolerant: whatever a mail client could make of a
    value, this answers something."""
    main, _, rest = value.partition(";")
    out: list[tuple[str, str]] = []
    sections: dict[str, list[tuple[int, str, bool]]] = {}
    pos = 0
    while pos < len(rest):
        match = _PARAM.match(rest, pos)
        if match is None:
            nxt = rest.find(";", pos)
            if nxt < 0:
                break
            pos = nxt + 1
            continue
        attr, raw_value = match.group(1).lower(), match.group(2).strip()
        pos = match.end()
        semi = rest.find(";", pos)
        pos = len(rest) if semi < 0 else semi + 1
        quoted = raw_value.startswith('"')
        if quoted:
            raw_value = re.sub(r"\\(.)", r"\1", raw_value[1:].removesuffix('"'))
        section = _SECTION.match(attr)
        if section:  # RFC 2231 §3: name*0, name*1*, ...
            sections.setdefault(section.group(1), []).append(
                (int(section.group(2)), raw_value, bool(section.group(3))))
        elif attr.endswith("*"):  # RFC 2231 §4: name*=charset'lang'value
            out.append((attr[:-1], _decode_2231(raw_value)))
        else:
            out.append((attr, raw_value))
    for attr, pieces in sections.items():
        pieces.sort(key=lambda p: p[0])
        encoded = pieces[0][2]
        # The first section names the charset; later encoded sections are percent-decoded
        # with it, unencoded ones are taken as they stand (RFC 2231 §4.1).
        joined = pieces[0][1] + "".join(v if enc else urllib.parse.quote(v, safe="")
                                        for _n, v, enc in pieces[1:]) if encoded \
            else "".join(urllib.parse.unquote(v) if enc else v for _n, v, enc in pieces)
        out.append((attr, _decode_2231(joined) if encoded else joined))
    return main.strip().lower(), out


def _decode_2231(text: str) -> str:
    charset, sep, rest = text.partition("'")
    if not sep:
        return urllib.parse.unquote(text, "utf-8", "replace")
    _lang, sep, encoded = rest.partition("'")
    if not sep:
        encoded = rest
    try:
        return urllib.parse.unquote(encoded, charset or "us-ascii", "replace")
    except LookupError:
        return urllib.parse.unquote(encoded, "utf-8", "replace")


def content_type(header: Header, default: tuple[str, str] = TEXT_PLAIN
                 ) -> tuple[str, str, list[tuple[str, str]]]:
    """(type, subtype, params) from the first Content-Type field; ``default`` when there
    is none or it is unusable (RFC 2045 §5.2)."""
    value = header.first("content-type")
    if not value:
        return default[0], default[1], []
    main, params = split_params(value)
    ctype, _, subtype = main.partition("/")
    ctype, subtype = ctype.strip(), subtype.strip()
    if not ctype or not subtype or "/" in subtype or " " in main:
        return TEXT_PLAIN[0], TEXT_PLAIN[1], []
    return ctype, subtype, params


# -- the walk ------------------------------------------------------------------------------

class _Delimiters:
    """The open multiparts' delimiter lines (RFC 2046 §5.1.1: ``"--" boundary``, then
    ``"--"`` when closing, then transport padding), found by one regular expression
    rebuilt when the stack changes: a loop over every line starting with "--" cost
    ~2 µs a line on a hostile body."""

    def __init__(self) -> None:
        self.stack: list[tuple[bytes, int]] = []  # (boundary, index of the multipart)
        self._pattern: re.Pattern[bytes] | None = None

    def push(self, boundary: bytes, index: int) -> None:
        self.stack.append((boundary, index))
        self._pattern = None

    def keep(self, count: int) -> None:
        if len(self.stack) > count:
            del self.stack[count:]
            self._pattern = None

    def find(self, raw: bytes, pos: int, stop: int) -> tuple[int, int, int, bool] | None:
        """The next delimiter line in raw[pos:stop], ``pos`` a line start: (line start,
        line end, stack index of its multipart, closing); the innermost wins a tie."""
        if not self.stack:
            return None
        if self._pattern is None:
            names = sorted({b for b, _ in self.stack}, key=len, reverse=True)
            self._pattern = re.compile(rb"^--(" + b"|".join(re.escape(b) for b in names)
                                       + rb")(--)?[ \t]*\r?(?:\n|\Z)", re.MULTILINE)
        match = self._pattern.search(raw, pos, stop)
        if match is None:
            return None
        boundary = match.group(1)
        k = max(i for i, (b, _) in enumerate(self.stack) if b == boundary)
        return match.start(), match.end(), k, match.group(2) is not None


class _BlankLines:
    """The end of the first empty line at or after a line start (the body of a part
    starts there), with each search remembered: the walk moves forward only, so finding
    every part's header end costs one pass over the message, not one per part."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.crlf = -2  # where b"\n\r\n" / b"\n\n" was found last (-1: nowhere after)
        self.lf = -2

    def end(self, pos: int, stop: int) -> int:
        raw = self.raw
        if raw.startswith(b"\r\n", pos):
            return pos + 2
        if raw.startswith(b"\n", pos):
            return pos + 1
        if -1 < self.crlf < pos or self.crlf == -2:
            self.crlf = raw.find(b"\n\r\n", pos)
        if -1 < self.lf < pos or self.lf == -2:
            self.lf = raw.find(b"\n\n", pos)
        ends = [e for e in (self.crlf + 3 if self.crlf >= 0 else -1,
                            self.lf + 2 if self.lf >= 0 else -1) if e >= 0]
        return min(min(ends), stop) if ends else stop


def _cut(raw: bytes, line_start: int) -> int:
    """RFC 2046 §5.1.1: the line break before a delimiter belongs to the delimiter."""
    if raw[line_start - 2:line_start] == b"\r\n":
        return line_start - 2
    if raw[line_start - 1:line_start] == b"\n":
        return line_start - 1
    return line_start


def walk(raw: bytes, max_depth: int = MAX_DEPTH) -> Structure:
    """The message's parts in document order (see the module notes). Each octet is looked
    at a bounded number of times: a part's header is searched for a delimiter once, its
    body once, whatever the nesting."""
    stop = len(raw)
    parts: list[MimePart] = []
    structure = Structure(parts)
    delims = _Delimiters()
    chain: list[int] = []  # the open parts, outermost first
    blank = _BlankLines(raw)
    pos, depth, parent, default = 0, 0, -1, TEXT_PLAIN
    while True:
        if len(parts) >= MAX_PARTS:
            structure.too_many = True
            for i in chain:
                parts[i].end = stop
            return structure
        # A new part starts at ``pos``: its header ends at the first empty line, or at a
        # delimiter line before it (then the part has no body).
        header_stop = blank.end(pos, stop)
        found = delims.find(raw, pos, header_stop)
        limit = _cut(raw, found[0]) if found else header_stop
        header = parse_header(raw, pos, max(limit, pos), MAX_HEADER)
        structure.big_header = structure.big_header or header.truncated
        ctype, subtype, params = content_type(header, default)
        part = MimePart(header, stop, depth, parent, ctype, subtype, params)
        index = len(parts)
        parts.append(part)
        chain.append(index)
        structural = ctype == "multipart" or (ctype, subtype) in _ENCAPSULATED
        if found is not None:
            pass  # no body: a delimiter ended the header
        elif structural and depth >= max_depth:
            part.opaque = True
            structure.too_deep = True
            found = delims.find(raw, header.end, stop)
        elif ctype == "multipart" and part.param("boundary"):
            part.kind = MULTIPART
            boundary = part.param("boundary") or ""
            delims.push(boundary.encode("utf-8", "surrogateescape"), index)
            found = delims.find(raw, header.end, stop)  # past the preamble
        elif (ctype, subtype) in _ENCAPSULATED:
            part.kind = MESSAGE
            pos, depth, parent, default = header.end, depth + 1, index, TEXT_PLAIN
            continue
        else:
            found = delims.find(raw, header.end, stop)
        # ``found`` ends this part; epilogues are skipped until a new part starts.
        while True:
            if found is None:
                for i in chain:
                    parts[i].end = stop
                return structure
            line_start, line_end, k, closing = found
            multipart = delims.stack[k][1]
            cut = _cut(raw, line_start)
            while chain[-1] != multipart:  # every part inside it ends here
                done = parts[chain.pop()]
                done.end = max(cut, done.body_start)
            # A closed multipart's epilogue runs to the enclosing delimiter.
            delims.keep(k if closing else k + 1)
            if not closing:
                break
            found = delims.find(raw, line_end, stop)
        pos, depth, parent = line_end, parts[multipart].depth + 1, multipart
        default = MESSAGE_RFC822 if parts[multipart].subtype == "digest" else TEXT_PLAIN


# -- decoding (IMAP SEARCH and PREVIEW, the HTTP API) ---------------------------------------

def decoded_text(body: bytes, transfer_encoding: str, charset: str | None) -> str:
    """A text part's body as text: transfer encoding (RFC 2045 §6) and charset undone."""
    payload = transfer_decoded(body, transfer_encoding)
    # No Content-Type at all (charset None): the RFC 2045 default is us-ascii, but 8-bit
    # text without a label is UTF-8 far more often than not.
    try:
        return payload.decode(charset or "utf-8", "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")


def transfer_decoded(body: bytes, encoding: str) -> bytes:
    """RFC 2045 §6: base64 and quoted-printable undone; anything else is the text itself.
    Damaged base64 is searched as it stands."""
    encoding = encoding.strip().lower()
    if encoding == "base64":
        data = b"".join(body.split())
        try:
            return binascii.a2b_base64(data + b"=" * (-len(data) % 4))
        except binascii.Error:
            return body
    if encoding == "quoted-printable":
        return binascii.a2b_qp(body)
    return body
