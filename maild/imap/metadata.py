"""METADATA (RFC 5464): GETMETADATA and SETMETADATA on mailboxes and on the server.

Implementation notes — invariants a contributor must keep:

1. Entries live in the store (``Store.metadata`` / ``Store.set_metadata``, the shard's
   ``metadata`` database), keyed by user, mailbox id (0 for the server's entries, which in
   maild's one personal namespace are the user's own) and entry name in lower case (names
   compare without case). RENAME keeps a mailbox's entries (same id); DELETE removes them;
   /private and /shared entries are kept apart, both the user's.
2. SETMETADATA is all or none, in one commit (§4.3): a value above ``MAX_VALUE`` answers
   ``NO [METADATA MAXSIZE n]``, more than ``MAX_ENTRIES`` entries for the user
   ``NO [METADATA TOOMANY]``, a missing mailbox ``NO [NONEXISTENT]``; NIL removes an entry.
3. GETMETADATA (§4.2) answers one METADATA response with the entries asked for (NIL for
   those that do not exist) and, with DEPTH 1 or infinity, those one level or any number
   of levels below them; values longer than MAXSIZE are left out and the tagged OK carries
   ``[METADATA LONGENTRIES n]``, n the longest left out.
4. Values are octets: they go out as strings, or as a literal8 when they hold NUL (§5).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from maild.imap import wire
from maild.imap.commands import GetMetadata, SetMetadata
from maild.store.types import TooManyEntries

if TYPE_CHECKING:
    from maild.imap.server import ImapSession

MAX_VALUE = 64 * 1024  # octets of one value
MAX_ENTRIES = 1000  # entries of one user, server and mailboxes together


def _mailbox_id(session: ImapSession, name: str) -> int:
    return 0 if name == "" else session._mailbox(name).id


def _value(value: bytes | None) -> bytes:
    if value is None:
        return b"NIL"
    if b"\0" in value:
        return b"~{%d}\r\n" % len(value) + value  # literal8
    return wire.string(value)


def _wanted(entry: str, name: str, depth: str) -> bool:
    if name == entry:
        return True
    if not name.startswith(entry + "/"):
        return False
    return depth == "INFINITY" or (depth == "1" and "/" not in name[len(entry) + 1:])


async def get(session: ImapSession, cmd: GetMetadata) -> str | None:
    stored = session.store.metadata(session._user(), _mailbox_id(session, cmd.mailbox))
    found: dict[str, bytes | None] = {}
    longest = 0
    for entry in cmd.entries:
        names = [entry] + sorted(n for n in stored if n != entry and _wanted(entry, n, cmd.depth))
        for name in names:
            value = stored.get(name)
            if value is not None and cmd.maxsize is not None and len(value) > cmd.maxsize:
                longest = max(longest, len(value))  # RFC 5464 §4.2.1
                continue
            found.setdefault(name, value)
    if found:
        body = b" ".join(name.encode() + b" " + _value(value) for name, value in found.items())
        mailbox = wire.string("") if cmd.mailbox == "" else wire.mailbox(cmd.mailbox, session.utf8)
        session._send(b"* METADATA " + mailbox + b" (" + body + b")")
    return f"METADATA LONGENTRIES {longest}" if longest else None


async def set_(session: ImapSession, cmd: SetMetadata) -> None:
    from maild.imap.server import _no

    too_long = [len(value) for _, value in cmd.items if value is not None and len(value) > MAX_VALUE]
    if too_long:
        raise _no("Metadata value too long", f"METADATA MAXSIZE {MAX_VALUE}")  # RFC 5464 §4.3
    mailbox_id = _mailbox_id(session, cmd.mailbox)
    try:
        await session.store.set_metadata(session._user(), mailbox_id, list(cmd.items), MAX_ENTRIES)
    except TooManyEntries:
        raise _no("Too many metadata entries", "METADATA TOOMANY") from None
