"""The HTTP JSON API (docs/api.md) on twisted.web: routing, authentication, limits, and
the /v1 endpoints.

Implementation notes — invariants a contributor must keep:

1. Every answer is JSON (or the raw message / an attachment's bytes); every error is an
   RFC 9457 ``application/problem+json`` document from :mod:`maild.api.problems`, with a
   stable ``type``. Unexpected exceptions are logged and answered 500 "internal" without
   their text.
2. Authentication: ``Authorization: Bearer <token>`` on every endpoint but
   ``POST /v1/tokens`` (HTTP Basic with the password, RFC 7617, only over TLS or from
   loopback) and ``GET /v1/openapi.json``. Both go through :class:`maild.auth.Authenticator`,
   so failures share the login back-off of IMAP, POP3 and SMTP AUTH.
3. Isolation: the user comes from the credentials only; every id is resolved inside that
   user's partition (:mod:`maild.api.views`), so no request reads or changes another
   user's data. Ids are matched against their pattern before use.
4. Bounded: request bodies are limited while they arrive (``max_body_size``, or
   ``max_send_size`` for ``POST /v1/messages``) and refused 413 as soon as they exceed it;
   listings are paged (``page_size_max``); idle connections time out
   (``request_timeout``); token buckets per token and per IP answer 429 with Retry-After.
5. Durability: a write is answered (201, 200, 204, 202 for a send) only after the store's
   Deferred has fired, i.e. after its commit.
6. Sending goes through the submission path itself (``maild.smtp.submit.submit``, handed
   in by the wiring as :attr:`Hooks.submit`): ownership of From, DKIM signing, the outbound
   queue, the copy in Sent. Search and threads are IMAP SEARCH's and THREAD's code
   (:attr:`Hooks.search`, :attr:`Hooks.threads`).
7. Reads that may touch many messages or whole bodies (search, threads, a message's
   body) run in the reactor's thread pool; the reactor never waits on them.
8. Events and webhooks come from the change log only (maild/api/events.py,
   maild/api/webhooks.py); the endpoints never announce their own writes.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import datetime
import email.parser
import email.policy
import json
import logging
import math
import re
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

from autobahn.twisted.resource import WebSocketResource
from twisted.internet import defer, threads
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from maild.api import views
from maild.api.changes import Trimmed
from maild.api.events import EventHub, EventsFactory
from maild.api.problems import Problem
from maild.api.webhooks import EVENT_TYPES as WEBHOOK_EVENTS
from maild.api.webhooks import Webhooks, url_problem
from maild.dns.resolver import Resolver
from maild.store.types import (
    FlagMode,
    Mailbox,
    MailboxExists,
    NotFound,
    QuotaExceeded,
    ReadOnlyStore,
    ReplicaTimeout,
    StoreError,
    StoreFull,
    User,
)
from maild.util.limits import ConnectionCounter, TokenBuckets
from maild.util.session import is_loopback
from maild.util.transaction import Reply, Transaction

if TYPE_CHECKING:
    from maild.context import ServerContext

log = logging.getLogger(__name__)

JSON = "application/json"
PROBLEM_JSON = "application/problem+json"
SEND_PATH = b"/v1/messages"


@dataclass(frozen=True)
class Hooks:
    """What the API uses of the other front ends, handed in by the wiring (front ends do
    not import each other): IMAP SEARCH's text search, IMAP THREAD's threading, and the
    submission path of the SMTP server."""

    search: Callable[[Any, str, int, dict[str, str]], list[int]]
    threads: Callable[[Any, str, Mailbox], list[Any]]
    submit: Callable[[Any, Transaction, User, list[str], bytes], Awaitable[Reply]]


# -- the request: body limits while it arrives -------------------------------------------------

class ApiRequest(Request):
    """A Request that refuses a body over its limit as soon as the limit is passed (413,
    connection closed) instead of reading it to the end."""

    body_limit = 0
    received = 0

    def gotLength(self, length: int | None) -> None:
        api: ApiSite = self.channel.site  # type: ignore[attr-defined]
        command = getattr(self.channel, "_command", b"")
        path = getattr(self.channel, "_path", b"").split(b"?", 1)[0]
        # A send carries its attachments as they are (multipart) or in base64 (JSON): 4/3 of
        # the message's limit, plus room for the rest of the request.
        self.body_limit = (api.config.max_send_size * 4 // 3 + 1024 * 1024
                           if command == b"POST" and path == SEND_PATH else api.config.max_body_size)
        if length is not None and length > self.body_limit:
            self._refuse_too_large()
            length = 0
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        self.received += len(data)
        if self.received > self.body_limit:
            self._refuse_too_large()
            return
        super().handleContentChunk(data)

    def _refuse_too_large(self) -> None:
        transport = self.channel.transport
        if transport is None or getattr(self, "_refused", False):
            return
        self._refused = True
        body = Problem("too-large", f"at most {self.body_limit} bytes").body()
        transport.write(b"HTTP/1.1 413 Content Too Large\r\nContent-Type: " + PROBLEM_JSON.encode()
                        + b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        transport.loseConnection()


class ApiSite(Site):
    requestFactory = ApiRequest

    def __init__(self, root: Resource, config: Any, timeout: float) -> None:
        # The body is parsed once, by the endpoint (twisted.web would also parse a 25 MB
        # multipart upload into request.args: a second copy).
        super().__init__(root, timeout=timeout, parsePOSTFormSubmission=False)
        self.config = config
        self.connections = ConnectionCounter(config.max_connections, config.max_connections_per_ip)

    def close(self) -> Any:
        """Shutdown: WebSocket clients are sent a close frame and given a moment to answer
        it (the listeners are closed by the daemon; requests in progress end with the
        reactor)."""
        root: Any = self.resource
        return root.websockets.close_all(root.ctx.reactor)

    def buildProtocol(self, addr: Any) -> Any:
        """Counted connections (``max_connections``, ``max_connections_per_ip``): past a
        limit the connection is closed at accept, before any TLS or HTTP work."""
        slot = self.connections.acquire(getattr(addr, "host", ""))
        if slot is None:
            return None
        channel = super().buildProtocol(addr)
        lost = channel.connectionLost

        def connection_lost(reason: Any = None) -> None:
            slot.release()
            lost(reason)
        channel.connectionLost = connection_lost
        return channel

    def log(self, request: Any) -> None:
        """No access log: the JSON API's traffic would drown the mail log."""


# -- routing ---------------------------------------------------------------------------------

Handler = Callable[["Call"], Awaitable[tuple[int, Any]]]


@dataclass
class Call:
    """One request being answered: who, what, and its path parameters."""

    request: Request
    user: User | None
    params: dict[str, str]
    token: dict[str, Any] | None = None

    @property
    def address(self) -> str:
        assert self.user is not None
        return self.user.address

    @property
    def owner(self) -> int:
        """The user's id, the first part of every folder and message id."""
        assert self.user is not None
        return self.user.id

    def query(self, name: str) -> str | None:
        values = self.request.args.get(name.encode())
        if not values:
            return None
        try:
            return str(values[-1].decode("utf-8"))
        except UnicodeDecodeError:
            raise Problem("bad-request", f"query parameter {name}: not UTF-8") from None

    def content_type(self) -> str:
        value = self.request.getHeader("content-type") or ""
        return value.split(";", 1)[0].strip().lower()

    def body(self) -> bytes:
        content = self.request.content
        assert content is not None
        content.seek(0)
        return bytes(content.read())

    def json(self) -> dict[str, Any]:
        if self.content_type() != JSON:
            raise Problem("unsupported-media-type", "expected application/json")
        try:
            value = json.loads(self.body())
        except (ValueError, UnicodeDecodeError):
            raise Problem("bad-json") from None
        if not isinstance(value, dict):
            raise Problem("bad-json", "expected a JSON object")
        return value


class ApiResource(Resource):
    isLeaf = True

    def __init__(self, ctx: ServerContext, hooks: Hooks) -> None:
        super().__init__()
        self.ctx = ctx
        self.store = ctx.store
        self.config = ctx.config.api
        self.hooks = hooks
        clock = ctx.reactor.seconds
        self.per_token = TokenBuckets(self.config.requests_per_minute_per_token, clock)
        self.per_ip = TokenBuckets(self.config.requests_per_minute_per_ip, clock)
        self.routes: list[tuple[bytes, re.Pattern[str], Handler, str]] = []
        r = self._route
        r(b"GET", r"/v1/openapi\.json", self.openapi, auth="none")
        r(b"POST", r"/v1/tokens", self.token_create, auth="basic")
        r(b"GET", r"/v1/tokens", self.token_list)
        r(b"DELETE", r"/v1/tokens/(?P<token>[0-9a-f]{12})", self.token_delete)
        r(b"GET", r"/v1/folders", self.folder_list)
        r(b"POST", r"/v1/folders", self.folder_create)
        r(b"GET", r"/v1/folders/(?P<folder>[^/]+)", self.folder_get)
        r(b"PATCH", r"/v1/folders/(?P<folder>[^/]+)", self.folder_rename)
        r(b"DELETE", r"/v1/folders/(?P<folder>[^/]+)", self.folder_delete)
        r(b"GET", r"/v1/folders/(?P<folder>[^/]+)/messages", self.message_list)
        r(b"GET", r"/v1/folders/(?P<folder>[^/]+)/threads", self.thread_list)
        r(b"POST", r"/v1/messages", self.send)
        r(b"GET", r"/v1/messages/(?P<message>[^/]+)", self.message_get)
        r(b"GET", r"/v1/messages/(?P<message>[^/]+)/raw", self.message_raw)
        r(b"GET", r"/v1/messages/(?P<message>[^/]+)/attachments/(?P<part>[^/]+)", self.message_attachment)
        r(b"PATCH", r"/v1/messages/(?P<message>[^/]+)", self.message_update)
        r(b"DELETE", r"/v1/messages/(?P<message>[^/]+)", self.message_delete)
        r(b"GET", r"/v1/search", self.search)
        r(b"GET", r"/v1/queue/(?P<queue>[^/]+)", self.queue_status)
        r(b"GET", r"/v1/events", self.events, auth="bearer-or-query")
        r(b"GET", r"/v1/webhooks", self.webhook_list)
        r(b"POST", r"/v1/webhooks", self.webhook_create)
        r(b"DELETE", r"/v1/webhooks/(?P<webhook>[^/]+)", self.webhook_delete)
        self.hub = EventHub(ctx.store, ctx.reactor)
        self.webhooks = Webhooks(ctx.store, ctx.reactor, self.hub, self.config,
                                 Resolver(ctx.config.dns, ctx.reactor))
        self.websockets = EventsFactory(self.hub)
        self.upgrade = WebSocketResource(self.websockets)

    def _route(self, method: bytes, pattern: str, handler: Handler, auth: str = "bearer") -> None:
        self.routes.append((method, re.compile(pattern), handler, auth))

    # -- dispatch --------------------------------------------------------------------------

    def render(self, request: Request) -> Any:
        d = defer.Deferred.fromCoroutine(self._answer(request))
        d.addErrback(lambda f: log.error("api: %s", f.getTraceback()))
        return NOT_DONE_YET

    async def _answer(self, request: Request) -> None:
        gone: list[bool] = []
        request.notifyFinish().addBoth(lambda _: gone.append(True))
        try:
            status, body = await self._dispatch(request)
        except Problem as problem:
            status, body = problem.status, problem
        except Exception:
            log.exception("api: %s %s failed", request.method, request.path)
            status, body = 500, Problem("internal")
        if not gone and body is not UPGRADED:
            self._write(request, status, body)

    def _write(self, request: Request, status: int, body: Any) -> None:
        request.setResponseCode(status)
        request.setHeader("Cache-Control", "no-store")
        request.setHeader("X-Content-Type-Options", "nosniff")
        self._cors(request)
        if isinstance(body, Problem):
            if body.retry_after is not None:
                request.setHeader("Retry-After", str(body.retry_after))
            data = body.body()
            request.setHeader("Content-Type", PROBLEM_JSON)
        elif isinstance(body, Raw):
            data = body.data
            request.setHeader("Content-Type", body.content_type)
            for name, value in body.headers.items():
                request.setHeader(name, value)
        elif body is None:
            data = b""
        else:
            data = json.dumps(body, ensure_ascii=False).encode()
            request.setHeader("Content-Type", JSON)
        if data or status != 204:
            request.setHeader("Content-Length", str(len(data)))
            request.write(data)
        request.finish()

    def _cors(self, request: Request) -> None:
        origin = request.getHeader("origin")
        if origin and origin in self.config.cors_origins:
            request.setHeader("Access-Control-Allow-Origin", origin)
            request.setHeader("Access-Control-Allow-Credentials", "false")
            request.setHeader("Access-Control-Expose-Headers", "Retry-After, Location")
            request.setHeader("Vary", "Origin")

    async def _dispatch(self, request: Request) -> tuple[int, Any]:
        client_ip = request.getClientAddress().host
        if not self.per_ip.take(client_ip):
            raise Problem("rate-limited", "too many requests from this address",
                          retry_after=self._retry_after(self.config.requests_per_minute_per_ip))
        try:
            path = (request.path or b"").decode("ascii")
        except UnicodeDecodeError:
            raise Problem("not-found") from None
        method = request.method or b""
        if method == b"OPTIONS":  # CORS preflight (Fetch standard), answered without a token
            origin = request.getHeader("origin")
            if origin and origin in self.config.cors_origins:
                request.setHeader("Access-Control-Allow-Methods", "GET, POST, PATCH, DELETE")
                request.setHeader("Access-Control-Allow-Headers", "Authorization, Content-Type")
                request.setHeader("Access-Control-Max-Age", "600")
            return 204, None
        allowed = False
        for route_method, pattern, handler, auth in self.routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if route_method != method:
                allowed = True
                continue
            call = Call(request, None, match.groupdict())
            if auth.startswith("bearer"):
                await self._bearer(call, client_ip, query=auth == "bearer-or-query")
            elif auth == "basic":
                await self._basic(call, client_ip)
            return await handler(call)
        if allowed:
            raise Problem("method-not-allowed")
        raise Problem("not-found")

    @staticmethod
    def _retry_after(per_minute: int) -> int:
        return max(1, math.ceil(60 / max(per_minute, 1)))

    # -- authentication --------------------------------------------------------------------

    def _secure(self, request: Request, client_ip: str) -> bool:
        return bool(request.isSecure()) or is_loopback(client_ip)

    async def _bearer(self, call: Call, client_ip: str, query: bool = False) -> None:
        header = call.request.getHeader("authorization") or ""
        if not header and query and call.query("access_token"):
            # A browser's WebSocket cannot send Authorization: the token may come in the
            # query of /v1/events (there is no access log to leak it to).
            header = "Bearer " + (call.query("access_token") or "")
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            call.request.setHeader("WWW-Authenticate", 'Bearer realm="maild"')
            raise Problem("unauthorized", "send Authorization: Bearer <token>")
        found: list[dict[str, Any]] = []

        def lookup() -> User | None:
            record = self.store.token_user(secret.strip())
            if record is None:
                return None
            found.append(record)
            return self.store.user(record["user"])
        user = await self.ctx.auth.authenticate_token(lookup, client_ip, "api", "bearer")
        if user is None:
            call.request.setHeader("WWW-Authenticate", 'Bearer realm="maild", error="invalid_token"')
            raise Problem("bad-credentials", "token unknown, revoked or expired")
        if not self.per_token.take(found[0]["id"]):
            raise Problem("rate-limited", "too many requests with this token",
                          retry_after=self._retry_after(self.config.requests_per_minute_per_token))
        call.user, call.token = user, found[0]

    async def _basic(self, call: Call, client_ip: str) -> None:
        if not self._secure(call.request, client_ip):
            raise Problem("insecure-transport")
        header = call.request.getHeader("authorization") or ""
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            call.request.setHeader("WWW-Authenticate", 'Basic realm="maild", charset="UTF-8"')
            raise Problem("unauthorized", "send Authorization: Basic with the address and password")
        try:
            username, sep, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Problem("bad-request", "Authorization: not valid Basic credentials") from None
        if not sep or not username or len(username) > 320 or len(password) > 1024:
            raise Problem("bad-request", "Authorization: not valid Basic credentials")
        user = await self.ctx.auth.authenticate(username, password, client_ip, "api", "basic")
        if user is None:
            call.request.setHeader("WWW-Authenticate", 'Basic realm="maild", charset="UTF-8"')
            raise Problem("bad-credentials")
        call.user = user

    # -- helpers ---------------------------------------------------------------------------

    def _writable(self) -> None:
        if self.ctx.read_only:
            raise Problem("unavailable", "this server is a read-only replica", retry_after=30)

    def _folder(self, call: Call, value: str | None = None) -> Mailbox:
        match = views.FOLDER_ID.fullmatch(value if value is not None else call.params["folder"])
        mailbox = (self.store.mailbox_by_id(call.address, int(match.group(2)))
                   if match and int(match.group(1)) == call.owner else None)
        if mailbox is None:
            raise Problem("not-found", "no such folder")
        return mailbox

    def _message(self, call: Call) -> tuple[Mailbox, int]:
        match = views.MESSAGE_ID.fullmatch(call.params["message"])
        if match is None or int(match.group(1)) != call.owner:
            raise Problem("not-found", "no such message")
        mailbox = self.store.mailbox_by_id(call.address, int(match.group(2)))
        uid = int(match.group(4))
        if (mailbox is None or mailbox.uidvalidity != int(match.group(3))
                or self.store.message(call.address, mailbox.id, uid) is None):
            raise Problem("not-found", "no such message")
        return mailbox, uid

    async def _committed(self, d: defer.Deferred[Any]) -> Any:
        """The store's answer after commit; store failures as problems."""
        try:
            return await d
        except QuotaExceeded:
            raise Problem("over-quota") from None
        except (StoreFull, ReadOnlyStore, ReplicaTimeout):
            raise Problem("unavailable", retry_after=30) from None
        except MailboxExists:
            raise Problem("conflict", "a folder of that name exists") from None
        except NotFound:
            raise Problem("not-found") from None
        except StoreError:
            raise Problem("conflict", "the store refused the change") from None

    def _in_thread(self, work: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        reactor: Any = self.ctx.reactor
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), work, *args)

    def _limit(self, call: Call) -> int:
        text = call.query("limit")
        if text is None:
            return min(50, self.config.page_size_max)
        if not text.isdigit() or not 1 <= int(text) <= self.config.page_size_max:
            raise Problem("invalid-field", f"limit: 1 to {self.config.page_size_max}")
        return int(text)

    def _summaries(self, call: Call, mailbox: Mailbox, uids: list[int]) -> list[dict[str, Any]]:
        out = []
        for meta in self.store.messages(call.address, mailbox.id, uids):
            try:
                envelope = self.store.envelope(call.address, mailbox.id, meta.uid)
            except NotFound:
                continue  # expunged meanwhile
            out.append(views.summary(call.owner, mailbox, meta, envelope))
        out.sort(key=lambda m: -int(m["id"].rsplit(".", 1)[1]))  # newest (highest uid) first
        return out

    # -- endpoints: the document and tokens ------------------------------------------------

    async def openapi(self, call: Call) -> tuple[int, Any]:
        data = resources.files("maild.api").joinpath("openapi.json").read_bytes()
        return 200, Raw(data, JSON)

    async def token_create(self, call: Call) -> tuple[int, Any]:
        self._writable()
        request = call.json() if call.body() else {}
        name = request.get("name", "")
        days = request.get("expires_days", self.config.token_max_days)
        if not isinstance(name, str) or len(name) > 200:
            raise Problem("invalid-field", "name: a string of at most 200 characters")
        limit = self.config.token_max_days
        if (isinstance(days, bool) or not isinstance(days, (int, float)) or days < 0
                or (limit and (days == 0 or days > limit))):
            raise Problem("invalid-field", f"expires_days: a number of days up to {limit:g}"
                          if limit else "expires_days: a number of days, 0 for never")
        secret, record = await self._in_thread(self.store.token_add, call.address, name, float(days))
        return 201, {**_token(record), "token": secret}

    async def token_list(self, call: Call) -> tuple[int, Any]:
        return 200, {"tokens": [_token(t) for t in self.store.tokens(call.address)]}

    async def token_delete(self, call: Call) -> tuple[int, Any]:
        self._writable()
        try:
            await self._in_thread(self.store.token_revoke, call.params["token"], call.address)
        except NotFound:
            raise Problem("not-found", "no such token") from None
        return 204, None

    # -- folders ---------------------------------------------------------------------------

    async def folder_list(self, call: Call) -> tuple[int, Any]:
        return 200, {"folders": [views.folder(call.owner, m) for m in self.store.mailboxes(call.address)]}

    async def folder_get(self, call: Call) -> tuple[int, Any]:
        return 200, views.folder(call.owner, self._folder(call))

    def _folder_name(self, request: dict[str, Any]) -> str:
        name = request.get("name")
        if (not isinstance(name, str) or not name.strip() or len(name) > 255
                or re.search(r"[\x00-\x1f\x7f%*]", name) or name.startswith("/") or "//" in name
                or name.endswith("/") or any(p in (".", "..") for p in name.split("/"))):
            raise Problem("invalid-field", "name: a folder name (\"/\" separates levels)")
        return name

    async def folder_create(self, call: Call) -> tuple[int, Any]:
        self._writable()
        name = self._folder_name(call.json())
        if self.store.mailbox(call.address, name) is not None:
            raise Problem("conflict", "a folder of that name exists")
        mailbox = await self._committed(self.store.create_mailbox(call.address, name))
        call.request.setHeader("Location", f"/v1/folders/{views.folder_id(call.owner, mailbox)}")
        return 201, views.folder(call.owner, mailbox)

    async def folder_rename(self, call: Call) -> tuple[int, Any]:
        self._writable()
        mailbox = self._folder(call)
        name = self._folder_name(call.json())
        if mailbox.name == "INBOX":
            raise Problem("forbidden", "INBOX cannot be renamed here")
        if self.store.mailbox(call.address, name) is not None:
            raise Problem("conflict", "a folder of that name exists")
        await self._committed(self.store.rename_mailbox(call.address, mailbox.name, name))
        return 200, views.folder(call.owner, self._folder(call))

    async def folder_delete(self, call: Call) -> tuple[int, Any]:
        self._writable()
        mailbox = self._folder(call)
        if mailbox.name == "INBOX" or mailbox.special_use is not None:
            raise Problem("forbidden", "INBOX and special folders cannot be deleted")
        await self._committed(self.store.delete_mailbox(call.address, mailbox.name))
        return 204, None

    # -- messages --------------------------------------------------------------------------

    async def message_list(self, call: Call) -> tuple[int, Any]:
        """Newest first (highest uid), a page at a time: the cursor is the last uid given."""
        mailbox = self._folder(call)
        limit = self._limit(call)
        before = _cursor(call.query("cursor"))
        unread, flagged = _flag_filter(call, "unread"), _flag_filter(call, "flagged")
        since = _since(call.query("since"))
        uids = self.store.uids(call.address, mailbox.id)  # ascending
        if unread is not None:
            unseen = self.store.unseen_uids(call.address, mailbox.id)
            if unread:
                uids = sorted(unseen)
            else:
                unseen_set = set(unseen)
                uids = [u for u in uids if u not in unseen_set]
        # Newest first: walk back from the cursor in batches of records, never the whole list.
        end = len(uids) if before is None else bisect.bisect_left(uids, before)
        page: list[int] = []
        step = max(limit * 2, 100)
        while end > 0 and len(page) < limit:
            start = max(0, end - step)
            for meta in sorted(self.store.messages(call.address, mailbox.id, uids[start:end]), key=lambda m: -m.uid):
                if flagged is not None and ("\\Flagged" in meta.flags) != flagged:
                    continue
                if since is not None and meta.internal_date < since:
                    continue
                page.append(meta.uid)
                if len(page) == limit:
                    break
            end = start
        more = len(page) == limit and bisect.bisect_left(uids, page[-1]) > 0
        return 200, {"messages": self._summaries(call, mailbox, page),
                     "next_cursor": f"u{page[-1]}" if more else None}

    async def message_get(self, call: Call) -> tuple[int, Any]:
        mailbox, uid = self._message(call)

        def read() -> dict[str, Any]:
            meta = self.store.message(call.address, mailbox.id, uid)
            if meta is None:
                raise Problem("not-found", "no such message")
            envelope = self.store.envelope(call.address, mailbox.id, uid)
            raw = self.store.read(call.address, mailbox.id, uid)
            return views.full(call.owner, mailbox, meta, envelope, raw)
        try:
            return 200, await self._in_thread(read)
        except (NotFound, FileNotFoundError):
            raise Problem("not-found", "no such message") from None

    async def _raw(self, call: Call) -> bytes:
        mailbox, uid = self._message(call)
        try:
            data: bytes = await self._in_thread(self.store.read, call.address, mailbox.id, uid)
        except (NotFound, FileNotFoundError):
            raise Problem("not-found", "no such message") from None
        return data

    async def message_raw(self, call: Call) -> tuple[int, Any]:
        return 200, Raw(await self._raw(call), "message/rfc822")

    async def message_attachment(self, call: Call) -> tuple[int, Any]:
        if not views.PART_ID.fullmatch(call.params["part"]):
            raise Problem("not-found", "no such part")
        found = views.attachment(await self._raw(call), call.params["part"])
        if found is None:
            raise Problem("not-found", "no such part")
        content_type, name, data = found
        # Served as a download, never rendered in the API's origin (an HTML attachment).
        disposition = "attachment"
        if name:
            disposition += "; filename*=UTF-8''" + _quote(name)
        return 200, Raw(data, content_type if re.fullmatch(r"[a-z0-9.+-]+/[a-z0-9.+-]+", content_type)
                        else "application/octet-stream",
                        {"Content-Disposition": disposition, "Content-Security-Policy": "sandbox"})

    async def message_update(self, call: Call) -> tuple[int, Any]:
        """PATCH: seen / flagged / answered / draft booleans, keywords {add, remove}, and
        folder_id (a move, RFC 6851 semantics: the message gets a new id)."""
        self._writable()
        mailbox, uid = self._message(call)
        request = call.json()
        unknown = set(request) - {"seen", "flagged", "answered", "draft", "keywords", "folder_id"}
        if unknown:
            raise Problem("invalid-field", f"unknown field {sorted(unknown)[0]}")
        add: set[str] = set()
        remove: set[str] = set()
        for flag, name in views.SYSTEM_FLAGS.items():
            value = request.get(name)
            if value is None:
                continue
            if not isinstance(value, bool):
                raise Problem("invalid-field", f"{name}: true or false")
            (add if value else remove).add(flag)
        keywords = request.get("keywords", {})
        if not isinstance(keywords, dict) or set(keywords) - {"add", "remove"}:
            raise Problem("invalid-field", "keywords: {\"add\": [...], \"remove\": [...]}")
        for key, into in (("add", add), ("remove", remove)):
            values = keywords.get(key, [])
            if not isinstance(values, list) or len(values) > 100 or not all(
                    isinstance(k, str) and re.fullmatch(r"[!#$&'+\-.0-9A-Z^_`a-z|~]{1,64}", k) for k in values):
                raise Problem("invalid-field", f"keywords.{key}: a list of IMAP keyword atoms")
            into.update(values)
        if add & remove:
            raise Problem("invalid-field", "a flag both added and removed")
        target = self._folder(call, request["folder_id"]) if "folder_id" in request else None
        if add:
            await self._committed(self.store.set_flags(call.address, mailbox.id, [uid], add, FlagMode.ADD))
        if remove:
            await self._committed(self.store.set_flags(call.address, mailbox.id, [uid], remove, FlagMode.REMOVE))
        if target is not None and target.id != mailbox.id:
            result = await self._committed(self.store.move(call.address, mailbox.id, [uid], target.id))
            mapping = dict(result.pairs)
            mailbox, uid = self._folder(call, views.folder_id(call.owner, target)), mapping[uid]
        meta = self.store.message(call.address, mailbox.id, uid)
        if meta is None:
            raise Problem("not-found", "no such message")
        return 200, views.summary(call.owner, mailbox, meta, self.store.envelope(call.address, mailbox.id, uid))

    async def message_delete(self, call: Call) -> tuple[int, Any]:
        """Expunged at once (the message is gone, not moved to Trash: PATCH folder_id for that)."""
        self._writable()
        mailbox, uid = self._message(call)
        await self._committed(self.store.expunge(call.address, mailbox.id, [uid]))
        return 204, None

    async def thread_list(self, call: Call) -> tuple[int, Any]:
        mailbox = self._folder(call)
        trees = await self._in_thread(self.hooks.threads, self.store, call.address, mailbox)

        def render(tree: list[Any]) -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            stack = [(node, out) for node in reversed(tree)]
            while stack:
                (uid, children), into = stack.pop()
                item: dict[str, Any] = {"id": None if uid is None else views.message_id(call.owner, mailbox, uid),
                                        "replies": []}
                into.append(item)
                stack.extend((child, item["replies"]) for child in reversed(children))
            return out
        return 200, {"threads": render(trees)}

    async def search(self, call: Call) -> tuple[int, Any]:
        fields = {}
        for name in ("subject", "from", "to", "cc", "body", "text"):
            value = call.query(name)
            if value:
                if len(value) > 1000:
                    raise Problem("invalid-field", f"{name}: at most 1000 characters")
                fields[name] = value
        query = call.query("q")
        if query:
            fields["text"] = query[:1000]
        if not fields:
            raise Problem("invalid-field", "give q, subject, from, to, cc or body")
        folder = call.query("folder_id")
        mailbox = self._folder(call, folder) if folder else self.store.mailbox(call.address, "INBOX")
        assert mailbox is not None
        limit = self._limit(call)
        before = _cursor(call.query("cursor"))
        uids = await self._in_thread(self.hooks.search, self.store, call.address, mailbox.id, fields)
        matched = sorted((u for u in uids if before is None or u < before), reverse=True)
        page = matched[:limit]
        return 200, {"messages": self._summaries(call, mailbox, page),
                     "next_cursor": f"u{page[-1]}" if len(matched) > limit else None}

    # -- events ----------------------------------------------------------------------------

    async def events(self, call: Call) -> tuple[int, Any]:
        """A WebSocket when the request asks for the upgrade (RFC 6455 §4.2.1), a long poll
        otherwise (maild/api/events.py)."""
        user = call.user
        assert user is not None
        text = call.query("since")
        if text is not None and (not text.isdigit() or len(text) > 19):
            raise Problem("invalid-field", "since: a position from an event or a previous poll")
        since = None if text is None else int(text)
        if (call.request.getHeader("upgrade") or "").lower() == "websocket":
            channel: Any = call.request.channel
            channel.setTimeout(None)  # the WebSocket pings from now on
            self.websockets.pending = (user, since)
            try:
                self.upgrade.render(call.request)
            finally:
                self.websockets.pending = None
            return 101, UPGRADED
        wait_text = call.query("wait") or "0"
        try:
            wait = float(wait_text)
        except ValueError:
            wait = -1.0
        if not 0 <= wait <= self.config.events_max_wait:
            raise Problem("invalid-field", f"wait: 0 to {self.config.events_max_wait:g} seconds")
        if since is None:
            return 200, {"events": [], "position": self.hub.head(user)}
        try:
            events, position = await self.hub.wait(user, since, wait)
        except Trimmed:
            raise Problem("resync", "re-read the folders you show, then poll from position",
                          extra={"position": self.hub.head(user)}) from None
        return 200, {"events": events, "position": position}

    # -- webhooks --------------------------------------------------------------------------

    async def webhook_list(self, call: Call) -> tuple[int, Any]:
        return 200, {"webhooks": [_webhook(w) for w in self.store.webhooks(call.address)]}

    async def webhook_create(self, call: Call) -> tuple[int, Any]:
        """The events of GET /v1/events POSTed to ``url`` (maild/api/webhooks.py); the
        secret that signs them is in this answer only."""
        self._writable()
        if not self.config.webhooks_per_user:
            raise Problem("forbidden", "webhooks are off on this server")
        request = call.json()
        problem = url_problem(request.get("url"), self.config.webhook_allow_private)
        if problem:
            raise Problem("invalid-field", problem)
        events = request.get("events", list(WEBHOOK_EVENTS))
        if (not isinstance(events, list) or not events
                or not all(isinstance(e, str) and e in WEBHOOK_EVENTS for e in events)):
            raise Problem("invalid-field", "events: a list of " + ", ".join(WEBHOOK_EVENTS))
        try:
            record = await self._in_thread(self.store.webhook_add, call.address, request["url"],
                                           sorted(set(events)), self.config.webhooks_per_user)
        except StoreError:
            raise Problem("conflict", f"at most {self.config.webhooks_per_user} webhooks") from None
        self.webhooks.reload()
        return 201, {**_webhook(record), "secret": record["secret"]}

    async def webhook_delete(self, call: Call) -> tuple[int, Any]:
        self._writable()
        if not re.fullmatch(r"w[0-9a-f]{16}", call.params["webhook"]):
            raise Problem("not-found", "no such webhook")
        try:
            await self._in_thread(self.store.webhook_remove, call.params["webhook"], call.address)
        except NotFound:
            raise Problem("not-found", "no such webhook") from None
        self.webhooks.reload()
        return 204, None

    # -- sending ---------------------------------------------------------------------------

    async def send(self, call: Call) -> tuple[int, Any]:
        self._writable()
        user = call.user
        assert user is not None
        kind = call.content_type()
        files: list[tuple[str, str, bytes]] = []
        if kind == JSON:
            request = call.json()
            for i, item in enumerate(request.pop("attachments", []) or []):
                files.append(_json_attachment(item, i))
        elif kind == "multipart/form-data":
            request, files = _multipart(call)
        else:
            raise Problem("unsupported-media-type", "application/json or multipart/form-data")
        try:
            raw, sender, recipients = views.compose(request, user.address, self.ctx.config.hostname, files)
        except views.ComposeError as exc:
            raise Problem("invalid-field", str(exc)) from None
        if len(raw) > self.config.max_send_size:
            raise Problem("too-large", f"the message is over {self.config.max_send_size} bytes")
        client = call.request.getClientAddress()
        tx = Transaction(client_ip=client.host, client_port=client.port, submission=True,
                         helo="api", esmtp=True, mail_from=sender,
                         tls_version="TLS" if call.request.isSecure() else None)
        reply = await self.hooks.submit(self.ctx, tx, user, recipients, raw)
        if reply.code >= 400:
            raise _send_problem(reply)
        entries = tx.notes.get("queue_entries", [])
        queue_id = "q" + tx.queue_id + "".join("." + e for e in entries)
        call.request.setHeader("Location", f"/v1/queue/{queue_id}")
        return 202, {"queue_id": queue_id, "message_id": views.message_id_header(raw),
                     "recipients": len(recipients)}

    async def queue_status(self, call: Call) -> tuple[int, Any]:
        """The state of each recipient of a sent message still in the outbound queue; a
        message whose entries have all finished (delivered, or bounced to the sender) is
        "done"; local recipients were delivered before the send was answered."""
        match = re.fullmatch(r"q([0-9A-F]{12})((?:\.[0-9a-f]{16}){0,100})", call.params["queue"])
        if match is None:
            raise Problem("not-found", "no such queue id")
        owned = {a.lower() for a in self.store.addresses_of(call.address)}
        recipients: list[dict[str, Any]] = []
        for entry_id in match.group(2).split(".")[1:]:
            entry = self.store.queue_entry(entry_id)
            if entry is None:
                continue
            if entry["sender"].lower() not in owned:
                raise Problem("not-found", "no such queue id")
            recipients.extend({"address": r["address"], "state": r["state"], "reply": r["reply"],
                               "attempts": entry["attempts"],
                               "next_attempt": views.iso(entry["next_attempt"])} for r in entry["recipients"])
        return 200, {"queue_id": call.params["queue"], "state": "queued" if recipients else "done",
                     "recipients": recipients}


UPGRADED = object()  # the connection was handed to the WebSocket protocol


@dataclass
class Raw:
    data: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


def _token(record: dict[str, Any]) -> dict[str, Any]:
    return {"id": record["id"], "name": record["name"], "created": views.iso(record["created"]),
            "expires": views.iso(record["expires"]) if record["expires"] else None}


def _webhook(record: dict[str, Any]) -> dict[str, Any]:
    return {"id": record["id"], "url": record["url"], "events": record["events"],
            "created": views.iso(record["created"])}


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _cursor(value: str | None) -> int | None:
    if value is None:
        return None
    if not re.fullmatch(r"u[0-9]{1,10}", value):
        raise Problem("invalid-field", "cursor: a next_cursor value from a previous page")
    return int(value[1:])


def _flag_filter(call: Call, name: str) -> bool | None:
    value = call.query(name)
    if value is None:
        return None
    if value not in ("true", "false"):
        raise Problem("invalid-field", f"{name}: true or false")
    return value == "true"


def _since(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        when = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Problem("invalid-field", "since: an ISO 8601 date or date-time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def _json_attachment(item: Any, index: int) -> tuple[str, str, bytes]:
    where = f"attachments[{index}]"
    if not isinstance(item, dict) or not isinstance(item.get("content_base64"), str):
        raise Problem("invalid-field", f"{where}: {{filename, content_type, content_base64}}")
    try:
        data = base64.b64decode(item["content_base64"], validate=True)
    except (binascii.Error, ValueError):
        raise Problem("invalid-field", f"{where}.content_base64: not base64") from None
    name, content_type = item.get("filename") or "attachment", item.get("content_type") or "application/octet-stream"
    if not isinstance(name, str) or not isinstance(content_type, str):
        raise Problem("invalid-field", f"{where}: filename and content_type are strings")
    return name[:255], content_type.lower(), data


def _multipart(call: Call) -> tuple[dict[str, Any], list[tuple[str, str, bytes]]]:
    """multipart/form-data (RFC 7578): a part named "message" holding the JSON request, and
    file parts (any other name) as attachments."""
    header = call.request.getHeader("content-type") or ""
    parser = email.parser.BytesParser(policy=email.policy.HTTP)
    message = parser.parsebytes(b"Content-Type: " + header.encode("latin-1", "replace") + b"\r\n\r\n" + call.body())
    if not message.is_multipart():
        raise Problem("bad-request", "multipart/form-data without parts")
    request: dict[str, Any] | None = None
    files = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        payload = payload if isinstance(payload, bytes) else b""
        if name == "message":
            try:
                value = json.loads(payload)
            except (ValueError, UnicodeDecodeError):
                raise Problem("bad-json", "the \"message\" part is not JSON") from None
            if not isinstance(value, dict):
                raise Problem("bad-json", "the \"message\" part is not a JSON object")
            request = value
        else:
            filename = part.get_filename() or str(name or "attachment")
            files.append((filename[:255], part.get_content_type(), payload))
    if request is None:
        raise Problem("invalid-field", "a part named \"message\" with the JSON request is required")
    return request, files


def _send_problem(reply: Reply) -> Problem:
    """The submission path's SMTP reply as a problem (its text is our own public text)."""
    detail = f"{reply.code} {reply.enhanced} {reply.text}"
    if reply.enhanced == "5.7.1" and reply.code == 553:
        return Problem("sender-not-owned", detail)
    if reply.code == 552 and reply.enhanced == "5.2.2":
        return Problem("over-quota", detail)
    if reply.code == 552:
        return Problem("too-large", detail)
    if reply.code >= 500:
        return Problem("message-refused", detail)
    if reply.enhanced == "4.7.1" and "rate" in reply.text:
        return Problem("rate-limited", detail, retry_after=60)  # [submission] messages_per_minute_per_user
    return Problem("unavailable", detail, retry_after=60)


def build_site(ctx: ServerContext, hooks: Hooks, resource: type[ApiResource] = ApiResource) -> ApiSite:
    """The twisted.web Site of the API: one per process, shared by its listeners."""
    return ApiSite(resource(ctx, hooks), ctx.config.api, ctx.config.api.request_timeout)

