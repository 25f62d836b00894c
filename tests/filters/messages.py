"""Test messages, built with the standard library's email package (CRLF line endings)."""

from __future__ import annotations

import hashlib
import io
import zipfile
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate

from tests.fixtures.clamd import EICAR


def message(body: str = "Hello Alice,\n\nlunch at noon tomorrow?\n\nBob\n", *,
            subject: str = "Lunch", sender: str = "sender@remote.test",
            to: str = "alice@example.test",
            attachments: tuple[tuple[str, bytes, str], ...] = ()) -> bytes:
    """A plain message; ``attachments`` are (filename, content, mime type), sent base64."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    # Now, not a fixed day: rspamd adds DATE_IN_PAST (score 1) to a Date over a day old
    # (rules/misc.lua), which moves every score the tests expect.
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = f"<{hashlib.sha1(repr((body, subject, attachments)).encode()).hexdigest()}@remote.test>"
    msg.set_content(body)
    for filename, content, mime in attachments:
        maintype, subtype = mime.split("/")
        msg.add_attachment(content, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes(policy=SMTP)


def zip_of(*members: tuple[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members:
            archive.writestr(name, content)
    return buffer.getvalue()


EICAR_BODY = message("Here it is:\n" + EICAR.decode() + "\n", subject="eicar in the body")
EICAR_ATTACHED = message(attachments=(("report.txt", EICAR, "application/octet-stream"),),
                         subject="eicar attached")
EICAR_ZIPPED = message(attachments=(("report.zip", zip_of(("report.txt", EICAR)),
                                     "application/zip"),), subject="eicar zipped")
