"""Store benchmark: appends/s by message size, concurrency and group commit; metadata scan.

Each case uses a fresh data directory on the same disk as the temp dir (TMPDIR), with fsync
on, exactly as the daemon runs. Two more rows say what bounds the group-commit gain on the
machine at hand: what one flush costs on that disk, and the appends/s of the same workload
with its data in memory (/dev/shm), where a flush costs nothing and the CPU sets the pace.
The last rows run the group-commit case again on a slower disk: the same disk, with every
fsync and fdatasync of the process made 1 or 2 ms slower by bench/slowsync.c (LD_PRELOAD).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

from maild.config import StoreConfig
from maild.store import Store

BASE = StoreConfig(shards=4, map_size_mb=8192, directory_map_size_mb=256)
CASES = [  # (label, message size, concurrent appenders, messages)
    ("1 KB", 1024, 1, 400),
    ("1 KB", 1024, 50, 4000),
    ("50 KB", 50 * 1024, 1, 300),
    ("50 KB", 50 * 1024, 50, 2000),
    ("1 MB", 1024 * 1024, 1, 40),
    ("1 MB", 1024 * 1024, 50, 200),
]
# Microseconds added to every flush in the slower-disk rows: what a SATA SSD without
# power-loss protection or a network volume charges beyond this VM's disk.
SLOWER_FLUSH_US = (1000, 2000)


def _message(i: int, size: int) -> bytes:
    head = f"From: bench@example.test\r\nSubject: message {i}\r\n\r\n".encode()
    return head + (os.urandom(8).hex().encode() * (size // 16 + 1))[: max(0, size - len(head) - 2)] + b"\r\n"


def _bytes_written() -> int | None:
    """What this process has handed to write calls so far (Linux), pages and blob files alike."""
    try:
        with open("/proc/self/io") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("wchar:"))
    except (OSError, StopIteration):
        return None


def _store(reactor: Any, root: Path, group_commit: bool, users: int = 50, shards: int = BASE.shards) -> Store:
    store = Store(root, dataclasses.replace(BASE, group_commit=group_commit, shards=shards), reactor)
    store.domain_add("example.test")
    for n in range(users):
        store.user_add(f"u{n}@example.test", "x")
    return store


def _flush_cost(pages: int, rounds: int = 200) -> float:
    """Median milliseconds of writing ``pages`` fresh 4 KiB pages at the end of a file in
    TMPDIR and fdatasync-ing them: what a commit's flush costs on this disk."""
    fd, name = tempfile.mkstemp(prefix="maild-bench-flush-")
    try:
        chunk = os.urandom(4096 * pages)
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            os.write(fd, chunk)
            os.fdatasync(fd)
            times.append(time.perf_counter() - t0)
        return sorted(times)[len(times) // 2] * 1000
    finally:
        os.close(fd)
        os.unlink(name)


def _memory_dir() -> str | None:
    """/dev/shm when it is a tmpfs (fsync there returns at once), else None."""
    try:
        with open("/proc/mounts") as f:
            return "/dev/shm" if any(line.split()[1:3] == ["/dev/shm", "tmpfs"] for line in f) else None
    except OSError:
        return None


@defer.inlineCallbacks
def _append_case(reactor: Any, size: int, writers: int, total: int, group_commit: bool,  # type: ignore[no-untyped-def]
                 shards: int = BASE.shards, parent: str | None = None):
    root = Path(tempfile.mkdtemp(prefix="maild-bench-", dir=parent))
    store = yield task.deferLater(reactor, 0, _store, reactor, root, group_commit, 50, shards)
    inboxes = {f"u{n}@example.test": store.require_mailbox(f"u{n}@example.test", "INBOX").id for n in range(50)}
    bodies = [_message(i, size) for i in range(min(total, 64))]
    latencies: list[float] = []
    remaining = iter(range(total))

    @defer.inlineCallbacks
    def writer(n: int):  # type: ignore[no-untyped-def]
        user = f"u{n % 50}@example.test"
        for i in remaining:
            t0 = time.perf_counter()
            yield store.append(user, inboxes[user], bodies[i % len(bodies)] + str(i).encode())
            latencies.append(time.perf_counter() - t0)

    start, written = time.perf_counter(), _bytes_written()
    yield defer.gatherResults([writer(n) for n in range(writers)])
    elapsed, written_after = time.perf_counter() - start, _bytes_written()
    commits = sum(s.writer.commits for s in store.shards)
    store.close()
    shutil.rmtree(root)
    latencies.sort()
    per_message = (f"{(written_after - written) / total / 1024:,.0f} KiB written/msg"
                   if written is not None and written_after is not None else "")
    return {"rate": total / elapsed, "p50": latencies[len(latencies) // 2] * 1000,
            "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000, "commits": commits,
            "written": per_message}


def _slow_sync_library(directory: Path) -> Path | None:
    """bench/slowsync.c built into ``directory``; None when there is no C compiler."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    library = directory / "slowsync.so"
    built = subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", str(library),
                            str(Path(__file__).with_name("slowsync.c")), "-ldl"], capture_output=True)
    return library if built.returncode == 0 else None


def _slower_flush_rates(library: Path, delay_us: int) -> dict[str, float]:
    """appends/s of the 1 KB x 50 case, on and off, in a process whose flushes are slowed
    (LD_PRELOAD must be set when a process starts, so the cases run in a child)."""
    env = dict(os.environ, LD_PRELOAD=str(library), SLOWSYNC_US=str(delay_us))
    done = subprocess.run([sys.executable, "-m", "bench.store", "--gain-case"], env=env,
                          cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


@defer.inlineCallbacks
def _gain_case(reactor: Any):  # type: ignore[no-untyped-def]
    on = yield _append_case(reactor, 1024, 50, 4000, True)
    off = yield _append_case(reactor, 1024, 50, 1500, False)
    print(json.dumps({"on": on["rate"], "off": off["rate"]}))


@defer.inlineCallbacks
def _scan_case(reactor: Any, messages: int):  # type: ignore[no-untyped-def]
    root = Path(tempfile.mkdtemp(prefix="maild-bench-"))
    store = _store(reactor, root, True, users=1)
    user = "u0@example.test"
    mid = store.require_mailbox(user, "INBOX").id
    body = _message(0, 2048)
    pending = iter(range(messages))

    @defer.inlineCallbacks
    def writer():  # type: ignore[no-untyped-def]
        for _ in pending:
            yield store.append(user, mid, body)

    yield defer.gatherResults([writer() for _ in range(64)])
    t0 = time.perf_counter()
    uids = store.uids(user, mid)
    t_uids = time.perf_counter() - t0
    t0 = time.perf_counter()
    metas = list(store.messages(user, mid))
    t_meta = time.perf_counter() - t0
    t0 = time.perf_counter()
    unseen = store.unseen_uids(user, mid)
    t_unseen = time.perf_counter() - t0
    assert len(uids) == len(metas) == len(unseen) == messages
    store.close()
    shutil.rmtree(root)
    return [
        {"benchmark": "store", "workload": f"uid list of {messages} messages", "result": f"{t_uids * 1000:.0f} ms"},
        {"benchmark": "store", "workload": f"metadata (flags, size, modseq) of {messages}",
         "result": f"{t_meta * 1000:.0f} ms ({messages / t_meta:,.0f}/s)"},
        {"benchmark": "store", "workload": f"unseen index of {messages}", "result": f"{t_unseen * 1000:.0f} ms"},
    ]


@defer.inlineCallbacks
def run(reactor: Any, scan_messages: int = 100_000):  # type: ignore[no-untyped-def]
    rows = []
    rates: dict[tuple[str, int, bool], float] = {}
    for label, size, writers, total in CASES:
        for group_commit in (True, False):
            n = total
            r = yield _append_case(reactor, size, writers, n, group_commit)
            rates[(label, writers, group_commit)] = r["rate"]
            rows.append({"benchmark": "store", "workload":
                         f"append {label}, {writers} appender(s), group commit {'on' if group_commit else 'off'}",
                         "result": f"{r['rate']:,.0f}/s  p50 {r['p50']:.1f} ms  p99 {r['p99']:.1f} ms  "
                                   f"({n} msgs, {r['commits']} commits, {r['written']})"})
    ratio = rates[("1 KB", 50, True)] / rates[("1 KB", 50, False)]
    rows.append({"benchmark": "store", "workload": f"group commit gain, 1 KB x 50 appenders, {BASE.shards} shards",
                 "result": f"{ratio:.1f}x"})
    # What bounds that gain here: "off" pays one flush per message, "on" at best runs at the
    # in-memory rate (see docs/performance.md, "Group commit and shards").
    rows.append({"benchmark": "store", "workload": "flush cost of this disk (write + fdatasync, median)",
                 "result": f"1 page {_flush_cost(1):.2f} ms, 20 pages {_flush_cost(20):.2f} ms"})
    memory = _memory_dir()
    if memory is not None:
        r = yield _append_case(reactor, 1024, 50, 12000, True, parent=memory)
        rows.append({"benchmark": "store", "workload":
                     f"append 1 KB, 50 appender(s), group commit on, data in memory ({memory})",
                     "result": f"{r['rate']:,.0f}/s: the CPU's ceiling; gain bound here "
                               f"{r['rate'] / rates[('1 KB', 50, False)]:.1f}x"})
    # The same on one shard: one fsync stream, so "off" cannot overlap fsyncs of several
    # environments and the gain is that of batching alone (see docs/performance.md).
    one = {}
    for group_commit in (True, False):
        r = yield _append_case(reactor, 1024, 50, 4000 if group_commit else 1500, group_commit, shards=1)
        one[group_commit] = r["rate"]
        rows.append({"benchmark": "store", "workload":
                     f"append 1 KB, 50 appender(s), one shard, group commit {'on' if group_commit else 'off'}",
                     "result": f"{r['rate']:,.0f}/s  p50 {r['p50']:.1f} ms  p99 {r['p99']:.1f} ms  "
                               f"({r['commits']} commits, {r['written']})"})
    rows.append({"benchmark": "store", "workload": "group commit gain, 1 KB x 50 appenders, one shard",
                 "result": f"{one[True] / one[False]:.1f}x"})
    build_dir = Path(tempfile.mkdtemp(prefix="maild-bench-slowsync-"))
    try:
        library = _slow_sync_library(build_dir)
        for delay_us in SLOWER_FLUSH_US:
            workload = (f"group commit gain, 1 KB x 50 appenders, {BASE.shards} shards, "
                        f"every flush {delay_us / 1000:g} ms slower (bench/slowsync.c)")
            if library is None:
                rows.append({"benchmark": "store", "workload": workload, "result": "skipped: no C compiler"})
                continue
            r = _slower_flush_rates(library, delay_us)
            rows.append({"benchmark": "store", "workload": workload,
                         "result": f"{r['on'] / r['off']:.1f}x  (on {r['on']:,.0f}/s, off {r['off']:,.0f}/s)"})
    finally:
        shutil.rmtree(build_dir, ignore_errors=True)
    rows.extend((yield _scan_case(reactor, scan_messages)))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.store")
    parser.add_argument("--gain-case", action="store_true", required=True,
                        help="print the 1 KB x 50 appenders rates, on and off, as JSON (the slower-disk rows)")
    parser.parse_args()
    task.react(_gain_case)
