"""Push: the user's changes as events, from the change log (maild/api/changes.py), over a
WebSocket (``GET /v1/events``, autobahn) or a long poll (``GET /v1/events?since=&wait=``).

Implementation notes — invariants a contributor must keep:

1. One source: every event comes from a committed change-log record, never from what a
   front end did, so changes made over IMAP, SMTP or the API all arrive, in commit order.
2. Positions are the seq of the user's shard's change log (a user's partition lives on
   one shard). Each event carries its position; a client that reconnects with the last
   position it saw (``?since=``) gets every event after it, then live ones: nothing
   missed, nothing twice. When the log no longer reaches back that far it gets one
   ``resync`` message (WebSocket) or a 410 "resync" problem (long poll) with the current
   position, and must re-read what it shows.
3. Only the user's own changes are sent.
4. Bounded: a WebSocket client that does not read gets at most ``MAX_QUEUED`` unsent
   bytes before it is closed (it reconnects with its position); a long poll waits at most
   ``[api] events_max_wait`` seconds; pings find dead peers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, cast

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import defer

from maild.api import views
from maild.api.changes import ChangeFeed, Trimmed
from maild.store.types import Change, ChangeKind, User

log = logging.getLogger(__name__)

MAX_QUEUED = 4 * 1024 * 1024  # bytes a slow WebSocket client may leave unread

_KINDS = {ChangeKind.APPEND: "message.new", ChangeKind.FLAGS: "message.flags",
          ChangeKind.EXPUNGE: "message.deleted", ChangeKind.MAILBOX_CREATE: "folder.created",
          ChangeKind.MAILBOX_RENAME: "folder.renamed", ChangeKind.MAILBOX_DELETE: "folder.deleted"}


class EventHub:
    """Turns change records into the user's events and hands them to waiting clients."""

    def __init__(self, store: Any, reactor: Any) -> None:
        self.store = store
        self.reactor = reactor
        self.feed = ChangeFeed(store)
        self._clients: dict[str, set[Callable[[list[dict[str, Any]]], None]]] = {}
        self.feed.listen(self._on_change)

    def head(self, user: User) -> int:
        return self.feed.head(user.shard)

    def event(self, user: User, change: Change) -> dict[str, Any] | None:
        """The JSON event of one of the user's changes (None: a kind clients are not told of)."""
        kind = _KINDS.get(change.kind)
        if kind is None:
            return {"type": "changed", "position": change.seq}  # positions stay contiguous
        event: dict[str, Any] = {"type": kind, "position": change.seq,
                                 "folder_id": f"f{user.id}.{change.mailbox_id}"}
        if kind.startswith("folder."):
            event["name"] = change.name
            return event
        mailbox = self.store.mailbox_by_id(user.address, change.mailbox_id)
        if mailbox is None:  # gone since: the folder.deleted event follows
            event["ids"] = []
            return event
        event["ids"] = [views.message_id(user.id, mailbox, uid) for uid in change.uids]
        if change.kind is ChangeKind.FLAGS:
            event["flags"] = [{"id": views.message_id(user.id, mailbox, uid),
                               **{name: flag in flags for flag, name in views.SYSTEM_FLAGS.items()},
                               "keywords": sorted(f for f in flags if not f.startswith("\\"))}
                              for uid, flags in zip(change.uids, change.flags, strict=False)]
        return event

    def since(self, user: User, position: int) -> list[dict[str, Any]]:
        """The user's events after ``position``; Trimmed when they are not all held."""
        events = (self.event(user, c) for c in self.feed.read(user.shard, position) if c.user == user.address)
        return [e for e in events if e is not None]

    def attach(self, user: User, callback: Callable[[list[dict[str, Any]]], None]) -> Callable[[], None]:
        """``callback(events)`` for each of the user's commits from now on."""
        self._clients.setdefault(user.address, set()).add(callback)

        def detach() -> None:
            clients = self._clients.get(user.address)
            if clients is not None:
                clients.discard(callback)
                if not clients:
                    del self._clients[user.address]
        return detach

    def _on_change(self, change: Change) -> None:
        clients = self._clients.get(change.user)
        if not clients:
            return
        user = self.store.user(change.user)
        if user is None:
            return
        event = self.event(user, change)
        if event is None:
            return
        for callback in list(clients):
            try:
                callback([event])
            except Exception:
                log.exception("api: event client failed")

    async def wait(self, user: User, position: int, timeout: float) -> tuple[list[dict[str, Any]], int]:
        """Long poll: the user's events after ``position``, waiting up to ``timeout`` seconds
        for one; and the position to poll from next."""
        events = self.since(user, position)
        if events or timeout <= 0:
            return events, max([position, *(e["position"] for e in events)])
        woken: defer.Deferred[None] = defer.Deferred()

        def wake(_: list[dict[str, Any]]) -> None:
            if not woken.called:
                woken.callback(None)
        detach = self.attach(user, wake)
        timer = self.reactor.callLater(timeout, wake, [])
        try:
            await woken
        finally:
            detach()
            if timer.active():
                timer.cancel()
        events = self.since(user, position)
        return events, max([position, *(e["position"] for e in events)])


class EventsProtocol(WebSocketServerProtocol):
    """One WebSocket client: the missed events after ``since`` (or a resync), a ``ready``
    message with the position, then every new event as it commits."""

    user: User
    since: int | None
    hub: EventHub
    sent = 0
    _detach: Callable[[], None] | None = None

    def onOpen(self) -> None:
        position = self.hub.head(self.user)
        self.sent = 0  # the highest position sent: nothing twice
        if self.since is not None:
            self.sent = self.since
            try:
                self._push(self.hub.since(self.user, self.since))
                position = max(self.since, position)
            except Trimmed:
                self.sent = position
                self._push([{"type": "resync", "position": position}])
        self._detach = self.hub.attach(self.user, self._push)
        self.factory.live.add(self)
        self._push([{"type": "ready", "position": max(position, self.sent)}])

    def _push(self, events: list[dict[str, Any]]) -> None:
        transport = self.transport
        if transport is None:
            return
        events = [e for e in events if e["type"] in ("ready", "resync") or e["position"] > self.sent]
        if events:
            self.sent = max(self.sent, *(e["position"] for e in events))
        buffered = len(getattr(transport, "dataBuffer", b"")) + getattr(transport, "_tempDataLen", 0)
        if buffered > MAX_QUEUED:
            self.close_with(1008, "too slow: reconnect with your last position")
            return
        for event in events:
            self.sendMessage(json.dumps(event).encode(), isBinary=False)

    def close_with(self, code: int, reason: str) -> None:
        """A close frame with a protocol code (RFC 6455 §7.4.1: 1001 going away, 1008
        policy violation), which autobahn's sendClose keeps for applications' 1000 and
        3000-4999; its close handshake and timeout are the same."""
        self.sendCloseFrame(code, reason.encode(), isReply=False)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        """Clients have nothing to say; pings are the protocol's."""

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.live.discard(self)
        if self._detach is not None:
            self._detach()
            self._detach = None


class EventsFactory(WebSocketServerFactory):
    """Builds the protocol for the request being upgraded (``pending``, set just before)."""

    protocol = EventsProtocol

    def __init__(self, hub: EventHub) -> None:
        super().__init__()
        self.hub = hub
        self.pending: tuple[User, int | None] | None = None
        self.live: set[EventsProtocol] = set()
        self.setProtocolOptions(autoPingInterval=30, autoPingTimeout=15, maxMessagePayloadSize=4096,
                                maxFramePayloadSize=4096, openHandshakeTimeout=15)

    def close_all(self, reactor: Any, grace: float = 2.0) -> defer.Deferred[None] | None:
        """Shutdown: every client is told (1001 going away, RFC 6455 §7.4.1) and reconnects
        with its position to this node again or another. Fires when they have closed, or
        after ``grace`` seconds (the reactor must run for the close frames to go out)."""
        if not self.live:
            return None
        for proto in list(self.live):
            proto.close_with(1001, "server shutting down")
        done: defer.Deferred[None] = defer.Deferred()
        started = reactor.seconds()

        def check() -> None:
            if not self.live or reactor.seconds() - started >= grace:
                done.callback(None)
            else:
                reactor.callLater(0.05, check)
        check()
        return done

    def buildProtocol(self, addr: Any) -> EventsProtocol:
        assert self.pending is not None
        proto = cast(EventsProtocol, super().buildProtocol(addr))
        proto.user, proto.since = self.pending
        proto.hub = self.hub
        return proto
