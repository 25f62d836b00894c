"""Abuse limits shared by the sessions of one listener section (SMTP, IMAP, POP3): connection counts and
token-bucket message rates. Pure logic with an injected clock, so tests need no sleeps."""

from __future__ import annotations

from collections.abc import Callable

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
        tokens = min(self.capacity, tokens + (now - then) * self.rate)
        if tokens < 1.0:
            self._state[key] = (tokens, now)
            return False
        if len(self._state) >= MAX_TRACKED_KEYS and key not in self._state:
            self._prune(now)
        self._state[key] = (tokens - 1.0, now)
        return True

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
