"""Framing IMAP input (RFC 3501 §2.2, literals RFC 7888): :class:`Framer` cuts the byte
stream into complete commands for :func:`maild.imap.parser.parse_command`. A command is one
line, or several lines joined by literals (``{n}`` synchronizing, ``{n+}``
non-synchronizing). Every limit is checked *before* the data it guards is read: line
length, literal size (APPEND literals against APPENDLIMIT, RFC 7889; others against the
command-size limit) and total command size. Literals are kept inline, so the parser sees
exactly the bytes the client sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# -- framing ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Complete:
    """A whole command (literals inline, without its final CRLF)."""

    data: bytes


@dataclass(frozen=True)
class NeedContinuation:
    """A synchronizing literal was announced and is within limits: send ``+ ...``."""


@dataclass(frozen=True)
class Rejected:
    """The command was refused before its data was read.

    ``code`` is ``TOOBIG`` for an APPEND literal over APPENDLIMIT (answered NO), else the
    answer is BAD. ``fatal``: the client will send the data anyway (non-synchronizing
    literal) or the stream cannot be resynchronised, so the connection must close."""

    tag: str | None
    text: str
    code: str | None = None
    fatal: bool = False


FrameEvent = Complete | NeedContinuation | Rejected

_LITERAL_AT_END = re.compile(rb"\{(\d{1,20})(\+?)\}\r?$")
_TAG_AND_NAME = re.compile(rb"^([^\x00-\x20\x7f-\xff(){%*\"\\\]+]+) +(?:UID +)?([A-Za-z]+)")


@dataclass
class Framer:
    """Cuts a byte stream into commands, enforcing limits before reading data."""

    max_line: int
    max_command: int
    append_limit: int
    _buffer: bytearray = field(default_factory=bytearray)
    _parts: list[bytes] = field(default_factory=list)
    _size: int = 0
    _literal: int = 0  # bytes of literal still to read
    _skipping: bool = False  # discarding the rest of an over-long line
    _skip_tag: str | None = None

    def reset(self) -> None:
        """Forget everything buffered (after STARTTLS, RFC 3501 §6.2.1 / CVE-2011-0411)."""
        self._buffer.clear()
        self._parts.clear()
        self._size = 0
        self._literal = 0
        self._skipping = False

    @property
    def pending(self) -> int:
        """Bytes received but not yet cut into a command (literal data excluded)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[FrameEvent]:
        if (not self._buffer and not self._parts and not self._literal and not self._skipping
                and data.find(b"\n") == len(data) - 1 and len(data) <= self.max_line
                and data.endswith(b"\r\n") and data[-3:-2] not in (b"}", b"\r")):
            # The usual input: one whole command line with nothing before it and no
            # literal: what the loop below would make of it, without the buffer's copies.
            return [Complete(data[:-2])]
        self._buffer += data
        events: list[FrameEvent] = []
        while True:
            if self._literal:
                if not self._buffer:
                    break
                take = min(self._literal, len(self._buffer))
                self._parts.append(bytes(self._buffer[:take]))
                del self._buffer[:take]
                self._literal -= take
                continue
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > self.max_line:
                    if not self._skipping:
                        self._skip_tag = self._tag(bytes(self._buffer[:200]))
                    self._skipping = True
                    self._buffer.clear()
                break
            line = bytes(self._buffer[:end + 1])
            del self._buffer[:end + 1]
            if self._skipping or len(line) > self.max_line:
                tag = self._skip_tag if self._skipping else self._tag(line)
                self._skipping = False
                self._parts.clear()
                self._size = 0
                events.append(Rejected(tag, "line too long"))
                continue
            if not line.endswith(b"\r\n"):
                line = line[:-1] + b"\r\n"  # a bare LF ends a line too (lenient, like Dovecot)
            self._size += len(line)
            self._parts.append(line)
            body = line[:-2]
            match = _LITERAL_AT_END.search(body)
            if match is None:
                command = b"".join(self._parts)[:-2]
                self._parts.clear()
                self._size = 0
                events.append(Complete(command))
                continue
            size = int(match.group(1))
            nonsync = bool(match.group(2))
            first = self._parts[0]
            tag = self._tag(first)
            is_append = self._is_append(first)
            limit = self.append_limit if is_append else self.max_command
            if size > limit or self._size + size > limit + self.max_command:
                self._parts.clear()
                self._size = 0
                if is_append:
                    # RFC 7889 §4 / RFC 4469: refuse before reading.
                    events.append(Rejected(tag, "message larger than APPENDLIMIT", "TOOBIG",
                                           fatal=nonsync))
                else:
                    events.append(Rejected(tag, "literal too large", fatal=nonsync))
                if nonsync:
                    break
                continue
            self._size += size
            self._literal = size
            if not nonsync:
                events.append(NeedContinuation())
        return events

    @staticmethod
    def _tag(line: bytes) -> str | None:
        match = _TAG_AND_NAME.match(line)
        return match.group(1).decode("ascii") if match else None

    @staticmethod
    def _is_append(line: bytes) -> bool:
        match = _TAG_AND_NAME.match(line)
        return match is not None and match.group(2).upper() == b"APPEND"
