"""A stored message as the body of a POP3 multi-line response, chunk by chunk.

RFC 1939 §3: every line ends with CRLF, a line beginning with "." gets one more ".", and the
response ends with CRLF "." CRLF. :class:`MessageEncoder` does this incrementally, so RETR
streams a message of any size in fixed-size chunks, and implements TOP's cut (the header,
the blank line, then the first n body lines, RFC 1939 §7) without reading further.

Stored messages normally use CRLF already; a bare LF is sent as CRLF, and a last line that
lacks its line end gets one, so the terminating "." is always on a line of its own.

The store notes at delivery whether a body needs any of this (codec.SHAPE_*, given here as
``shape``): a clean body (CRLF only, no line starting with ".") passes through untouched,
with no scan at all; a CRLF body with dot-lines is only byte-stuffed (one C replace per
chunk). Shape 0 (unknown: a record older than the shapes) scans each chunk. No path loops
over lines in Python, except TOP's cut, which stops after the lines it sends.
"""

from __future__ import annotations

import re

from maild.store.codec import SHAPE_CLEAN, SHAPE_CRLF, SHAPE_KNOWN

_BARE_LF = re.compile(rb"(?<!\r)\n")
_LINE_DOT = re.compile(rb"\n\.")
TERMINATOR = b".\r\n"


class MessageEncoder:
    def __init__(self, body_lines: int | None = None, shape: int = 0) -> None:
        """``body_lines`` None: the whole message (RETR); n: TOP's header plus n lines.
        ``shape``: the message's codec.SHAPE_* bits as the store recorded them, 0 if unknown."""
        self.body_lines = body_lines
        self.clean = shape & SHAPE_CLEAN == SHAPE_CLEAN  # sent as stored
        self.crlf = shape & (SHAPE_KNOWN | SHAPE_CRLF) == SHAPE_KNOWN | SHAPE_CRLF  # no bare LF anywhere
        self.done = False  # TOP has all it needs: stop reading
        self._at_line_start = True  # in the output
        self._last_cr = False  # the output so far ends with CR
        self._in_body = False  # TOP: the blank line after the header has been seen
        self._line_head = b""  # TOP: the first two octets of the current input line
        self._sent_body_lines = 0

    def feed(self, chunk: bytes) -> bytes:
        """The encoded form of the next chunk of the message (b"" once ``done``)."""
        if self.done:
            return b""
        if self.body_lines is not None:
            chunk = chunk[:self._top_cut(chunk)]
        if not chunk:
            return b""
        if self.clean:  # RFC 1939 §3 asks nothing of it: CRLF lines, none starting with "."
            self._at_line_start = chunk[-1:] == b"\n"
            return chunk
        split_crlf = self._last_cr and chunk[:1] == b"\n"  # CR ended the previous chunk
        if self.crlf or chunk.count(b"\n") == chunk.count(b"\r\n") + split_crlf:
            out = chunk  # no bare LF: the common case, without the regex's cost
        elif split_crlf:
            out = b"\n" + _BARE_LF.sub(b"\r\n", chunk[1:])
        else:
            out = _BARE_LF.sub(b"\r\n", chunk)
        if _LINE_DOT.search(out) is not None:  # re's literal-prefix scan: cheaper than ``in`` on text
            out = out.replace(b"\n.", b"\n..")  # RFC 1939 §3 byte-stuffing
        if self._at_line_start and out[:1] == b".":
            out = b"." + out
        self._at_line_start = out.endswith(b"\n")
        self._last_cr = out.endswith(b"\r")
        return out

    def finish(self) -> bytes:
        """The end of the response: a missing line end, then "." CRLF."""
        if self._at_line_start:
            return TERMINATOR
        return (b"\n" if self._last_cr else b"\r\n") + TERMINATOR

    def _top_cut(self, chunk: bytes) -> int:
        """How much of ``chunk`` belongs to the TOP response; sets ``done`` at the cut."""
        assert self.body_lines is not None
        if self._in_body and self.body_lines == 0:
            self.done = True
            return 0
        pos = 0
        while True:
            end = chunk.find(b"\n", pos)
            if end < 0:
                if len(self._line_head) < 2:
                    self._line_head = (self._line_head + chunk[pos:pos + 2])[:2]
                return len(chunk)
            head = (self._line_head + chunk[pos:end])[:2] if len(self._line_head) < 2 else self._line_head
            self._line_head = b""
            pos = end + 1
            if self._in_body:
                self._sent_body_lines += 1
            elif head in (b"", b"\r"):
                self._in_body = True  # the empty line that ends the header (RFC 5322 §2.1)
            if self._in_body and self._sent_body_lines >= self.body_lines:
                self.done = True
                return pos
