"""The transport under a maild connection, as one interface the type checker can follow.

Twisted's ``Protocol.transport`` is declared ``ITransport | None``; the TCP and TLS
transports maild runs on (``twisted.internet.tcp``, ``twisted.protocols.tls``) provide
more: ``abortConnection``, ``startTLS``, producer/consumer flow control, ``getHandle``.
A protocol class that uses those declares ``transport: ConnectionTransport``.
"""

from __future__ import annotations

from twisted.internet.interfaces import IConsumer, IPushProducer, ISystemHandle, ITLSTransport


class ConnectionTransport(ITLSTransport, IConsumer, IPushProducer, ISystemHandle):
    """A connected TCP transport, possibly TLS, that is also a push producer and consumer."""
