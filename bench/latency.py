"""The IMAP command path's fixed cost: round trips of small commands, maild beside Dovecot.

    .venv/bin/python -m bench.latency                       # 10k and 100k INBOXes, 300 rounds
    .venv/bin/python -m bench.latency --messages 20000 --small 2000 --rounds 1000 --no-dovecot
    .venv/bin/python -m bench.latency --base /tmp/maild-base  # also an older maild tree

One client on one connection sends one command at a time and waits for its tagged reply
(bench/load.py's raw client, so the client's parsing is not what is measured): NOOP,
SELECT INBOX of a small and of a large mailbox, a FETCH of one message's
(UID FLAGS RFC822.SIZE ENVELOPE) and a STORE of one message's flag (alternately set and
cleared; a write, so it waits for the store's fsync). The servers take turns within each
workload (20 slices of its rounds each), so they are measured under the same machine load.
Reported per workload and server: the median and p99 round trip, and the CPU the server's
process tree used per command (every thread's /proc schedstat; Dovecot's too).

``--base DIR``: a second maild run from the package in DIR (``git archive <commit> maild |
tar -x -C DIR``), measured the same way: a before/after in one run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import compare, load, peers
from bench.load import Account, Imap

SLICES = 20  # each server's rounds of a workload are run in this many turns


class BaseMaild(peers.Maild):
    """maild run from an older package tree (``--base``)."""

    name = "maild-base"

    def __init__(self, tree: Path, users: dict[str, str], hashes: dict[str, str]) -> None:
        super().__init__(users, hashes)
        self.tree = tree

    def spawn(self, args: list[str], log: Path) -> None:
        if args[1:3] == ["-m", "maild.cli"]:
            run = (f"import sys, runpy; sys.path.insert(0, {str(self.tree)!r}); "
                   "runpy.run_module('maild.cli', run_name='__main__', alter_sys=True)")
            args = [args[0], "-c", run, *args[3:]]
        super().spawn(args, log)


def _workloads(n_small: int, n_big: int) -> list[tuple[str, str, str]]:
    """(key, account: "small"/"big", command); STORE's command is a placeholder."""
    middle = max(1, n_big // 2)
    return [
        ("noop", "big", "NOOP"),
        ("select-small", "small", "SELECT INBOX"),
        ("select-big", "big", "SELECT INBOX"),
        ("fetch1", "big", f"FETCH {middle} (UID FLAGS RFC822.SIZE ENVELOPE)"),
        ("store1", "big", "STORE"),
    ]


class _Side:
    """One server: two logged-in connections (the small and the big user) and its CPU tree."""

    def __init__(self, name: str, host: str, port: int, pid: Callable[[], int | None],
                 small: Account, big: Account) -> None:
        self.name = name
        self.pid = pid
        self.conns = {"small": Imap(host, port), "big": Imap(host, port)}
        for key, account in (("small", small), ("big", big)):
            self.conns[key].login(account.address, account.password)
            self.conns[key].command("SELECT INBOX")  # the first (cold) SELECT is not measured
        self.flagged = False
        self.middle = 1

    def cpu(self) -> float:
        """CPU seconds of every thread of the server's process tree, at nanosecond
        resolution (schedstat; /proc/PID/stat counts 10 ms ticks, too coarse here)."""
        root = self.pid()
        total = 0
        for pid in peers.process_tree(root) if root else []:
            try:
                tasks = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for task in tasks:
                try:
                    total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
                except (OSError, ValueError, IndexError):
                    continue
        return total / 1e9

    def run(self, key: str, account: str, command: str, rounds: int) -> tuple[list[float], float]:
        conn = self.conns[account]
        times = []
        before = self.cpu()
        for _ in range(rounds):
            if command == "STORE":
                self.flagged = not self.flagged
                text = f"STORE {self.middle} {'+' if self.flagged else '-'}FLAGS.SILENT (\\Flagged)"
            else:
                text = command
            times.append(load.timed(conn, text)[0])
        return times, self.cpu() - before

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()


def _p99(times: list[float]) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def run(messages: int, small: int, rounds: int, size: int, base: Path | None, dovecot: bool) -> list[dict[str, Any]]:
    users, hashes = peers.make_users(2, prefix="lat")
    accounts = [Account(a, p) for a, p in users.items()]
    small_user, big_user = accounts
    print(f"machine: {compare._machine()}; load average before: {open('/proc/loadavg').read().split()[:3]}")
    rows: list[dict[str, Any]] = []
    with compare._terminate_cleanly(), contextlib.ExitStack() as stack:
        servers: list[tuple[str, Any]] = [("maild", stack.enter_context(peers.Maild(users, hashes)))]
        if base is not None:
            servers.append(("maild-base", stack.enter_context(BaseMaild(base, users, hashes))))
        if dovecot:
            servers.append(("Dovecot", stack.enter_context(peers.Dovecot(users, hashes))))
        sides = []
        for name, server in servers:
            target = compare._Target(name, server.host, server.ports, lambda s=server: [p for p in [s.pid] if p])
            started = time.perf_counter()
            compare._fill(target, small_user, small, size, 10)
            compare._fill(target, big_user, messages, size, 10)
            print(f"{name}: filled {small:,} + {messages:,} messages in {time.perf_counter() - started:.0f} s")
            sys.stdout.flush()
            compare._settle(target)
            side = _Side(name, server.host, server.ports["imap"], lambda s=server: s.pid, small_user, big_user)
            side.middle = max(1, messages // 2)
            stack.callback(side.close)
            sides.append(side)
        labels = {"noop": "NOOP", "select-small": f"SELECT INBOX of {small:,} messages",
                  "select-big": f"SELECT INBOX of {messages:,} messages",
                  "fetch1": "FETCH 1 message (UID FLAGS RFC822.SIZE ENVELOPE)",
                  "store1": "STORE 1 message +/-FLAGS.SILENT (\\Flagged) (waits for fsync)"}
        print(f"{'workload':58} " + " ".join(f"{s.name:>34}" for s in sides))
        print(f"{'':58} " + " ".join(f"{'median / p99 ms, CPU ms/cmd':>34}" for _ in sides))
        for key, account, command in _workloads(small, messages):
            results = {}
            for side in sides:
                side.run(key, account, command, max(10, rounds // 10))  # warm
            # The servers take turns in slices of the rounds, so a change in the machine's
            # load (other processes) falls on all of them alike.
            got: dict[str, tuple[list[float], float]] = {side.name: ([], 0.0) for side in sides}
            per = max(1, rounds // SLICES)
            for _ in range(SLICES):
                for side in sides:
                    times, cpu = side.run(key, account, command, per)
                    got[side.name][0].extend(times)
                    got[side.name] = (got[side.name][0], got[side.name][1] + cpu)
            for name, (times, cpu) in got.items():
                results[name] = (statistics.median(times), _p99(times), cpu / len(times))
            cells = " ".join(f"{f'{m * 1000:.3f} / {p * 1000:.3f}, {c * 1000:.3f}':>34}"
                             for m, p, c in results.values())
            print(f"{labels[key]:58} {cells}")
            sys.stdout.flush()
            rows.append({"benchmark": "latency", "workload": labels[key],
                         "result": " · ".join(f"{name} median {m * 1000:.3f} ms, p99 {p * 1000:.3f} ms, "
                                              f"CPU {c * 1000:.3f} ms/command"
                                              for name, (m, p, c) in results.items())})
    print(f"load average after: {open('/proc/loadavg').read().split()[:3]}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000, help="the large INBOX")
    parser.add_argument("--small", type=int, default=10_000, help="the small INBOX")
    parser.add_argument("--rounds", type=int, default=300, help="commands per workload and server")
    parser.add_argument("--size", type=int, default=2048, help="message size in the fill")
    parser.add_argument("--base", type=Path, help="also run maild from this package tree")
    parser.add_argument("--no-dovecot", action="store_true")
    args = parser.parse_args(argv)
    run(args.messages, args.small, args.rounds, args.size, args.base, not args.no_dovecot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
