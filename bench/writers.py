"""Writes of several processes to one shard: what LMDB's write lock lets through.

    .venv/bin/python -m bench.writers                 # 1 and 2 processes, meta sync shared / in the lock
    .venv/bin/python -m bench.writers --seconds 5 --runs 3

The write half of the mixed IMAP row without IMAP: ``--clients`` threads in all (split
evenly over the processes), each a session of one user doing, in turn, UID STORE +\\Seen,
-\\Seen and APPEND 4 KB into one of 4 mailboxes (so every write goes to one shard, as the
mixed row's do), each waiting for its write's acknowledgement (after the commit and its
fsync) before the next. Each process opens its own Store over the same data directory, as
worker processes do. Printed: writes/s of the tree, commits (LMDB transactions) and writes
per commit. Every setting runs once per run, the order rotating, on the disk of TMPDIR.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from maild.config import StoreConfig
from maild.store import Store
from maild.store.types import FlagMode

BASE = StoreConfig(shards=4, map_size_mb=2048, directory_map_size_mb=256)
USER = "writer@example.test"
BOXES = ("INBOX", "Shared 1", "Shared 2", "Shared 3")
MODES = {  # label: [store] shared_meta_sync
    "shared, after the lock": True,
    "in the lock": False,
}


def _message(i: int) -> bytes:
    head = f"From: bench@example.test\r\nSubject: message {i}\r\n\r\n".encode()
    return head + (b"lorem ipsum dolor sit amet " * 160)[: 4096 - len(head) - 2] + b"\r\n"


def _prepare(root: Path, config: StoreConfig) -> None:
    store = Store(root, config)
    try:
        store.domain_add("example.test")
        store.user_add(USER, "x")
        for box in BOXES[1:]:
            _sync(store.create_mailbox(USER, box))
        for box in BOXES:
            mailbox = store.mailbox(USER, box)
            assert mailbox is not None
            for i in range(50):
                _sync(store.append(USER, mailbox.id, _message(i)))
    finally:
        store.close()


def _sync(d: Any) -> Any:
    """The result of a Deferred that has fired (a Store without a reactor waits for it)."""
    out: list[Any] = []
    d.addBoth(out.append)
    if not out:
        raise RuntimeError("the Store answered asynchronously")
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


def _child(root: str, config: dict[str, Any], clients: int, start_at: float, seconds: float,
           seed: int, queue: Any) -> None:
    store = Store(Path(root), StoreConfig(**config))
    try:
        boxes = [store.mailbox(USER, box) for box in BOXES]
        done = [0] * clients
        commits_before = sum(s.writer.commits for s in store.shards)

        def client(n: int) -> None:
            box = boxes[(seed + n) % len(boxes)]
            assert box is not None
            uids = store.uids(USER, box.id)[:20]
            i = 0
            time.sleep(max(0.0, start_at - time.time()))
            while time.time() < start_at + seconds:
                step = i % 3
                if step == 2:
                    _sync(store.append(USER, box.id, _message(seed * 100000 + n * 1000 + i)))
                else:
                    mode = FlagMode.ADD if step == 0 else FlagMode.REMOVE
                    _sync(store.set_flags(USER, box.id, [uids[i % len(uids)]], {"\\Seen"}, mode))
                i += 1
                done[n] += 1

        threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        queue.put((sum(done), sum(s.writer.commits for s in store.shards) - commits_before))
    finally:
        store.close()


def _run(root: Path, config: StoreConfig, processes: int, clients: int, seconds: float) -> tuple[float, float]:
    ctx = multiprocessing.get_context("spawn")  # environments are opened after the process starts
    queue = ctx.Queue()
    start_at = time.time() + 3.0
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    children = [ctx.Process(target=_child, args=(str(root), fields, clients // processes, start_at, seconds,
                                                  p, queue)) for p in range(processes)]
    for child in children:
        child.start()
    results = [queue.get(timeout=seconds + 60) for _ in children]
    for child in children:
        child.join(timeout=30)
    writes = sum(r[0] for r in results)
    commits = sum(r[1] for r in results)
    return writes / seconds, writes / max(1, commits)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.writers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    settings = [(p, mode) for p in args.processes for mode in MODES]
    rates: dict[tuple[int, str], list[tuple[float, float]]] = {s: [] for s in settings}
    print(f"load average before: {open('/proc/loadavg').read().split()[:3]}", flush=True)
    with tempfile.TemporaryDirectory(prefix="maild-bench-writers-") as tmp:
        for run in range(args.runs):
            order = settings[run % len(settings):] + settings[:run % len(settings)]
            for processes, mode in order:
                shared = MODES[mode]
                root = Path(tmp) / f"{processes}-{shared}-{run}"
                config = dataclasses.replace(BASE, shared_meta_sync=shared)
                _prepare(root, config)
                rate, per_commit = _run(root, config, processes, args.clients, args.seconds)
                rates[(processes, mode)].append((rate, per_commit))
                shutil.rmtree(root, ignore_errors=True)
                print(f"run {run + 1}: {processes} process(es), meta sync {mode}: "
                      f"{rate:,.0f} writes/s, {per_commit:.1f} writes/commit, "
                      f"load {open('/proc/loadavg').read().split()[0]}", flush=True)
    print(f"load average after: {open('/proc/loadavg').read().split()[:3]}")
    print("| processes | meta sync | writes/s per run | median | writes per commit |")
    print("|---|---|---|---|---|")
    for (processes, mode), values in rates.items():
        print(f"| {processes} | {mode} | "
              f"{' / '.join(f'{r:,.0f}' for r, _ in values)} | {statistics.median(r for r, _ in values):,.0f} | "
              f"{statistics.median(c for _, c in values):.1f} |")
    print(json.dumps({f"{p}-{s}": v for (p, s), v in rates.items()}))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
