"""Antivirus: a non-blocking client of ClamAV's clamd (INSTREAM) and the filter using it.

Why not the ``clamd`` package from PyPI: its last release is from 2014 and it does blocking
socket I/O, which would stall the reactor (every SMTP, IMAP and POP3 session) for as long
as clamd takes. The INSTREAM protocol is small enough to speak directly on Twisted:

    client: "zINSTREAM\\0", then chunks of <4-byte big-endian length><data>,
            then a zero-length chunk
    clamd:  "stream: OK\\0" | "stream: <signature> FOUND\\0" | "<reason> ERROR\\0"

(clamd(8), "INSTREAM"). The connection is closed after the one reply.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, UNIXClientEndpoint
from twisted.internet.interfaces import IPushProducer, IStreamClientEndpoint
from twisted.python.failure import Failure
from zope.interface import implementer

from maild.config import parse_address
from maild.util.transaction import Filter, Transaction, Verdict
from maild.util.transport import ConnectionTransport

log = logging.getLogger(__name__)

CHUNK_SIZE = 64 * 1024  # well under clamd's default StreamMaxLength
MAX_REPLY = 4096  # a reply is one short line; anything longer is a protocol error


class ClamdError(Exception):
    """clamd could not be reached, timed out, or answered something other than a verdict."""


class ClamdSizeLimit(ClamdError):
    """The message is longer than clamd's StreamMaxLength: clamd did not scan it."""


@dataclass(frozen=True)
class ScanResult:
    signature: str | None  # None: clean

    @property
    def infected(self) -> bool:
        return self.signature is not None


def parse_reply(reply: bytes) -> ScanResult:
    """Parse one INSTREAM reply (without the terminating NUL)."""
    text = reply.decode("utf-8", "replace").strip()
    if text.startswith("stream: "):
        text = text[len("stream: "):]
    if text == "OK":
        return ScanResult(None)
    if text.endswith(" FOUND"):
        # The name goes into an SMTP reply: keep it to one line of printable ASCII.
        name = "".join(c for c in text[: -len(" FOUND")] if c.isascii() and c.isprintable())
        return ScanResult(name.strip()[:200] or "unknown")
    if text.startswith("INSTREAM size limit exceeded"):
        raise ClamdSizeLimit(f"clamd answered {text!r}")
    raise ClamdError(f"clamd answered {text!r}")


@implementer(IPushProducer)
class _InstreamProtocol(protocol.Protocol):
    """Sends the message a CHUNK_SIZE chunk at a time, as the transport's push producer:
    writing it all at once would queue a second copy of it in the transport's buffer."""

    transport: ConnectionTransport

    def __init__(self, data: bytes, done: defer.Deferred[ScanResult]) -> None:
        self.data = data
        self.done = done
        self.reply = b""
        self._sent: int | None = 0  # None: finished or stopped
        self._paused = False

    def connectionMade(self) -> None:  # Twisted API
        self.transport.registerProducer(self, True)
        self.transport.write(b"zINSTREAM\0")
        self._send()

    def _send(self) -> None:
        view = memoryview(self.data)
        while not self._paused and self._sent is not None:
            if self._sent >= len(view):
                self._sent = None
                self.transport.write(struct.pack(">I", 0))
                self.transport.unregisterProducer()
                return
            chunk = view[self._sent:self._sent + CHUNK_SIZE]
            self._sent += len(chunk)
            self.transport.write(struct.pack(">I", len(chunk)) + bytes(chunk))

    def pauseProducing(self) -> None:  # Twisted API
        self._paused = True

    def resumeProducing(self) -> None:  # Twisted API
        self._paused = False
        self._send()

    def stopProducing(self) -> None:  # Twisted API
        self._sent = None

    def dataReceived(self, data: bytes) -> None:  # Twisted API
        self.reply += data
        if b"\0" in self.reply:
            self._finish(self.reply.split(b"\0", 1)[0])
            self.transport.loseConnection()
        elif len(self.reply) > MAX_REPLY:
            self._fail(ClamdError("clamd reply too long"))
            self.transport.abortConnection()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self.done.called:
            return
        if self.reply:
            self._finish(self.reply)
        else:
            self._fail(ClamdError(f"clamd closed the connection: {reason.getErrorMessage()}"))

    def _finish(self, reply: bytes) -> None:
        try:
            result = parse_reply(reply)
        except ClamdError as exc:
            self._fail(exc)
            return
        if not self.done.called:
            self.done.callback(result)

    def _fail(self, exc: Exception) -> None:
        if not self.done.called:
            self.done.errback(exc)


def clamd_endpoint(reactor: Any, address: str, timeout: float) -> IStreamClientEndpoint:
    """``/path/to/clamd.ctl`` is a unix socket; ``host:port`` is TCP."""
    if address.startswith("/"):
        return UNIXClientEndpoint(reactor, address, timeout=timeout)
    addr = parse_address(address, "filters.clamd")
    endpoint_class = TCP6ClientEndpoint if ":" in addr.host else TCP4ClientEndpoint
    return endpoint_class(reactor, addr.host, addr.port, timeout=timeout)


class ClamdClient:
    """One INSTREAM scan per connection; every scan is bounded by ``timeout`` seconds."""

    def __init__(self, reactor: Any, address: str, timeout: float = 30.0) -> None:
        self.reactor = reactor
        self.address = address
        self.timeout = timeout

    def scan(self, data: bytes) -> defer.Deferred[ScanResult]:
        done: defer.Deferred[ScanResult] = defer.Deferred()
        endpoint = clamd_endpoint(self.reactor, self.address, self.timeout)
        connecting = endpoint.connect(protocol.Factory.forProtocol(
            lambda: _InstreamProtocol(data, done)))
        connected: list[_InstreamProtocol] = []

        def on_connect_error(failure: Failure) -> None:
            if not done.called:
                done.errback(ClamdError(f"cannot connect to clamd at {self.address}: "
                                        f"{failure.getErrorMessage()}"))

        connecting.addCallbacks(connected.append, on_connect_error)

        def on_timeout(failure: Failure) -> Failure:
            if failure.check(defer.TimeoutError, defer.CancelledError):
                connecting.cancel()
                for proto in connected:
                    proto.transport.abortConnection()
                raise ClamdError(f"clamd at {self.address} did not answer in {self.timeout}s")
            return failure

        done.addTimeout(self.timeout, self.reactor)
        done.addErrback(on_timeout)
        return done


class ClamavFilter(Filter):
    """Reject infected messages (554 5.7.1, nothing stored). When clamd fails, either
    tempfail (451 4.7.1: the sender retries, nothing is lost) or accept and tag."""

    name = "clamav"

    def __init__(self, client: ClamdClient, max_size: int, on_error: str = "tempfail") -> None:
        self.client = client
        self.max_size = max_size
        self.on_error = on_error

    @defer.inlineCallbacks
    def on_data(self, tx: Transaction):  # type: ignore[no-untyped-def]
        raw = tx.raw or b""
        too_large = Verdict(add_headers=[("X-Virus-Scan", "skipped (too large)")])
        if len(raw) > self.max_size:
            log.info("clamav: %d-octet message above clamd_max_size, not scanned", len(raw))
            return too_large
        try:
            result = yield self.client.scan(raw)
        except ClamdSizeLimit:
            # Retrying would meet the same limit: tag it, as for clamd_max_size.
            log.warning("clamav: %d-octet message above clamd's StreamMaxLength, not scanned; "
                        "make [filters] clamd_max_size smaller than that", len(raw))
            return too_large
        except ClamdError as exc:
            log.warning("clamav: %s", exc)
            if self.on_error == "accept":
                return Verdict(add_headers=[("X-Virus-Scan", "failed")])
            return Verdict.tempfail(451, "4.7.1", "Virus scanner unavailable, try again later")
        tx.notes["virus"] = result.signature
        if result.infected:
            log.info("clamav: rejected message from %s: %s", tx.client_ip, result.signature)
            return Verdict.reject(554, "5.7.1", f"Message rejected: virus found: {result.signature}")
        return None
