"""The IMAP view of a message (pure functions over the raw bytes).

* :func:`parse` builds the MIME tree with exact byte slices, so ``BODY[section]``
  (RFC 3501 §6.4.5) returns the octets as stored.
* :func:`bodystructure` and :func:`envelope` render RFC 3501 §7.4.2 BODY/BODYSTRUCTURE
  and ENVELOPE.
* :func:`section` extracts HEADER, HEADER.FIELDS (.NOT), TEXT, MIME and part numbers.
* :func:`header_text` and :func:`body_text` decode RFC 2047 words, transfer encodings and
  charsets for SEARCH (RFC 3501 §6.4.4: substring, case-insensitive).
"""

from __future__ import annotations

import binascii
import email
import functools
import re
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import Message
from email.utils import getaddresses

from maild.imap import wire
from maild.imap.parser import Section
from maild.store.types import Envelope
from maild.util.message import envelope_fields, header_end, header_fields, split_header

MAX_PARTS_DEPTH = 20  # deeper MIME nesting is treated as an opaque leaf

_FIELD_LINE = re.compile(rb"^([^:\s]+)[ \t]*:", re.MULTILINE)


@dataclass
class Part:
    header: bytes  # including the blank line that ends it (may be empty)
    body: bytes
    type: str = "text"
    subtype: str = "plain"
    params: list[tuple[str, str]] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)  # first value of each field, lower-case names
    children: list[Part] = field(default_factory=list)  # multipart
    message: Part | None = None  # message/rfc822: the encapsulated message
    offset: int = 0  # where ``header`` starts in the raw message given to parse()

    @property
    def is_multipart(self) -> bool:
        return self.type == "multipart"


def _header(name: str, value: str) -> Message:
    """A one-field Message for the email package's parameter parser, which raises on the
    surrogates that stand for undecodable bytes: those become U+FFFD."""
    msg = Message()
    msg[name] = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return msg


# RFC 2045 §5.1 token characters, less "*" (RFC 2231 parameters go to the email package).
_TOKEN = r"[!#$%&'+\-.0-9A-Z^_`a-z{|}~]+"
_VALUE = rf'(?:{_TOKEN}|"[^"\\\r\n]*")'
_SIMPLE_PARAMS = re.compile(rf"\s*({_TOKEN}(?:/{_TOKEN})?)\s*((?:;\s*{_TOKEN}\s*=\s*{_VALUE}\s*)*)")
_PARAM = re.compile(rf";\s*({_TOKEN})\s*=\s*({_VALUE})")


def _header_params(name: str, value: str) -> list[tuple[str, object]]:
    """``get_params()`` of one Content-Type or Content-Disposition value: the main value with
    "", then (lower-case attribute, value), RFC 2231 values as tuples. The common plain
    shape (ASCII tokens and simple quoted strings) is parsed here, ~3.5x faster; anything
    else by the email package."""
    simple = _SIMPLE_PARAMS.fullmatch(value) if value.isascii() else None
    if simple is None:
        return _header(name, value).get_params(header=name, failobj=[]) or []
    return [(simple.group(1), ""), *((k.lower(), v[1:-1] if v[:1] == '"' else v)
                                     for k, v in _PARAM.findall(simple.group(2)))]


def _content_type(value: str | None, default: tuple[str, str]) -> tuple[str, str, list[tuple[str, str]]]:
    if not value:
        return default[0], default[1], [("charset", "us-ascii")] if default[0] == "text" else []
    params = _header_params("content-type", value)
    main = params[0][0].lower() if params else ""
    ctype, _, subtype = main.partition("/")
    if not ctype or not subtype or "/" in subtype:
        return "text", "plain", [("charset", "us-ascii")]
    return ctype, subtype, [(k, _param_value(v)) for k, v in params[1:] if k]


def _param_value(value: object) -> str:
    if isinstance(value, tuple):  # RFC 2231 encoded
        return email.utils.collapse_rfc2231_value(value)  # type: ignore[arg-type]
    return str(value)


def _split(raw: bytes) -> tuple[bytes, bytes]:
    """(header including its blank line, body) of a message or part."""
    if raw.startswith((b"\r\n", b"\n")):  # a part with no header fields at all
        cut = 2 if raw.startswith(b"\r\n") else 1
        return raw[:cut], raw[cut:]
    return split_header(raw)


def parse(raw: bytes, default: tuple[str, str] = ("text", "plain"), depth: int = 0,
          offset: int = 0) -> Part:
    """The MIME tree of ``raw``; ``offset`` is where ``raw`` starts in the whole message."""
    header, body = _split(raw)
    fields: dict[str, str] = {}
    for name, value in header_fields(header):
        fields.setdefault(name.lower(), value)
    ctype, subtype, params = _content_type(fields.get("content-type"), default)
    part = Part(header, body, ctype, subtype, params, fields, offset=offset)
    body_offset = offset + len(header)
    if depth >= MAX_PARTS_DEPTH:
        return part
    if ctype == "multipart":
        boundary = dict(params).get("boundary")
        if boundary:
            child_default = ("message", "rfc822") if subtype == "digest" else ("text", "plain")
            part.children = [parse(chunk, child_default, depth + 1, body_offset + start)
                             for start, chunk in _split_multipart(body, boundary.encode("utf-8", "replace"))]
        if not part.children:
            part.children = [Part(b"", b"", offset=body_offset)]
    elif (ctype, subtype) in (("message", "rfc822"), ("message", "global")):
        part.message = parse(body, ("text", "plain"), depth + 1, body_offset)
    return part


def _split_multipart(body: bytes, boundary: bytes) -> list[tuple[int, bytes]]:
    """(offset in ``body``, octets) of each body part. RFC 2046 §5.1.1: the CRLF before a
    delimiter line belongs to the delimiter."""
    delimiter = re.compile(rb"(?:^|\r?\n)--" + re.escape(boundary) + rb"(--)?[ \t]*(?:\r?\n|$)")
    chunks: list[tuple[int, bytes]] = []
    start: int | None = None
    for match in delimiter.finditer(body):
        if start is not None:
            chunks.append((start, body[start:match.start()]))
        if match.group(1):
            return chunks
        start = match.end()
    if start is not None:
        chunks.append((start, body[start:]))
    return chunks


# -- ENVELOPE / BODYSTRUCTURE ---------------------------------------------------------------

# One mailbox as most header fields hold it: "Name" <local@domain>, Name <local@domain>,
# <local@domain> or local@domain, with no comment, group, escape or second address.
# getaddresses() answers these the same way, ~10x slower (ENVELOPE renders five lists).
_SIMPLE_MAILBOX = re.compile(r'\s*(?:"([^"\\]*)"\s*|([^"\\,;:<>@()\[\]]*?)\s*)?'
                             r'<([^\s"\\,;:<>@()\[\]]+)@([^\s"\\,;:<>@()\[\]]+)>\s*'
                             r'|\s*([^\s"\\,;:<>@()\[\]]+)@([^\s"\\,;:<>@()\[\]]+)\s*')


def address_pairs(value: str) -> list[tuple[str, str]]:
    simple = _SIMPLE_MAILBOX.fullmatch(value)
    if simple is None:
        return getaddresses([value])
    quoted, bare, local, domain, plain_local, plain_domain = simple.groups()
    if local is None:
        return [("", f"{plain_local}@{plain_domain}")]
    name = quoted if quoted is not None else " ".join((bare or "").split())
    return [(name, f"{local}@{domain}")]


def _addresses(value: str | None) -> bytes:
    if not value:
        return b"NIL"
    out = []
    for name, address in address_pairs(value):
        if not address and not name:
            continue
        local, at, host = address.rpartition("@")
        if not at:
            local, host = address, ""
        out.append(b"(" + b" ".join([wire.nstring(name or None), b"NIL", wire.nstring(local),
                                     wire.nstring(host or None)]) + b")")
    return b"(" + b"".join(out) + b")" if out else b"NIL"


def envelope(env: Envelope) -> bytes:
    """RFC 3501 §7.4.2 ENVELOPE; Sender and Reply-To default to From."""
    from_ = _addresses(env.from_)
    sender = _addresses(env.sender) if env.sender else from_
    reply_to = _addresses(env.reply_to) if env.reply_to else from_
    items = [wire.nstring(env.date), wire.nstring(env.subject), from_, sender, reply_to,
             _addresses(env.to), _addresses(env.cc), _addresses(env.bcc),
             wire.nstring(env.in_reply_to), wire.nstring(env.message_id)]
    return b"(" + b" ".join(items) + b")"


def _params(params: list[tuple[str, str]]) -> bytes:
    if not params:
        return b"NIL"
    return b"(" + b" ".join(wire.string(k.upper()) + b" " + wire.string(v) for k, v in params) + b")"


def _disposition(part: Part) -> bytes:
    value = part.fields.get("content-disposition")
    if not value:
        return b"NIL"
    params = _header_params("content-disposition", value)
    if not params or not params[0][0]:
        return b"NIL"
    rest = [(k, _param_value(v)) for k, v in params[1:] if k]
    return b"(" + wire.string(params[0][0].upper()) + b" " + _params(rest) + b")"


def _language(part: Part) -> bytes:
    value = part.fields.get("content-language")
    if not value:
        return b"NIL"
    tags = [t.strip() for t in value.split(",") if t.strip()]
    return b"(" + b" ".join(wire.string(t) for t in tags) + b")" if tags else b"NIL"


def _lines(body: bytes) -> int:
    return body.count(b"\n") + (1 if body and not body.endswith(b"\n") else 0)


def bodystructure(part: Part, extended: bool = True) -> bytes:
    """RFC 3501 §7.4.2 BODYSTRUCTURE (``extended``) or BODY."""
    if part.is_multipart:
        out = b"".join(bodystructure(child, extended) for child in part.children)
        out += b" " + wire.string(part.subtype.upper())
        if extended:
            out += b" " + b" ".join([_params(part.params), _disposition(part), _language(part),
                                      wire.nstring(part.fields.get("content-location"))])
        return b"(" + out + b")"
    encoding = (part.fields.get("content-transfer-encoding") or "7BIT").strip().upper()
    items = [wire.string(part.type.upper()), wire.string(part.subtype.upper()), _params(part.params),
             wire.nstring(part.fields.get("content-id")),
             wire.nstring(part.fields.get("content-description")),
             wire.string(encoding), b"%d" % len(part.body)]
    if part.message is not None:
        env = Envelope(**envelope_fields(part.message.header))
        items += [envelope(env), bodystructure(part.message, extended), b"%d" % _lines(part.body)]
    elif part.type == "text":
        items.append(b"%d" % _lines(part.body))
    if extended:
        items += [wire.nstring(part.fields.get("content-md5")), _disposition(part), _language(part),
                  wire.nstring(part.fields.get("content-location"))]
    return b"(" + b" ".join(items) + b")"


# -- BODY[section] ------------------------------------------------------------------------------

def _find(root: Part, numbers: tuple[int, ...]) -> Part | None:
    """RFC 3501 §6.4.5 part numbering; None when the part does not exist."""
    part = root
    message_level = True  # a message's single body is its part 1
    for n in numbers:
        if not message_level and part.message is not None:
            part, message_level = part.message, True  # parts of an encapsulated message
        if part.is_multipart:
            if n > len(part.children):
                return None
            part, message_level = part.children[n - 1], False
        elif message_level and n == 1:
            message_level = False
        else:
            return None
    return part


@functools.lru_cache(maxsize=64)
def _field_names(names: tuple[str, ...]) -> frozenset[bytes]:
    """HEADER.FIELDS names as the lower-case octets they are compared with (a client asks
    for the same list for every message)."""
    return frozenset(n.encode("utf-8").lower() for n in names)


def _header_fields(header: bytes, names: tuple[str, ...], exclude: bool) -> bytes:
    wanted = _field_names(names)
    out = bytearray()
    keep = False
    for line in header.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] not in (b" ", b"\t"):
            match = _FIELD_LINE.match(line)
            keep = (match.group(1).lower() in wanted) != exclude if match else False
        if keep:
            out += line
    return bytes(out) + b"\r\n"


def _header_length(raw: bytes) -> int:
    """len(_split(raw)[0]), without copying the body."""
    if raw.startswith((b"\r\n", b"\n")):
        return 2 if raw.startswith(b"\r\n") else 1
    return header_end(raw)


Span = tuple[int, int]  # (offset in the raw message, length)


def section_span(raw: bytes, spec: Section, root: Part | None = None) -> Span | bytes | None:
    """Where BODY[spec] lies in ``raw`` as (offset, length), or its octets when they are
    not one slice of it (HEADER.FIELDS), or None when the part does not exist. A span lets
    FETCH stream a section from the message instead of copying it (docs/imap.md)."""
    if not spec.part:
        # The message's own HEADER, HEADER.FIELDS[.NOT] and TEXT are cut from the raw
        # octets: no MIME tree (the header fetch every client makes of every message).
        if spec.text is None:
            return 0, len(raw)
        cut = _header_length(raw)
        if spec.text == "TEXT":
            return cut, len(raw) - cut
        if spec.text == "HEADER":
            return 0, cut
        return _header_fields(raw[:cut], spec.fields, spec.text.endswith(".NOT"))
    root = root or parse(raw)
    part = _find(root, spec.part)
    if part is None:
        return None
    if spec.text == "MIME":
        return part.offset, len(part.header)
    if spec.text is not None:
        if part.message is None:
            return None  # HEADER/TEXT of a part number apply to message/rfc822 parts only
        part = part.message
        if spec.text not in ("TEXT", "HEADER"):
            return _header_fields(part.header, spec.fields, spec.text.endswith(".NOT"))
    if spec.text == "HEADER":
        return part.offset, len(part.header)
    return part.offset + len(part.header), len(part.body)


def section(raw: bytes, spec: Section, root: Part | None = None) -> bytes | None:
    """The octets of BODY[spec]; None when the part does not exist (answered as empty)."""
    span = section_span(raw, spec, root)
    if span is None or isinstance(span, bytes):
        return span
    start, length = span
    return raw if (start, length) == (0, len(raw)) else raw[start:start + length]


# -- SEARCH text ----------------------------------------------------------------------------------

def header_text(value: str) -> str:
    """A header value with RFC 2047 encoded words decoded."""
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError, AssertionError):
        return value


def body_text(raw: bytes) -> str:
    """The decoded text of every text/* leaf (transfer encoding and charset undone), from
    the same MIME tree FETCH uses: the email package's parser took ~10x as long, and SEARCH
    BODY runs this on every message of a mailbox."""
    out: list[str] = []
    _leaf_texts(parse(raw), out)
    return "\n".join(out)


def _leaf_texts(part: Part, out: list[str]) -> None:
    if part.children:
        for child in part.children:
            _leaf_texts(child, out)
    elif part.message is not None:
        _leaf_texts(part.message, out)
    elif part.type == "text":
        payload = _transfer_decoded(part.body, part.fields.get("content-transfer-encoding", ""))
        # No Content-Type at all: the RFC 2045 default is us-ascii, but 8-bit text without
        # a label is UTF-8 far more often than not.
        charset = dict(part.params).get("charset") if "content-type" in part.fields else None
        try:
            out.append(payload.decode(charset or "utf-8", "replace"))
        except LookupError:
            out.append(payload.decode("utf-8", "replace"))


def _transfer_decoded(body: bytes, encoding: str) -> bytes:
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


def all_headers_text(raw: bytes) -> str:
    header, _ = split_header(raw)
    return "\n".join(f"{name}: {header_text(value)}" for name, value in header_fields(header))


def header_values(raw: bytes, name: str) -> list[str]:
    header, _ = split_header(raw)
    wanted = name.lower()
    return [header_text(v) for n, v in header_fields(header) if n.lower() == wanted]
