"""Message content as it arrives after DATA (RFC 5321 §4.5.2) or in BDAT chunks (RFC 3030).

The DATA decoder is the defence against SMTP smuggling (CVE-2023-51764 class): the end
of data is the five octets CRLF "." CRLF and nothing else. A bare LF or bare CR is part
of the line it sits in, so ``\\n.\\n``, ``\\r.\\r\\n`` and friends can never end the
message or start a command; a message holding one is refused as a whole afterwards.
Limits (size, line length) never stop the reading: the decoder keeps consuming and
discarding until the real end of data, so the rest of a refused message is never read
as commands. Memory stays bounded by the size limit plus one line: the message grows in
one buffer (``io.BytesIO``, whose ``getvalue`` hands its bytes over without a copy), with
no per-line objects and no join at the end.
"""

from __future__ import annotations

import enum
import io
import re

# A CR not followed by LF, an LF not preceded by CR, or a NUL (RFC 5321 §2.3.8, §4.5.2):
# the definition has_bare implements (tests/smtp/test_data_reader.py holds them equal).
_BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n|\x00")


class Problem(enum.Enum):
    TOO_BIG = "too-big"  # RFC 1870 §6: 552 5.3.4
    LINE_TOO_LONG = "line-too-long"  # RFC 5321 §4.5.3.1.6
    BARE_NEWLINE = "bare-newline"  # bare CR, bare LF or NUL in the content


# check_content looks at this much at a time, cut at a line end: its line list stays small.
_CHECK_WINDOW = 1 << 20


def has_bare(data: bytes | bytearray, end: int | None = None) -> bool:
    """Whether ``data`` (up to ``end``) holds a bare CR, a bare LF or a NUL (what ``_BARE``
    finds): every CRLF holds one CR and one LF, so counting them says it at memchr speed,
    where the regular expression tries its alternatives at every octet (~12x slower on 5 KB)."""
    end = len(data) if end is None else end
    crlf = data.count(b"\r\n", 0, end)
    return data.count(b"\r", 0, end) != crlf or data.count(b"\n", 0, end) != crlf \
        or data.find(b"\x00", 0, end) >= 0


def check_content(data: bytes, max_line: int) -> Problem | None:
    """Check complete CRLF-terminated lines; ``max_line`` counts the CRLF (RFC 5321)."""
    if has_bare(data):
        return Problem.BARE_NEWLINE
    start = 0
    while start < len(data):
        end = data.find(b"\r\n", start + _CHECK_WINDOW)
        end = len(data) if end < 0 else end
        if max(map(len, data[start:end].split(b"\r\n"))) > max_line - 2:
            return Problem.LINE_TOO_LONG
        start = end + 2
    return None


class DataReader:
    """Incremental decoder of one DATA stream: unstuffs dots, finds the end marker."""

    def __init__(self, max_size: int, max_line: int) -> None:
        self.max_size = max_size
        self.max_line = max_line
        self.problem: Problem | None = None
        self.size = 0  # unstuffed octets seen, kept or not
        self._body = io.BytesIO()
        self._at_line_start = True
        self._in_long_line = False  # the previous octets were part of an overlong line

    def feed(self, buf: bytearray) -> bool:
        """Consume what can be decoded from ``buf`` (in place); True once the end marker
        has been consumed, leaving whatever follows it in ``buf``."""
        if self._at_line_start and buf[:3] == b".\r\n":
            del buf[:3]
            return True
        end = buf.find(b"\r\n.\r\n")
        if end >= 0:
            self._take(bytes(buf[: end + 2]))
            del buf[: end + 5]
            return True
        last = buf.rfind(b"\r\n")
        if last >= 0:
            self._take(bytes(buf[: last + 2]))
            del buf[: last + 2]
        if len(buf) > self.max_line:
            # An unterminated line already over the limit: discard it, keeping a trailing
            # CR so a CRLF split across packets is still seen.
            keep = 1 if buf.endswith(b"\r") else 0
            # A run with bare LFs in it is long only because its lines do not end in
            # CRLF: say that (RFC 5321 §2.3.8), not "line too long".
            bare = has_bare(buf, len(buf) - keep)
            self._flag(Problem.BARE_NEWLINE if bare else Problem.LINE_TOO_LONG)
            self.size += len(buf) - keep
            del buf[: len(buf) - keep]
            self._in_long_line = True
            self._at_line_start = False
        return False

    def message(self) -> bytes:
        """The message (once, at the end: the buffer is given away)."""
        body, self._body = self._body.getvalue(), io.BytesIO()
        return body

    def _flag(self, problem: Problem) -> None:
        if self.problem is None:
            self.problem = problem
        self._body = io.BytesIO()  # a refused message is not kept

    def _take(self, segment: bytes) -> None:
        """Take complete lines (``segment`` ends with CRLF)."""
        if self._at_line_start and segment[:1] == b".":
            segment = segment[1:]  # RFC 5321 §4.5.2: remove the first of leading periods
        if b"\r\n." in segment:
            segment = segment.replace(b"\r\n.", b"\r\n")
        if self._in_long_line:
            self._in_long_line = False
            segment = segment[segment.find(b"\r\n") + 2:]  # the overlong line's tail
        self._at_line_start = True
        self.size += len(segment)
        if self.size > self.max_size:
            self._flag(Problem.TOO_BIG)
        if self.problem is None:
            problem = check_content(segment, self.max_line)
            if problem is not None:
                self._flag(problem)
            else:
                self._body.write(segment)
