"""CATENATE (RFC 4469): APPEND a message made of literal text and IMAP URLs (RFC 5092) of
messages or parts already on the server, without downloading and uploading them again.

Implementation notes — invariants a contributor must keep:

1. A URL names a message of this user's mailboxes: ``imap://[user@]host[:port]/`` or
   just ``/``, then the percent-encoded mailbox name (UTF-8), optionally
   ``;UIDVALIDITY=n``, then ``/;UID=n``, optionally ``/;SECTION=s`` (a BODY[] section
   spec) and ``/;PARTIAL=origin[.length]``. A user part other than the session's own, a
   missing mailbox or message, a UIDVALIDITY that does not match or any other form answers
   ``NO [BADURL "url"]`` (RFC 4469 §5) and appends nothing.
2. The message is built when the command runs and goes through the MULTIAPPEND path (one
   commit for all messages of the command); the built message is bounded by APPENDLIMIT
   (``NO [TOOBIG]``), checked as each part is added, and must not be empty.
3. A part that exists but is empty (a section absent from the message) adds nothing, as
   BODY[] answers it empty.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes

from maild.imap import mime
from maild.imap.commands import Section
from maild.imap.parser import ParseError, _Reader, _section

if TYPE_CHECKING:
    from maild.imap.server import ImapSession

# RFC 5092 §11 imapurl (server part optional) with iuid, isection and ipartial.
_URL = re.compile(
    r"(?:imap://(?:(?P<user>[^@/;]*)(?:;AUTH=[^@/]*)?@)?[^/]+)?"
    r"/(?P<mailbox>[^;/?]+(?:/[^;/?]+)*)(?:;UIDVALIDITY=(?P<uidvalidity>[1-9]\d*))?"
    r"/;UID=(?P<uid>[1-9]\d*)"
    r"(?:/;SECTION=(?P<section>[^/;]+))?"
    r"(?:/;PARTIAL=(?P<origin>\d+)(?:\.(?P<length>[1-9]\d*))?)?\Z", re.IGNORECASE)


def _section_of(text: str) -> Section:
    reader = _Reader(text.upper().encode("ascii"))
    section = _section(reader)
    if not reader.at_end():
        raise ParseError("bad section")
    return section


def _resolve(session: ImapSession, url: str) -> bytes:
    from maild.imap.server import _no

    def bad() -> Exception:
        quoted = url.replace("\\", "\\\\").replace('"', '\\"')
        return _no("Bad URL", f'BADURL "{quoted}"')

    match = _URL.match(url)
    if match is None:
        raise bad()
    user = match.group("user")
    if user is not None and unquote_to_bytes(user).decode("utf-8", "replace").lower() != session._user().lower():
        raise bad()
    try:
        name = unquote_to_bytes(match.group("mailbox")).decode("utf-8")
    except UnicodeDecodeError:
        raise bad() from None
    mailbox = session.store.mailbox(session._user(), name)
    if mailbox is None:
        raise bad()
    if match.group("uidvalidity") and int(match.group("uidvalidity")) != mailbox.uidvalidity:
        raise bad()
    uid = int(match.group("uid"))
    if uid > 0xFFFFFFFF or session.store.message(session._user(), mailbox.id, uid) is None:
        raise bad()
    raw = session.store.read(session._user(), mailbox.id, uid)
    data = raw
    if match.group("section"):
        try:
            section = _section_of(unquote_to_bytes(match.group("section")).decode("ascii"))
        except (ParseError, UnicodeDecodeError):
            raise bad() from None
        data = mime.section(raw, section, mime.parse(raw) if section.part else None) or b""
    if match.group("origin") is not None:
        origin = int(match.group("origin"))
        data = data[origin:] if match.group("length") is None else data[origin:origin + int(match.group("length"))]
    return data


def build(session: ImapSession, parts: tuple[tuple[str, bytes], ...]) -> bytes:
    """The message of a CATENATE list of ("TEXT", octets) and ("URL", url) parts."""
    from maild.imap.server import _no

    out = bytearray()
    for kind, value in parts:
        out += value if kind == "TEXT" else _resolve(session, value.decode("utf-8", "replace"))
        if len(out) > session.config.append_limit:
            raise _no("Message larger than APPENDLIMIT", "TOOBIG")  # RFC 4469 §5
    if not out:
        raise _no("The message is empty")
    return bytes(out)
