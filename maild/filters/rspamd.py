"""Spam scoring with rspamd over its HTTP protocol, on Twisted's non-blocking web client.

- Scanning: ``POST /checkv2`` to the normal worker with the message as body and the SMTP
  envelope as request headers (rspamd.com/doc/developers/protocol.html): ``IP``,
  ``Helo``, ``From``, one ``Rcpt`` per recipient, ``User`` for an authenticated sender,
  ``TLS-Version``/``TLS-Cipher``. Mail authentication's results travel as an
  ``Authentication-Results`` header prepended to the copy rspamd sees. The JSON answer's
  ``action`` is mapped by :class:`maild.filters.spam.SpamPolicy`.
- Learning: ``POST /learnspam`` and ``/learnham`` to the controller worker (see
  maild.filters.training); the controller trusts loopback (``secure_ip``), otherwise a
  ``Password`` header is sent.
- Every request is bounded by ``timeout``. When rspamd cannot be asked, the filter does
  what ``[filters] rspamd_on_error`` says: the built-in fallback scorer, 451, or accept.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from typing import Any

from twisted.internet import defer, protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IResponse
from zope.interface import implementer

from maild.filters.spam import RSPAMD_ACTIONS, SpamAction, SpamPolicy, SpamScore
from maild.util.authresults import AuthResults
from maild.util.transaction import Filter, Transaction, Verdict
from maild.util.transport import ConnectionTransport

log = logging.getLogger(__name__)


MAX_ANSWER = 1024 * 1024  # a /checkv2 answer is a few KiB of JSON


class RspamdError(Exception):
    """rspamd could not be reached, timed out, or answered with an error."""


class _BodyCollector(protocol.Protocol):
    """A response body, at most MAX_ANSWER octets (twisted's readBody has no limit)."""

    transport: ConnectionTransport

    def __init__(self, done: defer.Deferred[bytes]) -> None:
        self.done = done
        self.parts: list[bytes] = []
        self.size = 0

    def dataReceived(self, data: bytes) -> None:  # Twisted API
        self.size += len(data)
        if self.size > MAX_ANSWER:
            if not self.done.called:
                self.done.errback(RspamdError("answer too large"))
            self.transport.stopProducing()
            return
        self.parts.append(data)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(reason)


@implementer(IBodyProducer)
class _BytesProducer:
    """The request body, from pieces in memory (a header to prepend, the message), written
    CHUNK octets at a time while the transport wants more: never joined, and never queued
    whole in the transport's buffer. Unlike twisted's FileBodyProducer it needs no
    Cooperator, which would run on the global reactor."""

    CHUNK = 64 * 1024

    def __init__(self, pieces: Sequence[bytes]) -> None:
        self.pieces = list(pieces)
        self.length = sum(map(len, self.pieces))
        self._consumer: Any = None
        self._done: defer.Deferred[None] | None = None
        self._paused = False
        self._piece = 0
        self._offset = 0

    def startProducing(self, consumer: Any) -> defer.Deferred[None]:
        self._consumer = consumer
        self._done = defer.Deferred(lambda _: self.stopProducing())  # cancelled: stop
        done = self._done
        self._send()
        return done

    def _send(self) -> None:
        while not self._paused and self._consumer is not None:
            if self._piece >= len(self.pieces):
                self._consumer = None
                assert self._done is not None
                self._done.callback(None)
                return
            piece = memoryview(self.pieces[self._piece])
            chunk = bytes(piece[self._offset:self._offset + self.CHUNK])
            self._offset += len(chunk)
            if self._offset >= len(piece):
                self._piece, self._offset = self._piece + 1, 0
            self._consumer.write(chunk)

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._send()

    def stopProducing(self) -> None:
        self._consumer = None


def read_body(response: IResponse) -> defer.Deferred[bytes]:
    done: defer.Deferred[bytes] = defer.Deferred()
    response.deliverBody(_BodyCollector(done))
    return done


def envelope_headers(tx: Transaction) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {"IP": [tx.client_ip]}
    if tx.helo:
        headers["Helo"] = [tx.helo]
    if tx.mail_from is not None:
        headers["From"] = [tx.mail_from or "<>"]
    if tx.rcpt_to:
        headers["Rcpt"] = list(tx.rcpt_to)
    if tx.authenticated_user:
        headers["User"] = [tx.authenticated_user]
    if tx.tls_version:
        headers["TLS-Version"] = [tx.tls_version]
    if tx.tls_cipher:
        headers["TLS-Cipher"] = [tx.tls_cipher]
    return headers


def parse_check(body: bytes) -> SpamScore:
    """A /checkv2 JSON answer as a SpamScore."""
    try:
        answer = json.loads(body)
        action_name = str(answer["action"])
        score = float(answer.get("score", 0.0))
        required = float(answer.get("required_score", 0.0))
        symbols = tuple(sorted(answer.get("symbols") or {}))
        # rspamd 3.4 reports only the reject score; a "thresholds" table, where a version
        # sends one, gives the score that files to Junk.
        thresholds = answer.get("thresholds") or {}
        junk_at = [float(thresholds[a]) for a in ("add header", "rewrite subject") if a in thresholds]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RspamdError(f"unexpected answer from rspamd: {body[:200]!r}") from exc
    action = RSPAMD_ACTIONS.get(action_name)
    if action is None:
        log.warning("rspamd: unknown action %r, treated as no action", action_name)
        action = SpamAction.NONE
    return SpamScore(action, score, required, "rspamd", symbols,
                     junk=min(junk_at) if junk_at else None)


def parse_actions(body: bytes) -> float | None:
    """The lowest score that files to Junk ("add header", "rewrite subject") in the
    controller's /actions answer, e.g. ``[{"action": "add header", "value": 6.0}, ...]``."""
    try:
        values = [float(a["value"]) for a in json.loads(body)
                  if a.get("action") in ("add header", "rewrite subject") and a.get("value") is not None]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return min(values) if values else None


class RspamdClient:
    THRESHOLDS_TTL = 300.0  # seconds the controller's action thresholds are kept

    def __init__(self, reactor: Any, url: str, controller_url: str = "",
                 timeout: float = 15.0, password: str = "", authserv_id: str = "localhost") -> None:
        self.reactor = reactor
        self.authserv_id = authserv_id  # our hostname, in the Authentication-Results rspamd sees
        self.url = url.rstrip("/")
        self.controller_url = controller_url.rstrip("/")
        self.timeout = timeout
        self.password = password
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 8
        pool.cachedConnectionTimeout = 60
        self.agent = Agent(reactor, connectTimeout=timeout, pool=pool)
        self._junk: tuple[float, float | None] | None = None  # (when asked, the answer)

    def _post(self, url: str, body: Sequence[bytes] | None,
              headers: dict[str, list[str]], method: bytes = b"POST") -> defer.Deferred[tuple[int, bytes]]:
        """(HTTP status, body) of one POST (or ``method``, without a body when ``body`` is
        None), within ``timeout``; RspamdError otherwise. ``body`` is pieces sent one after
        the other (never joined)."""
        request_headers = Headers({k.encode(): [v.encode("utf-8", "replace") for v in values]
                                   for k, values in headers.items()})

        @defer.inlineCallbacks
        def exchange():  # type: ignore[no-untyped-def]
            response = yield self.agent.request(
                method, url.encode(), request_headers, None if body is None else _BytesProducer(body))
            content = yield read_body(response)
            return response.code, content

        def timed_out(result: Any, timeout: float) -> Failure:
            return Failure(RspamdError(f"{url}: no answer within {timeout}s"))

        def failed(failure: Failure) -> Failure:
            if failure.check(RspamdError):
                return failure
            return Failure(RspamdError(f"{url}: {failure.getErrorMessage()}"))

        d = exchange()
        d.addTimeout(self.timeout, self.reactor, onTimeoutCancel=timed_out)
        d.addErrback(failed)
        return d

    @defer.inlineCallbacks
    def check(self, raw: bytes, tx: Transaction):  # type: ignore[no-untyped-def]
        """The SpamScore of one message."""
        auth_results = tx.notes.get("auth_results")
        if isinstance(auth_results, AuthResults):
            value = auth_results.header_value(self.authserv_id)
            field = b"Authentication-Results: " + value.encode("utf-8", "replace") + b"\r\n"
            pieces = [field, raw]
        else:
            pieces = [raw]
        url = self.url + "/checkv2"
        code, content = yield self._post(url, pieces, envelope_headers(tx))
        if code != 200:
            raise RspamdError(f"{url}: HTTP {code}: {content[:200]!r}")
        score = parse_check(content)
        if score.junk is None:  # /checkv2 names only the reject score: ask the controller
            junk = yield self.junk_threshold()
            if junk is not None:
                score = dataclasses.replace(score, junk=junk)
        return score

    @defer.inlineCallbacks
    def junk_threshold(self):  # type: ignore[no-untyped-def]
        """rspamd's lowest "add header"/"rewrite subject" score from the controller's
        /actions, kept ``THRESHOLDS_TTL`` seconds; None without a controller or an answer."""
        if not self.controller_url:
            return None
        now = self.reactor.seconds()
        if self._junk is not None and now - self._junk[0] < self.THRESHOLDS_TTL:
            return self._junk[1]
        headers = {"Password": [self.password]} if self.password else {}
        try:
            code, content = yield self._post(self.controller_url + "/actions", None, headers, b"GET")
            junk = parse_actions(content) if code == 200 else None
        except RspamdError as exc:
            log.info("rspamd: no action thresholds: %s", exc)
            junk = None
        self._junk = (now, junk)
        return junk

    @defer.inlineCallbacks
    def learn(self, raw: bytes, spam: bool):  # type: ignore[no-untyped-def]
        """Teach the Bayes classifier; False when rspamd declined because it had nothing to
        learn: the message was learned before, or Bayes already puts it in that class."""
        if not self.controller_url:
            raise RspamdError("no rspamd_controller_url configured")
        headers = {"Password": [self.password]} if self.password else {}
        url = self.controller_url + ("/learnspam" if spam else "/learnham")
        code, content = yield self._post(url, [raw], headers)
        if code == 200:
            return True
        # "<message-id> has been already learned as spam, ignore it": 404 from rspamd 3.4,
        # 208 from later versions.
        if code == 208 or (code == 404 and b"already learned" in content):
            return False
        # "<message-id> is skipped for bayes classifier: already in class spam; probability
        # 99%": the learn condition (lua_bayes_learn.can_learn) said no. 204 has no body.
        if code == 204:
            return False
        raise RspamdError(f"{url}: HTTP {code}: {content[:200]!r}")


class RspamdFilter(Filter):
    """Score with rspamd; when rspamd fails, use ``fallback`` or tempfail or accept."""

    name = "rspamd"

    def __init__(self, client: RspamdClient, policy: SpamPolicy, on_error: str = "fallback",
                 fallback: Filter | None = None) -> None:
        self.client = client
        self.policy = policy
        self.on_error = on_error
        self.fallback = fallback

    @defer.inlineCallbacks
    def on_data(self, tx: Transaction):  # type: ignore[no-untyped-def]
        try:
            score = yield self.client.check(tx.raw or b"", tx)
        except RspamdError as exc:
            log.warning("rspamd: %s (on error: %s)", exc, self.on_error)
            if self.on_error == "fallback" and self.fallback is not None:
                result = yield defer.maybeDeferred(self.fallback.on_data, tx)
                return result
            if self.on_error == "tempfail":
                return Verdict.tempfail(451, "4.7.1", "Spam scanner unavailable, try again later")
            return Verdict(add_headers=[("X-Spam-Status", "Unknown, scanner unavailable")])
        verdict = yield self.policy.verdict(tx, score)
        return verdict
