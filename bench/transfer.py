"""Import and backup benchmark (`maild import`, `maild backup`; docs/operations.md).

A generated mbox of 200,000 messages (mostly 1-4 KB, one in 50 of 60 KB, so bodies live
both inline in LMDB and as blob files) is imported by `maild import` as a subprocess: its
messages/s, MB/s and peak RSS (the child's ru_maxrss, which must stay bounded whatever the
mbox and store size), split into anonymous and file-backed (LMDB's maps). Then `maild
export` of it back to an mbox, the same way. Then `maild backup` of the result, and a second, incremental one.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from maild.auth import hash_password
from maild.config import load
from maild.store import Store

CONFIG = """hostname = "bench.example.test"
data_dir = "{data}"
[store]
shards = 2
map_size_mb = 16384
directory_map_size_mb = 256
"""


def make_mbox(path: Path, count: int, seed: int = 1) -> int:
    rng = random.Random(seed)
    words = [w.encode() for w in "the quick brown fox jumps over lazy dog mail server import".split()]
    with open(path, "wb") as out:
        for i in range(count):
            size = 60_000 if i % 50 == 0 else rng.randint(1000, 4000)
            line = b" ".join(rng.choice(words) for _ in range(12)) + b"\n"
            body = line * (size // len(line) + 1)
            if i % 100 == 0:
                body += b"From the desk of someone: quoted by the mbox writer\n"
            out.write(b"From bench@example.org Tue Jan  2 03:04:05 2024\n"
                      b"From: bench@example.org\nTo: user@example.test\nSubject: message %d\n"
                      b"Message-ID: <b%d@example.org>\n\n" % (i, i))
            out.write(body.replace(b"\nFrom ", b"\n>From "))
            out.write(b"\n")
    return path.stat().st_size


def _rss_kib(pid: int) -> tuple[int, int]:
    """(RssAnon, RssFile) of a process in KiB; zeros once it is gone."""
    found = {"RssAnon:": 0, "RssFile:": 0}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.split(":")[0] + ":" in found:
                    found[line.split()[0]] = int(line.split()[1])
    except OSError:
        pass
    return found["RssAnon:"], found["RssFile:"]


def _timed(cmd: list[str]) -> tuple[float, tuple[int, int, int], subprocess.CompletedProcess[bytes]]:
    """Wall seconds, (peak RSS, peak anonymous RSS, peak file-backed RSS) in KiB, and the
    result of a child.

    Anonymous memory (heap, buffers) is what the process holds of its own; file-backed is
    mostly the pages of LMDB's maps it has touched, which `maild import` and `maild export`
    give back as they go (maild/store/mapped.py). Both sampled every 50 ms; peak RSS is the
    kernel's high-water mark (ru_maxrss)."""
    started = time.monotonic()
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    anon = filed = 0
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        a, f = _rss_kib(process.pid)
        anon, filed = max(anon, a), max(filed, f)
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    out = process.stdout.read() if process.stdout else b""
    err = process.stderr.read() if process.stderr else b""
    process.returncode = os.waitstatus_to_exitcode(status)
    result = subprocess.CompletedProcess(cmd, process.returncode, out, err)
    if result.returncode != 0:
        raise RuntimeError(f"{cmd}: {err.decode(errors='replace')[-2000:]}")
    return elapsed, (usage.ru_maxrss, anon, filed), result


def _rss(rss: tuple[int, int, int]) -> str:
    return (f"peak RSS {rss[0] / 1024:,.0f} MB (anonymous {rss[1] / 1024:,.0f} MB, "
            f"file-backed {rss[2] / 1024:,.0f} MB)")


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run(quick: bool = False, count: int | None = None) -> list[dict[str, Any]]:
    count = count or (5_000 if quick else 200_000)
    root = Path(tempfile.mkdtemp(prefix="maild-bench-transfer-"))
    try:
        config = root / "maild.toml"
        config.write_text(CONFIG.format(data=root / "data"))
        cfg = load(config)
        store = Store(cfg.data_dir, cfg.store)
        try:
            store.domain_add("example.test")
            store.user_add("user@example.test", hash_password("bench-password"), quota_bytes=0)
        finally:
            store.close()
        mbox = root / "archive.mbox"
        size = make_mbox(mbox, count)
        maild = [sys.executable, "-m", "maild.cli", "-c", str(config)]
        seconds, rss, _ = _timed([*maild, "import", "user@example.test", str(mbox)])
        rows = [{"workload": f"import mbox, {count:,} messages, {size / 1e6:,.0f} MB",
                 "result": f"{count / seconds:,.0f} msg/s  {size / 1e6 / seconds:,.1f} MB/s  "
                           f"{_rss(rss)}  ({seconds:,.1f} s)"}]
        data_bytes = _tree_bytes(cfg.data_dir)
        seconds, rss, _ = _timed([*maild, "export", "user@example.test", str(root / "export"),
                                  "--format", "mbox"])
        rows.append({"workload": f"export mbox, {count:,} messages",
                     "result": f"{count / seconds:,.0f} msg/s  {_rss(rss)}  ({seconds:,.1f} s)"})
        shutil.rmtree(root / "export")
        backups = root / "backups"
        seconds, rss, _ = _timed([*maild, "backup", str(backups)])
        rows.append({"workload": f"backup, {data_bytes / 1e6:,.0f} MB data dir (same file system: links)",
                     "result": f"{data_bytes / 1e6 / seconds:,.0f} MB/s  {_rss(rss)}  ({seconds:,.1f} s)"})
        seconds, _, _ = _timed([*maild, "backup", str(backups)])
        rows.append({"workload": "backup again, nothing new (incremental)", "result": f"{seconds:,.1f} s"})
        seconds, _, _ = _timed([*maild, "backup", "verify", str(backups)])
        rows.append({"workload": "backup verify (rehash, scratch restore, fsck)",
                     "result": f"{data_bytes / 1e6 / seconds:,.0f} MB/s  ({seconds:,.1f} s)"})
        return rows
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
