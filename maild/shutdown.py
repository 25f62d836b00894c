"""The daemon's stop sequence (SIGTERM, SIGINT): answer what was stored, then close.

1. Stop listening: no new connections.
2. Ask every session to shut down (their ``shutdown()``): no new input is read or started;
   a session with a command in progress lets it finish (a store commit completes and its
   250 / OK goes out) and closes after it with its protocol's goodbye (SMTP 421, IMAP
   ``* BYE``, POP3 a plain close). The sessions are asked again every POLL seconds.
3. After ``[server] shutdown_grace`` seconds, connections still open are aborted.
4. Then the reactor stops; the store closes after it, finishing every write still queued.

A message is thus answered whenever its commit finishes within the grace period, and
clients never see their connection dropped under a stored-but-unanswered message except
when the grace runs out (logged).
"""

from __future__ import annotations

import logging
from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol

log = logging.getLogger("maild")

POLL = 0.02
LINGER = 1.0  # seconds a session that said goodbye gets to finish closing its connection


class Sessions:
    """The live sessions of the listeners it tracks, and how to stop them."""

    def __init__(self, reactor: Any, grace: float) -> None:
        self.reactor = reactor
        self.grace = grace
        self.live: set[Protocol] = set()
        self.ports: list[Any] = []

    def track(self, factory: Factory) -> Factory:
        """Remember each protocol ``factory`` builds until its connection is lost."""
        build = factory.buildProtocol

        def build_tracked(addr: Any) -> Protocol | None:
            proto = build(addr)
            if proto is not None:
                self.live.add(proto)
                lost = proto.connectionLost

                def connection_lost(reason: Any = None) -> None:
                    self.live.discard(proto)
                    lost(reason)
                proto.connectionLost = connection_lost  # type: ignore[method-assign]
            return proto
        factory.buildProtocol = build_tracked  # type: ignore[method-assign]
        return factory

    def stop(self) -> defer.Deferred[None]:
        log.info("maild stopping: listeners closed; %d session(s) finish their commands "
                 "(up to %.0f s)", len(self.live), self.grace)
        for port in self.ports:
            port.stopListening()
        deadline = self.reactor.seconds() + self.grace
        closing: dict[Protocol, float] = {}  # sessions that said goodbye, since when
        done: defer.Deferred[None] = defer.Deferred()

        def poll() -> None:
            now = self.reactor.seconds()
            for session in list(self.live):
                shutdown = getattr(session, "shutdown", None)
                if session not in closing and (shutdown is None or shutdown()):
                    closing[session] = now
                elif session in closing and now - closing[session] >= LINGER:
                    # Answered and closing, but the TLS close waits on the peer's
                    # close_notify: its answers left long ago, do not wait for it.
                    _abort(session)
            if not self.live:
                done.callback(None)
                return
            if now >= deadline:
                busy = [s for s in self.live if s not in closing]
                if busy:
                    log.warning("maild stopping: %d session(s) still busy after %.0f s: aborted",
                                len(busy), self.grace)
                for session in list(self.live):
                    _abort(session)
                done.callback(None)
                return
            self.reactor.callLater(POLL, poll)
        poll()
        return done


def _abort(session: Protocol) -> None:
    if session.transport is not None:
        session.transport.abortConnection()
