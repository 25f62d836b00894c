"""Cross-process change-log wake-up (maild/store/wake.py): how soon a follower in one
process hears of a commit made by another, and what followers cost the writer.

    python -m bench.wake [--commits 500] [--watchers 3]

Latency: a child process appends messages one at a time (a commit each, a few ms apart);
the parent follows the shard with a Twisted reactor and notes when each append reaches
its callback. Reported from the child's submit (includes the commit's fsync) and from the
moment the child's append returned (after its commit).

Writer cost: the child's serial appends/s with 0 and with ``--watchers`` other processes
following the shard (each woken by every commit), and the watchers' CPU time per commit.

Group commit across processes: 8,000 appends into one mailbox from 40 concurrent
appenders in one process, then from 20 in each of two processes (each with its own
writer and group commit, LMDB's write lock between them): appends/s and appends per commit.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from maild.config import StoreConfig
from maild.store import Store

ROOT = Path(__file__).resolve().parent.parent
USER = "bench@example.test"
CONFIG = StoreConfig(shards=1, map_size_mb=1024, directory_map_size_mb=64)


def _appender(data: Path, commits: int, gap: float) -> subprocess.Popen[str]:
    """A child that appends ``commits`` messages, then writes (uid, submitted, answered)
    of each and the time it took as JSON to data/appends.json."""
    script = textwrap.dedent(f"""
        import json, time
        from pathlib import Path
        from bench.wake import CONFIG, USER
        from maild.store import Store
        store = Store(Path({str(data)!r}), CONFIG)
        inbox = store.require_mailbox(USER, "INBOX")
        started = time.monotonic()
        out = []
        for i in range({commits}):
            t0 = time.monotonic()
            r = []
            store.append(USER, inbox.id, b"Subject: %d\\r\\n\\r\\nbody\\r\\n" % i).addCallback(r.append)
            out.append((r[0].uid, t0, time.monotonic()))
            if {gap}:
                time.sleep({gap})
        elapsed = time.monotonic() - started
        store.close()
        Path({str(data)!r}, "appends.json").write_text(json.dumps({{"appends": out, "elapsed": elapsed}}))
    """)
    return subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, text=True)


def _watcher(data: Path) -> subprocess.Popen[str]:
    """A child following the shard until it has seen the number of records written to its
stdin; prints the CPU seconds it spent meanwhile and the records it saw."""
    script = textwrap.dedent(f"""
        import json, resource, sys, threading
        from pathlib import Path
        from twisted.internet import reactor
        from bench.wake import CONFIG
        from maild.store import Store
        store = Store(Path({str(data)!r}), CONFIG, reactor=reactor)
        seen = [0]
        def got(records):
            seen[0] += len(records)
        def cpu():
            use = resource.getrusage(resource.RUSAGE_SELF)
            return use.ru_utime + use.ru_stime
        start = []
        def ready():
            store.follow(0, store.log_head(0), got)
            start.append(cpu())
            print("ready", flush=True)
        def finish(expected):
            if seen[0] >= expected:
                reactor.stop()
            else:
                reactor.callLater(0.01, finish, expected)
        reactor.callWhenRunning(ready)
        threading.Thread(target=lambda: reactor.callFromThread(finish, int(sys.stdin.read())),
                         daemon=True).start()
        reactor.run(installSignalHandlers=False)
        print(json.dumps({{"cpu": cpu() - start[0], "seen": seen[0]}}))
    """)
    return subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def latency(data: Path, commits: int) -> dict[str, Any]:
    from twisted.internet import reactor
    store = Store(data, CONFIG, reactor=reactor)
    seen: dict[int, float] = {}
    result: dict[str, Any] = {}

    def got(records: list[Any]) -> None:
        now = time.monotonic()
        for r in records:
            for uid in r.uids:
                seen[uid] = now

    def run() -> None:
        store.follow(0, store.log_head(0), got)
        child = _appender(data, commits, 0.003)

        def check() -> None:
            if child.poll() is None:
                reactor.callLater(0.05, check)
                return
            result.update(json.loads((data / "appends.json").read_text()))
            reactor.callLater(0.2, reactor.stop)
        check()
    reactor.callWhenRunning(run)
    reactor.run(installSignalHandlers=False)
    store.close()
    from_submit = [(seen[uid] - t0) * 1000 for uid, t0, _ in result["appends"] if uid in seen]
    from_ack = [(seen[uid] - t1) * 1000 for uid, _, t1 in result["appends"] if uid in seen]
    return {"commits": commits, "heard": len(from_submit),
            "from_submit_ms": _summary(from_submit), "from_ack_ms": _summary(from_ack)}


def _summary(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {"p50": round(statistics.median(values), 3),
            "p99": round(values[int(len(values) * 0.99) - 1], 3), "max": round(values[-1], 3)}


def writer_cost(data: Path, commits: int, watchers: int) -> dict[str, Any]:
    procs = [_watcher(data) for _ in range(watchers)]
    for p in procs:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"
    child = _appender(data, commits, 0)
    child.wait()
    out = json.loads((data / "appends.json").read_text())
    cpu, heard = 0.0, 0
    for p in procs:
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write(str(commits))
        p.stdin.close()
        report = json.loads(p.stdout.read())
        p.wait()
        cpu += report["cpu"]
        heard += report["seen"]
    row: dict[str, Any] = {"watchers": watchers, "appends_per_s": round(commits / out["elapsed"])}
    if watchers:
        row["watcher_cpu_us_per_commit"] = round(cpu / watchers / commits * 1e6, 1)
        row["heard"] = heard // watchers
    return row


def _concurrent(data: Path, appends: int, concurrency: int) -> subprocess.Popen[str]:
    """A child with a reactor: ``concurrency`` appenders share ``appends`` appends; writes
    its elapsed time and the shard's commits to data/concurrent-<pid>.json."""
    script = textwrap.dedent(f"""
        import json, os, time
        from pathlib import Path
        from twisted.internet import defer, reactor
        from bench.wake import CONFIG, USER
        from maild.store import Store
        store = Store(Path({str(data)!r}), CONFIG, reactor=reactor)
        store.subscribe(lambda change: None)  # as a daemon's IMAP sessions do
        out = {{}}
        async def appender(box, n):
            for i in range(n):
                await store.append(USER, box, b"Subject: %d\\r\\n\\r\\nx\\r\\n" % i)
        async def main():
            box = store.require_mailbox(USER, "INBOX").id
            started = time.monotonic()
            await defer.gatherResults([defer.ensureDeferred(appender(box, {appends // concurrency}))
                                       for _ in range({concurrency})])
            out.update(elapsed=time.monotonic() - started, commits=store.shards[0].writer.commits)
            reactor.stop()
        reactor.callWhenRunning(lambda: defer.ensureDeferred(main()))
        reactor.run(installSignalHandlers=False)
        store.close()
        Path({str(data)!r}, f"concurrent-{{os.getpid()}}.json").write_text(json.dumps(out))
    """)
    return subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, text=True)


def group_commit(data: Path, appends: int, processes: int, concurrency: int) -> dict[str, Any]:
    """``processes`` processes with ``concurrency`` appenders each, into one mailbox."""
    children = [_concurrent(data, appends // processes, concurrency) for _ in range(processes)]
    reports = []
    for child in children:
        child.wait()
        reports.append(json.loads((data / f"concurrent-{child.pid}.json").read_text()))
    slowest = max(r["elapsed"] for r in reports)
    commits = sum(r["commits"] for r in reports)
    return {"processes": processes, "appenders_each": concurrency,
            "appends_per_s": round(appends / slowest), "appends_per_commit": round(appends / commits, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commits", type=int, default=500)
    parser.add_argument("--watchers", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        data = Path(tmp) / "data"
        store = Store(data, CONFIG)
        store.domain_add("example.test")
        store.user_add(USER, "x")
        store.close()
        rows = [writer_cost(data, args.commits, 0), writer_cost(data, args.commits, args.watchers),
                writer_cost(data, args.commits, 0), writer_cost(data, args.commits, args.watchers)]
        group = [group_commit(data, 8000, 1, 40), group_commit(data, 8000, 2, 20),
                 group_commit(data, 8000, 1, 40), group_commit(data, 8000, 2, 20)]
        print(json.dumps({"latency": latency(data, args.commits), "writer": rows,
                          "group_commit": group}, indent=1))


if __name__ == "__main__":
    main()
