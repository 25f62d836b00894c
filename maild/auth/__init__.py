"""Password authentication shared by SMTP AUTH, IMAP and POP3, and the auth penalty.

argon2id verification costs tens of milliseconds of CPU, so it runs in a thread. The penalty
(docs/security.md; Dovecot's auth_penalty is the model) is a delay applied *before* a
password is verified, so an attacker who hangs up early learns nothing:

- per client IP: after failures from an IP, every attempt from it waits
  ``failure_delay * 2**(failures-1)`` (at most ``max_failure_delay``), whatever the
  password; attempts from a penalised IP are verified one at a time, at most
  ``max_pending_per_ip`` queued, so parallel connections do not multiply the rate (an IP
  without failures logs in in parallel: an office behind one NAT at nine o'clock). A
  success clears only the failures for *that* user name from that IP (the user's own
  typos), never the others: logging into one's own account does not reset the counter.
- per account: past ``account_free_failures`` failures for one user name from any IP,
  attempts for it wait too — except from IPs that logged into that account before, so a
  spray from many IPs cannot lock the real user out of the IPs they use.
- a failure is answered only after the delay it earned, as before;
- an attempt whose client has gone by the end of its wait is not verified at all;
- with several worker processes (``tree``, maild/util/shared.py) the failures per client
  IP are counted across the workers too, so a client cannot spread its guesses over them;
  the rest (per account, the queue of a penalised IP, trusted IPs) is per worker.

Every failure is one log line (``maild.auth``, :data:`FAILURE_FORMAT`) that the fail2ban
filter in etc/fail2ban/filter.d/maild.conf matches, and is counted in ``failures``.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
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
    from maild.util.shared import SharedTable

log = logging.getLogger("maild.auth")

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


# One line per failed login, for fail2ban (etc/fail2ban/filter.d/maild.conf): the user name
# last and quoted, so nothing the client chose can stand where the filter looks for the IP.
FAILURE_FORMAT = "authentication failed: proto=%s rip=%s mech=%s reason=%s user=%s"
WINDOW = 3600.0  # failures older than this (since the last one) are forgotten
TRUST_DAYS = 30  # an IP that logged into an account is exempt from its account delay this long
MAX_TRACKED = 100_000  # IPs and user names remembered at most (bounded memory)
MAX_NAMES_PER_IP = 32


def quote_user(name: str) -> str:
    """The user name as given, in double quotes with \\, " and control characters escaped."""
    out = []
    for ch in name[:256]:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


@dataclass
class _Client:
    """One client IP: failures per user name tried from it, and its queue of attempts."""

    failures: dict[str, int] = field(default_factory=dict)
    last: float = 0.0
    pending: int = 0
    tail: defer.Deferred[None] | None = None  # fires when the latest queued attempt is done

    def count(self) -> int:
        return sum(self.failures.values())


@dataclass
class _Account:
    failures: int = 0
    last: float = 0.0
    trusted: dict[str, float] = field(default_factory=dict)  # IP -> last successful login


class Authenticator:
    def __init__(self, store: Store, config: AuthConfig, reactor: Any, tree: SharedTable | None = None) -> None:
        self.store = store
        self.config = config
        self.reactor = reactor
        self.tree = tree
        self._clients: dict[str, _Client] = {}
        self._accounts: dict[str, _Account] = {}
        self.failures: collections.Counter[str] = collections.Counter()  # protocol -> failed logins

    def _clock(self) -> float:
        return float(self.reactor.seconds())

    def _doubling(self, count: int) -> float:
        if count <= 0:
            return 0.0
        return min(self.config.failure_delay * (2 ** min(count - 1, 32)), self.config.max_failure_delay)

    def delay_for(self, client_ip: str, username: str = "") -> float:
        """The wait before verifying the next attempt from ``client_ip`` for ``username``."""
        now = self._clock()
        client = self._clients.get(client_ip)
        delay = 0.0
        if client is not None and now - client.last <= WINDOW:
            delay = self._doubling(client.count())
        if self.tree is not None:
            delay = max(delay, self._doubling(self._tree_failures(client_ip, 0)))
        account = self._accounts.get(username.lower())
        if account is not None and now - account.last <= WINDOW and client_ip not in account.trusted:
            delay = max(delay, self._doubling(account.failures - self.config.account_free_failures + 1))
        return delay

    def authenticate(self, username: str, password: str, client_ip: str, protocol: str = "",
                     mechanism: str = "", alive: Callable[[], bool] | None = None) -> defer.Deferred[User | None]:
        """Deferred[User | None]; unknown users cost the same time as wrong passwords.
        ``alive`` says whether the client still waits (a gone one is not verified)."""
        return defer.Deferred.fromCoroutine(
            self._authenticate(username, password, client_ip, protocol, mechanism, alive))

    def authenticate_token(self, lookup: Callable[[], User | None], client_ip: str, protocol: str,
                           mechanism: str) -> defer.Deferred[User | None]:
        """A bearer token (the HTTP API's) under the same per-IP penalty as passwords:
        ``lookup`` is called after the IP's delay and answers the token's user or None.
        Tokens name no account, so a wrong token counts against the IP only (a spray of
        bad tokens from many IPs delays no real user)."""
        async def check() -> User | None:
            return lookup()
        return defer.Deferred.fromCoroutine(
            self._authenticate("", "", client_ip, protocol, mechanism, None, check))

    async def _authenticate(self, username: str, password: str, client_ip: str, protocol: str,
                            mechanism: str, alive: Callable[[], bool] | None,
                            check: Callable[[], Awaitable[User | None]] | None = None) -> User | None:
        client = self._clients.get(client_ip)
        queued = client is not None and bool(client.failures) and self._clock() - client.last <= WINDOW
        mine: defer.Deferred[None] | None = None
        if queued:
            # A penalised IP: its attempts run one at a time, each after its delay.
            assert client is not None
            if client.pending >= self.config.max_pending_per_ip:
                self._failed(username, client_ip, protocol, mechanism, "busy")
                return None
            client.pending += 1
            previous, mine = client.tail, defer.Deferred()
            client.tail = mine
        try:
            if mine is not None and previous is not None:
                await previous
            delay = self.delay_for(client_ip, username)
            if delay:
                await deferLater(self.reactor, delay, lambda: None)
            if alive is not None and not alive():
                return None  # the client hung up while it waited: nothing verified, nothing learnt
            if check is not None:
                user = await check()
                ok = user is not None
            else:
                user = self.store.user(username)
                password_hash = user.password_hash if user else _DUMMY_HASH
                ok = await self._verify(password_hash, password)
            if ok and user is not None:
                self._succeeded(username, client_ip)
                return user
            self._record_failure(username, client_ip)
            self._failed(username, client_ip, protocol, mechanism, "password")
            delay = self.delay_for(client_ip, username)
            if delay:  # and the failure itself is answered late (Dovecot's auth_failure_delay)
                await deferLater(self.reactor, delay, lambda: None)
            return None
        finally:
            if mine is not None and client is not None:
                client.pending -= 1
                if client.tail is mine:
                    client.tail = None
                mine.callback(None)

    def _verify(self, password_hash: str, password: str) -> defer.Deferred[bool]:
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                         verify_password, password_hash, password)

    def _succeeded(self, username: str, client_ip: str) -> None:
        name = username.lower()
        client = self._clients.get(client_ip)
        if client is not None:
            typos = client.failures.pop(name, 0)  # the user's own typos, not the names others tried
            if typos and self.tree is not None:
                self._tree_failures(client_ip, -typos)
            if not client.failures and not client.pending:
                del self._clients[client_ip]
        if not name:
            return
        account = self._account(name)
        account.failures = 0
        account.trusted.pop(client_ip, None)
        account.trusted[client_ip] = self._clock()
        while len(account.trusted) > 16:
            account.trusted.pop(next(iter(account.trusted)))

    def _account(self, name: str) -> _Account:
        account = self._accounts.get(name)
        if account is None:
            if len(self._accounts) >= MAX_TRACKED:
                self._prune()
            account = self._accounts[name] = _Account()
        return account

    def _record_failure(self, username: str, client_ip: str) -> None:
        now = self._clock()
        name = username.lower()
        client = self._clients.get(client_ip)
        if client is None:
            if len(self._clients) >= MAX_TRACKED:
                self._prune()
            client = self._clients[client_ip] = _Client()
        if now - client.last > WINDOW:
            client.failures.clear()
        key = name if name in client.failures or len(client.failures) < MAX_NAMES_PER_IP else "*"
        client.failures[key] = client.failures.get(key, 0) + 1
        client.last = now
        if self.tree is not None:
            self._tree_failures(client_ip, 1)
        if not name:  # a token: no account to count against
            return
        account = self._account(name)
        if now - account.last > WINDOW:
            account.failures = 0
        account.failures += 1
        account.last = now

    def _tree_failures(self, client_ip: str, change: int) -> int:
        """The failures from ``client_ip`` in every worker within WINDOW, after adding ``change``."""
        now = self._clock()

        def update(count: float, last: float, _: float) -> tuple[float, float, int]:
            if now - last > WINDOW:
                count = 0.0
            count = max(count + change, 0.0)
            return count, (now if change > 0 else last), int(count)
        assert self.tree is not None
        return self.tree.update(f"auth ip {client_ip}", update, 0)

    def _failed(self, username: str, client_ip: str, protocol: str, mechanism: str, reason: str) -> None:
        self.failures[protocol or "?"] += 1
        metrics.AUTH_FAILURES.inc()
        log.warning(FAILURE_FORMAT, protocol or "?", client_ip, mechanism or "?", reason, quote_user(username))

    def _prune(self) -> None:
        """Bounded memory under a distributed attack: forget what no longer delays anyone."""
        now = self._clock()
        for ip, client in list(self._clients.items()):
            if not client.pending and now - client.last > WINDOW:
                del self._clients[ip]
        if len(self._clients) >= MAX_TRACKED:
            for ip in [ip for ip, c in self._clients.items() if not c.pending]:
                del self._clients[ip]
        horizon = TRUST_DAYS * 86400
        for name, account in list(self._accounts.items()):
            account.trusted = {ip: t for ip, t in account.trusted.items() if now - t <= horizon}
            if not account.trusted and now - account.last > WINDOW:
                del self._accounts[name]
        if len(self._accounts) >= MAX_TRACKED:
            for name in [n for n, a in self._accounts.items() if not a.trusted]:
                del self._accounts[name]


_DUMMY_HASH = hash_password("maild-dummy-password-for-timing")
