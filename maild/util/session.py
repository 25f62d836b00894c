"""What the SMTP, POP3 and IMAP sessions share: one command at a time, an idle timer that
whole commands restart, and reading paused while too much input waits.

A protocol's session subclasses :class:`CommandSession` and supplies the five hooks at
the top; the protocol's own notes (its server module's docstring) say when each applies.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from maild.util.transport import ConnectionTransport


class CommandSession(Protocol):
    transport: ConnectionTransport
    ctx: Any  # the daemon context: its reactor runs the idle timer
    _busy = False  # a command is running: input waits in the buffer
    _closed = False
    _read_paused = False  # the transport is paused because input backed up
    _timer: Any = None

    # -- the protocol's part ---------------------------------------------------------------

    def _idle_timeout(self) -> float:
        """Seconds of silence the session allows in its present state."""
        raise NotImplementedError

    def _timed_out(self) -> None:
        raise NotImplementedError

    def _input_backlog(self) -> bool:
        """Too much input waits: stop reading from the transport until it drains."""
        raise NotImplementedError

    def _process(self) -> None:
        """Run what the buffered input holds, as far as the session's state allows."""
        raise NotImplementedError

    def _internal_error(self, failure: Failure) -> None:
        """A command raised: log it, answer without the exception's text."""
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------

    def makeConnection(self, transport: Any) -> None:  # Twisted's name
        # Answers go out whole, at once. With Nagle's algorithm the last small segment of a
        # multi-segment answer waits for the client to ACK the previous one, and clients
        # delay ACKs (40 ms on Linux): a 70 KB FETCH took 47 ms instead of 5.
        no_delay = getattr(transport, "setTcpNoDelay", None)
        if no_delay is not None:
            no_delay(True)
        super().makeConnection(transport)

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        """Run one command; the session is busy until it ends, then reads on."""
        self._busy = True
        d = defer.Deferred.fromCoroutine(work)
        d.addErrback(self._internal_error)
        d.addBoth(self._finished)

    def _finished(self, _: object) -> None:
        self._busy = False
        if not self._closed:
            self._touch()
            self._process()

    def _touch(self) -> None:
        """(Re)start the idle timer."""
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

    def _discard_input(self) -> None:
        """Drop what the client sent that no command has started on."""
        raise NotImplementedError

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
        self._discard_input()
        if self._busy and getattr(self, "_line_waiter", None) is None:
            return False
        self._goodbye()
        return True
