"""Webhooks: a user's events POSTed to the URLs they registered (``/v1/webhooks``).

Implementation notes — invariants a contributor must keep:

1. The events are those of ``GET /v1/events`` (maild/api/events.py: one source, the change
   log), JSON, one per request, in position order per webhook; each request carries
   ``X-Maild-Signature: sha256=<hex HMAC-SHA256 of the body with the webhook's secret>``
   and ``X-Maild-Position``, so a receiver can check the sender and drop repeats.
2. Retries: an answer other than 2xx, or none within ``[api] webhook_timeout``, is tried
   again after 1, 2, 4 ... seconds (at most 5 minutes apart), ``MAX_ATTEMPTS`` times in
   all, then the event is dropped and logged. One request in flight per webhook; at most
   ``MAX_PENDING`` events wait per webhook (the oldest go first, logged). Kept in memory:
   events that are waiting when the daemon stops are not sent (the receiver can catch up
   with ``GET /v1/events?since=`` its last ``X-Maild-Position``).
3. No requests into the server's own networks: the host is resolved first and a
   loopback, private, link-local, multicast or reserved address is refused (SSRF), and the
   connection goes to the address that was checked, unless ``[api]
   webhook_allow_private``. Names are resolved (IPv4) through ``[dns] nameservers`` like
   every lookup of maild. Responses are not read beyond their status.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import io
import ipaddress
import json
import logging
from typing import Any
from urllib.parse import urlsplit

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import optionsForClientTLS
from twisted.internet.task import deferLater
from twisted.web.client import Agent, FileBodyProducer
from twisted.web.http_headers import Headers

from maild.api.events import EventHub
from maild.dns.resolver import Resolver
from maild.store.types import Change

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
MAX_PENDING = 1000
EVENT_TYPES = ("message.new", "message.flags", "message.deleted", "folder.created", "folder.renamed",
               "folder.deleted")


def blocked_address(ip: str) -> bool:
    """An address a webhook may not reach: the server's own and private networks."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return True
    return bool(addr.is_loopback or addr.is_private or addr.is_link_local or addr.is_multicast
                or addr.is_reserved or addr.is_unspecified)


def url_problem(url: Any, allow_private: bool) -> str | None:
    """Why ``url`` cannot be a webhook, or None."""
    if not isinstance(url, str) or len(url) > 2000 or any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        return "url: an http or https URL"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        return "url: an http or https URL with a host and no user name"
    try:
        if parts.port == 0:
            return "url: a bad port"
    except ValueError:
        return "url: a bad port"
    try:
        literal = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return None
    if not allow_private and blocked_address(str(literal)):
        return "url: a loopback, private or reserved address"
    return None


class _Discard(Protocol):
    """Reads a response body away without keeping it."""

    def __init__(self, done: defer.Deferred[None]) -> None:
        self.done = done

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Any = None) -> None:
        if not self.done.called:
            self.done.callback(None)


class _Endpoint:
    """The one endpoint a request may use: the address that was checked."""

    def __init__(self, endpoint: Any) -> None:
        self.endpoint = endpoint

    def endpointForURI(self, uri: Any) -> Any:
        return self.endpoint


class Webhooks:
    def __init__(self, store: Any, reactor: Any, hub: EventHub, config: Any, resolver: Resolver) -> None:
        self.store = store
        self.resolver = resolver
        self.reactor = reactor
        self.hub = hub
        self.config = config
        self.by_user: dict[str, list[dict[str, Any]]] = {}
        self._pending: dict[str, collections.deque[dict[str, Any]]] = {}
        self._busy: set[str] = set()
        self.reload()
        hub.feed.listen(self._on_change)

    def reload(self) -> None:
        """Re-read the webhooks (after the API changed them)."""
        by_user: dict[str, list[dict[str, Any]]] = {}
        for hook in self.store.webhooks():
            by_user.setdefault(hook["user"], []).append(hook)
        self.by_user = by_user

    def _on_change(self, change: Change) -> None:
        hooks = self.by_user.get(change.user)
        if not hooks:
            return
        user = self.store.user(change.user)
        event = None if user is None else self.hub.event(user, change)
        if event is None:
            return
        for hook in hooks:
            if event["type"] not in hook["events"]:
                continue
            queue = self._pending.setdefault(hook["id"], collections.deque())
            if len(queue) >= MAX_PENDING:
                dropped = queue.popleft()
                log.warning("webhook %s of %s: %d events waiting, dropped position %d", hook["id"],
                            hook["user"], MAX_PENDING, dropped["position"])
            queue.append(event)
            if hook["id"] not in self._busy:
                self._busy.add(hook["id"])
                defer.Deferred.fromCoroutine(self._drain(hook)).addErrback(
                    lambda f: log.error("webhook: %s", f.getTraceback()))

    async def _drain(self, hook: dict[str, Any]) -> None:
        queue = self._pending[hook["id"]]
        try:
            while queue:
                event = queue[0]
                for attempt in range(MAX_ATTEMPTS):
                    if await self._post(hook, event):
                        break
                    if attempt + 1 < MAX_ATTEMPTS:
                        await deferLater(self.reactor, min(2.0 ** attempt, 300.0), lambda: None)
                else:
                    log.warning("webhook %s of %s: gave up on position %d after %d attempts", hook["id"],
                                hook["user"], event["position"], MAX_ATTEMPTS)
                if queue and queue[0] is event:
                    queue.popleft()
        finally:
            self._busy.discard(hook["id"])
            if not queue:
                self._pending.pop(hook["id"], None)

    async def _post(self, hook: dict[str, Any], event: dict[str, Any]) -> bool:
        """One attempt; True when the receiver answered 2xx (or the URL can never work)."""
        body = json.dumps(event).encode()
        signature = hmac.new(hook["secret"].encode(), body, hashlib.sha256).hexdigest()
        parts = urlsplit(hook["url"])
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        timeout = self.config.webhook_timeout
        try:
            ipaddress.IPv4Address(host)
            address = host
        except ValueError:
            try:  # through [dns] nameservers, as every lookup of maild
                found = await self.resolver.a(host)
            except Exception:
                found = []
            if not found:
                log.warning("webhook %s: no address for %s", hook["id"], host)
                return False
            address = found[0]
        if blocked_address(address) and not self.config.webhook_allow_private:
            log.warning("webhook %s: %s is %s, a private or reserved address: not sent", hook["id"], host, address)
            return True
        endpoint: Any = TCP4ClientEndpoint(self.reactor, address, port, timeout=timeout)
        if parts.scheme == "https":
            endpoint = wrapClientTLS(optionsForClientTLS(host), endpoint)
        agent = Agent.usingEndpointFactory(self.reactor, _Endpoint(endpoint))
        headers = Headers({"Content-Type": ["application/json"], "User-Agent": ["maild-webhook"],
                           "X-Maild-Signature": [f"sha256={signature}"],
                           "X-Maild-Position": [str(event["position"])]})
        request = agent.request(b"POST", hook["url"].encode(), headers, FileBodyProducer(_bytes_io(body)))
        request.addTimeout(timeout, self.reactor)
        try:
            response = await request
            done: defer.Deferred[None] = defer.Deferred()
            response.deliverBody(_Discard(done))
            await done.addTimeout(timeout, self.reactor)
        except Exception as exc:
            log.info("webhook %s: %s: %s", hook["id"], host, exc.__class__.__name__)
            return False
        return 200 <= int(response.code) < 300


def _bytes_io(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)
