"""A stored message opened for sending whole (POP3 RETR and TOP): its stream, and the shape
of its bytes as the message record noted it at delivery (codec.SHAPE_*).

Implementation notes — invariants a contributor must keep:

1. The shape is the body's, noted once when the body was staged to a file
   (codec.body_shape); the per-recipient prefix maild wrote itself is checked here, on
   open (it is a few header lines). A record without a shape (a body kept inline, or a
   record written before shapes were kept) opens with shape 0: the reader takes its
   general path. Nothing here reads the body to learn its shape.
2. A body file not yet known to be intact is hashed while it is read, not in a pass of
   its own before: :class:`MessageReader` compares the sha256 when it has read the file's
   last octet and raises BlobDamaged there, before the read that got it returns.
   A reader that holds back the last chunk until the end is read (POP3 does) so never
   sends the end of a damaged body; one that fits a single read is refused before
   anything of it is sent.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from maild.store.codec import SHAPE_CRLF, SHAPE_NO_DOT, body_shape


@dataclass(frozen=True)
class OpenMessage:
    stream: MessageReader  # prefix and body; close it
    shape: int  # codec.SHAPE_* bits of the whole message; 0: unknown


def message_shape(prefix: bytes, body_shape_bits: int) -> int:
    """The shape of prefix + body, from the body's recorded bits (note 1)."""
    if not prefix or not body_shape_bits:
        return body_shape_bits
    own = body_shape((prefix,))
    if not own & SHAPE_CRLF:  # a prefix always ends with CRLF; if not, the body's line starts are unknown
        return 0
    return body_shape_bits & (own | ~(SHAPE_CRLF | SHAPE_NO_DOT))


class MessageReader:
    """A message read front to back in pieces: its prefix, then its body from a file
    descriptor (or inline bytes), with the fewest system calls: no buffering layers, and
    the body file's length taken from the fstat the store made when it opened it, so no
    read is spent finding the end. A body not yet known to be intact is hashed as it is
    read and checked once its last octet is (note 2): ``damaged`` (it raises) on a
    mismatch, ``intact`` on a match."""

    def __init__(self, prefix: bytes, body_size: int, fd: int | None = None, inline: bytes | None = None,
                 sha: bytes | None = None, damaged: Callable[[], None] | None = None,
                 intact: Callable[[], None] | None = None) -> None:
        self._head = prefix
        self._fd = fd
        self._inline = inline
        self._pos = 0
        self._left = body_size  # body octets not read yet
        self._sha = sha
        self._digest: Any = None if sha is None else hashlib.sha256()
        self._damaged = damaged
        self._intact = intact

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` octets (all that is left when negative); b"" at the end."""
        if n < 0:
            return b"".join(iter(lambda: self.read(1 << 20), b""))
        out = b""
        if self._head:
            out, self._head = self._head[:n], self._head[n:]
            n -= len(out)
        if n > 0 and self._left > 0:
            want = min(n, self._left)
            if self._fd is not None:
                data = os.read(self._fd, want)
                if not data:  # shorter than when it was opened
                    self._mismatch()
                    raise OSError("a body file ended early")
            else:
                assert self._inline is not None
                data = self._inline[self._pos:self._pos + want]
                self._pos += want
            self._left -= len(data)
            if self._digest is not None:
                self._digest.update(data)
            out = out + data if out else data
        if self._digest is not None and not self._left:  # the last octet (an empty body: at once)
            digest, self._digest = self._digest.digest(), None
            if digest != self._sha:
                self._mismatch()
            if self._intact is not None:
                self._intact()
        return out

    def _mismatch(self) -> None:
        if self._damaged is not None:
            self._damaged()

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> MessageReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
