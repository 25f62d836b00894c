"""The SMTP client's wire format: server replies parsed into :class:`Reply` values, EHLO
capabilities, and the DATA encoding of a message.

Implementation notes (invariants a contributor must keep):

- :func:`encode_data` works on the whole message, never on transport chunks, so its
  result cannot depend on how the bytes are later split: every line ending (CRLF, bare CR,
  bare LF) becomes CRLF, every line starting with "." gets one more "." (RFC 5321
  §4.5.2), and the end-of-data marker always follows a CRLF. This is the reason maild has
  its own client: twisted.mail's leaves a leading dot unstuffed at a 16 KiB chunk
  boundary and turns CRLF into CR CR LF (docs/outbound.md).
- :class:`ReplyParser` bounds what a server can make us hold: a line longer than
  ``MAX_REPLY_LINE`` or a reply of more than ``MAX_REPLY_LINES`` lines is a protocol error,
  and so is a line that is not "NNN", "NNN text" or "NNN-text" with one code throughout
  (RFC 5321 §4.2.1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_REPLY_LINE = 4096  # RFC 5321 §4.5.3.1.5 says 512; real servers exceed it a little
MAX_REPLY_LINES = 200

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?: |$)")
_LINE_ENDING = re.compile(rb"\r\n|\r|\n")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HEADER_END = re.compile(rb"\r?\n\r?\n")


class ProtocolError(Exception):
    """The server sent something that is not an SMTP reply."""


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...] = ("",)
    # True for an answer maild decided itself (DNS failure, a SIZE or SMTPUTF8 refusal
    # before sending, an administrator's bounce): a DSN names no Remote-MTA for it and
    # gives no "smtp;" Diagnostic-Code (RFC 3464 §2.3.5, §2.3.6).
    local: bool = False

    @property
    def text(self) -> str:
        """All lines joined by spaces, control characters removed (safe for headers)."""
        return _CONTROL.sub(" ", " ".join(line for line in self.lines if line)).strip()

    @property
    def enhanced(self) -> str:
        """The RFC 3463 status code the server gave, or one derived from the reply class."""
        match = _ENHANCED.match(self.lines[0]) if self.lines else None
        if match and int(match.group(1)) == self.code // 100:
            return ".".join(match.groups())
        return f"{self.code // 100}.0.0"

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    def __str__(self) -> str:
        return f"{self.code} {self.text}".rstrip()


class ReplyParser:
    """Incremental: feed bytes, take complete replies."""

    def __init__(self) -> None:
        self._buffer = b""
        self._lines: list[str] = []
        self._code: int | None = None

    def feed(self, data: bytes) -> list[Reply]:
        self._buffer += data
        replies: list[Reply] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_REPLY_LINE:
                    raise ProtocolError("reply line too long")
                return replies
            line, self._buffer = self._buffer[:end].rstrip(b"\r"), self._buffer[end + 1:]
            if len(line) > MAX_REPLY_LINE:
                raise ProtocolError("reply line too long")
            reply = self._line(line)
            if reply is not None:
                replies.append(reply)

    def _line(self, raw: bytes) -> Reply | None:
        text = raw.decode("utf-8", "replace")
        # RFC 5321 §4.2: Reply-line = *( Reply-code "-" [ textstring ] CRLF )
        #                             Reply-code [ SP textstring ] CRLF
        if len(text) < 3 or not text[:3].isdigit() or text[0] not in "2345" or \
                (len(text) > 3 and text[3] not in " -"):
            raise ProtocolError(f"not a reply line: {text[:80]!r}")
        code = int(text[:3])
        if self._code is not None and code != self._code:
            raise ProtocolError("reply code changed within a multi-line reply")
        self._code = code
        self._lines.append(text[4:])
        if len(self._lines) > MAX_REPLY_LINES:
            raise ProtocolError("reply has too many lines")
        if text[3:4] == "-":
            return None
        reply = Reply(code, tuple(self._lines))
        self._lines, self._code = [], None
        return reply


@dataclass(frozen=True)
class Capabilities:
    """What an EHLO reply offered (RFC 5321 §4.1.1.1); HELO offers nothing."""

    esmtp: bool = False
    keywords: frozenset[str] = frozenset()
    size: int | None = None  # RFC 1870: None when SIZE is not offered, 0 when unlimited

    @classmethod
    def from_ehlo(cls, reply: Reply) -> Capabilities:
        keywords = set()
        size = None
        for line in reply.lines[1:]:
            words = line.split()
            if not words:
                continue
            keyword = words[0].upper()
            keywords.add(keyword)
            if keyword == "SIZE":
                size = int(words[1]) if len(words) > 1 and words[1].isdigit() else 0
        return cls(True, frozenset(keywords), size)

    def __contains__(self, keyword: str) -> bool:
        return keyword in self.keywords


def normalize_line_endings(raw: bytes) -> bytes:
    """CRLF for every line ending, bare CR and bare LF included; a final CRLF."""
    lines = _LINE_ENDING.split(raw)
    if lines and lines[-1] == b"":
        lines.pop()
    return b"".join(line + b"\r\n" for line in lines)


def encode_data(raw: bytes) -> bytes:
    """The DATA payload for ``raw``: normalised line endings, dot-stuffed (RFC 5321
    §4.5.2), ending with the "." CRLF terminator."""
    body = normalize_line_endings(raw)
    stuffed = b"." + body.replace(b"\r\n.", b"\r\n..") if body.startswith(b".") else \
        body.replace(b"\r\n.", b"\r\n..")
    return stuffed + b".\r\n"


def needs_smtputf8(sender: str, recipients: list[str], raw: bytes) -> bool:
    """RFC 6531 §3.2: non-ASCII in an envelope address or in the header section."""
    if not all(address.isascii() for address in (sender, *recipients)):
        return True
    end = _HEADER_END.search(raw)
    header = raw if end is None else raw[:end.start()]
    return not header.isascii()


def has_8bit(raw: bytes) -> bool:
    return not raw.isascii()
