"""Password authentication shared by SMTP AUTH, IMAP and POP3.

argon2id verification costs tens of milliseconds of CPU, so it runs in a thread; failures
from one client IP are answered only after a delay that doubles per failure (like
Dovecot's auth_failure_delay), which slows guessing without locking anyone out.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import TYPE_CHECKING, Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from twisted.internet import defer, threads
from twisted.internet.task import deferLater

from maild.config import AuthConfig
from maild.store.types import User
from maild.util import metrics

if TYPE_CHECKING:
    from maild.store import Store

# argon2id with OWASP's recommended minimum (19 MiB, 2 passes, 1 lane): about 15 ms of one
# core per login, so a 2-core server still takes dozens of logins a second. Hashes keep
# their parameters, so raising these later leaves existing passwords valid.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


class SaslError(ValueError):
    """A malformed SASL exchange (answer 501 / BAD / -ERR)."""


def parse_sasl_plain(data: bytes) -> tuple[str, str, str]:
    """RFC 4616: base64 of ``authzid NUL authcid NUL passwd`` -> (authzid, authcid, passwd)."""
    try:
        decoded = base64.b64decode(data.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise SaslError("invalid base64 or UTF-8 in PLAIN response") from None
    parts = decoded.split("\0")
    if len(parts) != 3 or not parts[1]:
        raise SaslError("PLAIN response must be authzid NUL authcid NUL passwd")
    return parts[0], parts[1], parts[2]


class Authenticator:
    def __init__(self, store: Store, config: AuthConfig, reactor: Any) -> None:
        self.store = store
        self.config = config
        self.reactor = reactor
        self._failures: dict[str, tuple[int, float]] = {}  # ip -> (count, last failure)

    def delay_for(self, client_ip: str) -> float:
        count, last = self._failures.get(client_ip, (0, 0.0))
        if count == 0 or time.monotonic() - last > 3600:
            return 0.0
        return min(self.config.failure_delay * (2 ** (count - 1)), self.config.max_failure_delay)

    @defer.inlineCallbacks
    def authenticate(self, username: str, password: str, client_ip: str):  # type: ignore[no-untyped-def]
        """Deferred[User | None]; unknown users cost the same time as wrong passwords."""
        user: User | None = self.store.user(username)
        password_hash = user.password_hash if user else _DUMMY_HASH
        ok = yield threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                             verify_password, password_hash, password)
        if ok and user is not None:
            self._failures.pop(client_ip, None)
            return user
        metrics.AUTH_FAILURES.inc()
        count, _ = self._failures.get(client_ip, (0, 0.0))
        self._failures[client_ip] = (count + 1, time.monotonic())
        if len(self._failures) > 100_000:  # bounded memory under a distributed attack
            self._failures.clear()
        delay = self.delay_for(client_ip)
        if delay:
            yield deferLater(self.reactor, delay, lambda: None)
        return None


_DUMMY_HASH = hash_password("maild-dummy-password-for-timing")
