"""Sync mode: a 250 means the follower has the message (fsynced); with the follower away,
on_timeout decides between 451 (tempfail) and answering anyway, loudly (degrade)."""

from __future__ import annotations

import smtplib
import time
from collections.abc import Callable

import pytest

from tests.replication.conftest import Pair, send


def _wait_connected(pair: Pair) -> None:
    deadline = time.monotonic() + 30
    while not pair.status(pair.leader)["daemon"]["peers"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_acknowledged_means_on_the_follower(pair_factory: Callable[..., Pair]) -> None:
    pair = pair_factory(leader={"mode": "sync", "sync_timeout": 2.0, "on_timeout": "tempfail"})
    _wait_connected(pair)
    for i in range(5):
        send(pair.leader, 1, f"sync{i}")
        # no waiting: the 250 came after the follower's fsync
        leader, follower = pair.positions(pair.leader), pair.positions(pair.follower)
        assert all(follower[w] >= leader[w] for w in leader), (leader, follower)

    pair.follower.stop()
    started = time.monotonic()
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(pair.leader, 1, "nobody to confirm")
    assert refused.value.smtp_code == 451 and time.monotonic() - started < 10
    pair.follower.start()
    _wait_connected(pair)
    send(pair.leader, 1, "confirmed again")
    pair.wait_caught_up()


def test_degrade_answers_and_says_so(pair_factory: Callable[..., Pair]) -> None:
    pair = pair_factory(leader={"mode": "sync", "sync_timeout": 1.0, "on_timeout": "degrade"})
    _wait_connected(pair)
    pair.follower.stop()
    send(pair.leader, 2, "degraded")  # 250 without the follower
    deadline = time.monotonic() + 5  # the daemon writes its status every second
    while not pair.status(pair.leader)["daemon"]["degraded"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert "DEGRADED" in pair.leader.log()
    text = pair.leader.cli("replica", "status").stdout
    assert "SYNC MODE DEGRADED" in text
    pair.follower.start()
    pair.wait_caught_up()
