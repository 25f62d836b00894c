"""The reactor the daemon runs: Twisted's epoll reactor with a lighter dispatch of events.

Implementation notes:

- Twisted's ``EPollReactor.doPoll`` hands each ready descriptor to its ``doRead``/``doWrite``
  through ``twisted.python.log.callWithLogger``: a ``logPrefix()`` call, a copy of the legacy
  log context pushed and popped around the call, and an exception net. maild logs through
  the standard library, never through that context, so the copy bought nothing and cost
  about 3 us on the path of every command (between a client's command arriving and its
  answer leaving). :class:`Reactor` calls ``_doReadOrWrite`` directly.
- Invariant: an exception ``_doReadOrWrite`` lets out (it already catches what a protocol
  raises and drops that connection) is logged, with the descriptor, as Twisted's net would
  log it; the loop goes on with the other descriptors.
- A stop signal stops once: SIGINT, SIGTERM or SIGBREAK while the reactor is stopping
  already (a terminal's Ctrl-C reaches every worker and the supervisor forwards it as
  SIGTERM too) is logged and changes nothing. Twisted's handlers would call ``stop`` again,
  which raises ``ReactorNotRunning`` and logged a CRITICAL traceback on every Ctrl-C of
  ``make run``.
- Everything else is Twisted's: timers, threads, signals, the waker, writability.
- :func:`install` must run before anything imports ``twisted.internet.reactor`` (the
  ``serve`` command does it first); a process that already has a reactor keeps it (tests
  run the daemon's parts under their own).
"""

from __future__ import annotations

import errno
import logging
import sys
from types import FrameType

from twisted.internet import epollreactor

log = logging.getLogger("maild.reactor")


class Reactor(epollreactor.EPollReactor):
    """``EPollReactor`` with the per-event log context left out (module notes)."""

    def doPoll(self, timeout: float | None) -> None:
        try:
            # As Twisted: at most as many events as descriptors, for at most ``timeout``.
            events = self._poller.poll(-1 if timeout is None else timeout, len(self._selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        selectables = self._selectables
        dispatch = self._doReadOrWrite
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue  # removed by an earlier event of this same poll
            try:
                dispatch(selectable, fd, event)
            except Exception:
                log.exception("reactor: handling events %#x of descriptor %d (%r) failed", event, fd, selectable)

    doIteration = doPoll

    def sigInt(self, number: int, frame: FrameType | None = None) -> None:
        self._stop_signal("SIGINT", number)

    def sigTerm(self, number: int, frame: FrameType | None = None) -> None:
        self._stop_signal("SIGTERM", number)

    def sigBreak(self, number: int, frame: FrameType | None = None) -> None:
        self._stop_signal("SIGBREAK", number)

    def _stop_signal(self, name: str, number: int) -> None:
        """In the signal handler: stop on the reactor thread, once (module notes)."""
        log.info("received %s, shutting down", name)
        self.callFromThread(self._stop_once, name)
        self._exitSignal = number

    def _stop_once(self, name: str) -> None:
        if self._stopped:
            log.info("%s while stopping already: nothing more to do", name)
            return
        self.stop()


def install() -> bool:
    """Make :class:`Reactor` the process's reactor, unless one is installed already; True
    when this call installed it."""
    if "twisted.internet.reactor" in sys.modules:
        return False
    from twisted.internet.main import installReactor

    installReactor(Reactor())
    return True
