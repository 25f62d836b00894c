"""A follower that starts empty copies a snapshot (taken without stopping the leader), then
follows; one further behind than `retain` is refused until `maild replica resync`."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.replication.conftest import Pair, send
from tests.replication.test_pair import _same


def test_retention_exceeded_then_resync_copies_a_snapshot(pair_factory: Callable[..., Pair]) -> None:
    pair = pair_factory(leader={"retain": 20})
    sent = send(pair.leader, 3, "early", size=50_000)  # body files: fetched after the copy
    pair.wait_caught_up()
    pair.follower.stop()
    sent += send(pair.leader, 70, "while away")  # more than retain: the log is trimmed
    pair.follower.start()
    deadline = time.monotonic() + 20
    while "retain exceeded" not in ((pair.status(pair.follower)["daemon"] or {}).get("problem") or ""):
        assert time.monotonic() < deadline, pair.follower.log()[-2000:]
        time.sleep(0.3)
    pair.follower.stop()
    result = pair.follower.cli("replica", "resync")
    assert result.returncode == 0 and "set aside" in result.stdout, result.stdout + result.stderr
    pair.follower.start()
    sent += send(pair.leader, 5, "during the copy")
    pair.wait_caught_up(timeout=60)
    assert "copying a snapshot" in pair.follower.log()
    assert "snapshot of shard 00 complete" in pair.follower.log()
    _same(pair, sent)
    result = pair.follower.cli("replica", "verify", str(pair.leader.config_path))
    assert result.returncode == 0, result.stdout
    sent += send(pair.leader, 2, "after the copy")
    pair.wait_caught_up()
    _same(pair, sent)
