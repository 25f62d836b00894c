"""Address lists of From/Sender/Reply-To/To/Cc/Bcc as IMAP's ENVELOPE has them (RFC 3501
§7.4.2): each address is (name, adl, mailbox, host); RFC 5322 group syntax becomes a start
marker (NIL NIL "group" NIL), the members, and an end marker (NIL NIL NIL NIL); a source
route (``<@route:user@domain>``, RFC 5322 §4.4 obs-route) is kept as the adl; comments are
no part of any field (one after an addr-spec with no display name is taken as the name,
as Dovecot does). Display names stay as written (RFC 2047 words left encoded).

SORT (RFC 5256 §3, RFC 5957) and SEARCH's address keys read the same parse.
"""

from __future__ import annotations

import re
from typing import NamedTuple

MISSING_DOMAIN = "MISSING_DOMAIN"  # a host for an address without one, as Dovecot writes it
_SPECIALS = "<>,:;@."
# One mailbox as most header fields hold it: "Name" <local@domain>, Name <local@domain>,
# <local@domain> or local@domain, with no comment, group, route, escape or second
# address: answered without the tokenizer (ENVELOPE renders five lists per message).
_SIMPLE_MAILBOX = re.compile(r'\s*(?:"([^"\\]*)"\s*|([^"\\,;:<>@()\[\]]*?)\s*)?'
                             r'<([^\s"\\,;:<>@()\[\]]+)@([^\s"\\,;:<>@()\[\]]+)>\s*'
                             r'|\s*([^\s"\\,;:<>@()\[\]]+)@([^\s"\\,;:<>@()\[\]]+)\s*')
MAX_ADDRESSES = 10_000  # a header naming more is cut there


class Address(NamedTuple):
    name: str | None
    adl: str | None
    mailbox: str | None
    host: str | None

    @property
    def is_group_start(self) -> bool:
        return self.host is None and self.mailbox is not None

    @property
    def is_group_end(self) -> bool:
        return self.host is None and self.mailbox is None

    @property
    def addr_spec(self) -> str:
        """local@domain; a group's name for its start marker."""
        if self.host is None or self.host == MISSING_DOMAIN:
            return self.mailbox or ""
        return f"{self.mailbox}@{self.host}"


GROUP_END = Address(None, None, None, None)

_Token = tuple[str, str]  # kind ("atom", "quoted", "comment", "literal", "special", "space"), text
_SPACE: _Token = ("space", " ")


def _tokens(value: str) -> list[_Token]:
    out: list[_Token] = []
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if c in " \t\r\n":
            while i < n and value[i] in " \t\r\n":
                i += 1
            out.append(_SPACE)
        elif c == '"':
            i, text = _delimited(value, i + 1, '"')
            out.append(("quoted", text))
        elif c == "(":
            depth, i, buf = 1, i + 1, []
            while i < n and depth:
                ch = value[i]
                if ch == "\\" and i + 1 < n:
                    buf.append(value[i + 1])
                    i += 2
                    continue
                depth += (ch == "(") - (ch == ")")
                if depth:
                    buf.append(ch)
                i += 1
            out.append(("comment", " ".join("".join(buf).split())))
        elif c == "[":
            end = value.find("]", i)
            end = n - 1 if end < 0 else end
            out.append(("literal", value[i:end + 1]))
            i = end + 1
        elif c in _SPECIALS:
            out.append(("special", c))
            i += 1
        else:
            start = i
            while i < n and value[i] not in ' \t\r\n"([' and value[i] not in _SPECIALS:
                i += 1
            out.append(("atom", value[start:i]))
    return out


def _delimited(value: str, i: int, end: str) -> tuple[int, str]:
    buf = []
    while i < len(value) and value[i] != end:
        if value[i] == "\\" and i + 1 < len(value):
            i += 1
        buf.append(value[i])
        i += 1
    return i + 1, "".join(buf)


def _phrase(tokens: list[_Token]) -> str | None:
    """A display name: its words (quoted ones unquoted), dots and the spaces between."""
    out: list[str | None] = []  # None: the one space between words
    for kind, text in tokens:
        # "." (obs-phrase) and a stray "@" are kept as written: a user is shown the name with
        # it, and the submission check reads addresses out of display names.
        if kind in ("atom", "quoted") or (kind == "special" and text in ".@"):
            out.append(text)
        elif kind in ("space", "comment") and out and out[-1] is not None:
            out.append(None)
    while out and out[-1] is None:
        out.pop()
    return "".join(" " if w is None else w for w in out) or None


def _joined(tokens: list[_Token]) -> str:
    """A local part or domain: its words and dots, without whitespace or comments."""
    return "".join(f'"{text}"' if kind == "quoted" and not _plain(text) else text
                   for kind, text in tokens if kind not in ("comment", "space"))


def _plain(text: str) -> bool:
    return bool(text) and not any(c in text for c in ' "\\()<>[]:;@,')


def _mailbox(tokens: list[_Token]) -> Address | None:
    """One mailbox (name-addr or addr-spec) from its tokens."""
    comments = [text for kind, text in tokens if kind == "comment"]
    angle = next((i for i, t in enumerate(tokens) if t == ("special", "<")), None)
    adl = None
    if angle is not None:
        name = _phrase(tokens[:angle])
        inner = [t for t in tokens[angle + 1:] if t[0] not in ("comment", "space")]
        if ("special", ">") in inner:
            inner = inner[:inner.index(("special", ">"))]
        if inner and inner[0] == ("special", "@") and ("special", ":") in inner:
            colon = inner.index(("special", ":"))
            adl = "".join(text for _, text in inner[:colon])  # RFC 5322 §4.4 obs-route
            inner = inner[colon + 1:]
        spec = inner
    else:
        name = comments[-1] if comments else None
        spec = [t for t in tokens if t[0] not in ("comment", "space")]
        if not spec:
            return None
    if ("special", "@") in spec:
        at = len(spec) - 1 - spec[::-1].index(("special", "@"))
        local, host = _joined(spec[:at]), _joined(spec[at + 1:])
    else:
        local, host = _joined(spec), ""
    if not local and not host:
        return Address(name, adl, None, MISSING_DOMAIN) if name else None
    # RFC 3501 §7.4.2: a NIL host marks group syntax, so an address without a domain
    # gets a placeholder host instead of being read as a group start.
    return Address(name, adl, local or None, host or MISSING_DOMAIN)


def is_simple(value: str) -> bool:
    """One plain mailbox (the fast path below): its parse is its own text."""
    return _SIMPLE_MAILBOX.fullmatch(value) is not None


def parse(value: str | None) -> list[Address]:
    """The ENVELOPE address list of a header value (empty for none)."""
    if not value:
        return []
    simple = _simple(value)
    if simple is not None:
        return [simple]
    if "," in value and not any(c in value for c in '"(:;\\['):
        # A list of plain mailboxes (To and Cc mostly): each by the fast path.
        pieces = [_simple(piece) for piece in value.split(",")]
        if all(piece is not None for piece in pieces):
            return pieces  # type: ignore[return-value]
    return _parse_tokens(value)


def _simple(value: str) -> Address | None:
    simple = _SIMPLE_MAILBOX.fullmatch(value)
    if simple is None:
        return None
    quoted, bare, local, domain, plain_local, plain_domain = simple.groups()
    if local is None:
        return Address(None, None, plain_local, plain_domain)
    name = quoted if quoted is not None else " ".join((bare or "").split())
    return Address(name or None, None, local, domain)


def _parse_tokens(value: str) -> list[Address]:
    tokens = _tokens(value)
    out: list[Address] = []
    current: list[_Token] = []
    in_group = False
    angle = 0
    for token in tokens:
        if len(out) >= MAX_ADDRESSES:
            break
        if token[0] == "special":
            text = token[1]
            if text == "<":
                angle += 1
            elif text == ">":
                angle = max(0, angle - 1)
            elif angle == 0 and text == ":" and not in_group \
                    and not any(t[0] == "special" and t[1] in "<@" for t in current):
                out.append(Address(None, None, _phrase(current) or "", None))  # group start
                current, in_group = [], True
                continue
            elif angle == 0 and text in ",;":
                _flush(current, out)
                if text == ";" and in_group:
                    out.append(GROUP_END)
                    in_group = False
                current = []
                continue
        current.append(token)
    _flush(current, out)
    if in_group:
        out.append(GROUP_END)  # an unterminated group is closed
    return out


def _flush(tokens: list[_Token], out: list[Address]) -> None:
    if tokens:
        address = _mailbox(tokens)
        if address is not None:
            out.append(address)


def first(value: str | None) -> Address | None:
    """The first entry of a header's list: a mailbox, or a group's start marker (whose
    mailbox field holds the group name, RFC 3501 §7.4.2) — what RFC 5256 §3's "first
    address" is in the envelope."""
    parsed = parse(value)
    return parsed[0] if parsed else None
