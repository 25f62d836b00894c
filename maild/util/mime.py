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

import re
import urllib.parse
from dataclasses import dataclass

from maild.util.message import Header, parse_header

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

def _delimiter(raw: bytes, pos: int, stop: int, stack: list[tuple[bytes, int]]
               ) -> tuple[int, int, int, bool] | None:
    """The next delimiter line of any open multipart at or after line start ``pos``:
    (line start, line end, stack index, closing), innermost boundary first."""
    p = pos
    while p < stop:
        if raw.startswith(b"--", p):
            cand = p
        else:
            i = raw.find(b"\n--", p, stop)
            if i < 0:
                return None
            cand = i + 1
        eol = raw.find(b"\n", cand, stop)
        eol = stop if eol < 0 else eol + 1
        line = raw[cand:min(eol, cand + 1000)].rstrip(b"\r\n").rstrip(b" \t")  # boundary <= 70
        for k in range(len(stack) - 1, -1, -1):
            delim = stack[k][0]
            if line.startswith(delim):
                tail = line[len(delim):]
                if tail == b"":
                    return cand, eol, k, False
                if tail == b"--":
                    return cand, eol, k, True
        p = eol
    return None


def _cut(raw: bytes, line_start: int) -> int:
    """RFC 2046 §5.1.1: the line break before a delimiter belongs to the delimiter."""
    if raw[line_start - 2:line_start] == b"\r\n":
        return line_start - 2
    if raw[line_start - 1:line_start] == b"\n":
        return line_start - 1
    return line_start


def walk(raw: bytes, max_depth: int = MAX_DEPTH) -> Structure:
    """The message's parts in document order (see the module notes)."""
    stop = len(raw)
    parts: list[MimePart] = []
    structure = Structure(parts)
    stack: list[tuple[bytes, int]] = []  # (b"--" + boundary, index of the multipart)
    chain: list[int] = []  # the open parts, outermost first
    pos, depth, parent, default = 0, 0, -1, TEXT_PLAIN
    while True:
        # A new part starts at ``pos``: its header ends at the next delimiter at the latest.
        if len(parts) >= MAX_PARTS:
            structure.too_many = True
            for i in chain:
                parts[i].end = stop
            return structure
        found = _delimiter(raw, pos, stop, stack) if stack else None
        limit = _cut(raw, found[0]) if found else stop
        header = parse_header(raw, pos, max(limit, pos))
        ctype, subtype, params = content_type(header, default)
        part = MimePart(header, limit, depth, parent, ctype, subtype, params)
        index = len(parts)
        parts.append(part)
        chain.append(index)
        structural = ctype == "multipart" or (ctype, subtype) in _ENCAPSULATED
        if structural and depth >= max_depth:
            part.opaque = True
            structure.too_deep = True
        elif ctype == "multipart" and part.param("boundary"):
            part.kind = MULTIPART
            boundary = part.param("boundary") or ""
            stack.append((b"--" + boundary.encode("utf-8", "surrogateescape"), index))
            found = _delimiter(raw, header.end, stop, stack)
        elif (ctype, subtype) in _ENCAPSULATED:
            part.kind = MESSAGE
            pos, depth, parent, default = header.end, depth + 1, index, TEXT_PLAIN
            continue
        # ``found`` is the next delimiter after this part's start (its preamble skipped,
        # when it is a multipart); epilogues are skipped until a new part starts.
        while True:
            if found is None:
                for i in chain:
                    parts[i].end = stop
                return structure
            line_start, line_end, k, closing = found
            multipart = stack[k][1]
            cut = _cut(raw, line_start)
            while chain[-1] != multipart:  # every part inside it ends here
                done = parts[chain.pop()]
                done.end = max(cut, done.body_start)
            del stack[k + 1:]
            if not closing:
                break
            stack.pop()  # the multipart's epilogue runs to the enclosing delimiter
            found = _delimiter(raw, line_end, stop, stack) if stack else None
        pos, depth, parent = line_end, parts[multipart].depth + 1, multipart
        default = MESSAGE_RFC822 if parts[multipart].subtype == "digest" else TEXT_PLAIN
