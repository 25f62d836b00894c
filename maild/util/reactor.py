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
- Everything else is Twisted's: timers, threads, signals, the waker, writability.
- :func:`install` must run before anything imports ``twisted.internet.reactor`` (the
  ``serve`` command does it first); a process that already has a reactor keeps it (tests
  run the daemon's parts under their own).
"""

from __future__ import annotations

import errno
import logging
import sys

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


def install() -> bool:
    """Make :class:`Reactor` the process's reactor, unless one is installed already; True
    when this call installed it."""
    if "twisted.internet.reactor" in sys.modules:
        return False
    from twisted.internet.main import installReactor

    installReactor(Reactor())
    return True
