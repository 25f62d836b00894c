"""Mailbox names a client may use: what is checked after the parser has read a name, so
that a name the server will not take is a NO (RFC 3501 §6.3.3 "cannot create"), never a
BAD (RFC 3501 §7.1.5: BAD is for protocol errors) and never a storage failure.

The limits, like Dovecot's (``MAILBOX_MAX_HIERARCHY_NAME_LENGTH``): at most
``MAX_COMPONENT_BYTES`` octets of UTF-8 per hierarchy level, ``MAX_NAME_BYTES`` in all
(the store's name keys stay below LMDB's 511-octet key limit) and ``MAX_LEVELS`` levels.
No level may be empty, ``.`` or ``..`` (a name is never a path).
"""

from __future__ import annotations

from maild.util.mutf7 import decode_mailbox

SEPARATOR = "/"
MAX_COMPONENT_BYTES = 255
MAX_NAME_BYTES = 500
MAX_LEVELS = 32


class BadName(str):
    """A name as the client wrote it that names no mailbox this server can hold; ``reason``
    is the public text of the NO. The parser returns one instead of raising, because the
    command's syntax was right (RFC 3501 §9: a mailbox is any astring)."""

    reason: str

    def __new__(cls, text: str, reason: str) -> BadName:
        self = super().__new__(cls, text)
        self.reason = reason
        return self


def decode(text: str, utf8: bool = False) -> str:
    """A mailbox argument as a name: INBOX in any case is INBOX, modified UTF-7
    (RFC 3501 §5.1.3) decoded — or taken as it is once UTF8=ACCEPT is enabled (RFC 6855
    §3); a :class:`BadName` when it names nothing we could hold."""
    if text.upper() == "INBOX":
        return "INBOX"
    if utf8:
        return check(text)
    try:
        name = decode_mailbox(text)
    except ValueError:
        return BadName(text, "Mailbox name is not valid mUTF-7")
    return check(name)


def check(name: str) -> str:
    """``name`` itself, or a :class:`BadName` saying which rule it breaks."""
    if not name:
        return BadName(name, "Empty mailbox name")
    if any(ord(ch) < 0x20 or ch == "\x7f" for ch in name):
        return BadName(name, "Mailbox name contains control characters")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return BadName(name, f"Mailbox name is longer than {MAX_NAME_BYTES} octets")
    parts = name.split(SEPARATOR)
    if len(parts) > MAX_LEVELS:
        return BadName(name, f"Mailbox name has more than {MAX_LEVELS} hierarchy levels")
    for part in parts:
        if not part:
            return BadName(name, "Mailbox name has an empty hierarchy level")
        if part in (".", ".."):
            return BadName(name, 'Mailbox name levels cannot be "." or ".."')
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            return BadName(name, f"Mailbox name level is longer than {MAX_COMPONENT_BYTES} octets")
    return name


def pattern(raw: bytes, utf8: bool = False) -> str | None:
    """A LIST/LSUB reference or pattern decoded, or None when it is not valid modified
    UTF-7 (UTF-8 once UTF8=ACCEPT is enabled): such a pattern matches no name (and LIST
    answers OK, RFC 3501 §6.3.8)."""
    try:
        text = raw.decode("utf-8")
        return text if utf8 else decode_mailbox(text)
    except (UnicodeDecodeError, ValueError):
        return None
