"""The transport under a maild connection: its interface for the type checker, and the TCP
transport the daemon's listeners build (:class:`DirectServer`).

Twisted's ``Protocol.transport`` is declared ``ITransport | None``; the TCP and TLS
transports maild runs on (``twisted.internet.tcp``, ``twisted.protocols.tls``) provide
more: ``abortConnection``, ``startTLS``, producer/consumer flow control, ``getHandle``.
A protocol class that uses those declares ``transport: ConnectionTransport``.

The write path (:class:`DirectServer`). Twisted's TCP transport buffers every ``write`` and
sends it on the reactor's next iteration: it registers the socket for writability
(``epoll_ctl``), polls, sends, and unregisters it (``epoll_ctl`` again) — two system calls
and a pass through the reactor's dispatch for every response, although the socket can
almost always take it at once. :class:`DirectServer` keeps Twisted's semantics (writes are
ordered, buffered output is bounded, a streaming producer is paused and resumed the same
way) and changes when the bytes leave:

- Invariant 1: what a protocol writes while it handles input (``dataReceived``) is held and
  sent with one ``send()`` when it returns: a response of ten lines, or the answers to ten
  pipelined commands, is one system call and one TCP segment.
- Invariant 2: a write at any other time (a command completed by the store's writer thread,
  a timer, an IDLE notification) is held until the end of the reactor's current turn
  (``callLater(0)``, which runs before the reactor polls again) and then sent the same way,
  so writes of one turn still leave together.
- Invariant 3: what the socket does not take at once goes back to Twisted's own path
  (registered for writability, sent when the socket drains); while any of it is unsent,
  later writes queue behind it, so the order on the wire is the order of the writes.
- Invariant 4: held output is bounded: at ``bufferSize`` (64 KiB) it is sent at once, and
  what remains unsent counts toward the producer's pause exactly as in Twisted.
- Invariant 5: TLS keeps working: under implicit TLS the TLS protocol is this transport's
  protocol, so its records go out the same way; after ``startTLS`` the TLS layer writes its
  records through :class:`_Bypass`, the same direct path.
- Invariant 6: a protocol that has answered the last command of its input may send what is
  held at once (:func:`send_now`) instead of at the end of ``dataReceived``: still one
  ``send()`` for the input, and the session's bookkeeping after the answer (metrics,
  timers) no longer delays it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import _newtls, abstract, tcp
from twisted.internet.interfaces import IConsumer, IPushProducer, ISystemHandle, ITLSTransport


class ConnectionTransport(ITLSTransport, IConsumer, IPushProducer, ISystemHandle):
    """A connected TCP transport, possibly TLS, that is also a push producer and consumer."""


def _write_direct(conn: Any, data: bytes) -> None:
    """Queue ``data`` on the connection's hold (see the module's notes), sending it now when
    the hold is full."""
    if not conn.connected or conn._writeDisconnected or conn._aborting or not data:
        return
    if conn._writer or conn.disconnecting:
        abstract.FileDescriptor.write(conn, data)  # invariant 3: Twisted is sending, queue behind
        return
    if not isinstance(data, bytes):
        abstract._dataMustBeBytes(data)
    conn._tempDataBuffer.append(data)
    conn._tempDataLen += len(data)
    if conn._tempDataLen >= conn.bufferSize:
        conn._send_held()  # invariant 4
    elif not conn._held and conn._flush_call is None:
        conn._flush_call = conn.reactor.callLater(0, conn._flush_turn)  # invariant 2


def send_now(transport: object) -> None:
    """Send what ``transport`` (a :class:`DirectServer`, or the TLS layer over one) holds now
    (invariant 6); nothing on any other transport."""
    conn = transport if isinstance(transport, DirectServer) else getattr(transport, "transport", None)
    if isinstance(conn, DirectServer) and conn._tempDataLen and not conn._writer:
        conn._send_held()


class _Bypass(abstract.FileDescriptor):
    """What the TLS layer started by ``startTLS`` writes its records through (Twisted's
    ``_BypassTLS`` calls this class's methods on the connection): the direct path."""

    write = _write_direct


class DirectServer(tcp.Server):
    """A TCP server connection that sends held output with one ``send()`` as soon as the
    protocol is done producing it (module notes, invariants 1-5)."""

    _held = 0  # >0 while the protocol handles input: writes wait for the end of it
    _writer = False  # registered with the reactor for writability: Twisted's path is sending
    _flush_call: Any = None  # the end-of-turn send (invariant 2)

    def write(self, data: bytes) -> None:
        if self.TLS:  # after startTLS: through the TLS layer, which writes via _Bypass
            if self.connected:
                self.protocol.write(data)  # type: ignore[attr-defined]
        else:
            _write_direct(self, data)

    def startTLS(self, ctx: Any, normal: bool = True) -> None:
        _newtls.startTLS(self, ctx, normal, _Bypass)

    def startWriting(self) -> None:
        self._writer = True
        super().startWriting()

    def stopWriting(self) -> None:
        self._writer = False
        super().stopWriting()

    def _dataReceived(self, data: bytes | None) -> Any:  # invariant 1
        self._held += 1
        try:
            return super()._dataReceived(data)
        finally:
            self._held -= 1
            if not self._held and self._tempDataLen and not self._writer:
                self._send_held()

    def _flush_turn(self) -> None:
        self._flush_call = None
        if not self._held and self._tempDataLen and not self._writer:
            self._send_held()

    def _send_held(self) -> None:
        """Send what is held with one ``send()``; the rest goes to Twisted's path."""
        if self._aborting:  # abortConnection drops buffered data
            self._tempDataBuffer = []
            self._tempDataLen = 0
            return
        if not self.connected or self.disconnecting:
            if self.connected:
                self.startWriting()  # loseConnection's doWrite sends it, then closes
            return
        data = b"".join(self._tempDataBuffer) if len(self._tempDataBuffer) > 1 else self._tempDataBuffer[0]
        self._tempDataBuffer = []
        self._tempDataLen = 0
        try:
            sent = self.socket.send(data)
        except OSError:
            sent = 0  # EAGAIN, or an error Twisted's doWrite meets again and closes on
        if sent < len(data):
            pending = len(self.dataBuffer) - self.offset
            self.dataBuffer = (bytes(self.dataBuffer[self.offset:]) if pending else b"") + data[sent:]
            self.offset = 0
            self.startWriting()
            self._maybePauseProducer()

    def connectionLost(self, reason: Any) -> None:
        call, self._flush_call = self._flush_call, None
        if call is not None and call.active():
            call.cancel()
        super().connectionLost(reason)


class DirectPort(tcp.Port):
    """A TCP listening port whose connections are :class:`DirectServer`."""

    transport = DirectServer


def listen_tcp(reactor: Any, port: int, factory: Any, interface: str = "") -> DirectPort:
    """``reactor.listenTCP`` with :class:`DirectServer` connections."""
    listening = DirectPort(port, factory, 50, interface, reactor)
    listening.startListening()
    return listening


def adopt_port(reactor: Any, fd: int, family: int, factory: Any) -> DirectPort:
    """``reactor.adoptStreamPort`` (an inherited listening socket) with :class:`DirectServer`
    connections."""
    listening: DirectPort = DirectPort._fromListeningDescriptor(reactor, fd, family, factory)
    listening.startListening()
    return listening
