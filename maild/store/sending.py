"""A stored message opened for sending whole (POP3 RETR and TOP): its stream, and the shape
of its bytes as the message record noted it at delivery (codec.SHAPE_*).

Implementation notes — invariants a contributor must keep:

1. The shape is the body's, noted once when the body was staged to a file
   (codec.body_shape); the per-recipient prefix maild wrote itself is checked here, on
   open (it is a few header lines). A record without a shape (a body kept inline, or a
   record written before shapes were kept) opens with shape 0: the reader takes its
   general path. Nothing here reads the body to learn its shape.
2. A body file not yet known to be intact is hashed while it is read, not in a pass of
   its own before: :class:`VerifyingReader` compares the sha256 when it reaches the end of
   the file and raises BlobDamaged there, before the read that reached the end returns.
   A reader that holds back the last chunk until the end is read (POP3 does) so never
   sends the end of a damaged body; one that fits a single read is refused before
   anything of it is sent.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from maild.store.codec import SHAPE_CRLF, SHAPE_NO_DOT, body_shape


@dataclass(frozen=True)
class OpenMessage:
    stream: BinaryIO  # prefix and body; close it
    shape: int  # codec.SHAPE_* bits of the whole message; 0: unknown


def message_shape(prefix: bytes, body_shape_bits: int) -> int:
    """The shape of prefix + body, from the body's recorded bits (note 1)."""
    if not prefix or not body_shape_bits:
        return body_shape_bits
    own = body_shape((prefix,))
    if not own & SHAPE_CRLF:  # a prefix always ends with CRLF; if not, the body's line starts are unknown
        return 0
    return body_shape_bits & (own | ~(SHAPE_CRLF | SHAPE_NO_DOT))


class VerifyingReader(io.RawIOBase):
    """A body file read through, its sha256 compared at the end (note 2): ``damaged`` is
    called (it raises) on a mismatch, ``intact`` once on a match."""

    def __init__(self, blob: Any, sha: bytes, damaged: Callable[[], None], intact: Callable[[], None]) -> None:
        self._blob = blob
        self._sha = sha
        self._digest: Any = hashlib.sha256()
        self._damaged = damaged
        self._intact = intact
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n: int = self._blob.readinto(buffer)
        if n:
            self._digest.update(memoryview(buffer)[:n])
        elif not self._checked:
            self._checked = True
            if self._digest.digest() != self._sha:
                self._damaged()
            self._intact()
        return n

    def close(self) -> None:
        self._blob.close()
        super().close()
