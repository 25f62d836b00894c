"""Attachment policy: refuse messages carrying files of blocked types (554 5.7.1).

Every name a mail client could save a part under is checked, not the one a particular
parser would pick (issue 15, item 11):

- every ``filename`` of every Content-Disposition field and every ``name`` of every
  Content-Type field of the part (RFC 2183 §2.3, RFC 2045 §5.1), duplicates included,
  RFC 2231 continuations and charsets decoded (``maild.util.mime.split_params``) and
  RFC 2047 encoded-words too, which mail clients send although the RFC forbids them;
- the names of ``begin <mode> <name>`` lines of uuencoded data and ``=ybegin ... name=``
  lines of yEnc data in a part's body (mail clients decode those inline);
- a part with two Content-Type fields is refused outright: which one a client obeys
  decides what the parts are (RFC 2045 §3 allows one).

Trailing dots and spaces are dropped, as Windows does when it opens the file. A part whose
content is a zip archive (by its magic number, whatever its name says) has its member
names checked too, into nested zips up to ``MAX_ZIP_DEPTH``. The structure comes from the
one MIME walker (:mod:`maild.util.mime`, the transaction's ``tx.mime``): offsets into the
message, no copy of it; only a zip part's payload is decoded. Runs on the reactor's thread
pool, never on the reactor thread.
"""

from __future__ import annotations

import binascii
import email.header
import io
import logging
import re
import zipfile
from collections.abc import Iterable, Iterator
from typing import Any

from twisted.internet import defer, threads

from maild.util.mime import LEAF, MimePart, Structure, split_params, walk
from maild.util.transaction import Filter, Transaction, Verdict

log = logging.getLogger(__name__)

MAX_ZIP_DEPTH = 3
MAX_ZIP_MEMBER = 10 * 1024 * 1024  # nested archives larger than this are not opened
_ZIP_MAGIC = b"PK\x03\x04"
_AMBIGUOUS = "several Content-Type fields"  # check()'s answer for ambiguous_type
# uuencode (POSIX uuencode, "begin-base64" too) and yEnc headers: a line of a body.
_INLINE_NAME = re.compile(rb"(?:begin(?:-base64)?[ \t]+[0-7]{1,4}[ \t]+|=ybegin[ \t][^\r\n]*?name=)"
                          rb"([^\r\n]+)")


def _inline_names(raw: bytes, start: int, end: int) -> Iterator[str]:
    """The names of uuencode ``begin`` and yEnc ``=ybegin`` lines in raw[start:end],
    found with substring searches (a regular expression tried at every line start cost
    ~20 ms per MB)."""
    for marker in (b"begin", b"=ybegin"):
        pos = start
        while (i := raw.find(marker, pos, end)) >= 0:
            pos = i + 1
            if i != start and raw[i - 1:i] != b"\n":
                continue
            match = _INLINE_NAME.match(raw, i, end)
            if match is not None:
                yield match.group(1).decode("utf-8", "replace").strip()


def _decode_name(value: str) -> str:
    if "=?" in value:
        try:
            value = str(email.header.make_header(email.header.decode_header(value)))
        except (ValueError, LookupError, UnicodeDecodeError):
            pass
    return value


def extension(filename: str) -> str:
    """The lower-case extension Windows would use: ``a.pdf.EXE. `` -> ``exe``."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1].rstrip(". ")
    if "." not in name:
        return ""
    return name.rsplit(".", 1)[1].strip().lower()


def _zip_names(data: bytes, depth: int) -> Iterator[str]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError):
        return
    with archive:
        for info in archive.infolist():
            yield info.filename
            if depth >= MAX_ZIP_DEPTH or info.file_size > MAX_ZIP_MEMBER or info.is_dir():
                continue
            try:
                with archive.open(info) as member:
                    head = member.read(len(_ZIP_MAGIC))
                    if head != _ZIP_MAGIC:
                        continue
                    inner = head + member.read(MAX_ZIP_MEMBER)
            except (zipfile.BadZipFile, RuntimeError, NotImplementedError, ValueError, OSError):
                continue  # encrypted or damaged: clamd sees the bytes anyway
            yield from _zip_names(inner, depth + 1)


def part_names(raw: bytes, part: MimePart) -> list[str]:
    """Every name the part could be saved under (see the module notes), each once."""
    names: list[str] = []
    for f in part.header.fields:
        wanted: tuple[str, ...]
        if f.lname == "content-type":
            wanted = ("name",)
        elif f.lname == "content-disposition":
            wanted = ("filename", "name")
        else:
            continue
        value = f.value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        names.extend(v for k, v in split_params(value)[1] if k in wanted and v)
    if part.kind == LEAF:
        names.extend(_inline_names(raw, part.body_start, part.end))
    return list(dict.fromkeys(_decode_name(n) for n in names))


def _zip_payload(raw: bytes, part: MimePart) -> bytes | None:
    """The part's decoded content when it is a zip archive (only then decoded)."""
    encoding = (part.header.first("content-transfer-encoding") or "").strip().lower()
    body = raw[part.body_start:part.end] if part.end - part.body_start >= 4 else b""
    try:
        if encoding == "base64":
            head = b"".join(raw[part.body_start:part.body_start + 200].split())[:8]
            if not binascii.a2b_base64(head).startswith(_ZIP_MAGIC):
                return None
            return binascii.a2b_base64(b"".join(body.split()))
        if encoding == "quoted-printable":
            decoded = binascii.a2b_qp(body)
            return decoded if decoded.startswith(_ZIP_MAGIC) else None
    except binascii.Error:
        return None
    return body if body.startswith(_ZIP_MAGIC) else None


def ambiguous_type(structure: Structure) -> bool:
    """Some part has several Content-Type fields: mail clients differ on which one counts
    (RFC 2045 §3 allows one), and with it on what the parts are."""
    return any(sum(f.lname == "content-type" for f in part.header.fields) > 1
               for part in structure.parts)


def attachment_names(raw: bytes, scan_zip: bool = True,
                     structure: Structure | None = None) -> Iterator[str]:
    """Every file name in the message, including those inside zip attachments."""
    structure = structure if structure is not None else walk(raw)
    for part in structure.parts:
        yield from part_names(raw, part)
        if scan_zip and part.kind == LEAF:
            payload = _zip_payload(raw, part)
            if payload is not None:
                yield from _zip_names(payload, 1)


def blocked_extension(raw: bytes, blocked: Iterable[str], scan_zip: bool = True,
                      structure: Structure | None = None) -> str | None:
    """The first blocked extension found in the message, or None."""
    blocked_set = {b.lower().lstrip(".") for b in blocked}
    for name in attachment_names(raw, scan_zip, structure):
        ext = extension(name)
        if ext in blocked_set:
            return ext
    return None


# octets: messages up to this size are checked on the reactor thread (on_data)
INLINE_CHECK_MAX = 64 * 1024


class AttachmentFilter(Filter):
    name = "attachments"

    def __init__(self, reactor: Any, blocked_extensions: list[str], scan_zip: bool = True) -> None:
        self.reactor = reactor
        self.blocked = [e.lower().lstrip(".") for e in blocked_extensions]
        self.scan_zip = scan_zip

    @defer.inlineCallbacks
    def on_data(self, tx: Transaction):  # type: ignore[no-untyped-def]
        if not self.blocked:
            return None
        raw = tx.raw or b""

        def check() -> str | None:
            structure = tx.mime if tx.raw is raw else walk(raw)
            assert structure is not None
            if ambiguous_type(structure):
                return _AMBIGUOUS
            return blocked_extension(raw, self.blocked, self.scan_zip, structure)
        # A small message is checked here: handing it to a thread (a wake-up there, one
        # back to the reactor, and the two threads contending for the GIL) cost more than
        # walking it. A big one (an archive to list, long base64 to decode) goes to a thread
        # so the reactor keeps serving the other sessions meanwhile.
        if len(raw) <= INLINE_CHECK_MAX:
            ext = check()
        else:
            ext = yield threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), check)
        if ext is _AMBIGUOUS:
            log.info("attachments: refused an ambiguous MIME structure from %s", tx.client_ip)
            return Verdict.reject(554, "5.7.1", "Message refused: a MIME part has several "
                                  "Content-Type fields")
        if ext is None:
            return None
        log.info("attachments: refused a .%s attachment from %s", ext, tx.client_ip)
        return Verdict.reject(554, "5.7.1", f"Message refused: .{ext} attachments are not accepted")
