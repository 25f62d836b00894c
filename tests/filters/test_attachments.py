"""Attachment policy: blocked extensions, in the message and inside zip archives."""

from __future__ import annotations

import base64

import pytest

from maild.filters.attachments import AttachmentFilter, attachment_names, blocked_extension, extension
from maild.util.transaction import Action
from tests.filters.conftest import make_tx
from tests.filters.messages import message, zip_of

DEFAULT = ["exe", "scr", "com", "pif", "js", "vbs", "bat", "cmd", "jar"]
PE = b"MZ\x90\x00" + b"\x00" * 60


def test_exe_attachment_is_rejected(reactor_thread):
    raw = message(attachments=(("invoice.pdf.exe", PE, "application/octet-stream"),))
    flt = AttachmentFilter(reactor_thread.reactor, DEFAULT)
    verdict = reactor_thread.call(flt.on_data, make_tx(raw))
    assert verdict.action is Action.REJECT
    assert (verdict.reply.code, verdict.reply.enhanced) == (554, "5.7.1")
    assert verdict.reply.text == "Message refused: .exe attachments are not accepted"


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
