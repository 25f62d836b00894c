"""Attachment policy: blocked extensions, in the message and inside zip archives."""

from __future__ import annotations

import base64

import pytest

from maild.config import FiltersConfig
from maild.filters.attachments import INLINE_CHECK_MAX, AttachmentFilter, attachment_names, blocked_extension, extension
from maild.util.mime import walk
from maild.util.transaction import Action
from tests.filters.conftest import make_tx
from tests.filters.messages import message, zip_of
from tests.smtp.conftest import Transcript, messages

DEFAULT = ["exe", "scr", "com", "pif", "js", "vbs", "bat", "cmd", "jar"]
PE = b"MZ\x90\x00" + b"\x00" * 60


def test_exe_attachment_is_rejected(reactor_thread):
    raw = message(attachments=(("invoice.pdf.exe", PE, "application/octet-stream"),))
    flt = AttachmentFilter(reactor_thread.reactor, DEFAULT)
    verdict = reactor_thread.call(flt.on_data, make_tx(raw))
    assert verdict.action is Action.REJECT
    assert (verdict.reply.code, verdict.reply.enhanced) == (554, "5.7.1")
    assert verdict.reply.text == "Message refused: .exe attachments are not accepted"


@pytest.mark.parametrize("padding", [0, INLINE_CHECK_MAX], ids=["checked inline", "checked in a thread"])
def test_exe_attachment_is_rejected_small_or_big(reactor_thread, padding):
    raw = message(attachments=(("report.pdf", b"%PDF-1.4 " + b"x" * padding, "application/pdf"),
                               ("setup.exe", PE, "application/octet-stream")))
    assert (len(raw) > INLINE_CHECK_MAX) == bool(padding)
    flt = AttachmentFilter(reactor_thread.reactor, DEFAULT)
    verdict = reactor_thread.call(flt.on_data, make_tx(raw))
    assert verdict.action is Action.REJECT
    assert verdict.reply.text == "Message refused: .exe attachments are not accepted"
    clean = message(attachments=(("report.pdf", b"%PDF-1.4 " + b"x" * padding, "application/pdf"),))
    assert reactor_thread.call(flt.on_data, make_tx(clean)) is None


def test_clean_attachments_pass(reactor_thread):
    raw = message(attachments=(("report.pdf", b"%PDF-1.4 ...", "application/pdf"),
                               ("notes.zip", zip_of(("notes.txt", b"hi")), "application/zip")))
    flt = AttachmentFilter(reactor_thread.reactor, DEFAULT)
    assert reactor_thread.call(flt.on_data, make_tx(raw)) is None


@pytest.mark.parametrize(("members", "blocked"), [
    ((("setup.EXE", PE),), "exe"),
    ((("docs/readme.txt", b"x"), ("docs/run.vbs", b"x")), "vbs"),
    ((("inner.zip", zip_of(("deeper.zip", zip_of(("payload.scr", PE))),)),), "scr"),
])
def test_blocked_names_inside_zips(members, blocked):
    # named .dat: the archive is recognised by its content, not its name
    raw = message(attachments=(("archive.dat", zip_of(*members), "application/octet-stream"),))
    assert blocked_extension(raw, DEFAULT) == blocked


def test_zip_scanning_can_be_turned_off():
    raw = message(attachments=(("a.zip", zip_of(("run.bat", b"x")), "application/zip"),))
    assert blocked_extension(raw, DEFAULT, scan_zip=False) is None


def test_docx_is_a_zip_but_not_blocked():
    docx = zip_of(("[Content_Types].xml", b"<x/>"), ("word/document.xml", b"<x/>"))
    raw = message(attachments=(("letter.docx", docx, "application/octet-stream"),))
    assert blocked_extension(raw, DEFAULT) is None


def test_encoded_filenames_are_decoded():
    encoded = "=?utf-8?b?" + base64.b64encode("fa\u0308ktura.exe".encode()).decode() + "?="
    raw = (b"From: a@remote.test\r\nTo: alice@example.test\r\nSubject: x\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
           b"--B\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
           b"--B\r\nContent-Type: application/octet-stream\r\n"
           b"Content-Disposition: attachment; filename=\"" + encoded.encode() + b"\"\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(PE) + b"\r\n"
           b"--B\r\nContent-Type: application/octet-stream\r\n"
           b"Content-Disposition: attachment; filename*=utf-8''script%2Ejs\r\n\r\nx\r\n--B--\r\n")
    assert list(attachment_names(raw)) == ["fa\u0308ktura.exe", "script.js"]
    assert blocked_extension(raw, DEFAULT) == "exe"


@pytest.mark.parametrize(("name", "ext"), [
    ("a.EXE", "exe"), ("a.exe. . ", "exe"), ("dir\\b.js", "js"), ("noext", ""), (".bashrc", "bashrc"),
])
def test_extension(name, ext):
    assert extension(name) == ext


def test_damaged_zip_is_ignored():
    raw = message(attachments=(("a.zip", b"PK\x03\x04garbage", "application/zip"),))
    assert blocked_extension(raw, DEFAULT) is None


# -- issue 15 item 11: every name a mail client could save a part under ----------------------

FULL = list(FiltersConfig().blocked_extensions)
HEAD = (b"From: a@remote.test\r\nTo: alice@example.test\r\nSubject: x\r\nMIME-Version: 1.0\r\n")


def _mixed(*parts: bytes, extra: bytes = b"") -> bytes:
    body = b"".join(b"--B\r\n" + p + b"\r\n" for p in parts)
    return (HEAD + extra + b"Content-Type: multipart/mixed; boundary=B\r\n\r\n"
            b"--B\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n" + body + b"--B--\r\n")


def _exe_part(headers: bytes) -> bytes:
    return headers + b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(PE)


def _refused(raw: bytes, reactor_thread, blocked=FULL) -> str:  # type: ignore[no-untyped-def]
    flt = AttachmentFilter(reactor_thread.reactor, blocked)
    verdict = reactor_thread.call(flt.on_data, make_tx(raw))
    assert verdict is not None and verdict.action is Action.REJECT
    assert (verdict.reply.code, verdict.reply.enhanced) == (554, "5.7.1")
    return verdict.reply.text


def test_second_filename_parameter(reactor_thread):
    raw = _mixed(_exe_part(b'Content-Type: application/octet-stream\r\n'
                           b'Content-Disposition: attachment; filename="ok.txt"; filename="evil.exe"\r\n'))
    assert _refused(raw, reactor_thread) == "Message refused: .exe attachments are not accepted"


def test_second_content_disposition_field(reactor_thread):
    raw = _mixed(_exe_part(b"Content-Type: application/octet-stream\r\n"
                           b'Content-Disposition: attachment; filename="ok.txt"\r\n'
                           b'Content-Disposition: attachment; filename="evil.exe"\r\n'))
    assert _refused(raw, reactor_thread).endswith(".exe attachments are not accepted")


def test_name_beside_a_harmless_filename(reactor_thread):
    raw = _mixed(_exe_part(b'Content-Type: application/octet-stream; name="evil.exe"\r\n'
                           b'Content-Disposition: attachment; filename="ok.txt"\r\n'))
    assert list(attachment_names(raw)) == ["evil.exe", "ok.txt"]
    assert _refused(raw, reactor_thread).endswith(".exe attachments are not accepted")


def test_two_top_level_content_type_fields(reactor_thread):
    """A reader obeying the first sees one text body; one obeying the second, an .exe."""
    inner = (b"--B\r\nContent-Type: application/octet-stream\r\n"
             b'Content-Disposition: attachment; filename="ok.dat"\r\n\r\nMZ\r\n--B--\r\n')
    raw = (HEAD + b"Content-Type: text/plain\r\n"
           b"Content-Type: multipart/mixed; boundary=B\r\n\r\n" + inner)
    assert _refused(raw, reactor_thread) == (
        "Message refused: a MIME part has several Content-Type fields")


@pytest.mark.parametrize("begin", [b"begin 644 evil.exe", b"begin 0755 dir/Evil.EXE. ",
                                   b"begin-base64 644 evil.exe",
                                   b"=ybegin line=128 size=64 name=evil.exe"])
def test_uuencoded_and_yenc_parts(reactor_thread, begin):
    uu = begin + b"\r\nM35J0`````````````````````````````````````````````````````\r\n`\r\nend\r\n"
    for raw in (HEAD + b"Content-Type: text/plain\r\n\r\nhere it is:\r\n\r\n" + uu,
                _mixed(b"Content-Type: application/octet-stream\r\n\r\n" + uu)):
        assert _refused(raw, reactor_thread).endswith(".exe attachments are not accepted")


@pytest.mark.parametrize("disposition", [
    b"filename*=utf-8''evil%2Eexe",
    b"filename*=iso-8859-1'en'%E9vil.exe",
    b'filename*0="ev"; filename*1="il.exe"',
    b"filename*0*=utf-8''ev; filename*1*=il%2Eexe",
    b'filename*1="il.exe"; filename*0="ev"',  # sections out of order (RFC 2231 §3)
    b'filename="=?utf-8?q?evil=2Eexe?="',  # RFC 2047 in a parameter, as clients send it
])
def test_rfc2231_encoded_names(reactor_thread, disposition):
    raw = _mixed(_exe_part(b"Content-Type: application/octet-stream\r\n"
                           b"Content-Disposition: attachment; " + disposition + b"\r\n"))
    assert _refused(raw, reactor_thread).endswith(".exe attachments are not accepted")


@pytest.mark.parametrize("ext", ["hta", "msi", "lnk", "iso", "img", "vhd", "vhdx", "ps1", "wsf",
                                 "cpl", "scr", "js", "jse", "vbs", "vbe", "bat", "cmd", "com",
                                 "pif", "jar"])
def test_default_list_covers_dangerous_types(reactor_thread, ext):
    raw = message(attachments=((f"invoice.{ext}", b"x", "application/octet-stream"),))
    assert _refused(raw, reactor_thread) == (
        f"Message refused: .{ext} attachments are not accepted")


def test_attached_message_is_walked(reactor_thread):
    inner = HEAD + b"Content-Type: application/octet-stream; name=evil.hta\r\n\r\nx\r\n"
    raw = _mixed(b"Content-Type: message/rfc822\r\n\r\n" + inner)
    assert _refused(raw, reactor_thread).endswith(".hta attachments are not accepted")


def test_deep_nesting_is_no_recursion_error():
    inner = b"Content-Type: application/octet-stream; name=evil.exe\r\n\r\nMZ\r\n"
    for i in range(1000):
        inner = (b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
                 + inner + b"\r\n--b%d--\r\n" % i)
    # The walker stops at MAX_DEPTH (the part is opaque there) instead of overflowing the
    # stack; the SMTP server refuses such a message before any filter runs.
    assert blocked_extension(HEAD + inner, FULL) is None
    assert walk(HEAD + inner).too_deep


def test_bypasses_refused_over_smtp(maild_factory):
    """The attack as a sender makes it: a real `maild serve` with the default policy."""
    server = maild_factory()
    t = Transcript(server.host, server.ports["smtp"])
    t.greeting()
    t.cmd("EHLO mail.remote.test", 250)
    doubled = _mixed(_exe_part(b"Content-Type: application/octet-stream\r\n"
                               b'Content-Disposition: attachment; filename="ok.txt"; filename="evil.exe"\r\n'))
    uuencoded = HEAD + b"Content-Type: text/plain\r\n\r\nbegin 644 evil.hta\r\nM35J0\r\n`\r\nend\r\n"
    for raw, ext in ((doubled, "exe"), (uuencoded, "hta")):
        reply = t.message("a@remote.test", ["alice@example.test"], raw)
        assert (reply.code, reply.text) == (
            554, f"5.7.1 Message refused: .{ext} attachments are not accepted"), t.dump()
    t.cmd("QUIT", 221)
    assert messages(server, "alice@example.test") == []
