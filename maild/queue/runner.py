"""The outbound queue runner: delivery workers on the reactor, one coroutine per queue
entry in flight (never a thread per message).

Implementation notes (invariants a contributor must keep):

- The store's queue is the only state that matters: an entry changes only after an
  attempt has finished, in one ``store.queue_update``. Recipients the remote server
  accepted (250 to the final ".") are marked delivered in that update; after a kill -9
  mid-delivery the entry is still due, and the next attempt sends only to recipients
  still "pending". (A crash between the remote's 250 and our commit sends those again:
  RFC 5321 §6.1 prefers a duplicate to a loss.)
- Results per recipient: 2xx delivered, 4xx (and every failure of the connection, of
  DNS, of TLS) pending with exponential backoff, 5xx bounced at once. A pending
  recipient whose entry is older than ``max_age`` at a failed attempt is bounced.
- A DSN (maild.queue.dsn) is committed before the recipients it reports are marked
  bounced; never one for a null sender.
- Routing (RFC 5321 §5.1): MX records by preference, equal preferences in random order;
  no MX: the domain itself (implicit MX); a null MX (RFC 7505) bounces with 5.1.10. Each
  MX's addresses (A, then AAAA) are tried in turn until one holds a transaction.
- Limits: at most ``max_connections`` deliveries in flight, ``max_per_domain`` per
  destination domain. The clock is injected (``clock``) so tests control time; the
  random order of equal MXes uses an injected ``random.Random``.
- One attempt of an entry at a time across every worker process (``[server] workers``):
  each runner takes the entry's lease in the store (``queue:<id>``, maild/store/shared.py)
  before an attempt and re-reads the entry under it (another worker may have just finished
  it), and gives the lease back after the attempt's ``queue_update``. The lease of a
  worker that dies goes with it, so its entries are due again for the others.
- TLS: STARTTLS by the domain's policy (:meth:`OutboundConfig.tls_policy_for`). Without
  a verified identity for MX hosts (no DANE/MTA-STS yet) certificates are not verified,
  as for any opportunistic TLS (RFC 7435). Under "opportunistic" a failed handshake is
  retried once in clear on the same address.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, ssl
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, connectProtocol
from twisted.internet.task import LoopingCall

from maild.config import Config
from maild.dns.resolver import Resolver, TempError
from maild.queue import dsn
from maild.queue.client import (
    ClientOptions,
    Outcome,
    SessionError,
    SmtpClientProtocol,
    describe,
    local_failure,
    transfer,
)
from maild.queue.wire import Reply
from maild.store.types import NotFound
from maild.util import metrics

if TYPE_CHECKING:
    from maild.store import Store

log = logging.getLogger(__name__)

MAX_ADDRESSES_PER_HOST = 5


class NoRoute(Exception):
    """The domain cannot receive mail at all (null MX, no such host): bounce now."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


def order_mx(records: list[tuple[int, str]], rng: random.Random) -> list[str]:
    """Hosts by ascending preference, shuffled among equal preferences (RFC 5321 §5.1);
    the null MX "." is never a host."""
    by_pref: dict[int, list[str]] = {}
    for pref, host in records:
        if host != ".":
            by_pref.setdefault(pref, []).append(host)
    hosts: list[str] = []
    for pref in sorted(by_pref):
        group = by_pref[pref]
        rng.shuffle(group)
        hosts.extend(group)
    return hosts


def backoff(attempts: int, first: float, longest: float) -> float:
    """Seconds until the next try after ``attempts`` failed attempts: first, 2*first,
    4*first ... at most ``longest``."""
    return min(first * 2 ** max(attempts - 1, 0), longest)


Result = tuple[Reply, str | None]  # the reply, and the MX host that gave it (None: local)
LEASE_SECONDS = 3600.0  # an attempt's lease; attempts end far sooner (every wait is bounded)


class QueueRunner:
    def __init__(self, store: Store, config: Config, resolver: Resolver, reactor: Any,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None) -> None:
        self.store = store
        self.config = config
        self.settings = config.outbound
        self.resolver = resolver
        self.reactor = reactor
        self.clock = clock
        self.rng = rng or random.Random()
        self._in_flight: dict[str, defer.Deferred[None]] = {}
        self._per_domain: Counter[str] = Counter()
        self._held: dict[str, float] = {}  # entry id -> not before (after an internal error)
        self._protocols: set[SmtpClientProtocol] = set()
        self._connecting: set[defer.Deferred[Any]] = set()
        self._loop: LoopingCall | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._wake_pending = False
        self._stopping = False
        # Opportunistic TLS (RFC 7435): encrypt, do not authenticate the MX.
        self._tls_creator = ssl.CertificateOptions(verify=False)
        self._owner = str(os.getpid())  # whose leases (one runner per process)

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self.reactor
        self._loop.start(self.settings.poll_interval, now=True)
        self._unsubscribe = self.store.on_enqueue(self.wake)

    def wake(self) -> None:
        """Look for due work now, not at the next poll: a message was queued or a
        connection slot came free. Wake-ups before the next reactor turn coalesce."""
        if self._stopping or self._loop is None or not self._loop.running or self._wake_pending:
            return
        self._wake_pending = True
        self.reactor.callLater(0, self._woken)

    def _woken(self) -> None:
        self._wake_pending = False
        self._tick()

    def stop(self) -> defer.Deferred[Any]:
        """Stop taking work and cut the connections in flight; their entries stay as they
        were (due), so the next start delivers them. Fires when all have ended."""
        self._stopping = True
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        for connecting in list(self._connecting):
            connecting.cancel()
        for proto in list(self._protocols):
            if proto.transport is not None:
                proto.transport.abortConnection()
        return defer.DeferredList(list(self._in_flight.values()))

    def _tick(self) -> None:
        self.run_due()

    # -- scheduling ---------------------------------------------------------------------

    def run_due(self) -> defer.Deferred[Any]:
        """Start every due entry the limits allow; fires when those attempts are over."""
        started: list[defer.Deferred[None]] = []
        if self._stopping:
            return defer.DeferredList(started)
        now = self.clock()
        room = self.settings.max_connections - len(self._in_flight)
        if room <= 0:
            return defer.DeferredList(started)
        for entry in self.store.queue_due(now, room + len(self._in_flight) + len(self._held)):
            if len(self._in_flight) >= self.settings.max_connections:
                break
            entry_id, domain = entry["id"], entry["domain"]
            if entry_id in self._in_flight or self._held.get(entry_id, 0) > now:
                continue
            if self._per_domain[domain] >= self.settings.max_per_domain:
                continue
            leased = self._lease(entry_id, now)
            if leased is None:
                continue  # another worker's attempt, or just finished by one
            entry = leased
            self._held.pop(entry_id, None)
            self._per_domain[domain] += 1
            d = defer.ensureDeferred(self._run(entry))
            self._in_flight[entry_id] = d
            started.append(d)
        return defer.DeferredList(started)

    def _lease(self, entry_id: str, now: float) -> dict[str, Any] | None:
        """The entry, leased to this process and still due; None when another process
        holds it or it is no longer due (an attempt elsewhere has just ended)."""
        name = f"queue:{entry_id}"
        if not self.store.lease(name, self._owner, LEASE_SECONDS):
            return None
        entry = self.store.queue_entry(entry_id)
        if entry is None or entry.get("next_attempt", 0) > now:
            self.store.release_lease(name, self._owner)
            return None
        return entry

    async def _run(self, entry: dict[str, Any]) -> None:
        try:
            await self.attempt(entry)
        except Exception:
            log.exception("queue entry %s: attempt failed internally", entry["id"])
            self._held[entry["id"]] = self.clock() + self.settings.retry_min
        finally:
            self.store.release_lease(f"queue:{entry['id']}", self._owner)
            del self._in_flight[entry["id"]]
            self._per_domain[entry["domain"]] -= 1
            if not self._per_domain[entry["domain"]]:
                del self._per_domain[entry["domain"]]
            self.wake()

    # -- one attempt --------------------------------------------------------------------

    async def attempt(self, entry: dict[str, Any]) -> None:
        """Deliver the pending recipients of ``entry`` once and record the results."""
        now = self.clock()
        pending = [r for r in entry["recipients"] if r["state"] == "pending"]
        raw = self.store.queue_message(entry)
        results = await self.route(entry["domain"], entry["sender"],
                                   [r["address"] for r in pending], raw)
        if self._stopping and not any(reply.positive for reply, _ in results.values()):
            return  # cut short by shutdown: the entry stays due as it was
        failed: list[dsn.Failed] = []
        deferred: list[dsn.Failed] = []
        for rcpt in pending:
            reply, host = results[rcpt["address"]]
            rcpt["reply"] = str(reply)
            if reply.positive:
                rcpt["state"] = "delivered"
                metrics.OUTBOUND.labels("delivered").inc()
                log.info("queue %s: <%s> delivered via %s: %s", entry["id"], rcpt["address"],
                         host, reply, extra={"maild_queue_entry": entry["id"], "maild_result": "delivered"})
            elif reply.permanent:
                rcpt["state"] = "bounced"
                metrics.OUTBOUND.labels("bounced").inc()
                failed.append(dsn.Failed(rcpt["address"], reply, host))
                log.info("queue %s: <%s> bounced: %s", entry["id"], rcpt["address"], reply,
                         extra={"maild_queue_entry": entry["id"], "maild_result": "bounced"})
            else:
                deferred.append(dsn.Failed(rcpt["address"], reply, host))
                metrics.OUTBOUND.labels("deferred").inc()
                log.info("queue %s: <%s> deferred: %s", entry["id"], rcpt["address"], reply,
                         extra={"maild_queue_entry": entry["id"], "maild_result": "deferred"})
        age = now - entry["created"]
        sender = entry["sender"]
        gave_up = bool(deferred) and age >= self.settings.max_age
        if gave_up:
            for rcpt in pending:
                if rcpt["state"] == "pending":
                    rcpt["state"] = "bounced"
            log.info("queue %s: gave up after %.0fs", entry["id"], age)
        if sender:  # RFC 3464 §2: never a DSN for a null sender
            if failed:
                await dsn.send(self.store, sender, dsn.build(
                    hostname=self.config.hostname, entry=entry, recipients=failed,
                    original=raw, now=now))
            if gave_up:
                await dsn.send(self.store, sender, dsn.build(
                    hostname=self.config.hostname, entry=entry, recipients=deferred,
                    original=raw, now=now, gave_up=True))
            elif deferred and self._warn_due(entry, age):
                await dsn.send(self.store, sender, dsn.build(
                    hostname=self.config.hostname, entry=entry, recipients=deferred,
                    original=raw, now=now, delayed=True,
                    retry_until=entry["created"] + self.settings.max_age))
                entry["warned"] = True
        entry["attempts"] += 1
        entry["last_attempt"] = now
        problems = failed + deferred
        entry["last_error"] = str(problems[-1].reply) if problems else None
        entry["next_attempt"] = now + backoff(entry["attempts"], self.settings.retry_min,
                                              self.settings.retry_max)
        try:
            await self.store.queue_update(entry)
        except NotFound:
            log.info("queue %s: removed while being delivered", entry["id"])

    def _warn_due(self, entry: dict[str, Any], age: float) -> bool:
        warning = self.settings.delay_warning
        return bool(warning) and age >= warning and not entry.get("warned")

    # -- routing ------------------------------------------------------------------------

    async def route(self, domain: str, sender: str, recipients: list[str],
                    raw: bytes) -> dict[str, Result]:
        """Try the domain's MXes in order until one holds a transaction; a reply per
        recipient (the last failure for all when none did)."""
        try:
            hosts = await self.hosts(domain)
        except TempError as exc:
            return dict.fromkeys(recipients, (local_failure("4.4.3", f"DNS: {exc}"), None))
        except NoRoute as exc:
            return dict.fromkeys(recipients, (exc.reply, None))
        last: Result = (local_failure("4.4.4", f"no address for any MX of {domain}"), None)
        for host in hosts:
            try:
                addresses = await self.addresses(host)
            except TempError as exc:
                last = (local_failure("4.4.3", f"DNS: {exc}"), None)
                continue
            if not addresses:
                if host == domain:  # implicit MX without an address: no such domain
                    unknown = Reply(550, (f"5.1.2 {domain} has no MX and no address records",), local=True)
                    return dict.fromkeys(recipients, (unknown, None))
                last = (local_failure("4.4.4", f"MX {host} has no address"), None)
                continue
            for address in addresses[:MAX_ADDRESSES_PER_HOST]:
                try:
                    outcome = await self.session(host, address, domain, sender, recipients, raw)
                except SessionError as exc:
                    log.info("delivery to %s via %s [%s] failed: %s", domain, host, address, exc)
                    last = (exc.reply, host if exc.from_server else None)
                    continue
                return {a: (r, host) for a, r in outcome.replies.items()}
        return dict.fromkeys(recipients, last)

    async def hosts(self, domain: str) -> list[str]:
        records = await self.resolver.mx(domain)
        if not records:
            return [domain]  # RFC 5321 §5.1: implicit MX
        hosts = order_mx(records, self.rng)
        if not hosts:  # RFC 7505 §3: a null MX: the domain accepts no mail
            raise NoRoute(Reply(556, (f"5.1.10 {domain} does not accept mail (null MX)",), local=True))
        return hosts

    async def addresses(self, host: str) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        v4 = await self.resolver.a(host)
        v6 = await self.resolver.aaaa(host)
        return [*v4, *v6]

    async def session(self, host: str, address: str, domain: str, sender: str,
                      recipients: list[str], raw: bytes) -> Outcome:
        policy = self.settings.tls_policy_for(domain)
        try:
            return await self._connect_and_transfer(address, policy, sender, recipients, raw)
        except SessionError as exc:
            if exc.stage != "TLS" or policy != "opportunistic":
                raise
            log.info("TLS with %s [%s] failed (%s): retrying in clear", host, address, exc)
            return await self._connect_and_transfer(address, "none", sender, recipients, raw)

    async def _connect_and_transfer(self, address: str, policy: str, sender: str,
                                    recipients: list[str], raw: bytes) -> Outcome:
        port = self.settings.port
        if self._stopping:
            raise SessionError(local_failure("4.3.2", "shutting down"), "connect",
                               from_server=False)
        endpoint_class = TCP6ClientEndpoint if ":" in address else TCP4ClientEndpoint
        endpoint = endpoint_class(self.reactor, address, port,
                                  timeout=self.settings.connect_timeout)
        proto = SmtpClientProtocol(self.reactor)
        connecting = connectProtocol(endpoint, proto)
        self._connecting.add(connecting)
        try:
            await connecting
        except Exception as exc:  # refused, unreachable, timed out, stopped
            raise SessionError(local_failure("4.4.1", f"connect to {address}:{port}: "
                                             f"{describe(exc)}"), "connect",
                               from_server=False) from None
        finally:
            self._connecting.discard(connecting)
        self._protocols.add(proto)
        options = ClientOptions(helo=self.config.hostname, tls_policy=policy,
                                tls_creator=self._tls_creator,
                                command_timeout=self.settings.command_timeout,
                                data_timeout=self.settings.data_timeout)
        try:
            return await transfer(proto, options, sender, recipients, raw)
        finally:
            self._protocols.discard(proto)
