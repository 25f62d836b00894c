"""Wiring: open the store, build the services and start the configured listeners.

Shutdown (SIGTERM, SIGINT): stop accepting connections and commands, let the commands in
progress finish and be answered within ``[server] shutdown_grace`` (maild/shutdown.py), then
close the sessions and the store, which finishes every write still queued.

Replication (docs/replication.md): a leader or follower also runs the replication service;
the outbound queue runner and housekeeping run only on a node that takes writes (not on a
follower, which would send the leader's queue again), from its promotion on.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from prometheus_client.twisted import MetricsResource
from twisted.internet import reactor as default_reactor
from twisted.internet import ssl, task, threads
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory
from twisted.logger import STDLibLogObserver, globalLogBeginner
from twisted.web.resource import Resource
from twisted.web.server import Site

from maild.api.server import Hooks as ApiHooks
from maild.api.server import build_site as build_api_site
from maild.auth import Authenticator
from maild.config import Address, Config, ConfigError
from maild.context import ServerContext
from maild.delivery import Delivery
from maild.dns.resolver import Resolver
from maild.filters.build import build_filters as content_filters
from maild.filters.chain import FilterChain
from maild.imap.search import text_search
from maild.imap.server import ImapFactory
from maild.imap.thread import thread_tree
from maild.mailauth.filter import build_filters as mailauth_filters
from maild.pop3.server import Pop3Factory
from maild.queue.runner import QueueRunner
from maild.reload import Reloader
from maild.replication import ReplicationService
from maild.shutdown import Sessions
from maild.smtp.server import SmtpFactory
from maild.smtp.submit import submit
from maild.store import Store
from maild.util import journal, metrics
from maild.util.session import GatedTLSFactory

log = logging.getLogger("maild")

# listener section -> (factory class, keyword arguments)
_PROTOCOLS: dict[str, tuple[Callable[..., Factory], dict[str, Any]]] = {
    "smtp": (SmtpFactory, {"submission": False}),
    "submission": (SmtpFactory, {"submission": True}),
    "imap": (ImapFactory, {}),
    "pop3": (Pop3Factory, {}),
}


def tls_options(config: Config) -> ssl.CertificateOptions | None:
    if config.tls.cert_file is None or config.tls.key_file is None:
        return None
    try:
        cert_pem = config.tls.cert_file.read_bytes()
        key_pem = config.tls.key_file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"tls.cert_file: cannot read {exc.filename}: {exc.strerror}") from None
    blocks = [b"-----BEGIN CERTIFICATE-----" + part
              for part in cert_pem.split(b"-----BEGIN CERTIFICATE-----")[1:]]
    try:
        leaf = ssl.PrivateCertificate.loadPEM(blocks[0] + b"\n" + key_pem)
        chain = [ssl.Certificate.loadPEM(block).original for block in blocks[1:]]
    except Exception as exc:  # OpenSSL raises several types
        raise ConfigError(f"tls.cert_file: not a PEM certificate matching tls.key_file ({exc})") from None
    # [tls] min_version and ciphers: by default Mozilla's "intermediate" profile, TLS 1.2+
    # with forward-secret AEAD suites only (docs/security.md); no renegotiation by the client.
    try:
        ciphers = ssl.AcceptableCiphers.fromOpenSSLCipherString(config.tls.ciphers)
    except Exception as exc:
        raise ConfigError(f"tls.ciphers: not an OpenSSL cipher string ({exc})") from None
    if not ciphers._ciphers:
        raise ConfigError(f"tls.ciphers: no cipher OpenSSL knows in {config.tls.ciphers!r}")
    minimum = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}[config.tls.min_version]
    return ssl.CertificateOptions(privateKey=leaf.privateKey.original, certificate=leaf.original,
                                  extraCertChain=chain or None, raiseMinimumTo=minimum,
                                  acceptableCiphers=ciphers)


def build_filters(config: Config, store: Store, reactor: Any) -> FilterChain:
    """Policy hooks in order: authentication results first, content scanners after them
    (the spam scorer reads the authentication results)."""
    return FilterChain([*mailauth_filters(config, store, reactor), *content_filters(config, store, reactor)])


def _listen(reactor: Any, key: str, address: Address, factory: Factory,
            tls: ssl.CertificateOptions | None) -> Any:
    try:
        if tls is not None:
            # Not listenSSL: the session factory counts the connection at accept and may
            # refuse it before any TLS work (maild.util.session).
            return reactor.listenTCP(address.port, GatedTLSFactory(tls, False, factory),
                                     interface=address.host)
        return reactor.listenTCP(address.port, factory, interface=address.host)
    except CannotListenError as exc:
        raise ConfigError(f"{key}: cannot listen on {address}: {exc.socketError}") from None


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) about our state; a no-op outside systemd. A datagram on
    $NOTIFY_SOCKET (sd_notify(3)); failures are logged, never raised: the service manager
    going away must not take the mail server with it."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(path)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("sd_notify %s failed: %s", message.split("=")[0], exc)


def _systemd(reactor: Any) -> None:
    """STOPPING=1 as shutdown begins, and the watchdog: with WatchdogSec= systemd sets
    WATCHDOG_USEC (and WATCHDOG_PID) and restarts the service when no WATCHDOG=1 arrives in
    time. The ping runs on the reactor thread every half period, so a wedged reactor (a
    blocking call, a loop that never yields) stops it and gets the service restarted.
    READY=1 is sent by serve() once every listener is bound."""
    reactor.addSystemEventTrigger("before", "shutdown", sd_notify, "STOPPING=1")
    usec, pid = os.environ.get("WATCHDOG_USEC"), os.environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return
    loop = task.LoopingCall(sd_notify, "WATCHDOG=1")
    loop.clock = reactor
    reactor.callWhenRunning(loop.start, int(usec) / 2e6, True)

    def stop() -> None:
        if loop.running:
            loop.stop()
    reactor.addSystemEventTrigger("before", "shutdown", stop)


def return_large_allocations_to_the_os() -> None:
    """glibc keeps freed heap memory in per-thread arenas; each login's argon2id buffer
    (19 MiB, in a pool thread) would stay resident for good. Allocations of 1 MiB and more
    are made with mmap instead, so they go back to the system when freed."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return
    libc.mallopt(M_MMAP_THRESHOLD, 1 << 20)


M_MMAP_THRESHOLD = -3  # glibc's malloc.h


SWEEP_INTERVAL = 6 * 3600.0  # seconds between sweeps for orphan blob files
RETRY_INTERVAL = 15.0  # seconds between looks at the local-delivery retry queue


def _housekeeping(store: Store, reactor: Any) -> None:
    """Orphan blob files swept at start-up and every SWEEP_INTERVAL (in a thread: it lists
    directories); due local-delivery retries attempted every RETRY_INTERVAL."""
    def sweep() -> Any:
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), store.sweep_orphans
                                         ).addErrback(lambda f: log.error("orphan sweep failed: %s", f.getTraceback()))

    def retry() -> Any:
        return store.retry_deliveries().addErrback(
            lambda f: log.error("local delivery retry failed: %s", f.getTraceback()))
    for call, interval in ((sweep, SWEEP_INTERVAL), (retry, RETRY_INTERVAL)):
        loop = task.LoopingCall(call)
        loop.clock = reactor
        reactor.callWhenRunning(loop.start, interval, True)
        reactor.addSystemEventTrigger("before", "shutdown", lambda loop=loop: loop.running and loop.stop())


class _QuietSite(Site):
    def log(self, request: Any) -> None:
        """No access log line per scrape."""


def _serve_metrics(config: Config, store: Store, reactor: Any) -> list[Any]:
    """Prometheus /metrics on ``[metrics] listen`` (maild/util/metrics.py); the queue
    gauges are read from the store at scrape time (in a thread: MetricsResource's)."""
    if not config.metrics.listen:
        return []
    cache: dict[str, Any] = {"at": -1.0, "entries": 0, "oldest": 0.0}

    def queue_state(field: str) -> float:
        now = time.monotonic()
        if now - cache["at"] > 1.0:
            entries = store.queue_entries()
            created = min((e["created"] for e in entries), default=None)
            cache.update(at=now, entries=len(entries),
                         oldest=0.0 if created is None else max(time.time() - created, 0.0))
        return float(cache[field])
    metrics.QUEUE_ENTRIES.set_function(lambda: queue_state("entries"))
    metrics.QUEUE_OLDEST.set_function(lambda: queue_state("oldest"))
    metrics.UP_SINCE.set(time.time())
    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry=metrics.REGISTRY))
    site = _QuietSite(root)
    factory: Any = site
    return [_listen(reactor, "metrics.listen", address, factory, None) for address in config.metrics.listen]


def _serve_api(ctx: ServerContext, reactor: Any, tls: ssl.CertificateOptions | None) -> list[tuple[Any, str]]:
    """The HTTP JSON API (maild/api) on ``[api] listen`` (plain, loopback: config.py
    checks) and ``tls_listen``; handed the IMAP and SMTP code it shares (search, threads,
    submission), since front ends do not import each other."""
    config = ctx.config.api
    if not config.enabled:
        return []
    site = build_api_site(ctx, ApiHooks(search=text_search, threads=thread_tree, submit=submit))
    reactor.addSystemEventTrigger("before", "shutdown", site.close)
    factory: Any = site
    return ([(_listen(reactor, "api.listen", a, factory, None), f"api {a}") for a in config.listen]
            + [(_listen(reactor, "api.tls_listen", a, factory, tls), f"api+tls {a}") for a in config.tls_listen])


def serve(config: Config, reactor: Any = default_reactor) -> int:
    return_large_allocations_to_the_os()
    if journal.under_journald():  # structured fields (maild/util/journal.py)
        logging.basicConfig(level=logging.INFO, handlers=[journal.JournalHandler()],
                            format="%(name)s: %(message)s")
    else:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    globalLogBeginner.beginLoggingTo([STDLibLogObserver()], redirectStandardIO=False)
    tls = tls_options(config)
    store = Store(config.data_dir, config.store, reactor, config.replication)
    reactor.suggestThreadPoolSize(16)
    filters = build_filters(config, store, reactor)
    ctx = ServerContext(config=config, store=store, auth=Authenticator(store, config.auth, reactor),
                        tls=tls, reactor=reactor, filters=filters, delivery=Delivery(store, config))
    ports = []
    sessions = Sessions(reactor, config.server.shutdown_grace)
    try:
        for section, (factory_class, kwargs) in _PROTOCOLS.items():
            listeners = getattr(config, section)
            for address in listeners.listen:
                sessions.ports.append(_listen(reactor, f"{section}.listen", address, sessions.track(
                    factory_class(ctx, implicit_tls=False, **kwargs)), None))
                ports.append(f"{section} {address}")
            for address in listeners.tls_listen:
                sessions.ports.append(_listen(reactor, f"{section}.tls_listen", address, sessions.track(
                    factory_class(ctx, implicit_tls=True, **kwargs)), tls))
                ports.append(f"{section}+tls {address}")
    except Exception:
        store.close()
        raise
    try:
        api_ports = _serve_api(ctx, reactor, tls)
    except Exception:
        store.close()
        raise
    sessions.ports.extend(port for port, _ in api_ports)
    ports.extend(name for _, name in api_ports)
    try:
        metric_ports = _serve_metrics(config, store, reactor)
    except Exception:
        store.close()
        raise
    sessions.ports.extend(metric_ports)
    ports.extend(f"metrics {address}" for address in config.metrics.listen)
    _systemd(reactor)
    Reloader(reactor, ctx, tls_options, sd_notify).install()
    reactor.addSystemEventTrigger("after", "shutdown", store.close)
    reactor.addSystemEventTrigger("before", "shutdown", sessions.stop)
    runner = QueueRunner(store, config, Resolver(config.dns, reactor), reactor)
    started: list[bool] = []
    reactor.addSystemEventTrigger("before", "shutdown", lambda: runner.stop() if started else None)

    def take_writes() -> None:
        """The outbound queue and housekeeping run where writes are taken: not on a follower
        (it would send the leader's queue a second time), on a promoted one from then on."""
        started.append(True)
        runner.start()
        _housekeeping(store, reactor)
    if store.repl_role == "standalone":
        reactor.callWhenRunning(take_writes)
    else:
        try:
            replication = ReplicationService(config, store, reactor)
            replication.on_leader.append(take_writes)
            ports.extend(replication.start())
        except Exception:
            store.close()
            raise
        reactor.addSystemEventTrigger("before", "shutdown", replication.stop)

    def ready() -> None:
        log.info("maild ready: %s", ", ".join(ports) or "no listeners")
        sd_notify("READY=1")

    reactor.callWhenRunning(ready)
    # What exists now (modules, the store, the listeners) lives as long as the process: keep
    # it out of the cyclic collector's full passes. Each walked all of it, a ~30 ms pause in
    # the middle of every tenth FETCH 1:* of a 10,000-message mailbox.
    gc.collect()
    gc.freeze()
    reactor.run()
    log.info("maild stopped")
    return 0
