"""The concurrent mixed IMAP row alone, repeated: maild at each `[server] workers` setting
beside Dovecot, in one run (issue 21's target row; bench/compare.py runs it once among the
others).

    .venv/bin/python -m bench.mixed                      # workers 1 and 2, 3 runs, 10 s each
    .venv/bin/python -m bench.mixed --runs 1 --workers 2 --profile var/prof
    .venv/bin/python -m bench.mixed --set search.enabled=false

Each run measures every maild configuration and Dovecot back to back (the order rotates
from run to run), so the ratios compare servers measured under the same machine load.
``--profile DIR``: py-spy records every process of each maild tree during its first run
(raw collapsed stacks, DIR/workers-N-PID.txt), and the hot spots are printed.
Needs root and Dovecot, as bench.compare does.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from bench import compare, load, peers
from bench.load import Account


@contextlib.contextmanager
def _spy(directory: Path | None, label: str, root: int | None, seconds: float, idle: bool) -> Iterator[None]:
    """py-spy record of every process under ``root`` for ``seconds`` (from the start);
    ``idle``: waiting threads too (where a thread waits), else CPU only."""
    if directory is None or root is None:
        yield
        return
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    directory.mkdir(parents=True, exist_ok=True)
    spies = []
    for pid in peers.process_tree(root):
        out = directory / f"{label}-{pid}.txt"
        spies.append(subprocess.Popen(
            [exe, "record", "--format", "raw", "--nonblocking", *(["--idle"] if idle else []), "--threads", "-r", "200",
             "-d", str(int(seconds)), "-p", str(pid), "-o", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        yield
    finally:
        for spy in spies:
            try:
                spy.wait(timeout=seconds + 30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mixed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--smtp", action="store_true",
                        help="SMTP ingest instead (smtp-source, 20 sessions, 2000 x 5 KB, a fresh user per run): "
                             "accepted msgs/s, no Dovecot")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a maild config override (true/false/int parsed), for every maild")
    parser.add_argument("--variant", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="also run each workers setting with this override (side by side)")
    parser.add_argument("--no-dovecot", action="store_true")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR")
    parser.add_argument("--idle", action="store_true", help="--profile: sample waiting threads too")
    args = parser.parse_args(argv)
    overrides = peers.overrides(args.set)
    users, hashes = peers.make_users(1 + (args.runs if args.smtp else 0))
    accounts = [Account(*item) for item in users.items()]
    account = accounts[0]
    unit = "msgs/s" if args.smtp else "commands/s"
    if args.smtp:
        args.no_dovecot = True
    print(f"load average before: {open('/proc/loadavg').read().split()[:3]}; overrides {overrides}", flush=True)
    rates: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    with compare._terminate_cleanly(), contextlib.ExitStack() as stack:
        targets: list[tuple[str, compare._Target]] = []
        for workers in args.workers:
            for variant in ["", *args.variant]:
                over = {section: dict(table) for section, table in overrides.items()}
                for section, table in peers.overrides([variant] if variant else []).items():
                    over.setdefault(section, {}).update(table)
                over.setdefault("server", {})["workers"] = workers
                environ = {k: str(v) for k, v in over.pop("env", {}).items()}  # env.NAME=VALUE
                saved = dict(os.environ)
                os.environ.update(environ)
                try:
                    server = stack.enter_context(peers.Maild(users, hashes, overrides=over))
                finally:
                    os.environ.clear()
                    os.environ.update(saved)
                targets.append((f"maild workers={workers}{' ' + variant if variant else ''}",
                                compare._Target("maild", server.host, server.ports,
                                                lambda s=server: [p for p in [s.pid] if p])))
        if not args.no_dovecot:
            dovecot = stack.enter_context(peers.Dovecot(users, hashes))
            targets.append(("Dovecot", compare._Target("Dovecot", dovecot.host, dovecot.ports,
                                                        lambda: [p for p in [dovecot.pid] if p])))
        for _, target in targets:
            if not args.smtp:
                load.imap_mixed_setup(target.host, target.ports["imap"], account, clients=args.clients)
        for run in range(args.runs):
            order = targets[run % len(targets):] + targets[:run % len(targets)]
            for label, target in order:
                roots = target.cpu_roots()
                spy_dir = args.profile if run == 0 and label.startswith("maild") else None
                with _spy(spy_dir, re.sub(r"[^A-Za-z0-9]+", "-", label), roots[0] if roots else None,
                          args.seconds + 2, args.idle), compare._Cpu(target.cpu_roots) as used:
                    if args.smtp:
                        sizes = compare.Sizes()
                        rate, _ = compare._smtp(target, target.ports["smtp"], accounts[1 + run], sizes, lmtp=False)
                    else:
                        rate = load.imap_mixed(target.host, target.ports["imap"], account, clients=args.clients,
                                               seconds=args.seconds)
                rates.setdefault(label, []).append(rate)
                ops = compare.Sizes().smtp_messages if args.smtp else rate * args.seconds
                cpu.setdefault(label, []).append(used.used / (ops or 1) * 1000)
                print(f"run {run + 1} {label}: {rate:,.0f} {unit}, CPU {cpu[label][-1]:.2f} ms/operation, "
                      f"load {open('/proc/loadavg').read().split()[0]}", flush=True)
    print(f"load average after: {open('/proc/loadavg').read().split()[:3]}")
    base = statistics.median(rates["Dovecot"]) if "Dovecot" in rates else None
    print(f"| server | {unit} per run | median | CPU ms/operation | median/Dovecot |")
    print("|---|---|---|---|---|")
    for label, values in rates.items():
        med = statistics.median(values)
        ratio = f"{med / base:.2f}" if base else "-"
        print(f"| {label} | {' / '.join(f'{v:,.0f}' for v in values)} | {med:,.0f} | "
              f"{statistics.median(cpu[label]):.2f} | {ratio} |")
    if args.profile is not None:
        for path in sorted(args.profile.glob("*.txt")):
            _hot(path)
    return 0


def _hot(path: Path, top: int = 12) -> None:
    """Print the leaf functions and the threads with the most samples in a raw py-spy file."""
    leaves: dict[str, int] = {}
    threads: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        threads[frames[0]] = threads.get(frames[0], 0) + n
        leaf = frames[-1]
        leaves[leaf] = leaves.get(leaf, 0) + n
    if not total:
        return
    print(f"\n{path.name}: {total} samples")
    for name, n in sorted(threads.items(), key=lambda kv: -kv[1])[:8]:
        print(f"  thread {100 * n / total:5.1f}%  {name}")
    for name, n in sorted(leaves.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  leaf   {100 * n / total:5.1f}%  {name}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
