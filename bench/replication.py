"""Replication: SMTP ingest standalone vs async leader vs sync leader, in one run; the
replication lag under that load (p50/p99, leader commit to follower commit); and the rate
at which a follower applies a backlog of log records (docs/replication.md).

Two throwaway `maild serve` processes (bench.peers.Maild) on loopback, peers authenticated
by a shared secret over TLS. Ingest: 20 sessions over reused connections send 5 KB
messages to one user (bench.smtp_ingest's client); in sync mode each 250 waits for the
follower's fsync. Apply: the follower is stopped, the leader takes the messages, the
follower is started and timed until its positions equal the leader's.

    python -m bench --only replication
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.peers import HOST, Maild, _stop, free_port, make_users
from bench.smtp_ingest import SESSIONS, _drive, _row

SIZE = 5 * 1024
MESSAGES = (2000, 300)  # full run, quick run


def _replica_status(server: Maild) -> dict[str, Any]:
    result = subprocess.run([sys.executable, "-m", "maild.cli", "-c", str(server.config_path),
                             "replica", "status", "--json"], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"replica status failed: {result.stderr}")
    return dict(json.loads(result.stdout))


def _positions(server: Maild) -> dict[str, int]:
    return {w: r["position"] for w, r in _replica_status(server)["environments"].items()}


def _wait_caught_up(leader: Maild, follower: Maild, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    want = _positions(leader)
    while _positions(follower) != want:
        if time.monotonic() > deadline:
            raise RuntimeError(f"follower did not catch up:\n{follower.log()[-2000:]}")
        time.sleep(0.05)


def _pair(users: dict[str, str], hashes: dict[str, str], secret: Path,
          mode: str) -> tuple[Maild, Maild]:
    port = free_port()
    common = {"secret_file": str(secret), "mode": mode, "sync_timeout": 30.0, "on_timeout": "tempfail"}
    leader = Maild(users, hashes, overrides={"replication": {
        "role": "leader", "listen": [f"{HOST}:{port}"], **common}})
    leader.__enter__()
    follower = Maild(users, hashes, overrides={"replication": {
        "role": "follower", "leader": f"{HOST}:{port}", **common}})
    follower.__enter__()
    _wait_caught_up(leader, follower)  # the follower's first copy (a snapshot)
    return leader, follower


def _ingest(server: Maild, rcpt: str, messages: int) -> tuple[float, list[float]]:
    return asyncio.run(_drive(server.host, server.ports["smtp"], rcpt, messages, SIZE, True))


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Rows: SMTP ingest per mode (msgs/s, p50/p99 ms); follower apply (records/s, MB/s)."""
    users, hashes = make_users(1, prefix="repl")
    rcpt = next(iter(users))
    messages = MESSAGES[1] if quick else MESSAGES[0]
    what = f"{SESSIONS} sessions, {messages} x {SIZE // 1024} KB, reused connections"
    rows: list[dict[str, Any]] = []
    with Maild(users, hashes) as server:
        elapsed, latencies = _ingest(server, rcpt, messages)
        rows.append(_row(f"SMTP ingest, standalone, {what}", messages, elapsed, latencies))
    for mode in ("async", "sync"):
        with Maild(users, hashes) as scratch:  # only for a directory the secret can live in
            secret = scratch.root / "replication.secret"
            secret.write_text("bench replication secret\n")
            leader, follower = _pair(users, hashes, secret, mode)
            try:
                elapsed, latencies = _ingest(leader, rcpt, messages)
                rows.append(_row(f"SMTP ingest, {mode} leader + follower, {what}", messages, elapsed,
                                 latencies))
                _wait_caught_up(leader, follower)
                time.sleep(1.5)  # the follower's daemon writes its status every second
                daemon = _replica_status(follower)["daemon"] or {}
                if "apply_lag_p50_ms" in daemon:
                    rows.append({"workload": f"replication lag under that load ({mode}): leader commit "
                                             "to follower commit",
                                 "p50 ms": daemon["apply_lag_p50_ms"], "p99 ms": daemon["apply_lag_p99_ms"]})
                if mode == "async":
                    rows.append(_apply_rate(leader, follower, rcpt, messages))
            finally:
                follower.__exit__(None, None, None)
                leader.__exit__(None, None, None)
    return rows


def _apply_rate(leader: Maild, follower: Maild, rcpt: str, messages: int) -> dict[str, Any]:
    """A backlog applied by a follower that was away: records/s and MB/s of messages."""
    _wait_caught_up(leader, follower)
    _stop(follower.process)
    before = _positions(leader)
    _ingest(leader, rcpt, messages)
    after = _positions(leader)
    records = sum(after[w] - before[w] for w in after)
    offset = follower.log_path.stat().st_size
    # the same data directory and configuration (Maild.start would make new ones)
    with open(follower.log_path, "ab") as out:
        follower.process = subprocess.Popen([sys.executable, "-m", "maild.cli", "-c", str(follower.config_path),
                                             "serve"], stdout=out, stderr=subprocess.STDOUT, cwd=follower.root)
    deadline = time.monotonic() + 60
    while True:  # the clock starts when the follower is connected and authenticated
        with open(follower.log_path, "rb") as fh:
            fh.seek(offset)
            if b"authenticated" in fh.read():
                break
        if time.monotonic() > deadline:
            raise RuntimeError(f"follower did not connect:\n{follower.log()[-2000:]}")
        time.sleep(0.01)
    start = time.perf_counter()
    _wait_caught_up(leader, follower)
    elapsed = time.perf_counter() - start
    return {"workload": f"follower catch-up: {records} log records ({messages} x {SIZE // 1024} KB "
                        "messages, group-committed on the leader)",
            "msgs/s": messages / elapsed, "records/s": records / elapsed,
            "MB/s": messages * SIZE / elapsed / 1e6}
