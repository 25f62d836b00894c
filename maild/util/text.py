"""The searchable text of a message: one implementation for every reader of it.

IMAP SEARCH's scan (maild/imap/search.py), the search index (maild/search) and PREVIEW
read a message's text through these functions, so the index holds exactly the text the
scan compares with (docs/search.md: the exactness argument rests on it).

* :func:`header_text` decodes RFC 2047 encoded words (RFC 2047 §6).
* :func:`body_text` is the decoded text of every text/* leaf of the one MIME walker
  (:mod:`maild.util.mime`), in document order: transfer encoding (RFC 2045 §6) and
  charset undone, HTML reduced to its text (:func:`html_text`).
* :func:`all_headers_text` is the top-level header, one ``Name: value`` line per field.
* :func:`attachment_names` are the file names of the parts (RFC 2183 filename, RFC 2045
  name), RFC 2231 decoded: part of the message's TEXT (RFC 3501 §6.4.4, the MIME headers
  are in the body).
"""

from __future__ import annotations

import html
import re
from email.header import decode_header, make_header

from maild.util.message import parse_header
from maild.util.mime import LEAF, decoded_text, split_params, walk

_HIDDEN = re.compile(r"<(script|style|head|title)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>")


def header_text(value: str) -> str:
    """A header value with RFC 2047 encoded words decoded."""
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError, AssertionError):
        return value


def html_text(markup: str) -> str:
    """The text of an HTML body: script, style, head and title gone, every tag a space,
    character references resolved (what a reader sees, not the markup)."""
    if "<" not in markup and "&" not in markup:
        return markup
    return html.unescape(_TAG.sub(" ", _HIDDEN.sub(" ", markup)))


def body_text(raw: bytes) -> str:
    """The decoded text of every text/* leaf (transfer encoding and charset undone, HTML
    reduced to text), in document order, joined by newlines; from the one MIME walker
    (no recursion: text 50 levels down is found)."""
    out: list[str] = []
    for mp in walk(raw).parts:
        if mp.kind != LEAF or mp.opaque or mp.type != "text":
            continue
        charset = mp.param("charset") if mp.header.first("content-type") is not None else None
        text = decoded_text(mp.body, mp.header.first("content-transfer-encoding") or "", charset)
        out.append(html_text(text) if mp.subtype == "html" else text)
    return "\n".join(out)


def attachment_names(raw: bytes) -> list[str]:
    """The file names the parts carry: Content-Disposition filename (RFC 2183 §2.3), else
    Content-Type name (RFC 2045), RFC 2231 and RFC 2047 decoded."""
    out = []
    for mp in walk(raw).parts:
        if mp.kind != LEAF:
            continue
        name = None
        disposition = mp.header.first("content-disposition")
        if disposition:
            name = dict(split_params(disposition)[1]).get("filename")
        if not name:
            name = mp.param("name")
        if name:
            out.append(header_text(name))
    return out


def all_headers_text(raw: bytes) -> str:
    """The message's header as searched by TEXT: ``Name: decoded value`` per field."""
    return "\n".join(f"{f.name}: {header_text(f.value)}" for f in parse_header(raw).fields)


def header_values(raw: bytes, name: str) -> list[str]:
    """Every value of the field ``name`` of the message's header, RFC 2047 decoded."""
    return [header_text(v) for v in parse_header(raw).get_all(name)]
