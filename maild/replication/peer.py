"""Peer authentication: TLS always, then a pinned certificate, a shared secret, or both.

Both nodes present their [tls] certificate. With ``peer_fingerprints`` each checks the
other's certificate SHA-256 against the list (mutual TLS, pinned: no CA is trusted). With
``secret_file`` each proves the secret by an HMAC over both nonces and the TLS channel's
exporter value (RFC 9266 tls-exporter), so a man in the middle can neither learn the
secret nor relay the proof into another TLS session. A configuration with neither is
refused at start-up: the port never serves an unauthenticated subscriber.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IOpenSSLServerConnectionCreator
from zope.interface import implementer

from maild.config import ConfigError, ReplicationConfig, TlsConfig
from maild.replication.wire import mac

EXPORTER_LABEL = b"EXPORTER-Channel-Binding"


@dataclass(frozen=True)
class PeerAuth:
    fingerprints: frozenset[str]  # lower-case hex, no colons
    secret: bytes | None

    def check_certificate(self, transport: Any) -> str | None:
        """Why the peer's certificate is not acceptable; None when it is."""
        if not self.fingerprints:
            return None
        cert = transport.getPeerCertificate()
        if cert is None:
            return "no certificate presented"
        digest = cert.digest("sha256").decode().replace(":", "").lower()
        if digest not in self.fingerprints:
            return f"certificate {digest[:16]}... is not pinned"
        return None

    def binding(self, transport: Any) -> str:
        """The TLS session's exporter value (hex): the secret's proof is bound to it."""
        handle = transport.getHandle()
        return bytes(handle.export_keying_material(EXPORTER_LABEL, 32)).hex()

    def proof(self, side: str, mine: str, theirs: str, binding: str) -> str:
        assert self.secret is not None
        return mac(self.secret, side, mine, f"{theirs} {binding}")

    def verify(self, side: str, theirs: str, mine: str, binding: str, given: str) -> bool:
        return hmac.compare_digest(self.proof(side, theirs, mine, binding), str(given))


def load(config: ReplicationConfig) -> PeerAuth:
    prints = set()
    for i, text in enumerate(config.peer_fingerprints):
        digits = text.replace(":", "").lower()
        if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
            raise ConfigError(f"replication.peer_fingerprints[{i}]: expected 64 hex digits (SHA-256)")
        prints.add(digits)
    secret = None
    if config.secret_file is not None:
        try:
            secret = Path(config.secret_file).read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"replication.secret_file: cannot read {exc.filename}: {exc.strerror}") from None
        if len(secret) < 16:
            raise ConfigError("replication.secret_file: the secret must be at least 16 octets")
    if not prints and secret is None:
        raise ConfigError("replication: set secret_file or peer_fingerprints (or both): "
                          "peers must authenticate each other")
    return PeerAuth(frozenset(prints), secret)


@implementer(IOpenSSLClientConnectionCreator, IOpenSSLServerConnectionCreator)
class ContextFactory:
    """TLS 1.2+ with this node's certificate, asking the peer for its own; the peer's is
    judged by :meth:`PeerAuth.check_certificate` after the handshake, not by a CA."""

    def __init__(self, tls: TlsConfig, server: bool) -> None:
        if tls.cert_file is None or tls.key_file is None:
            raise ConfigError("replication needs [tls] cert_file and key_file")
        self._context = SSL.Context(SSL.TLS_SERVER_METHOD if server else SSL.TLS_CLIENT_METHOD)
        self._context.set_min_proto_version(SSL.TLS1_2_VERSION)
        try:
            self._context.use_certificate_chain_file(str(tls.cert_file))
            self._context.use_privatekey_file(str(tls.key_file))
        except SSL.Error as exc:
            raise ConfigError(f"tls.cert_file: cannot be used for replication ({exc})") from None
        self._context.set_verify(SSL.VERIFY_PEER, lambda *_: True)

    def getContext(self) -> SSL.Context:
        return self._context

    def clientConnectionForTLS(self, tls_protocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tls_protocol)
        return connection

    serverConnectionForTLS = clientConnectionForTLS
