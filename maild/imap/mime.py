"""The IMAP view of a message (pure functions over the raw bytes).

* :func:`parse` builds the MIME tree from the one MIME walker (:mod:`maild.util.mime`,
  no recursion) as offsets into the message, so ``BODY[section]`` (RFC 3501 §6.4.5)
  returns the octets as stored. Parts nested deeper than ``maild.util.mime.MAX_DEPTH``
  are opaque: a multipart there shows one empty part, a message/rfc822 part is shown as
  APPLICATION/OCTET-STREAM (a body-type-msg needs an envelope we did not read).
* :func:`bodystructure` and :func:`envelope` render RFC 3501 §7.4.2 BODY/BODYSTRUCTURE
  and ENVELOPE.
* :func:`section` extracts HEADER, HEADER.FIELDS (.NOT), TEXT, MIME and part numbers;
  :func:`section_span` says where they lie in the message, so FETCH can stream them.
* :func:`header_text` and :func:`body_text` decode RFC 2047 words, transfer encodings and
  charsets for SEARCH (RFC 3501 §6.4.4: substring, case-insensitive).
"""

from __future__ import annotations

import email.utils
import functools
import re
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import Message

from maild.imap import wire
from maild.imap.commands import Section
from maild.store.types import Envelope
from maild.util import address
from maild.util.message import envelope_fields, header_end, parse_header
from maild.util.mime import LEAF, MESSAGE, decoded_text, walk


@dataclass
class Part:
    raw: bytes  # the whole message: the part is raw[start:end]
    start: int
    body_start: int
    end: int
    type: str = "text"
    subtype: str = "plain"
    params: list[tuple[str, str]] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)  # first value of each field, lower-case names
    children: list[Part] = field(default_factory=list)  # multipart
    message: Part | None = None  # message/rfc822: the encapsulated message

    @property
    def is_multipart(self) -> bool:
        return self.type == "multipart"

    @property
    def header(self) -> bytes:
        """The part's header, including the blank line that ends it (may be empty)."""
        return self.raw[self.start:self.body_start]

    @property
    def body(self) -> bytes:
        return self.raw[self.body_start:self.end]


_EMPTY = b""


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
        return [*(_header(name, value).get_params(header=name, failobj=[]) or [])]
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
        return email.utils.collapse_rfc2231_value(value)
    return str(value)


def parse(raw: bytes) -> Part:
    """The MIME tree of the message, built from the walker's flat list of parts."""
    structure = walk(raw)
    nodes: list[Part] = []
    for mp in structure.parts:
        fields: dict[str, str] = {}
        for f in mp.header.fields:
            fields.setdefault(f.lname, f.value)
        ctype, subtype, params = _content_type(fields.get("content-type"), (mp.type, mp.subtype))
        if mp.opaque and (ctype, subtype) in (("message", "rfc822"), ("message", "global")):
            ctype, subtype, params = "application", "octet-stream", []
        part = Part(raw, mp.start, mp.body_start, mp.end, ctype, subtype, params, fields)
        nodes.append(part)
        if mp.parent >= 0:
            parent = nodes[mp.parent]
            if structure.parts[mp.parent].kind == MESSAGE:
                parent.message = part
            else:
                parent.children.append(part)
    for part in nodes:
        if part.is_multipart and not part.children:
            part.children = [Part(_EMPTY, 0, 0, 0)]  # RFC 3501 §7.4.2 needs one body
    return nodes[0]


# -- ENVELOPE / BODYSTRUCTURE ---------------------------------------------------------------

def _addresses(value: str | None) -> bytes:
    """An ENVELOPE address list (RFC 3501 §7.4.2), group markers and routes included."""
    out = [b"(" + b" ".join([wire.nstring(a.name), wire.nstring(a.adl), wire.nstring(a.mailbox),
                             wire.nstring(a.host)]) + b")" for a in address.parse(value)]
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
    """HEADER.FIELDS[.NOT] (RFC 3501 §6.4.5): the fields as the one header parser reads
    them, so a user is shown exactly the From that mail authentication judged."""
    wanted = _field_names(names)
    parsed = parse_header(header)
    out = [parsed.field_bytes(f) for f in parsed.fields
           if (f.lname.encode("utf-8") in wanted) != exclude]
    return b"".join(out) + b"\r\n"


Span = tuple[int, int]  # (offset in the raw message, length)


def section_span(raw: bytes, spec: Section, root: Part | None = None) -> Span | bytes | None:
    """Where BODY[spec] lies in ``raw`` as (offset, length), or its octets when they are
    not one slice of it (HEADER.FIELDS[.NOT]), or None when the part does not exist. A
    span lets FETCH stream a section from the message instead of copying it (docs/imap.md)."""
    if not spec.part:
        # The message's own HEADER, HEADER.FIELDS[.NOT] and TEXT are cut from the raw
        # octets: no MIME tree (the header fetch every client makes of every message).
        if spec.text is None:
            return 0, len(raw)
        cut = header_end(raw)
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
        return part.start, part.body_start - part.start
    if spec.text is not None:
        if part.message is None:
            return None  # HEADER/TEXT of a part number apply to message/rfc822 parts only
        part = part.message
        if spec.text == "HEADER":
            return part.start, part.body_start - part.start
        if spec.text != "TEXT":
            return _header_fields(part.header, spec.fields, spec.text.endswith(".NOT"))
    if part.raw is not raw:
        return 0, 0  # the one empty body shown for a multipart without parts
    return part.body_start, part.end - part.body_start


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
    """The decoded text of every text/* leaf (transfer encoding and charset undone), in
    document order, from the one MIME walker (no recursion: text 50 levels down is found)."""
    out: list[str] = []
    for mp in walk(raw).parts:
        if mp.kind != LEAF or mp.opaque or mp.type != "text":
            continue
        charset = mp.param("charset") if mp.header.first("content-type") is not None else None
        out.append(decoded_text(mp.body, mp.header.first("content-transfer-encoding") or "", charset))
    return "\n".join(out)


def leaf_text(part: Part) -> str:
    """A text/* leaf's text, its transfer encoding and charset undone."""
    charset = dict(part.params).get("charset") if "content-type" in part.fields else None
    return decoded_text(part.body, part.fields.get("content-transfer-encoding", ""), charset)


def all_headers_text(raw: bytes) -> str:
    return "\n".join(f"{f.name}: {header_text(f.value)}" for f in parse_header(raw).fields)


def header_values(raw: bytes, name: str) -> list[str]:
    return [header_text(v) for v in parse_header(raw).get_all(name)]
