"""maild.auth.Authenticator's penalty (docs/security.md) on the reactor's clock: the delay
comes before verification, per IP and per account, without a lockout of the real user."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from maild.auth import Authenticator
from maild.config import AuthConfig

RIGHT = "right-password"


class _Auth(Authenticator):
    """Verification without argon2 or threads; counts what was verified."""

    def __init__(self, **config: Any) -> None:
        users = {name: SimpleNamespace(address=name, password_hash="h") for name in ("bob", "alice")}
        super().__init__(SimpleNamespace(user=users.get), AuthConfig(**config), Clock())
        self.verified: list[str] = []

    def _verify(self, password_hash: str, password: str) -> defer.Deferred[bool]:
        self.verified.append(password)
        return defer.succeed(password == RIGHT)

    def attempt(self, user: str, password: str, ip: str, alive: list[bool] | None = None) -> list[Any]:
        out: list[Any] = []
        self.authenticate(user, password, ip, "imap", "LOGIN",
                          (lambda: alive[0]) if alive is not None else None).addBoth(out.append)
        return out


def _wait(auth: _Auth, seconds: float) -> None:
    """Let ``seconds`` pass on the clock in 0.25 s steps (exact in binary; the timers set
    meanwhile fire too, which one advance() would not do)."""
    auth.reactor.pump([0.25] * round(seconds * 4))


def test_the_delay_comes_before_verifying_and_a_client_gone_is_not_verified() -> None:
    auth = _Auth(failure_delay=1.0, max_failure_delay=30.0)
    first = auth.attempt("bob", "guess1", "192.0.2.1")
    assert auth.verified == ["guess1"] and first == []  # failure answered after its 1 s delay
    _wait(auth, 1.0)
    assert first == [None]
    alive = [True]
    second = auth.attempt("bob", RIGHT, "192.0.2.1", alive)
    assert auth.verified == ["guess1"]  # waits 1 s before verifying, right password or not
    _wait(auth, 0.6)
    alive[0] = False  # the guesser hangs up after 0.6 s
    _wait(auth, 0.5)
    assert auth.verified == ["guess1"] and second == [None]  # never verified
    # Another IP, not penalised, is verified at once.
    assert auth.attempt("bob", RIGHT, "192.0.2.9")[0].address == "bob"


def test_the_delay_doubles_up_to_its_ceiling() -> None:
    auth = _Auth(failure_delay=1.0, max_failure_delay=4.0, account_free_failures=100)
    delays = []
    for n in range(5):
        delays.append(auth.delay_for("192.0.2.1", "bob"))
        auth.attempt("bob", f"guess{n}", "192.0.2.1")
        _wait(auth, 60)
    assert delays == [0.0, 1.0, 2.0, 4.0, 4.0]
    _wait(auth, 3600)
    assert auth.delay_for("192.0.2.1", "bob") == 0.0  # forgotten an hour after the last failure


def test_a_success_clears_only_its_own_names_failures() -> None:
    auth = _Auth(failure_delay=1.0, max_failure_delay=30.0)
    auth.attempt("bob", "guess", "192.0.2.1")
    _wait(auth, 10)
    auth.attempt("alice", RIGHT, "192.0.2.1")  # the attacker's own account
    _wait(auth, 10)
    assert auth.delay_for("192.0.2.1", "bob") == 1.0  # bob's failure is still counted
    auth.attempt("alice", "typo", "192.0.2.2")  # a real user's typo, then success
    _wait(auth, 10)
    auth.attempt("alice", RIGHT, "192.0.2.2")
    _wait(auth, 10)
    assert auth.delay_for("192.0.2.2", "alice") == 0.0


def test_an_account_has_its_own_budget_and_known_ips_are_exempt() -> None:
    auth = _Auth(failure_delay=1.0, max_failure_delay=8.0, account_free_failures=3)
    auth.attempt("bob", RIGHT, "198.51.100.1")  # bob's own laptop logs in
    for n in range(4):  # a spray: one guess from each of many IPs
        auth.attempt("bob", "guess", f"203.0.113.{n}")
        _wait(auth, 30)
    assert auth.delay_for("203.0.113.200", "bob") == 2.0  # a new IP waits for bob
    assert auth.delay_for("203.0.113.200", "alice") == 0.0  # not for others
    assert auth.delay_for("198.51.100.1", "bob") == 0.0  # bob's own IP is not locked out
    assert auth.attempt("bob", RIGHT, "198.51.100.1")[0].address == "bob"


def test_attempts_from_one_ip_run_one_at_a_time_and_the_queue_is_bounded(
        caplog: pytest.LogCaptureFixture) -> None:
    auth = _Auth(failure_delay=1.0, max_failure_delay=1.0, max_pending_per_ip=3)
    auth.attempt("bob", "guess", "192.0.2.1")
    _wait(auth, 1)
    with caplog.at_level(logging.WARNING, logger="maild.auth"):
        results = [auth.attempt("bob", f"p{n}", "192.0.2.1") for n in range(5)]
    assert results[3] == [None] and results[4] == [None]  # refused at once, unverified
    assert sum("reason=busy" in r.getMessage() for r in caplog.records) == 2
    _wait(auth, 1.0)  # the first: its delay, verified, failed (1 s to answer)
    assert auth.verified == ["guess", "p0"]
    _wait(auth, 1.0)
    assert auth.verified == ["guess", "p0"]  # the second waits for the first's answer
    _wait(auth, 10)
    assert auth.verified == ["guess", "p0", "p1", "p2"]
    assert auth.failures["imap"] == 6


def test_failure_lines_quote_the_user_name(caplog: pytest.LogCaptureFixture) -> None:
    auth = _Auth()
    with caplog.at_level(logging.WARNING, logger="maild.auth"):
        auth.attempt('x" rip=6.6.6.6 \n', "guess", "192.0.2.1")
    assert caplog.records[0].getMessage() == (
        'authentication failed: proto=imap rip=192.0.2.1 mech=LOGIN reason=password user="x\\" rip=6.6.6.6 \\x0a"')


def test_an_ip_without_failures_logs_in_in_parallel() -> None:
    """An office behind one NAT at nine o'clock: no queue, no busy refusals."""
    auth = _Auth(max_pending_per_ip=2)
    results = [auth.attempt("alice", RIGHT, "192.0.2.1") for _ in range(20)]
    assert all(r and r[0].address == "alice" for r in results)
