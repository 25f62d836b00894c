"""COMPRESS=DEFLATE (RFC 4978): raw deflate (RFC 1951) on both directions of an IMAP
session, from just after the tagged OK of ``COMPRESS DEFLATE``.

Implementation notes — invariants a contributor must keep:

1. The tagged OK goes out uncompressed; then :class:`DeflateTransport` takes the place of
   the session's transport (plain TCP or TLS alike: it wraps whatever the session writes
   to), so every later write, the streamed FETCH bodies included, is compressed. Anything
   the client pipelined behind COMPRESS was read as uncompressed and is discarded, as for
   STARTTLS (RFC 4978 §3 has the client wait for the OK).
2. Each write is compressed and ended with a sync flush (§4: "the server MUST flush"), so
   the client can decode every response as soon as it arrives; the deflate window carries
   over between writes, so repeated text still compresses.
3. Bounded input: compressed data is inflated at most ``CHUNK`` octets at a time into the
   session, which frames and limits it as uncompressed input. When the session pauses
   reading (input backed up) the rest stays compressed in ``_pending``, and the real
   transport is paused too; resuming inflates on, so a small "decompression bomb" cannot
   fill memory.
4. Input that does not inflate, or a stream that ends, closes the connection (the peers no
   longer agree on the stream). A second COMPRESS answers ``NO [COMPRESSIONACTIVE]`` (§3);
   an unknown mechanism is BAD.
5. The transport's push-producer arrangement is untouched: the session stays registered
   with the real transport, whose pause/resume follow the compressed bytes it buffers.
"""

from __future__ import annotations

import logging
import zlib
from typing import TYPE_CHECKING, Any, cast

from maild.imap.commands import Compress
from maild.util.transport import ConnectionTransport

if TYPE_CHECKING:
    from maild.imap.server import ImapSession

log = logging.getLogger(__name__)

CHUNK = 64 * 1024  # inflated octets handed to the session at a time
LEVEL = 6  # zlib's default: most of the gain of 9 at a fraction of its cost


class DeflateTransport:
    """The session's transport once COMPRESS DEFLATE is active: deflates writes, inflates
    what the session is given, and passes everything else to the wrapped transport."""

    def __init__(self, session: ImapSession, transport: Any) -> None:
        self._session = session
        self._transport = transport
        self._deflate = zlib.compressobj(LEVEL, zlib.DEFLATED, -15)  # raw deflate (RFC 4978 §4)
        self._inflate = zlib.decompressobj(-15)
        self._pending = b""  # compressed input not yet inflated
        self._paused = False
        self._scheduled = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    # -- output ------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        self._transport.write(self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH))

    def writeSequence(self, data: list[bytes]) -> None:
        self.write(b"".join(data))

    # -- input -------------------------------------------------------------------------------

    def received(self, data: bytes) -> None:
        """Compressed octets from the wire."""
        self._pending += data
        self._inflate_some()

    def _inflate_some(self) -> None:
        self._scheduled = False
        more = True
        while more and not self._paused and not self._session._closed:
            try:
                out = self._inflate.decompress(self._pending, CHUNK)
            except zlib.error:
                self._broken("input does not inflate")
                return
            self._pending = self._inflate.unconsumed_tail
            if self._inflate.eof:
                self._broken("the client ended its deflate stream")
                return
            # A full chunk may leave output inside zlib with no input left: ask again.
            more = bool(self._pending) or len(out) == CHUNK
            if out:
                self._session.dataReceived(out, inflated=True)

    def _broken(self, reason: str) -> None:
        log.info("IMAP COMPRESS: closing the connection of %s: %s", self._session.user, reason)
        self._pending = b""
        self._session._send(b"* BYE Compressed stream error")
        self._session._close()

    def pauseProducing(self) -> None:
        self._paused = True
        self._transport.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        self._transport.resumeProducing()
        if self._pending and not self._scheduled:
            # Not from inside the session's own input processing, which called us.
            self._scheduled = True
            self._session.ctx.reactor.callLater(0, self._inflate_some)


async def start(session: ImapSession, cmd: Compress) -> Any:
    """COMPRESS (RFC 4978 §3): answer OK, then compress from the next octet on."""
    from maild.imap.server import ANSWERED, _bad, _no

    if isinstance(session.transport, DeflateTransport):
        raise _no("Compression is already active", "COMPRESSIONACTIVE")
    if cmd.mechanism != "DEFLATE":
        raise _bad("Unknown compression mechanism")
    session._queue.clear()  # pipelined behind COMPRESS: read as uncompressed, dropped
    session._framer.reset()
    session._send(cmd.tag.encode() + b" OK DEFLATE active")
    session.transport = cast(ConnectionTransport, DeflateTransport(session, session.transport))
    return ANSWERED
