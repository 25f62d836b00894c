"""BINARY (RFC 3516): FETCH BINARY[part], BINARY.PEEK[part] and BINARY.SIZE[part] answer a
part's content with its Content-Transfer-Encoding undone; APPEND accepts a literal8.

Implementation notes — invariants a contributor must keep:

1. Decoding (RFC 3516 §4.2): base64 and quoted-printable are undone; 7bit, 8bit, binary
   and no Content-Transfer-Encoding leave the octets as they are; any other encoding, or
   base64 that cannot be decoded, fails the FETCH with ``NO [UNKNOWN-CTE]`` (§5), never
   guessed at.
2. A part's data containing NUL goes out as a literal8 ``~{n}`` (§4.3); anything else as a
   literal. A part that does not exist is NIL, and its BINARY.SIZE 0.
3. ``BINARY[]`` (no part number) is the whole message, not decoded. One larger than the
   session's streaming threshold is streamed like ``BODY[]`` under the label ``BINARY[]``,
   as a plain literal (its length goes out before its octets are read, so a NUL in it
   cannot choose literal8); smaller ones, parts and BINARY.SIZE come here.
4. A partial ``<origin.count>`` applies to the decoded octets (§4.1), and only the origin is
   echoed in the label. BINARY sets \\Seen as BODY does; BINARY.PEEK and BINARY.SIZE do not
   (``FetchAtt.sets_seen``).
"""

from __future__ import annotations

import binascii
from collections.abc import Callable

from maild.imap import mime
from maild.imap.commands import FetchAtt
from maild.store.types import MessageMeta

_IDENTITY = ("", "7bit", "8bit", "binary")


class UnknownEncoding(Exception):
    """A part whose Content-Transfer-Encoding cannot be undone (``NO [UNKNOWN-CTE]``)."""


def _decoded(part: mime.Part) -> bytes:
    encoding = part.fields.get("content-transfer-encoding", "").strip().lower()
    if encoding in _IDENTITY:
        return part.body
    if encoding == "base64":
        data = b"".join(part.body.split())
        try:
            return binascii.a2b_base64(data + b"=" * (-len(data) % 4))
        except binascii.Error:
            raise UnknownEncoding("damaged base64") from None
    if encoding == "quoted-printable":
        return binascii.a2b_qp(part.body)
    raise UnknownEncoding(encoding)


def part_data(root: mime.Part, numbers: tuple[int, ...]) -> bytes | None:
    """The decoded content of part ``numbers`` (RFC 3501 §6.4.5 numbering), None if absent."""
    part = mime._find(root, numbers)
    return None if part is None else _decoded(part)


def fetch_item(att: FetchAtt, meta: MessageMeta, raw: Callable[[MessageMeta], bytes],
               parsed: Callable[[MessageMeta], mime.Part]) -> bytes:
    """``BINARY[part]<origin> data`` or ``BINARY.SIZE[part] n`` of one message."""
    assert att.section is not None
    numbers = att.section.part
    name = ".".join(str(n) for n in numbers).encode()
    if att.name == "BINARY.SIZE":
        if not numbers:
            return b"BINARY.SIZE[] %d" % meta.size
        data = part_data(parsed(meta), numbers)
        return b"BINARY.SIZE[%s] %d" % (name, 0 if data is None else len(data))
    data = part_data(parsed(meta), numbers) if numbers else raw(meta)
    label = b"BINARY[%s]" % name
    if att.partial is not None:
        label += b"<%d>" % att.partial[0]
        if data is not None:
            data = data[att.partial[0]:att.partial[0] + att.partial[1]]
    if data is None:
        return label + b" NIL"
    return label + b" " + (b"~" if b"\0" in data else b"") + b"{%d}\r\n" % len(data) + data
