"""Unit tests of the token buckets and connection counters (maild.smtp.limits)."""

from __future__ import annotations

from maild.util.limits import ConnectionCounter, TokenBuckets


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_burst_then_refills() -> None:
    clock = Clock()
    buckets = TokenBuckets(6, clock)  # 6 per minute: one every 10 s
    assert [buckets.take("1.2.3.4") for _ in range(7)] == [True] * 6 + [False]
    assert buckets.take("5.6.7.8")  # independent keys
    clock.now += 9
    assert not buckets.take("1.2.3.4")
    clock.now += 1.5
    assert buckets.take("1.2.3.4")
    assert not buckets.take("1.2.3.4")


def test_zero_is_unlimited() -> None:
    buckets = TokenBuckets(0, Clock())
    assert all(buckets.take("x") for _ in range(10_000))


def test_connection_counter() -> None:
    counter = ConnectionCounter(max_total=3, max_per_ip=2)
    assert counter.acquire("a") and counter.acquire("a")
    assert not counter.acquire("a")
    assert counter.acquire("b")
    assert not counter.acquire("c")  # total reached
    counter.release("a")
    assert counter.acquire("c")
    for ip in ("a", "b", "c"):
        counter.release(ip)
    assert counter.total == 0 and counter.per_ip == {}
