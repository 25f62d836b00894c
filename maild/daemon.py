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
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor as default_reactor
from twisted.internet import ssl, task, threads
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory
from twisted.logger import STDLibLogObserver, globalLogBeginner

from maild.auth import Authenticator
from maild.config import Address, Config, ConfigError
from maild.context import ServerContext
from maild.delivery import Delivery
from maild.dns.resolver import Resolver
from maild.filters.build import build_filters as content_filters
from maild.filters.chain import FilterChain
from maild.imap.server import ImapFactory
from maild.mailauth.filter import build_filters as mailauth_filters
from maild.pop3.server import Pop3Factory
from maild.queue.runner import QueueRunner
from maild.replication import ReplicationService
from maild.shutdown import Sessions
from maild.smtp.server import SmtpFactory
from maild.store import Store

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
    # Twisted's defaults: TLS 1.2+, its vetted cipher list, no renegotiation by the client.
    return ssl.CertificateOptions(privateKey=leaf.privateKey.original, certificate=leaf.original,
                                  extraCertChain=chain or None)


def build_filters(config: Config, store: Store, reactor: Any) -> FilterChain:
    """Policy hooks in order: authentication results first, content scanners after them
    (the spam scorer reads the authentication results)."""
    return FilterChain([*mailauth_filters(config, store, reactor), *content_filters(config, store, reactor)])


def _listen(reactor: Any, key: str, address: Address, factory: Factory,
            tls: ssl.CertificateOptions | None) -> Any:
    try:
        if tls is None:
            return reactor.listenTCP(address.port, factory, interface=address.host)
        return reactor.listenSSL(address.port, factory, tls, interface=address.host)
    except CannotListenError as exc:
        raise ConfigError(f"{key}: cannot listen on {address}: {exc.socketError}") from None


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) about our state; a no-op outside systemd."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(path)
        sock.sendall(message.encode())


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


def serve(config: Config, reactor: Any = default_reactor) -> int:
    return_large_allocations_to_the_os()
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
