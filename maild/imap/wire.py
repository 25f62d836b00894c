"""How values are written on the IMAP wire (RFC 3501 §4): strings, flags, dates, names."""

from __future__ import annotations

import time

from maild.util.mutf7 import encode_mailbox

_QUOTABLE_MAX = 1024
_CR, _LF, _NUL, _BACKSLASH, _DQUOTE = b'\r\n\0\\"'


def string(value: str | bytes, utf8: bool = False) -> bytes:
    """A quoted string when RFC 3501 §4.3 allows one (7-bit, no CR/LF/NUL), else a literal.
    ``utf8``: the value is valid UTF-8 and the session enabled UTF8=ACCEPT, whose quoted
    strings may hold it (RFC 6855 §3, utf8-quoted)."""
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    # Octets as ints: `int in bytes` is one memchr, `bytes in bytes` a substring search that
    # costs several times more (ENVELOPE and BODYSTRUCTURE write ~10 strings per message).
    if len(raw) <= _QUOTABLE_MAX and (utf8 or raw.isascii()) and _CR not in raw and _LF not in raw \
            and _NUL not in raw:
        if _BACKSLASH in raw or _DQUOTE in raw:
            raw = raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
        return b'"' + raw + b'"'
    return literal(raw)


def literal(raw: bytes) -> bytes:
    return b"{%d}\r\n" % len(raw) + raw


def nstring(value: str | bytes | None) -> bytes:
    return b"NIL" if value is None else string(value)


def astring(value: str) -> bytes:
    """An atom when it is one, else a string (used for mailbox names in responses)."""
    raw = value.encode("utf-8")
    if raw and raw.isascii() and not any(c in raw for c in b'(){ %*"\\]\r\n\0') \
            and all(0x20 < c < 0x7F for c in raw) and raw.upper() != b"NIL":
        return raw
    return string(raw)


def mailbox(name: str, utf8: bool = False) -> bytes:
    """A mailbox name in modified UTF-7 (RFC 3501 §5.1.3), or, once the session enabled
    UTF8=ACCEPT, in UTF-8 (RFC 6855 §3)."""
    if utf8 and not name.isascii():
        return string(name, utf8=True)
    return astring(name if utf8 else encode_mailbox(name))


_FLAG_LISTS: dict[frozenset[str], bytes] = {}  # a mailbox has few distinct flag sets


def flags(values: frozenset[str]) -> bytes:
    """A flag list, e.g. ``(\\Seen $Junk)``; FETCH FLAGS writes one per message."""
    out = _FLAG_LISTS.get(values)
    if out is None:
        out = b"(" + " ".join(sorted(values)).encode("utf-8") + b")"
        if len(_FLAG_LISTS) >= 4096:
            _FLAG_LISTS.clear()
        _FLAG_LISTS[values] = out
    return out


def internal_date(timestamp: float) -> bytes:
    """RFC 3501 §9 date-time in UTC, e.g. "17-Jul-1996 02:44:25 +0000"."""
    t = time.gmtime(timestamp)
    month = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")[t.tm_mon - 1]
    return b'"%02d-%s-%04d %02d:%02d:%02d +0000"' % (t.tm_mday, month.encode(), t.tm_year,
                                                        t.tm_hour, t.tm_min, t.tm_sec)
