"""Wiring: open the store, build the services and start the configured listeners.

Shutdown (SIGTERM, SIGINT): stop accepting connections and commands, let the commands in
progress finish and be answered within ``[server] shutdown_grace`` (maild/shutdown.py), then
close the sessions and the store, which finishes every write still queued.

Replication (docs/replication.md): a leader or follower also runs the replication service;
the outbound queue runner and housekeeping run only on a node that takes writes (not on a
follower, which would send the leader's queue again), from its promotion on.

Worker processes (``[server] workers``, maild/supervisor.py, docs/architecture.md): with
several workers, :func:`serve` runs in each worker with a :class:`WorkerRole`. The listeners
are then the sockets the supervisor bound and the worker inherited (adopted, never bound
here); the store is opened here, after the worker was started, never across a fork. The
services that must run once per tree (the metrics listener, housekeeping) run in worker 0
only (:attr:`WorkerRole.primary`); a restarted worker 0 takes them up again. The outbound
queue runner runs in every worker: a lease per entry in the store keeps its attempts one at
a time. Readiness, the watchdog and reload go to the supervisor's notify socket
(``NOTIFY_SOCKET`` points there), which speaks to systemd for the tree.
"""

from __future__ import annotations

import ctypes
import gc
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
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
from maild.search import SearchService
from maild.shutdown import Sessions
from maild.smtp.server import SmtpFactory
from maild.smtp.submit import submit
from maild.store import Store
from maild.util import journal, metrics
from maild.util.session import GatedTLSFactory
from maild.util.transport import adopt_port, listen_tcp

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


def build_filters(config: Config, store: Store, reactor: Any, primary: bool = True) -> FilterChain:
    """Policy hooks in order: authentication results first, content scanners after them
    (the spam scorer reads the authentication results). Junk training runs in the primary
    process only (``primary``)."""
    return FilterChain([*mailauth_filters(config, store, reactor),
                        *content_filters(config, store, reactor, train=primary)])


@dataclass(frozen=True)
class WorkerRole:
    """What the supervisor (maild/supervisor.py) tells a worker process it started."""

    index: int  # 0 .. count-1; a restarted worker keeps its index
    count: int
    fds: dict[str, int]  # listener key (see :func:`listeners`) -> inherited listening socket

    @property
    def primary(self) -> bool:
        """Worker 0 runs what must run once per tree (module docstring)."""
        return self.index == 0


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's: workers' metric files
WORKER_ENV = "MAILD_WORKER"  # JSON {"index", "count", "fds", "supervisor"}: set by the supervisor
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def worker_role() -> WorkerRole | None:
    """This process's role when the supervisor started it, else None. A worker dies with
    its supervisor (PR_SET_PDEATHSIG, SIGKILL): a killed supervisor is a killed tree, and
    no orphan keeps the ports or the store after it."""
    text = os.environ.pop(WORKER_ENV, None)
    if text is None:
        return None
    data = json.loads(text)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the supervisor's exit is then unnoticed
        pass
    if os.getppid() != data["supervisor"]:
        raise SystemExit("maild worker: the supervisor is gone")  # died before prctl took hold
    return WorkerRole(int(data["index"]), int(data["count"]), {str(k): int(v) for k, v in data["fds"].items()})


def listeners(config: Config, primary: bool = True) -> list[tuple[str, str, Address, bool]]:
    """Every listening address: (key, section, address, implicit TLS). The key (e.g.
    ``imap.tls_listen 127.0.0.1:993``) names a socket the supervisor hands to its workers;
    the metrics listener belongs to the primary process only."""
    found = []
    for section in (*_PROTOCOLS, "api", "metrics"):
        if section == "metrics" and not primary:
            continue
        table = getattr(config, section)
        for name, implicit in (("listen", False), ("tls_listen", True)):
            for address in getattr(table, name, ()):
                found.append((f"{section}.{name} {address}", section, address, implicit))
    return found


def _listen(reactor: Any, key: str, address: Address, factory: Any,
            tls: ssl.CertificateOptions | None, role: WorkerRole | None = None) -> Any:
    if tls is not None:
        # Not listenSSL: the session factory counts the connection at accept and may
        # refuse it before any TLS work (maild.util.session).
        factory = GatedTLSFactory(tls, False, factory)
    if role is not None:
        # The supervisor bound it; every worker accepts on the same socket (docs/architecture.md).
        fd = role.fds.get(f"{key} {address}")
        if fd is None:
            raise ConfigError(f"{key}: {address} was not listening when maild started; "
                              "a new listener needs a restart of maild")
        family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        port = adopt_port(reactor, fd, family, factory)
        os.close(fd)  # the port holds its own duplicate
        return port
    try:
        return listen_tcp(reactor, address.port, factory, address.host)
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


class _Scrape(CollectorRegistry):
    """What /metrics serves: ``source``'s metrics, ``refresh`` run first (in the scrape's
    thread: MetricsResource's)."""

    def __init__(self, source: CollectorRegistry, refresh: Callable[[], None]) -> None:
        super().__init__(auto_describe=False)
        self.source = source
        self.refresh = refresh

    def collect(self) -> Any:
        self.refresh()
        yield from self.source.collect()


def _serve_metrics(config: Config, store: Store, reactor: Any, role: WorkerRole | None) -> list[Any]:
    """Prometheus /metrics on ``[metrics] listen`` (maild/util/metrics.py); the queue
    gauges are read from the store at scrape time. With several workers the primary serves
    the sum of every worker's values (the files under PROMETHEUS_MULTIPROC_DIR)."""
    if not config.metrics.listen:
        return []
    cache: dict[str, Any] = {"at": -1.0}

    def refresh() -> None:
        now = time.monotonic()
        if now - cache["at"] > 1.0:
            entries = store.queue_entries()
            created = min((e["created"] for e in entries), default=None)
            cache["at"] = now
            metrics.QUEUE_ENTRIES.set(len(entries))
            metrics.QUEUE_OLDEST.set(0.0 if created is None else max(time.time() - created, 0.0))
    source = metrics.REGISTRY
    if role is not None and os.environ.get(MULTIPROC_ENV):
        source = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(source)
    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry=_Scrape(source, refresh)))
    site = _QuietSite(root)
    factory: Any = site
    return [_listen(reactor, "metrics.listen", address, factory, None, role) for address in config.metrics.listen]


def _serve_api(ctx: ServerContext, reactor: Any, tls: ssl.CertificateOptions | None,
               role: WorkerRole | None = None) -> list[tuple[Any, str]]:
    """The HTTP JSON API (maild/api) on ``[api] listen`` (plain, loopback: config.py
    checks) and ``tls_listen``; handed the IMAP and SMTP code it shares (search, threads,
    submission), since front ends do not import each other."""
    config = ctx.config.api
    if not config.enabled:
        return []
    site = build_api_site(ctx, ApiHooks(search=text_search, threads=thread_tree, submit=submit))
    reactor.addSystemEventTrigger("before", "shutdown", site.close)
    factory: Any = site
    return ([(_listen(reactor, "api.listen", a, factory, None, role), f"api {a}") for a in config.listen]
            + [(_listen(reactor, "api.tls_listen", a, factory, tls, role), f"api+tls {a}")
               for a in config.tls_listen])


def setup_logging(several: bool = False) -> None:
    """Log lines to the journal (structured fields, maild/util/journal.py) or stderr; with
    several processes (the supervisor and its workers) each stderr line names its pid."""
    if journal.under_journald():  # the journal records each line's _PID itself
        logging.basicConfig(level=logging.INFO, handlers=[journal.JournalHandler()],
                            format="%(name)s: %(message)s")
    else:
        pid = "[%(process)d]" if several else ""
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format=f"%(asctime)s %(levelname)s %(name)s{pid}: %(message)s")


def serve(config: Config, reactor: Any = default_reactor, role: WorkerRole | None = None) -> int:
    """Run the daemon in this process: the whole of it, or (``role``) one worker of a tree."""
    metrics.UP_SINCE.set(time.time())
    return_large_allocations_to_the_os()
    setup_logging(role is not None)
    globalLogBeginner.beginLoggingTo([STDLibLogObserver()], redirectStandardIO=False)
    tls = tls_options(config)
    store = Store(config.data_dir, config.store, reactor, config.replication)
    reactor.suggestThreadPoolSize(16)
    primary = role is None or role.primary
    filters = build_filters(config, store, reactor, primary)
    # Connection counts, rates and login failures across the workers (maild/store/shared.py).
    tree = None if role is None else store.counters
    ctx = ServerContext(config=config, store=store, auth=Authenticator(store, config.auth, reactor, tree),
                        tls=tls, reactor=reactor, filters=filters, delivery=Delivery(store, config), tree=tree)
    ports = []
    sessions = Sessions(reactor, config.server.shutdown_grace)
    try:
        for key, section, address, implicit in listeners(config, primary=False):
            if section == "api":  # a twisted.web site, not a session factory: _serve_api
                continue
            factory_class, kwargs = _PROTOCOLS[section]
            sessions.ports.append(_listen(reactor, key.split()[0], address, sessions.track(
                factory_class(ctx, implicit_tls=implicit, **kwargs)), tls if implicit else None, role))
            ports.append(f"{section}{'+tls' if implicit else ''} {address}")
        api_ports = _serve_api(ctx, reactor, tls, role)
        sessions.ports.extend(port for port, _ in api_ports)
        ports.extend(name for _, name in api_ports)
        metric_ports = _serve_metrics(config, store, reactor, role) if primary else []
    except Exception:
        store.close()
        raise
    if role is not None:
        used = {key for key, *_ in listeners(config, primary)}
        for key, fd in role.fds.items():
            if key not in used:  # the metrics socket in a worker other than the primary
                os.close(fd)
    sessions.ports.extend(metric_ports)
    if primary:
        ports.extend(f"metrics {address}" for address in config.metrics.listen)
    _systemd(reactor)
    Reloader(reactor, ctx, tls_options, sd_notify).install()
    if config.search.enabled:
        # The full-text index (docs/search.md): its indexer thread follows the change logs;
        # stopped before the store closes (triggers of a phase run in the order added).
        search = SearchService(store, config.search)
        reactor.callWhenRunning(search.start)
        reactor.addSystemEventTrigger("after", "shutdown", search.stop)
    reactor.addSystemEventTrigger("after", "shutdown", store.close)
    reactor.addSystemEventTrigger("before", "shutdown", sessions.stop)
    runner = QueueRunner(store, config, Resolver(config.dns, reactor), reactor)
    started: list[bool] = []
    reactor.addSystemEventTrigger("before", "shutdown", lambda: runner.stop() if started else None)

    def take_writes() -> None:
        """The outbound queue and housekeeping run where writes are taken: not on a follower
        (it would send the leader's queue a second time), on a promoted one from then on.
        Every worker runs the queue (an entry's lease keeps its attempts one at a time,
        maild/queue/runner.py); housekeeping runs in the primary."""
        started.append(True)
        runner.start()
        if primary:
            _housekeeping(store, reactor)
    if store.repl_role == "standalone":
        reactor.callWhenRunning(take_writes)
    else:
        try:
            if role is not None:  # the supervisor runs replicating nodes as one process
                raise ConfigError("replication: a replicating node runs with [server] workers = 1")
            replication = ReplicationService(config, store, reactor)
            replication.on_leader.append(take_writes)
            ports.extend(replication.start())
        except Exception:
            store.close()
            raise
        reactor.addSystemEventTrigger("before", "shutdown", replication.stop)

    def ready() -> None:
        if role is None:
            log.info("maild ready: %s", ", ".join(ports) or "no listeners")
        else:  # the supervisor says "maild ready" once every worker is
            log.info("worker %d of %d ready%s", role.index, role.count, " (primary)" if primary else "")
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
