"""Wiring: open the store, build the services and start the configured listeners.

Shutdown (SIGTERM, SIGINT): stop accepting connections, then close the store, which
finishes every write already queued (group commit) before the process exits.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import sys
from typing import Any

from twisted.internet import reactor as default_reactor
from twisted.internet import ssl
from twisted.internet.protocol import Factory
from twisted.logger import STDLibLogObserver, globalLogBeginner

from maild.auth import Authenticator
from maild.config import Address, Config, ConfigError
from maild.context import ServerContext
from maild.dns.resolver import Resolver
from maild.filters.chain import Filter, FilterChain
from maild.queue.runner import QueueRunner
from maild.store import Store

log = logging.getLogger("maild")

# listener section -> (module, factory class, keyword arguments)
_PROTOCOLS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "smtp": ("maild.smtp.server", "SmtpFactory", {"submission": False}),
    "submission": ("maild.smtp.server", "SmtpFactory", {"submission": True}),
    "imap": ("maild.imap.server", "ImapFactory", {}),
    "pop3": ("maild.pop3.server", "Pop3Factory", {}),
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
    except Exception as exc:  # noqa: BLE001 - OpenSSL raises several types
        raise ConfigError(f"tls.cert_file: not a PEM certificate matching tls.key_file ({exc})") from None
    # Twisted's defaults: TLS 1.2+, its vetted cipher list, no renegotiation by the client.
    return ssl.CertificateOptions(privateKey=leaf.privateKey.original, certificate=leaf.original,
                                  extraCertChain=chain or None)


def build_filters(config: Config, store: Store, reactor: Any) -> FilterChain:
    """Policy hooks in order: authentication results first, content scanners after them."""
    filters: list[Filter] = []
    for module_name, builder in (("maild.mailauth.filter", "build_filters"),
                                 ("maild.filters.build", "build_filters")):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        filters.extend(getattr(module, builder)(config, store, reactor))
    return FilterChain(filters)


def build_delivery(config: Config, store: Store, filters: FilterChain) -> Any:
    try:
        module = importlib.import_module("maild.delivery")
    except ModuleNotFoundError as exc:
        if exc.name != "maild.delivery":
            raise
        return None
    return module.Delivery(store, config)


def _listen(reactor: Any, address: Address, factory: Factory, tls: ssl.CertificateOptions | None) -> None:
    if tls is None:
        reactor.listenTCP(address.port, factory, interface=address.host)
    else:
        reactor.listenSSL(address.port, factory, tls, interface=address.host)


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


def serve(config: Config, reactor: Any = default_reactor) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    globalLogBeginner.beginLoggingTo([STDLibLogObserver()], redirectStandardIO=False)
    tls = tls_options(config)
    store = Store(config.data_dir, config.store, reactor)
    reactor.suggestThreadPoolSize(16)
    filters = build_filters(config, store, reactor)
    ctx = ServerContext(config=config, store=store, auth=Authenticator(store, config.auth, reactor),
                        tls=tls, reactor=reactor, filters=filters)
    ctx.delivery = build_delivery(config, store, filters)
    ports = []
    try:
        for section, (module_name, class_name, kwargs) in _PROTOCOLS.items():
            listeners = getattr(config, section)
            if not listeners.enabled:
                continue
            factory_class = getattr(importlib.import_module(module_name), class_name)
            for address in listeners.listen:
                _listen(reactor, address, factory_class(ctx, implicit_tls=False, **kwargs), None)
                ports.append(f"{section} {address}")
            for address in listeners.tls_listen:
                _listen(reactor, address, factory_class(ctx, implicit_tls=True, **kwargs), tls)
                ports.append(f"{section}+tls {address}")
    except Exception:
        store.close()
        raise
    reactor.addSystemEventTrigger("after", "shutdown", store.close)
    runner = QueueRunner(store, config, Resolver(config.dns, reactor), reactor)
    reactor.callWhenRunning(runner.start)
    reactor.addSystemEventTrigger("before", "shutdown", runner.stop)
    reactor.callWhenRunning(lambda: (log.info("maild ready: %s", ", ".join(ports) or "no listeners"),
                                     sd_notify("READY=1")))
    reactor.run()
    log.info("maild stopped")
    return 0
