"""The one session core of SMTP, IMAP and POP3: what a line protocol's session is apart
from its commands.

- Accept: :class:`SessionFactory` counts every connection in its protocol section's
  :class:`~maild.util.limits.ConnectionCounter` when it is accepted — before TLS on the
  implicit-TLS ports (:class:`GatedTLSFactory`) — so the plain and TLS listeners of a
  section share one count. Over a limit, a TLS connection is closed at once (no handshake is
  spent on it) and a plain one gets the protocol's refusal line and is closed; each refusal
  is one log line (:func:`log_refusal`).
- TLS: the handshake (implicit TLS or after STARTTLS/STLS) must finish within
  ``[tls] handshake_timeout`` seconds, else the connection is aborted.
- The slot is given back when the session ends — QUIT answered, a timeout, a refusal —
  not when the transport is gone, which for TLS waits for the peer's close_notify: a client
  that reconnects at once finds its slot free.
- One command at a time (:meth:`CommandSession._start`), a coroutine the core drives itself:
  one that never awaits ends inside ``_start`` with no Deferred made; one that awaits is
  resumed from the awaited Deferred's callback (a failure thrown in). An idle timer on the
  reactor's clock that whole commands restart; reading paused while too much input waits.
- Output leaves through :class:`maild.util.transport.DirectServer` (the listeners' TCP
  transport): what a command writes while input is handled goes out in one ``send()``.
- One bad-command policy: ``max_bad_commands`` errors in a row end the session.
- One plaintext-authentication rule (:meth:`CommandSession._plaintext_auth_allowed`), one
  loopback test (:func:`is_loopback`), one SASL driver (:meth:`_sasl_exchange`) of
  :mod:`maild.auth.sasl`'s exchanges, one way to ask the authenticator (:meth:`_check_password`).

:class:`LineSession` adds the CRLF line loop that SMTP and POP3 share (IMAP frames
literals with its own :class:`maild.imap.framer.Framer`).
"""

from __future__ import annotations

import base64
import ipaddress
import logging
from collections.abc import Callable, Coroutine
from typing import Any, cast

from twisted.internet import defer
from twisted.internet.interfaces import IHandshakeListener, IProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from maild.util import metrics
from maild.util.limits import ConnectionCounter, Slot, TreeConnectionCounter
from maild.util.transport import ConnectionTransport

log = logging.getLogger("maild.session")

DEFAULT_HANDSHAKE_TIMEOUT = 20.0


def is_loopback(ip: str) -> bool:
    """127.0.0.0/8, ::1 and ::ffff:127.x (the one loopback test of the three protocols)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or bool(mapped is not None and mapped.is_loopback)


def log_refusal(stage: str, client_ip: str, reply: str, **envelope: object) -> None:
    """One line per refused connection or transaction, in the shape of Postfix's
    ``NOQUEUE: reject: RCPT from unknown[1.2.3.4]: 554 5.7.1 ...; from=<a> to=<b> proto=ESMTP``."""
    fields = " ".join(f"{key}={value}" for key, value in envelope.items() if value is not None)
    log.info("NOQUEUE: reject: %s from [%s]: %s%s", stage, client_ip, reply,
             f"; {fields}" if fields else "")


class SessionFactory(Factory):
    """Builds one protocol's sessions for one listener. Every listener of a protocol section
    (``[imap] listen`` and ``tls_listen``) shares the section's connection counter, kept in
    ``ctx.shared`` under the section's name — counted across the worker processes when the
    daemon has several (``ctx.tree``)."""

    noisy = False
    protocol_name = ""  # "smtp", "imap", "pop3": in log lines and auth records

    def __init__(self, ctx: Any, section: str, config: Any, implicit_tls: bool) -> None:
        self.ctx = ctx
        self.section = section
        self.config = config
        self.implicit_tls = implicit_tls
        tree = getattr(ctx, "tree", None)
        self.connections: ConnectionCounter = self.shared(
            "connections", lambda: ConnectionCounter(config.max_connections, config.max_connections_per_ip)
            if tree is None else TreeConnectionCounter(config.max_connections, config.max_connections_per_ip,
                                                       tree, section))

    def shared(self, name: str, make: Any) -> Any:
        """State the listeners of this section share (made by ``make()`` the first time)."""
        table = self.ctx.shared.setdefault(self.section, {})
        if name not in table:
            table[name] = make()
        return table[name]

    def make_session(self) -> CommandSession:
        raise NotImplementedError

    def buildProtocol(self, addr: Any) -> CommandSession | None:
        ip = getattr(addr, "host", "")
        slot = self.connections.acquire(ip)
        if slot is None:
            log_refusal("CONNECT", ip, "too many connections", proto=self.protocol_name,
                        section=self.section, tls="implicit" if self.implicit_tls else None)
            if self.implicit_tls:
                return None  # closed at once, before any TLS work (issue 15 item 1)
        session = self.make_session()
        session.factory = self
        session.slot = slot
        session.refused = slot is None
        return session


class GatedTLSFactory(TLSMemoryBIOFactory):
    """Implicit TLS (RFC 8314) in front of a :class:`SessionFactory`: the session factory
    decides at accept, before the handshake, whether the connection may stay."""

    def buildProtocol(self, addr: Any) -> Any:
        session = self.wrappedFactory.buildProtocol(addr)
        if session is None:
            return None  # the port closes the socket at once
        return self.protocol(self, session)


@implementer(IHandshakeListener)
class CommandSession(Protocol):
    transport: ConnectionTransport
    ctx: Any  # the daemon context: its reactor runs the timers
    config: Any  # the protocol section's configuration
    factory: Any = None
    slot: Slot | None = None  # this connection's place in the section's count
    refused = False  # accepted over a connection limit: answer the refusal and close
    client_ip = ""
    tls = False
    _busy = False  # a command is running: input waits in the buffer
    _closed = False
    _ended = False
    _read_paused = False  # the transport is paused because input backed up
    _output_paused = False  # the transport's write buffer is full (we are its push producer)
    _producing = False  # registered as the transport's push producer
    _starting = False  # inside _start: a command that finishes at once returns to _process
    _timer: Any = None
    _handshake_timer: Any = None
    _bad_commands = 0
    _erred = False  # the running command counted as an error

    def __init__(self, factory: Any = None) -> None:
        if factory is not None:
            self.factory = factory
            self.ctx = factory.ctx
            self.config = factory.config
            self.hostname: str = factory.ctx.config.hostname

    # -- the protocol's part: each protocol's session defines these -------------------------

    _greet: Callable[[], None]  # the connection is admitted: send the greeting
    _refuse_connection: Callable[[], None]  # over a connection limit: send the refusal line
    _idle_timeout: Callable[[], float]  # seconds of silence allowed in the present state
    _timed_out: Callable[[], None]  # the idle timer fired
    _input_backlog: Callable[[], bool]  # too much input waits: stop reading until it drains
    _process: Callable[[], None]  # run what the buffered input holds, as far as the state allows
    _internal_error: Callable[[Failure], None]  # a command raised: log it, answer without its text
    _send_challenge: Callable[[bytes], None]  # send a SASL challenge (base64 already applied)
    # the client's next line in a SASL exchange, and what is wrong with it, if anything
    _read_response: Callable[[], Coroutine[Any, Any, tuple[bytes, str | None]]]

    # -- ... and may define these ------------------------------------------------------------

    def _session_ended(self) -> None:
        """The session is over (once): release what it holds beyond its connection slot."""

    def _discard_input(self) -> None:
        """Forget buffered input (the session is closing)."""

    def _tls_established(self) -> None:
        """The TLS handshake finished."""

    # -- connection --------------------------------------------------------------------------

    def makeConnection(self, transport: Any) -> None:  # Twisted's name
        # Answers go out whole, at once. With Nagle's algorithm the last small segment of a
        # multi-segment answer waits for the client to ACK the previous one, and clients
        # delay ACKs (40 ms on Linux): a 70 KB FETCH took 47 ms instead of 5.
        no_delay = getattr(transport, "setTcpNoDelay", None)
        if no_delay is not None:
            no_delay(True)
        if self.factory is not None and getattr(self.factory, "implicit_tls", False):
            self.tls = True
            self._await_handshake()
        super().makeConnection(transport)

    def connectionMade(self) -> None:
        metrics.SESSIONS.labels(self.factory.section).inc()
        self.client_ip = getattr(self.transport.getPeer(), "host", "")
        if self.refused:
            # RFC 5321 §3.1 (421), RFC 3501 §7.1.5 (BYE), RFC 2449 §8.1.2 ([SYS/TEMP]).
            self._refuse_connection()
            self._close()
            return
        self._touch()
        self._greet()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._closed = True
        self._end_session()
        self._discard_input()

    def _register_producer(self) -> None:
        self.transport.registerProducer(cast(IProducer, self), True)  # the subclasses implement it
        self._producing = True

    def _close(self) -> None:
        """End the session and close: the slot is free now, whatever TLS still exchanges."""
        self._end_session()
        self._closed = True
        self._discard_input()
        if self._producing:
            # A registered producer holds the connection open until it is unregistered.
            self._producing = False
            self.transport.unregisterProducer()
        if self._handshake_timer is not None:
            # Before the handshake a TLS close would wait for it to finish (forever).
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()

    def _end_session(self) -> None:
        if self._ended:
            return
        self._ended = True
        for timer in (self._timer, self._handshake_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._timer = self._handshake_timer = None
        slot, self.slot = self.slot, None
        if slot is not None:
            slot.release()
        self._session_ended()

    # -- IPushProducer (SMTP, IMAP): the transport's write buffer is full / drained ----------

    def pauseProducing(self) -> None:
        self._output_paused = True
        self._update_read_pause()

    def resumeProducing(self) -> None:
        self._output_paused = False
        self._update_read_pause()
        self._output_resumed()
        self._process()

    def stopProducing(self) -> None:
        self._closed = True

    def _output_resumed(self) -> None:
        """The transport takes output again (IMAP resumes a streamed FETCH)."""

    # -- TLS ---------------------------------------------------------------------------------

    def _handshake_timeout(self) -> float:
        tls = getattr(getattr(self.ctx, "config", None), "tls", None)
        return float(getattr(tls, "handshake_timeout", DEFAULT_HANDSHAKE_TIMEOUT))

    def _await_handshake(self) -> None:
        self._handshake_timer = self.ctx.reactor.callLater(self._handshake_timeout(), self._handshake_timed_out)

    def _start_tls(self) -> None:
        """STARTTLS (RFC 3207), STARTTLS (RFC 3501 §6.2.1), STLS (RFC 2595 §4): the
        protocol has answered and dropped what was pipelined behind the command."""
        self.transport.startTLS(self.ctx.tls)
        self.tls = True
        self._await_handshake()

    def handshakeCompleted(self) -> None:
        timer, self._handshake_timer = self._handshake_timer, None
        if timer is not None and timer.active():
            timer.cancel()
        self._tls_established()

    def _handshake_timed_out(self) -> None:
        self._handshake_timer = None
        log.info("%s: TLS handshake from %s not finished in %.0f s, closing",
                 getattr(self.factory, "protocol_name", "session"), self.client_ip or "?",
                 self._handshake_timeout())
        self._end_session()
        self._closed = True
        self._discard_input()
        self.transport.abortConnection()

    # -- commands and timers -----------------------------------------------------------------

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        """Run one command; the session is busy until it ends, then reads on."""
        self._busy = True
        self._erred = False
        self._starting = True
        try:
            self._step(work)
        finally:
            self._starting = False

    def _step(self, work: Coroutine[Any, Any, None], failure: Failure | None = None) -> None:
        """Run the command's coroutine until it waits on a Deferred or ends. A command that
        never waits (NOOP, SELECT, a FETCH answered from memory) ends here, with no
        Deferred made for it; one that waits is resumed from the Deferred's callback, as
        Twisted's inlineCallbacks does, without its bookkeeping (a per-command cost of
        every command)."""
        try:
            waiting = work.send(None) if failure is None else failure.throwExceptionIntoGenerator(work)
        except StopIteration:
            self._finished(None)
            return
        except BaseException:
            self._internal_error(Failure())
            self._finished(None)
            return
        if not isinstance(waiting, defer.Deferred):  # only Deferreds are awaited in maild
            work.close()
            self._internal_error(Failure(TypeError(f"a command awaited {type(waiting).__name__}")))
            self._finished(None)
            return
        waiting.addBoth(self._resume_command, work)

    def _resume_command(self, result: object, work: Coroutine[Any, Any, None]) -> None:
        # A value the awaiting coroutine reads from the Deferred itself (Deferred.__iter__,
        # while this callback runs); a failure is thrown into it, as inlineCallbacks does.
        # Returning None consumes either: the coroutine has it.
        self._step(work, result if isinstance(result, Failure) else None)

    def _finished(self, _: object) -> None:
        self._busy = False
        if not self._erred:
            self._bad_commands = 0  # the limit counts errors in a row
        if not self._closed:
            self._touch()
            # A command that completed without waiting finished inside _start, called from
            # _process's loop, which goes on by itself: calling _process here would nest one
            # more level per pipelined command (20,000 pipelined NOOPs overflowed the stack).
            if not self._starting:
                self._process()

    def _count_bad(self) -> bool:
        """Count an erroneous command; True when it is one too many and the session must
        end (the caller sends the protocol's goodbye and closes)."""
        self._erred = True
        self._bad_commands += 1
        return self._bad_commands >= self.config.max_bad_commands

    def _touch(self) -> None:
        """(Re)start the idle timer."""
        if self._ended:
            return
        timeout = self._idle_timeout()
        if self._timer is not None and self._timer.active():
            self._timer.reset(timeout)
        else:
            self._timer = self.ctx.reactor.callLater(timeout, self._timed_out)

    def _update_read_pause(self) -> None:
        # Only backed-up input pauses reading. Pausing as soon as output backs up would
        # deadlock TLS: the TLS layer pauses us during its handshake, and the handshake
        # needs reading. While output is paused nothing is processed, so input queues up
        # and reading stops all the same.
        if self._closed:
            return
        want = self._input_backlog()
        if want != self._read_paused:
            self._read_paused = want
            if want:
                self.transport.pauseProducing()
            else:
                self.transport.resumeProducing()

    # -- server shutdown (maild/shutdown.py) ------------------------------------------------

    _stopping = False  # the server is stopping: input is no longer read

    def _drop_pipelined(self) -> None:
        """Forget input no command has started on (the server is stopping); a line a command
        waits for (a SASL response, IDLE's DONE) may still come."""

    def _goodbye(self) -> None:
        """Tell the client the server is going away, in the protocol's words, and close."""
        raise NotImplementedError

    def shutdown(self) -> bool:
        """The server is stopping: read nothing more and start nothing pipelined; a command
        in progress finishes and is answered. True once the session has said goodbye and is
        closing; the daemon calls again until then. Waiting for the client (a SASL response,
        IDLE's DONE) is not a command in progress."""
        if self._closed:
            return True
        self._stopping = True
        self._drop_pipelined()
        if self._busy and getattr(self, "_line_waiter", None) is None:
            return False
        self._goodbye()
        return True

    # -- authentication ----------------------------------------------------------------------

    def _plaintext_auth_allowed(self) -> bool:
        """Passwords only over TLS, or from loopback where the section allows it
        (``allow_plaintext_auth_on_loopback``): RFC 3207 §4, RFC 3501 §6.2.3, RFC 2595 §4."""
        return self.tls or (self.config.allow_plaintext_auth_on_loopback and is_loopback(self.client_ip))

    async def _sasl_exchange(self, exchange: Any, initial: bytes | None) -> Any:
        """Drive one SASL exchange (a :class:`maild.auth.sasl.Exchange`) to its
        Credentials; raises :class:`maild.auth.sasl.SaslError`."""
        step = exchange.step(initial)
        while isinstance(step, bytes):
            self._send_challenge(base64.b64encode(step))
            line, problem = await self._read_response()
            if problem is not None:
                exchange.reject(problem)
            step = exchange.step(line)
        return step

    async def _check_password(self, username: str, password: str, mechanism: str) -> Any:
        """The user, or None; the authenticator applies the penalty and logs failures."""
        return await self.ctx.auth.authenticate(
            username, password, self.client_ip, protocol=self.factory.protocol_name,
            mechanism=mechanism, alive=lambda: not self._closed)


class LineSession(CommandSession):
    """SMTP's and POP3's input: CRLF lines, one command each; a SASL response is the next
    line. ``_payload`` lets SMTP take DATA and BDAT octets from the same buffer."""

    max_buffered = 64 * 1024  # pipelined input held while a command runs; beyond it, stop reading
    _in_process = False

    def __init__(self, factory: Any = None) -> None:
        super().__init__(factory)
        self._buf = bytearray()
        self._discarding_line = False
        self._line_waiter: defer.Deferred[tuple[bytes, str | None]] | None = None

    def _line_limit(self) -> int:
        raise NotImplementedError

    def _command(self, line: bytes, problem: str | None) -> Coroutine[Any, Any, None]:
        raise NotImplementedError

    def _payload(self) -> bool | None:
        """Consume non-command input; None: the session reads commands. True: go on, False: wait."""
        return None

    def dataReceived(self, data: bytes) -> None:
        if self._closed or self._stopping:
            return
        self._buf += data
        self._process()

    def _process(self) -> None:
        if self._in_process:
            return
        self._in_process = True
        try:
            while not self._closed and not self._output_paused:
                consumed = self._payload()
                if consumed is not None:
                    if consumed:
                        continue
                    break
                if self._busy and self._line_waiter is None:
                    break
                line = self._take_line()
                if line is None:
                    break
                self._touch()  # only whole lines count: a byte-a-second client times out
                waiter, self._line_waiter = self._line_waiter, None
                if waiter is not None:
                    waiter.callback(line)
                else:
                    self._start(self._command(*line))
        finally:
            self._in_process = False
        self._update_read_pause()

    def _input_backlog(self) -> bool:
        return len(self._buf) > self.max_buffered

    def _drop_pipelined(self) -> None:
        self._buf.clear()

    def _discard_input(self) -> None:
        self._buf.clear()
        waiter, self._line_waiter = self._line_waiter, None
        if waiter is not None and not waiter.called:
            waiter.cancel()

    def _take_line(self) -> tuple[bytes, str | None] | None:
        """Next line as (line without CRLF, problem or None)."""
        limit = self._line_limit()
        end = self._buf.find(b"\n")
        if end < 0:
            if len(self._buf) > limit:
                self._discarding_line = True  # answer once the line ends
                self._buf.clear()
            return None
        line = bytes(self._buf[:end + 1])
        del self._buf[:end + 1]
        if self._discarding_line or len(line) > limit:
            self._discarding_line = False
            return b"", f"Line too long (at most {limit} octets)"
        if not line.endswith(b"\r\n"):
            return b"", "Lines must end with CRLF"  # RFC 5321 §2.3.8, RFC 1939 §3
        return line[:-2], None

    async def _read_line(self) -> tuple[bytes, str | None]:
        """The client's next line, read while the session is busy (a SASL response)."""
        waiter: defer.Deferred[tuple[bytes, str | None]] = defer.Deferred()
        self._line_waiter = waiter
        self._process()
        return await waiter

    async def _read_response(self) -> tuple[bytes, str | None]:
        return await self._read_line()
