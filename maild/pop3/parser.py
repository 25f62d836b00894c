"""The POP3 command grammar (RFC 1939 §3, RFC 2449, RFC 2595, RFC 5034), parsed at the
edge into typed command objects.

:func:`parse_command` turns one command line (without its CRLF) into a command dataclass
or raises :class:`CommandError` with the text of the ``-ERR`` answer. Keywords are
case-insensitive and separated from their arguments by one space (RFC 1939 §3); message
numbers are decimal, 1 or more, without sign or leading "+" (RFC 1939 §5 "msg").
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# RFC 2449 §4: command lines are at most 255 octets including the terminating CRLF.
MAX_COMMAND_LINE = 255
# RFC 1939 §3: an argument is at most 40 characters (PASS's password may hold spaces and is
# bounded only by the line).
MAX_ARGUMENT = 40
# Message numbers above this cannot name a message in any maildrop; refusing them early
# keeps int() away from pathological digit strings.
MAX_MESSAGE_NUMBER = 10**9


class CommandError(ValueError):
    """A syntax error in one command line; ``str()`` is the text after ``-ERR``."""


class Verb(enum.StrEnum):
    USER = "USER"
    PASS = "PASS"
    STAT = "STAT"
    LIST = "LIST"
    RETR = "RETR"
    DELE = "DELE"
    NOOP = "NOOP"
    RSET = "RSET"
    QUIT = "QUIT"
    TOP = "TOP"
    UIDL = "UIDL"
    CAPA = "CAPA"
    STLS = "STLS"
    AUTH = "AUTH"


@dataclass(frozen=True)
class UserCommand:
    """USER name (RFC 1939 §7); not the store's :class:`maild.store.types.User`."""

    name: str  # RFC 1939 §7


@dataclass(frozen=True)
class Pass:
    password: str  # RFC 1939 §7: the rest of the line, spaces included


@dataclass(frozen=True)
class Stat:
    pass


@dataclass(frozen=True)
class List:
    msg: int | None = None


@dataclass(frozen=True)
class Retr:
    msg: int


@dataclass(frozen=True)
class Dele:
    msg: int


@dataclass(frozen=True)
class Noop:
    pass


@dataclass(frozen=True)
class Rset:
    pass


@dataclass(frozen=True)
class Quit:
    pass


@dataclass(frozen=True)
class Top:
    msg: int
    lines: int  # body lines to send after the header (RFC 1939 §7)


@dataclass(frozen=True)
class Uidl:
    msg: int | None = None


@dataclass(frozen=True)
class Capa:
    pass


@dataclass(frozen=True)
class Stls:
    pass


@dataclass(frozen=True)
class Auth:
    """RFC 5034 §4. ``mechanism`` None is the bare ``AUTH`` that lists the mechanisms (a
    de-facto extension clients still probe with); ``initial_response`` is the base64 text
    as sent, ``"="`` meaning an empty response."""

    mechanism: str | None = None
    initial_response: str | None = None


Command = UserCommand | Pass | Stat | List | Retr | Dele | Noop | Rset | Quit | Top | Uidl | Capa | Stls | Auth


def _number(text: str, what: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        raise CommandError(f"Invalid {what}: {text[:MAX_ARGUMENT]!r}")
    value = int(text)
    if value > MAX_MESSAGE_NUMBER:
        raise CommandError(f"Invalid {what}: {text}")
    return value


def _msg(text: str) -> int:
    value = _number(text, "message number")
    if value == 0:
        raise CommandError("Invalid message number: 0")  # RFC 1939 §5: numbering starts at 1
    return value


def _args(verb: Verb, rest: str | None, minimum: int, maximum: int) -> list[str]:
    args = [] if rest is None else rest.split(" ")
    if any(not a for a in args):
        raise CommandError(f"{verb}: arguments are separated by a single space")
    if not minimum <= len(args) <= maximum:
        if minimum == maximum:
            raise CommandError(f"{verb} takes {minimum} argument{'' if minimum == 1 else 's'}")
        raise CommandError(f"{verb} takes {minimum} or {maximum} arguments")
    for arg in args:
        if len(arg) > MAX_ARGUMENT:
            raise CommandError(f"{verb}: argument longer than {MAX_ARGUMENT} characters")
    return args


def parse_command(line: bytes) -> Command:
    """Parse one command line without its CRLF."""
    if len(line) + 2 > MAX_COMMAND_LINE:
        raise CommandError(f"Line too long (at most {MAX_COMMAND_LINE} octets)")  # RFC 2449 §4
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError("Command is not valid UTF-8") from None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise CommandError("Control characters are not allowed in commands")
    keyword, sep, rest_text = text.partition(" ")
    rest = rest_text if sep else None
    try:
        verb = Verb(keyword.upper())
    except ValueError:
        raise CommandError("Unknown command") from None
    match verb:
        case Verb.USER:
            (name,) = _args(verb, rest, 1, 1)
            return UserCommand(name)
        case Verb.PASS:
            if not rest:
                raise CommandError("PASS takes 1 argument")
            return Pass(rest)
        case Verb.STAT | Verb.NOOP | Verb.RSET | Verb.QUIT | Verb.CAPA | Verb.STLS:
            _args(verb, rest, 0, 0)
            return _SIMPLE[verb]
        case Verb.LIST | Verb.UIDL:
            args = _args(verb, rest, 0, 1)
            msg = _msg(args[0]) if args else None
            return List(msg) if verb is Verb.LIST else Uidl(msg)
        case Verb.RETR | Verb.DELE:
            (arg,) = _args(verb, rest, 1, 1)
            return Retr(_msg(arg)) if verb is Verb.RETR else Dele(_msg(arg))
        case Verb.TOP:
            msg_text, lines_text = _args(verb, rest, 2, 2)
            return Top(_msg(msg_text), _number(lines_text, "line count"))
        case Verb.AUTH:
            return _auth(rest)


def _auth(rest: str | None) -> Auth:
    if rest is None:
        return Auth()
    parts = rest.split(" ")
    if any(not p for p in parts) or len(parts) > 2:
        raise CommandError("AUTH takes a mechanism and an optional initial response")
    mechanism = parts[0].upper()
    # RFC 4422 §3.1: mechanism names are 1-20 characters of A-Z 0-9 - _
    if len(mechanism) > 20 or not all(c.isascii() and (c.isalnum() or c in "-_") for c in mechanism):
        raise CommandError("Invalid SASL mechanism name")
    initial = parts[1] if len(parts) == 2 else None
    if initial is not None and initial != "=" and not _is_base64(initial):
        raise CommandError("Initial response is not base64")  # RFC 5034 §4
    return Auth(mechanism, initial)


def _is_base64(text: str) -> bool:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
    return len(text) % 4 == 0 and all(c in alphabet for c in text) and "=" not in text.rstrip("=")


_SIMPLE: dict[Verb, Command] = {
    Verb.STAT: Stat(),
    Verb.NOOP: Noop(),
    Verb.RSET: Rset(),
    Verb.QUIT: Quit(),
    Verb.CAPA: Capa(),
    Verb.STLS: Stls(),
}
