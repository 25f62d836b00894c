"""Attachment policy: refuse messages carrying files of blocked types (554 5.7.1).

A part's file name comes from Content-Disposition ``filename`` or Content-Type ``name``
(RFC 2183 §2.3, RFC 2231 continuations and charsets; RFC 2047 encoded-words too, which
mail clients send although the RFC forbids them - an attacker would hide ``.exe`` in one).
Trailing dots and spaces are dropped, as Windows does when it opens the file. Any part whose
decoded content is a zip archive (by its magic number, whatever its name says) has its
member names checked too, into nested zips up to ``MAX_ZIP_DEPTH``. Parsing runs on the
reactor's thread pool, never on the reactor thread.
"""

from __future__ import annotations

import email
import email.header
import email.policy
import io
import logging
import zipfile
from collections.abc import Iterable, Iterator
from typing import Any

from twisted.internet import defer, threads

from maild.filters.chain import Filter, Transaction, Verdict

log = logging.getLogger(__name__)

MAX_ZIP_DEPTH = 3
MAX_ZIP_MEMBER = 10 * 1024 * 1024  # nested archives larger than this are not opened
_ZIP_MAGIC = b"PK\x03\x04"


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


def attachment_names(raw: bytes, scan_zip: bool = True) -> Iterator[str]:
    """Every file name in the message, including those inside zip attachments."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    for part in message.walk():
        if part.is_multipart():
            continue
        filename = part.get_filename()
        if filename:
            yield _decode_name(filename)
        if scan_zip:
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes) and payload.startswith(_ZIP_MAGIC):
                yield from _zip_names(payload, 1)


def blocked_extension(raw: bytes, blocked: Iterable[str], scan_zip: bool = True) -> str | None:
    """The first blocked extension found in the message, or None."""
    blocked_set = {b.lower().lstrip(".") for b in blocked}
    for name in attachment_names(raw, scan_zip):
        ext = extension(name)
        if ext in blocked_set:
            return ext
    return None


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
        ext = yield threads.deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(), blocked_extension,
            tx.raw or b"", self.blocked, self.scan_zip)
        if ext is None:
            return None
        log.info("attachments: refused a .%s attachment from %s", ext, tx.client_ip)
        return Verdict.reject(554, "5.7.1", f"Message refused: .{ext} attachments are not accepted")
