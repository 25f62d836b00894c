"""Abuse limits shared by the sessions of one listener section (SMTP, IMAP, POP3): connection counts and
token-bucket message rates, and the POP3 maildrop locks. Pure logic with an injected clock, so tests need
no sleeps.

With several worker processes the same questions are asked of the tree's
:class:`~maild.util.shared.SharedTable` instead (``Tree*`` below, made when the daemon
has one): a client's connections, messages and locks count in every worker.
"""

from __future__ import annotations

from collections.abc import Callable

from maild.util.shared import SharedTable

MAX_TRACKED_KEYS = 100_000  # bounded memory when many addresses come and go


class TokenBuckets:
    """One bucket per key holding up to ``per_minute`` tokens, refilled continuously at
    ``per_minute`` per 60 seconds; ``per_minute == 0`` means unlimited."""

    def __init__(self, per_minute: int, clock: Callable[[], float]) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self._state: dict[str, tuple[float, float]] = {}  # key -> (tokens, time)

    def take(self, key: str) -> bool:
        """Take one token for ``key``; False when its bucket is empty."""
        if self.capacity == 0:
            return True
        now = self.clock()
        tokens, then = self._state.get(key, (self.capacity, now))
        tokens, taken = self._refill_and_take(tokens, then, now)
        if taken and len(self._state) >= MAX_TRACKED_KEYS and key not in self._state:
            self._prune(now)
        self._state[key] = (tokens, now)
        return taken

    def _refill_and_take(self, tokens: float, then: float, now: float) -> tuple[float, bool]:
        """The bucket refilled since ``then``, less one token if it holds one."""
        tokens = min(self.capacity, tokens + (now - then) * self.rate)
        if tokens < 1.0:
            return tokens, False
        return tokens - 1.0, True

    def _prune(self, now: float) -> None:
        """Forget buckets that have refilled completely (they hold no information)."""
        full = [key for key, (tokens, then) in self._state.items()
                if tokens + (now - then) * self.rate >= self.capacity]
        for key in full:
            del self._state[key]
        if len(self._state) >= MAX_TRACKED_KEYS:
            self._state.clear()


class Slot:
    """One counted connection; :meth:`release` gives it back (once, however often called)."""

    __slots__ = ("_counter", "ip")

    def __init__(self, counter: ConnectionCounter, ip: str) -> None:
        self._counter: ConnectionCounter | None = counter
        self.ip = ip

    def release(self) -> None:
        counter, self._counter = self._counter, None
        if counter is not None:
            counter.release(self.ip)


class ConnectionCounter:
    """Connections of one protocol section, in total and per client IP."""

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.total = 0
        self.per_ip: dict[str, int] = {}

    def acquire(self, ip: str) -> Slot | None:
        """A slot for a new connection from ``ip``, or None when a limit is reached."""
        if self.total >= self.max_total or self.per_ip.get(ip, 0) >= self.max_per_ip:
            return None
        self.total += 1
        self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
        return Slot(self, ip)

    def release(self, ip: str) -> None:
        self.total -= 1
        left = self.per_ip.get(ip, 1) - 1
        if left:
            self.per_ip[ip] = left
        else:
            self.per_ip.pop(ip, None)


class TreeTokenBuckets(TokenBuckets):
    """The same buckets, kept in the tree's shared table under ``name``."""

    def __init__(self, per_minute: int, clock: Callable[[], float], table: SharedTable, name: str) -> None:
        super().__init__(per_minute, clock)
        self.table = table
        self.name = name

    def take(self, key: str) -> bool:
        if self.capacity == 0:
            return True
        now = self.clock()

        def change(tokens: float, then: float, _: float) -> tuple[float, float, bool]:
            if then == 0.0:  # a new bucket is full
                tokens, then = self.capacity, now
            tokens, taken = self._refill_and_take(tokens, then, max(now, then))
            return tokens, max(now, then), taken
        return self.table.update(f"{self.name} {key}", change, True)


class TreeConnectionCounter(ConnectionCounter):
    """Connections of one protocol section counted over every worker of the tree."""

    def __init__(self, max_total: int, max_per_ip: int, table: SharedTable, section: str) -> None:
        super().__init__(max_total, max_per_ip)
        self.table = table
        self.section = section

    def _keys(self, ip: str) -> tuple[str, str]:
        return f"{self.section} connections", f"{self.section} connections {ip}"

    def acquire(self, ip: str) -> Slot | None:
        total, per_ip = self._keys(ip)
        if not self.table.acquire([(total, self.max_total), (per_ip, self.max_per_ip)]):
            return None
        return Slot(self, ip)

    def release(self, ip: str) -> None:
        self.table.release(list(self._keys(ip)))


class MaildropLocks:
    """POP3 maildrop locks (RFC 1939 §8): a user's maildrop is held by one session at once."""

    def __init__(self) -> None:
        self.held: set[str] = set()

    def acquire(self, user: str) -> bool:
        """Lock ``user``'s maildrop; False when a session holds it already."""
        if user in self.held:
            return False
        self.held.add(user)
        return True

    def release(self, user: str) -> None:
        self.held.discard(user)


class TreeMaildropLocks(MaildropLocks):
    """The same locks, held across every worker of the tree."""

    def __init__(self, table: SharedTable) -> None:
        super().__init__()
        self.table = table

    def acquire(self, user: str) -> bool:
        return self.table.acquire([(f"pop3 lock {user}", 1)])

    def release(self, user: str) -> None:
        self.table.release([f"pop3 lock {user}"])
