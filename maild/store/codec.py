"""Key layout and value encoding of the LMDB environments (documented in docs/storage.md).

Integers in keys are big-endian so that LMDB's byte order is numeric order: a range scan
over ``user | mailbox | uid`` returns a mailbox's messages in UID order.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from maild.store.types import SYSTEM_FLAGS, Envelope, Mailbox, MessageMeta, SpecialUse

FORMAT_VERSION = 1

_U32 = struct.Struct(">I")
_MBOX = struct.Struct(">II")
_MSG = struct.Struct(">III")
_MODSEQ = struct.Struct(">IIQ")
_U64 = struct.Struct(">Q")
# modseq, internal date, blob size, system flag bits, blob sha256, keyword bytes, prefix bytes
_RECORD = struct.Struct("<QdIB32sHI")
# After the keywords and the prefix, optionally: the save date (RFC 8514), a double. Records
# written before it existed end with the prefix; every reader skips what follows the prefix.
_SAVED = struct.Struct("<d")
# After the save date, optionally: the body's shape, one octet of SHAPE_* bits, noted once
# when the body was staged. Records written before it existed end with the save date: their
# shape is 0, unknown, and a reader that needs it (POP3 RETR) takes the general path.
_SHAPE = struct.Struct("<B")
SHAPE_KNOWN = 1  # the other bits were computed from the body
SHAPE_CRLF = 2  # every LF follows a CR, and a non-empty body ends with CRLF
SHAPE_NO_DOT = 4  # no line of the body begins with "." (its first line included)
SHAPE_CLEAN = SHAPE_KNOWN | SHAPE_CRLF | SHAPE_NO_DOT  # RFC 1939 §3: sent as it is stored
_LINE_DOT = re.compile(rb"\n\.")  # re's literal-prefix scan: twice as fast as ``in`` on text


def body_shape(pieces: Iterable[bytes]) -> int:
    """The SHAPE_* bits of the body made of ``pieces``: C scans over each piece, a CRLF or
    an LF "." split between two pieces included. Never a Python loop over lines."""
    crlf, no_dot = True, True
    prev = b"\n"  # the body starts a line: after the prefix's CRLF, or the message's start
    tail = b""  # the body's last two octets
    for piece in pieces:
        if not piece:
            continue
        if crlf:
            split = piece[:1] == b"\n" and prev == b"\r"  # a CRLF across the pieces
            crlf = piece.count(b"\n") - piece.count(b"\r\n") - split == 0
        if no_dot and (_LINE_DOT.search(piece) is not None or (prev == b"\n" and piece[:1] == b".")):
            no_dot = False
        tail = (tail + piece[-2:])[-2:]
        prev = tail[-1:]
    if tail and tail != b"\r\n":
        crlf = False  # the last line has no line end: POP3 adds one
    return SHAPE_KNOWN | (SHAPE_CRLF if crlf else 0) | (SHAPE_NO_DOT if no_dot else 0)


def u32(n: int) -> bytes:
    return _U32.pack(n)


def u64(n: int) -> bytes:
    return _U64.pack(n)


def read_u64(b: bytes) -> int:
    return _U64.unpack(b)[0]


def read_u32(b: bytes) -> int:
    return _U32.unpack(b)[0]


def mbox_key(user_id: int, mailbox_id: int) -> bytes:
    return _MBOX.pack(user_id, mailbox_id)


def msg_key(user_id: int, mailbox_id: int, uid: int) -> bytes:
    return _MSG.pack(user_id, mailbox_id, uid)


def msg_uid(key: bytes) -> int:
    return _MSG.unpack(key)[2]


def msg_uids(keys: list[bytes]) -> list[int]:
    """The uids of message keys, decoded in one call."""
    return list(struct.unpack(f">{3 * len(keys)}I", b"".join(keys))[2::3])


def mbox_key_after(prefix: bytes) -> bytes:
    """The first key past every ``user | mailbox | ...`` key of the mailbox ``prefix``."""
    return (int.from_bytes(prefix, "big") + 1).to_bytes(len(prefix), "big")


def modseq_key(user_id: int, mailbox_id: int, modseq: int) -> bytes:
    return _MODSEQ.pack(user_id, mailbox_id, modseq)


def name_key(user_id: int, name: str) -> bytes:
    return u32(user_id) + name.encode("utf-8")


# One encoder and decoder, built once: json.dumps with options builds an encoder per call,
# and json.loads of bytes sniffs their encoding each time (both show in append profiles).
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_DECODE = json.JSONDecoder().decode


def _not_serializable(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# Even a built encoder's encode() makes a new C encoder object per call (a third of its
# time on a mailbox record); where the C accelerator exists, make it once. No circular
# reference check (markers=None): stored values are plain trees.
_MAKE_ENCODER = getattr(json.encoder, "c_make_encoder", None)  # private: not in typeshed
_C_ENCODE = (_MAKE_ENCODER(None, _not_serializable, json.encoder.encode_basestring, None,
                           ":", ",", False, False, True)
             if _MAKE_ENCODER is not None else None)


def jdump(value: Any) -> bytes:
    if _C_ENCODE is None:
        return _ENCODE(value).encode("utf-8")
    return "".join(_C_ENCODE(value, 0)).encode("utf-8")


def jload(data: bytes) -> Any:
    return _DECODE(bytes(data).decode("utf-8"))


# The flag set of every combination of system-flag bits, built once.
_FLAG_SETS = tuple(frozenset(f for i, f in enumerate(SYSTEM_FLAGS) if bits & (1 << i))
                   for bits in range(1 << len(SYSTEM_FLAGS)))


_new_tuple = tuple.__new__


def decode_meta(uid: int, data: bytes | memoryview) -> MessageMeta:
    """MessageRecord.decode(data).meta(uid) without the intermediate object: the hot path
    of FETCH 1:* and SEARCH. The tuple is made directly: a NamedTuple's own __new__ is a
    Python function taking keywords, a third of this function's time."""
    modseq, idate, size, bits, sha, kwlen, plen = _RECORD.unpack_from(data)
    flags = _flags(bits, data, kwlen) if kwlen else _FLAG_SETS[bits]
    end = _RECORD.size + kwlen + plen
    saved = _SAVED.unpack_from(data, end)[0] if len(data) >= end + 8 else None
    return _new_tuple(MessageMeta, (uid, flags, idate, plen + size, modseq, sha.hex(), plen, saved))


def _flags(bits: int, data: bytes | memoryview, kwlen: int) -> frozenset[str]:
    """A record's flags: its system-flag bits, and the keywords that follow the fixed part."""
    if not kwlen:
        return _FLAG_SETS[bits]
    pos = _RECORD.size
    return _FLAG_SETS[bits] | frozenset(bytes(data[pos:pos + kwlen]).decode("utf-8").split("\0"))


@dataclass
class MessageRecord:
    modseq: int
    internal_date: float
    blob_size: int
    flags: frozenset[str]
    sha: bytes
    prefix: bytes
    saved: float | None = None  # when it was saved into its mailbox (RFC 8514); None: before it was kept
    shape: int = 0  # the body's SHAPE_* bits; 0: unknown (recorded before they were kept)

    def encode(self) -> bytes:
        bits = 0
        keywords = []
        for flag in self.flags:
            try:
                bits |= 1 << SYSTEM_FLAGS.index(flag)
            except ValueError:
                keywords.append(flag)
        kw = "\0".join(sorted(keywords)).encode("utf-8")
        head = _RECORD.pack(self.modseq, self.internal_date, self.blob_size, bits, self.sha,
                            len(kw), len(self.prefix))
        if self.saved is None:  # the shape follows the save date; every stored record has one
            return head + kw + self.prefix
        return head + kw + self.prefix + _SAVED.pack(self.saved) + (_SHAPE.pack(self.shape) if self.shape else b"")

    @classmethod
    def decode(cls, data: bytes) -> MessageRecord:
        modseq, idate, size, bits, sha, kwlen, plen = _RECORD.unpack_from(data)
        pos = _RECORD.size
        prefix = bytes(data[pos + kwlen:pos + kwlen + plen])
        end = pos + kwlen + plen
        saved = _SAVED.unpack_from(data, end)[0] if len(data) >= end + 8 else None
        shape = data[end + 8] if len(data) > end + 8 else 0
        return cls(modseq, idate, size, _flags(bits, data, kwlen), bytes(sha), prefix, saved, shape)

    def meta(self, uid: int) -> MessageMeta:
        return MessageMeta(uid=uid, flags=self.flags, internal_date=self.internal_date,
                           size=len(self.prefix) + self.blob_size, modseq=self.modseq,
                           blob=self.sha.hex(), prefix_len=len(self.prefix), save_date=self.saved)


def mailbox_from(mailbox_id: int, record: dict[str, Any]) -> Mailbox:
    special = record.get("special_use")
    return Mailbox(
        id=mailbox_id,
        name=record["name"],
        uidvalidity=record["uidvalidity"],
        uidnext=record["uidnext"],
        highestmodseq=record["highestmodseq"],
        special_use=SpecialUse(special) if special else None,
        messages=record["messages"],
        unseen=record["unseen"],
        size=record["size"],
        recent_uid=record.get("recent_uid", 0),
        keywords=tuple(record.get("keywords", ())),
    )


class StoredEnvelope:
    """A message's stored envelope, decoded on first use (SEARCH reads one per message
    that :class:`EnvelopeFilter` did not rule out)."""

    __slots__ = ("_data", "_envelope")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._envelope: Envelope | None = None

    @property
    def envelope(self) -> Envelope:
        if self._envelope is None:
            self._envelope = Envelope(**jload(self._data))
        return self._envelope


class EnvelopeFilter:
    """Rules a message out of SEARCH FROM/SUBJECT/TO/CC/BCC from its stored envelope bytes,
    without decoding JSON. ``clauses`` are lists of texts: :meth:`admits` is False only
    when, for some clause, no field's text can contain any of its texts
    (case-insensitively).

    Sound where the fields are ASCII with no RFC 2047 encoded word (those decode to other
    text): there a value folds to ASCII, so a text that is not ASCII after folding cannot
    match; and JSON escapes only '"', '\\' and control characters, so a text free of those
    appears verbatim in the stored bytes wherever it matches. The texts are prepared once
    per search; :meth:`admits` runs once per message.
    """

    __slots__ = ("_impossible", "_clauses")

    def __init__(self, clauses: Iterable[Iterable[str]]) -> None:
        self._impossible = False  # a clause no ASCII text can satisfy
        self._clauses: list[tuple[bytes, ...]] = []  # lower-case octets, any one per clause
        for clause in clauses:
            octets: list[bytes] = []
            for text in clause:
                folded = text.casefold()
                if not folded.isascii():
                    continue  # no ASCII text contains it
                if '"' in folded or "\\" in folded or not folded.isprintable():
                    break  # escaped in the JSON: the bytes cannot tell, so the clause holds
                octets.append(folded.encode())
            else:
                if not octets:
                    self._impossible = True
                self._clauses.append(tuple(octets))

    def admits(self, data: bytes) -> bool:
        if not data.isascii() or b"=?" in data:
            return True
        if self._impossible:
            return False
        lowered = data.lower()
        for clause in self._clauses:
            for octets in clause:
                if octets in lowered:
                    break
            else:
                return False
        return True

    def admits_stored(self, stored: StoredEnvelope) -> bool:
        return self.admits(stored._data)
