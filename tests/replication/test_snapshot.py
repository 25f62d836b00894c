"""A follower that starts empty copies a snapshot (taken without stopping the leader), then
follows; one further behind than `retain` copies one by itself when it never led, and is
refused until `maild replica resync` when it did (it may hold writes no other node has)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from tests.replication.conftest import Pair, send
from tests.replication.test_pair import _same


def test_retention_exceeded_follower_resyncs_by_itself(pair_factory: Callable[..., Pair]) -> None:
    pair = pair_factory(leader={"retain": 20})
    sent = send(pair.leader, 3, "early", size=50_000)  # body files already on the follower
    pair.wait_caught_up()
    before = pair.positions(pair.follower)
    pair.follower.stop()
    sent += send(pair.leader, 70, "while away", size=20_000)  # more than retain: trimmed
    oldest = {w: r["oldest"] for w, r in pair.status(pair.leader)["environments"].items()}
    assert any(oldest[w] > before[w] + 1 for w in before), (before, oldest)
    pair.follower.start()
    sent += send(pair.leader, 5, "during the copy")
    pair.wait_caught_up(timeout=60)
    log = pair.follower.log()
    assert "never led, so it replaces it with a snapshot copy automatically" in log, log[-3000:]
    assert "snapshot of shard 00 complete" in log
    assert "retain exceeded: maild replica resync" not in log
    assert not (pair.follower.data_dir / "set-aside").exists()
    _same(pair, sent)
    result = pair.follower.cli("replica", "verify", str(pair.leader.config_path))
    assert result.returncode == 0, result.stdout
    sent += send(pair.leader, 2, "after the copy")
    pair.wait_caught_up()
    _same(pair, sent)  # the fixture runs fsck on both nodes at the end


def test_retention_exceeded_former_leader_refused_then_resync(pair_factory: Callable[..., Pair]) -> None:
    pair = pair_factory(leader={"retain": 20})
    sent = send(pair.leader, 3, "early", size=50_000)  # body files: fetched after the copy
    pair.wait_caught_up()
    pair.follower.stop()
    # It led once (`maild replica promote` marks that for good; the role was set back by
    # hand, not by `maild replica resync`): its data may hold mail no other node has.
    state_file = pair.follower.data_dir / "replication.json"
    state = json.loads(state_file.read_text())
    state["led"] = True
    state_file.write_text(json.dumps(state))
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
