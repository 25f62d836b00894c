"""`make bench`: every maild benchmark, one table, with the machine it ran on.

    python -m bench [--quick] [--only store,smtp,imap,pop3,memory,outbound,transfer,api] [--compare]
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
from typing import Any

from twisted.internet import defer, task

# name -> module with `run(**options) -> list[dict]` (synchronous: drives a daemon subprocess)
PROTOCOL_BENCHES = {"smtp": "bench.smtp_ingest", "imap": "bench.imap", "pop3": "bench.pop3", "memory": "bench.memory",
                    "outbound": "bench.outbound", "transfer": "bench.transfer",
                    "replication": "bench.replication", "search": "bench.search", "api": "bench.api"}


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = int(next(x for x in open("/proc/meminfo") if x.startswith("MemTotal")).split()[1]) // 1048576
    except (OSError, StopIteration):
        mem = 0
    return f"{cpu}, {os.cpu_count()} cores, {mem} GiB, Python {platform.python_version()}, {platform.system()}"


def row_text(row: dict[str, Any]) -> tuple[str, str, str]:
    rest = {k: v for k, v in row.items() if k not in ("benchmark", "workload", "result")}
    result = row.get("result") or "  ".join(f"{k} {v:,.1f}" if isinstance(v, float) else f"{k} {v}"
                                            for k, v in rest.items())
    return str(row.get("benchmark", "")), str(row.get("workload", "")), str(result)


def print_table(rows: list[dict[str, Any]]) -> None:
    cells = [("benchmark", "workload", "result")] + [row_text(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(3)]
    for n, c in enumerate(cells):
        print("  ".join(x.ljust(w) for x, w in zip(c, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="smaller workloads (a smoke run)")
    parser.add_argument("--only", default=",".join(["store", *PROTOCOL_BENCHES]))
    parser.add_argument("--compare", action="store_true", help="also run Dovecot/Postfix peers")
    args = parser.parse_args(argv)
    wanted = args.only.split(",")
    rows: list[dict[str, Any]] = []
    if args.compare:
        from bench import compare

        # compare prints the machine and its own table (maild and peer side by side).
        compare.main(["--quick"] if args.quick else [])
        return 0
    for name, module_name in PROTOCOL_BENCHES.items():
        if name not in wanted:
            continue
        module = importlib.import_module(module_name)
        kwargs: dict[str, Any] = {"quick": True} if args.quick else {}
        for row in module.run(**kwargs):
            rows.append({"benchmark": name, **row})
    if "store" in wanted:
        from bench import store

        def store_bench(reactor: Any) -> defer.Deferred[None]:
            d = store.run(reactor, scan_messages=5_000 if args.quick else 100_000)
            return d.addCallback(rows.extend)
        try:
            task.react(store_bench)
        except SystemExit as exc:
            if exc.code:
                raise
    print(f"machine: {machine()}")
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
