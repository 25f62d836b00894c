"""maild.util.transport.DirectServer, the TCP transport of every listener: output leaves with
one send() when the protocol is done producing it, never through a writability round trip
while the socket takes it; what the socket refuses goes Twisted's way, in order and with the
producer paused (a client that does not read stays bounded). Real sockets on 127.0.0.1;
the reactor is a recording fake on a Clock, so each test says which send and which epoll
registration happened."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer

from maild.util.transport import DirectServer, send_now


class _Reactor(Clock):
    """Records what the transport asks of the reactor's poller."""

    def __init__(self) -> None:
        super().__init__()
        self.readers: set[Any] = set()
        self.writers: set[Any] = set()
        self.writer_registrations = 0

    def addReader(self, reader: Any) -> None:
        self.readers.add(reader)

    def removeReader(self, reader: Any) -> None:
        self.readers.discard(reader)

    def addWriter(self, writer: Any) -> None:
        self.writers.add(writer)
        self.writer_registrations += 1

    def removeWriter(self, writer: Any) -> None:
        self.writers.discard(writer)


class _CountingSocket:
    """The server's socket, counting send() calls."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.sends = 0

    def send(self, data: bytes) -> int:
        self.sends += 1
        return self._sock.send(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _Echo(Protocol):
    """Answers each input chunk with three lines, written one by one."""

    def dataReceived(self, data: bytes) -> None:
        for n in range(3):
            self.transport.write(b"%d %s\r\n" % (n, data.strip()))


@implementer(IPushProducer)
class _Producer:
    def __init__(self) -> None:
        self.paused = False
        self.resumed = 0

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.resumed += 1

    def stopProducing(self) -> None:
        pass


class _Port:
    _realPortNumber = 0


@pytest.fixture
def pair() -> Any:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = socket.create_connection(listener.getsockname())
    server, address = listener.accept()
    listener.close()
    server.setblocking(False)
    reactor = _Reactor()
    protocol = _Echo()
    counting = _CountingSocket(server)
    transport = DirectServer(server, protocol, address, _Port(), 1, reactor)
    transport.socket = counting  # type: ignore[assignment]
    protocol.makeConnection(transport)
    client.settimeout(5)
    yield client, transport, counting, reactor, protocol
    client.close()
    server.close()


def _receive(client: socket.socket, size: int) -> bytes:
    out = b""
    while len(out) < size:
        chunk = client.recv(size - len(out))
        assert chunk, "connection closed"
        out += chunk
    return out


def test_what_is_written_while_handling_input_leaves_in_one_send(pair: Any) -> None:
    client, transport, counting, reactor, _ = pair
    client.sendall(b"a1 NOOP\r\n")
    transport.doRead()
    expected = b"0 a1 NOOP\r\n1 a1 NOOP\r\n2 a1 NOOP\r\n"
    assert _receive(client, len(expected)) == expected
    assert counting.sends == 1  # three writes, one system call
    assert reactor.writer_registrations == 0  # no epoll_ctl add/remove pair
    assert not reactor.getDelayedCalls()  # nothing left for the end of the turn


def test_a_write_at_another_time_leaves_at_the_end_of_the_reactor_turn(pair: Any) -> None:
    client, transport, counting, reactor, _ = pair
    transport.write(b"* 3 EXISTS\r\n")
    transport.write(b"* 1 RECENT\r\n")
    assert counting.sends == 0  # held until the turn ends
    reactor.advance(0)
    assert _receive(client, 24) == b"* 3 EXISTS\r\n* 1 RECENT\r\n"
    assert counting.sends == 1
    assert reactor.writer_registrations == 0


def test_a_reader_that_does_not_read_is_bounded_and_the_order_kept(pair: Any) -> None:
    client, transport, counting, reactor, _ = pair
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    producer = _Producer()
    transport.registerProducer(producer, True)
    chunks = [bytes([65 + n % 26]) * 100_000 for n in range(8)]
    for chunk in chunks:
        transport.write(chunk)  # each at least the hold's bound: sent (or queued) at once
    assert transport in reactor.writers  # the socket refused some: Twisted's path has it
    assert producer.paused  # more than bufferSize unsent: the producer was told to stop
    unsent = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    assert unsent <= sum(map(len, chunks))
    transport.write(b"tail\r\n")  # behind what is queued, never ahead of it
    expected = b"".join(chunks) + b"tail\r\n"
    received = b""
    while len(received) < len(expected):
        received += client.recv(1 << 16)
        if transport in reactor.writers:
            transport.doWrite()
    assert received == expected
    assert transport not in reactor.writers
    assert not producer.paused and producer.resumed == 1


def test_a_close_sends_what_is_held_first(pair: Any) -> None:
    client, transport, _, reactor, _ = pair
    transport.write(b"* BYE Autologout\r\n")
    transport.loseConnection()
    while transport in reactor.writers:
        transport.doWrite()
    reactor.advance(0)  # the end-of-turn send finds nothing left
    assert _receive(client, 18) == b"* BYE Autologout\r\n"


def test_nothing_is_sent_after_the_connection_is_gone(pair: Any) -> None:
    _, transport, counting, reactor, _ = pair
    transport.write(b"late\r\n")
    transport.connectionLost(Failure(ConnectionDone()))
    reactor.advance(0)
    assert counting.sends == 0
    assert not reactor.getDelayedCalls()


def test_an_aborted_connection_sends_nothing_it_held(pair: Any) -> None:
    client, transport, counting, reactor, _ = pair

    class _Abort(Protocol):
        def dataReceived(self, data: bytes) -> None:
            self.transport.write(b"* OK half an answer\r\n")
            self.transport.abortConnection()  # e.g. the TLS handshake deadline

    transport.protocol = _Abort()
    transport.protocol.makeConnection(transport)
    client.sendall(b"x\r\n")
    transport.doRead()
    reactor.advance(0)
    assert counting.sends == 0


def test_send_now_sends_the_answer_before_the_protocol_returns(pair: Any) -> None:
    """Invariant 6: the last answer of an input leaves when the protocol says so, before its
    bookkeeping; what the protocol writes afterwards leaves at the end as before."""
    client, transport, counting, reactor, _ = pair
    seen: list[int] = []

    class _Answer(Protocol):
        def dataReceived(self, data: bytes) -> None:
            self.transport.write(b"* 1 EXISTS\r\n")
            self.transport.write(b"a1 OK done\r\n")
            send_now(self.transport)
            seen.append(counting.sends)  # sent already, inside dataReceived
            send_now(self.transport)  # nothing held: no empty send

    transport.protocol = _Answer()
    transport.protocol.makeConnection(transport)
    client.sendall(b"a1 NOOP\r\n")
    transport.doRead()
    assert seen == [1]
    assert _receive(client, 24) == b"* 1 EXISTS\r\na1 OK done\r\n"
    assert counting.sends == 1  # one send for the input all the same
    assert not reactor.getDelayedCalls() and reactor.writer_registrations == 0
