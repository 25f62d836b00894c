"""`make bench-compare`: the same SMTP, IMAP and POP3 workloads against maild and its peers,
in the same run, on the same machine and disk.

    python -m bench.compare [--quick] [--messages 100000] [--profile DIR] [--only reads,pop3]

Peers (bench/peers.py): a throwaway Dovecot (IMAP, POP3, LMTP; fsync at its default) and a
real Postfix instance relaying to that Dovecot over LMTP. SMTP ingest is compared twice:
with the full Postfix -> Dovecot path (what a Postfix+Dovecot site does) and with Dovecot's
own LMTP fed directly (the peer's fastest way into a mailbox). Each workload runs once on
maild and once on the peer, back to back; read workloads run three times on one connection
and report the median, plus the first (cold) run where a cache is built on first use.

With --profile DIR, py-spy (`pip install py-spy`) samples maild during each of its
workloads into DIR/<workload>.txt (collapsed stacks) and the run prints maild's hottest
functions per workload; sampling slows maild, so a profiling run's figures are not the
ones to publish.

Every row's result holds the maild figure, the peer figure and maild/peer (for times, lower
is better; the row says "faster" or "slower" in words).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import load, peers
from bench.load import Account, Imap


@dataclass(frozen=True)
class Sizes:
    smtp_messages: int = 2000  # smtp-source -m, 20 sessions, 5 KB each
    smtp_sessions: int = 20
    smtp_size: int = 5120
    logins: int = 100  # LOGIN + LOGOUT from 10 clients (argon2id: ~tens of ms of CPU each)
    append_total: int = 2000  # APPEND from 10 clients, one user each
    mailbox_messages: int = 10_000  # one mailbox filled by 10 clients, then read
    message_size: int = 4096
    pop3_messages: int = 200  # of pop3_size bytes, RETR in turn by one client
    pop3_size: int = 100 * 1024
    clients: int = 10
    mixed_seconds: float = 20.0  # the concurrent mixed IMAP workload, per server


QUICK = Sizes(smtp_messages=400, logins=30, append_total=500, mailbox_messages=2000, pop3_messages=50,
              mixed_seconds=8.0)
REPEATS = 3  # read workloads: runs per server
# Workloads of one round trip (~0.1 ms), where a median of 3 is mostly the machine's noise:
# runs per server (a fraction of a second in all).
ROUND_TRIPS = 201
ONE_ROUND_TRIP = frozenset({"noop", "select", "status", "few"})


def _read_runs(workload: str) -> int:
    """Runs per server of a read workload: many for a round trip, REPEATS for the rest."""
    return ROUND_TRIPS if workload in ONE_ROUND_TRIP else REPEATS


def _machine() -> str:
    from bench.__main__ import machine

    return machine()


def _version(args: list[str]) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return out.split("=")[-1].strip().split()[0] if out else "?"


def _fmt(value: float, unit: str) -> str:
    if unit == "ms":
        if value < 0.001:
            return f"{value * 1000:.3f} ms"  # a round trip: its microseconds matter
        return f"{value * 1000:,.1f} ms" if value < 0.1 else f"{value * 1000:,.0f} ms"
    if value >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:,.1f} {unit}"


def _row(workload: str, peer: str, ours: float, theirs: float, unit: str, note: str = "") -> dict[str, Any]:
    """unit "ms" means a time (lower is better); anything else is a rate (higher is better)."""
    ratio = ours / theirs if theirs else float("inf")
    better = 1 / ratio if unit == "ms" else ratio
    words = f"maild {better:.2f}x faster" if better >= 1 else f"maild {1 / better:.2f}x slower"
    result = (f"maild {_fmt(ours, unit)} · {peer} {_fmt(theirs, unit)} · maild/{peer.split()[0]} "
              f"{ratio:.2f} ({words}){' · ' + note if note else ''}")
    return {"benchmark": "compare", "workload": workload, "result": result}


class _Cpu:
    """CPU seconds used by a set of server process trees between start() and stop()."""

    def __init__(self, roots: Callable[[], list[int]]) -> None:
        self.roots = roots
        self.before = 0.0

    def _now(self) -> float:
        return sum(peers.cpu_seconds(peers.process_tree(pid)) for pid in self.roots())

    def __enter__(self) -> _Cpu:
        self.before = self._now()
        return self

    def __exit__(self, *exc: object) -> None:
        self.used = self._now() - self.before


def _cpu_note(ours: _Cpu, theirs: _Cpu, ops: int, what: str) -> str:
    return f"CPU {ours.used / ops * 1000:.2f} vs {theirs.used / ops * 1000:.2f} ms/{what}"


class _Profiler:
    """py-spy record of maild around each of its workloads (a no-op without a directory)."""

    def __init__(self, directory: Path | None, pid: Callable[[], int | None]) -> None:
        self.directory = directory
        self.pid = pid
        self.files: dict[str, Path] = {}
        if directory is not None:
            if not shutil.which("py-spy") and not (Path(sys.executable).parent / "py-spy").exists():
                raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
            directory.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        pid = self.pid()
        if self.directory is None or pid is None:
            yield
            return
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        out = self.directory / f"{name}.txt"
        # --subprocesses: with [server] workers > 1 the pid is the supervisor's; its workers do the work.
        spy = subprocess.Popen([exe, "record", "--pid", str(pid), "--subprocesses", "--format", "raw", "--gil",
                                "--nonblocking",
                                "--rate", "500", "--output", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # attached
        try:
            yield
        finally:
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(timeout=60)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()
        if out.exists():
            self.files[name] = out

    def report(self, top: int = 8) -> None:
        for name, path in self.files.items():
            own, inclusive = hot_spots(path, top)
            print(f"maild hot spots, {name} (py-spy --gil: share of samples holding the GIL)")
            print("  self:  " + "; ".join(own))
            print("  maild functions with callees:  " + "; ".join(inclusive))


def hot_spots(path: Path, top: int = 8) -> tuple[list[str], list[str]]:
    """From a py-spy raw file: the functions most often on top of the stack, and maild's own
    functions most often anywhere on it (the code paths to look at)."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f.rsplit(":", 1)[0] + ")" if ":" in f else f for f in stack.split(";")]
        n = int(count)
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            if "(maild/" in frame and "(maild/cli.py)" not in frame and "(maild/daemon.py)" not in frame:
                inclusive[frame] += n
    if not total:
        return [], []
    return ([f"{n / total:.0%} {f}" for f, n in own.most_common(top)],
            [f"{n / total:.0%} {f}" for f, n in inclusive.most_common(top)])


@dataclass
class _Target:
    name: str
    host: str
    ports: dict[str, int]
    cpu_roots: Callable[[], list[int]]


def _smtp(target: _Target, port: int, account: Account, sizes: Sizes, *, lmtp: bool) -> tuple[float, float]:
    """(accepted msgs/s, in-mailbox msgs/s) for one smtp-source run into an empty INBOX."""
    start = time.perf_counter()
    elapsed = load.smtp_source(target.host, port, account.address, sessions=sizes.smtp_sessions,
                               messages=sizes.smtp_messages, size=sizes.smtp_size, lmtp=lmtp)
    done = load.wait_for_count(target.host, target.ports["imap"], account, sizes.smtp_messages)
    return sizes.smtp_messages / elapsed, sizes.smtp_messages / (done - start)


def _fill(target: _Target, account: Account, count: int, size: int, clients: int) -> float:
    messages = [load.message(i, size, account.address) for i in range(min(count, 1000))]
    # Open INBOX once first: Dovecot creates a user's INBOX on first use, and ten clients
    # doing that at once can race ("NO [ALREADYEXISTS]").
    conn = Imap(target.host, target.ports["imap"])
    try:
        conn.login(account.address, account.password)
        conn.command("SELECT INBOX")
    finally:
        conn.close()
    return load.imap_append(target.host, target.ports["imap"], [account], messages, clients=clients, total=count)


# The header fields Thunderbird fetches for every message of a folder it opens.
THUNDERBIRD_HEADERS = ("From To Cc Bcc Subject Date Message-ID Priority X-Priority References Newsgroups "
                       "In-Reply-To Content-Type Reply-To")


def _reads(target: _Target, account: Account, n: int) -> dict[str, tuple[float, float, int]]:
    """workload -> (first run, median run, result count) for the read workloads on INBOX of n messages."""
    conn = Imap(target.host, target.ports["imap"])
    commands = {
        "noop": "NOOP",  # the command path's fixed cost: a round trip with no work
        "select": "SELECT INBOX",
        "flags": "FETCH 1:* (UID FLAGS)",
        "headers": f"UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS ({THUNDERBIRD_HEADERS})])",
        "envelope": f"FETCH {max(1, n - 499)}:{n} ENVELOPE",
        "from": f'SEARCH FROM "{load.search_from()}"',
        "subject": f'SEARCH SUBJECT "{load.search_subject()}"',
        "quickfilter": load.quick_search(load.search_subject()),
        "body": f'SEARCH BODY "{load.search_body()}"',  # no full-text index on either side
        "sort": "SORT (REVERSE DATE) UTF-8 ALL",  # a webmail's message list, newest first
    }
    out: dict[str, tuple[float, float, int]] = {}

    def measure(name: str, command: str) -> None:
        times, counted = [], 0
        for _ in range(_read_runs(name)):
            elapsed, response = load.timed(conn, command)
            times.append(elapsed)
            if name in ("flags", "headers", "envelope", "resync"):
                counted = response.count(b" FETCH (")
            elif name in ("from", "subject", "quickfilter", "body", "sort"):
                counted = len(response.split(b"\r\n", 1)[0].split()) - 2
            elif name == "noop":
                counted = response.count(b"\r\n")
            else:
                counted = int(response.split(b" EXISTS", 1)[0].rsplit(b"* ", 1)[1])
        out[name] = (times[0], statistics.median(times), counted)

    try:
        conn.login(account.address, account.password)
        conn.command("SELECT INBOX")  # opening the mailbox once is not part of any workload
        for name, command in commands.items():
            measure(name, command)
        # A client coming back to the mailbox with CONDSTORE (RFC 7162 §3.1.4.1), as
        # Thunderbird does: ten messages changed since it last looked.
        selected = conn.command("SELECT INBOX (CONDSTORE)")
        highest = int(selected.split(b"HIGHESTMODSEQ ", 1)[1].split(b"]", 1)[0])
        conn.command("STORE 1:10 +FLAGS.SILENT (\\Flagged)")
        measure("resync", f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {highest})")
    finally:
        conn.close()
    return out


def _mixed(target: _Target, account: Account, sizes: Sizes) -> tuple[float, _Cpu]:
    """Commands/s of the concurrent mixed workload (load.imap_mixed), and the CPU it took."""
    load.imap_mixed_setup(target.host, target.ports["imap"], account, clients=sizes.clients)
    with _Cpu(target.cpu_roots) as cpu:
        rate = load.imap_mixed(target.host, target.ports["imap"], account, clients=sizes.clients,
                               seconds=sizes.mixed_seconds)
    return rate, cpu


def _process_model(ours: _Target, theirs: _Target, users: dict[str, str], hashes: dict[str, str],
                   mixed_user: Account, login_users: list[Account], sizes: Sizes, cores: int,
                   dovecot_logins: float, dovecot_login_cpu: _Cpu,
                   overrides: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Issue 21's rows: logins and the concurrent mixed IMAP workload with one maild process
    ([server] workers = 1, a second throwaway maild) and with one worker per core (the
    daemon of the other rows), beside Dovecot."""
    rows = []
    steps = ", ".join(name for _, name in load.MIXED_STEPS)
    what = (f"IMAP concurrent mixed: {sizes.clients} clients of one user staying logged in, {steps} "
            f"on {len(load.MIXED_BOXES)} shared mailboxes, {sizes.mixed_seconds:.0f} s")
    single_overrides = {**(overrides or {}), "server": {**(overrides or {}).get("server", {}), "workers": 1}}
    with peers.Maild(users, hashes, overrides=single_overrides) as single:
        one = _Target("maild", single.host, single.ports, lambda: [p for p in [single.pid] if p])
        with _Cpu(one.cpu_roots) as c_one:
            m1 = load.imap_logins(one.host, one.ports["imap"], login_users, clients=sizes.clients,
                                  total=sizes.logins)
        rows.append(_row(f"IMAP connect+LOGIN+LOGOUT, {sizes.clients} clients, {sizes.logins} logins, "
                         "same argon2id hashes; maild workers = 1", "Dovecot", m1, dovecot_logins, "logins/s",
                         _cpu_note(c_one, dovecot_login_cpu, sizes.logins, "login")))
        m1, c_one = _mixed(one, mixed_user, sizes)
    mn, c_many = _mixed(ours, mixed_user, sizes)
    d, c_dovecot = _mixed(theirs, mixed_user, sizes)
    for workers, rate, cpu in ((1, m1, c_one), (cores, mn, c_many)):
        rows.append(_row(f"{what}; maild workers = {workers}", "Dovecot", rate, d, "commands/s",
                         f"CPU {cpu.used / (rate * sizes.mixed_seconds or 1) * 1000:.2f} vs "
                         f"{c_dovecot.used / (d * sizes.mixed_seconds or 1) * 1000:.2f} ms/command"))
    return rows


def _settle(target: _Target, timeout: float = 900.0) -> None:
    """Wait (at most ``timeout``) until the server's processes use under a tenth of a core:
    what a fill left running in the background (maild's search indexer follows the change
    log) finishes before a read workload is timed, on either side."""
    deadline = time.monotonic() + timeout
    before = peers.cpu_seconds([p for root in target.cpu_roots() for p in peers.process_tree(root)])
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = peers.cpu_seconds([p for root in target.cpu_roots() for p in peers.process_tree(root)])
        if now - before < 0.05:
            return
        before = now


SCALING = {
    "select": "IMAP SELECT INBOX",
    "few": "IMAP FETCH of 10 messages in the middle (UID FLAGS RFC822.SIZE)",
    "status": "IMAP STATUS INBOX (MESSAGES UNSEEN UIDNEXT HIGHESTMODSEQ)",
    "resync": "IMAP UID FETCH 1:* (FLAGS) (CHANGEDSINCE m), 10 changed since m",
    "idle": "IMAP IDLE: another session's STORE of one message until the idling one reads its FETCH",
}
SCALING_REPEATS = 9


SLICES = 20  # _round_trips: each server's runs of a workload are made in this many turns
# Untimed round trips at the start of each turn: the first after the switch from another
# server's (or mailbox's) turn took ~2x, the next few ~1.2x (caches refilled), on both servers.
SLICE_WARMUP = 5
TURN = ROUND_TRIPS // SLICES + 1  # timed round trips per turn


def _round_trip_commands(n: int) -> dict[str, str]:
    """The one-round-trip SCALING commands for an INBOX of ``n`` messages."""
    middle = max(1, n // 2 - 5)
    return {"select": "SELECT INBOX", "few": f"FETCH {middle}:{middle + 9} (UID FLAGS RFC822.SIZE)",
            "status": "STATUS INBOX (MESSAGES UNSEEN UIDNEXT HIGHESTMODSEQ)"}


def _round_trips(targets: list[_Target], mailboxes: list[tuple[Account, int]]) -> list[list[dict[str, float]]]:
    """Median seconds of the one-round-trip SCALING operations (SELECT, a FETCH of 10,
    STATUS) on each of ``mailboxes`` (an account's INBOX of n messages), per mailbox and
    target. Every server and every mailbox takes turns (SLICES slices of each workload), so
    all are measured under the same machine load, as bench/latency.py does: run one after
    the other, minutes apart, a round trip of ~0.1 ms moved by a third between them on this
    VM, and the growth from the small mailbox to the large looked like a cost of its size,
    for both servers at once. Each turn begins with SLICE_WARMUP untimed round trips. The
    client and the servers run on one core meanwhile (peers.one_core): across cores the same
    round trip took 60 or 100 us by where the scheduler put the two ends."""
    pairs = [(t, account, n) for account, n in mailboxes for t in targets]
    conns = [Imap(t.host, t.ports["imap"]) for t, _, _ in pairs]
    spent: list[dict[str, list[float]]] = [{} for _ in pairs]
    try:
        for conn, (_, account, _) in zip(conns, pairs, strict=True):
            conn.login(account.address, account.password)
            conn.command("SELECT INBOX")
        with peers.one_core([root for t in targets for root in t.cpu_roots()]):
            for key in _round_trip_commands(1):
                lines = [_round_trip_commands(n)[key] for _, _, n in pairs]
                for conn, command in zip(conns, lines, strict=True):
                    conn.command(command)  # once untimed: a first run is not a round trip
                for _ in range(SLICES):
                    for conn, command, times in zip(conns, lines, spent, strict=True):
                        for _ in range(SLICE_WARMUP):
                            conn.command(command)
                        times.setdefault(key, []).extend(load.timed(conn, command)[0] for _ in range(TURN))
    finally:
        for conn in conns:
            conn.close()
    medians = [{key: statistics.median(v) for key, v in times.items()} for times in spent]
    return [medians[k * len(targets):(k + 1) * len(targets)] for k in range(len(mailboxes))]


def _scaling(target: _Target, account: Account, n: int) -> dict[str, float]:
    """Median seconds of the SCALING operations that take two sessions (a resync after
    another session's change, IDLE) on ``account``'s INBOX of ``n`` messages. Not on one
    core, unlike _round_trips: these time a change reaching another session, whose work
    (the commit's notice to every process, the other session's refresh) a server of several
    processes spreads over the cores it has; on one core it all queued behind the client."""
    conn = Imap(target.host, target.ports["imap"])
    other = Imap(target.host, target.ports["imap"])
    out: dict[str, float] = {}
    try:
        conn.login(account.address, account.password)
        other.login(account.address, account.password)
        conn.command("SELECT INBOX")
        other.command("SELECT INBOX")
        middle = max(1, n // 2 - 5)
        other.command(f"STORE {middle}:{middle + 9} -FLAGS.SILENT (\\Flagged)")  # each round changes them
        times = []
        for round_ in range(SCALING_REPEATS):
            selected = conn.command("SELECT INBOX (CONDSTORE)")
            highest = int(selected.split(b"HIGHESTMODSEQ ", 1)[1].split(b"]", 1)[0])
            other.command(f"STORE {middle}:{middle + 9} {'+-'[round_ % 2]}FLAGS.SILENT (\\Flagged)")
            times.append(load.timed(conn, f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {highest})")[0])
        out["resync"] = statistics.median(times)
        other.command(f"STORE {middle} -FLAGS.SILENT (\\Seen)")  # each round below changes it
        conn.command("NOOP")
        times = []
        for round_ in range(SCALING_REPEATS):
            tag = conn.idle()
            start = time.perf_counter()
            other.command(f"STORE {middle} {'+-'[round_ % 2]}FLAGS.SILENT (\\Seen)")
            while b"FETCH" not in conn._line():
                pass
            times.append(time.perf_counter() - start)
            conn.done(tag)
        out["idle"] = statistics.median(times)
    finally:
        conn.close()
        other.close()
    return out


def _pop3(target: _Target, account: Account, sizes: Sizes) -> float:
    """MB/s of RETRs over the whole maildrop (filled beforehand with _fill)."""
    seconds, received, count = load.pop3_retr(target.host, target.ports["pop3"], account)
    if count != sizes.pop3_messages:
        raise load.LoadError(f"{target.name} POP3 maildrop holds {count} of {sizes.pop3_messages} messages")
    return received / seconds / 1e6


@contextlib.contextmanager
def _terminate_cleanly() -> Iterator[None]:
    """SIGTERM -> SystemExit, so the peers' context managers still clean up."""
    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# Row groups, in run order; --only runs some of them (the mailbox fill runs for "reads" and
# "scaling", which read it).
GROUPS = ("smtp", "login", "append", "reads", "scaling", "pop3")


def run(quick: bool = False, messages: int | None = None, profile: Path | None = None,
        only: frozenset[str] = frozenset(GROUPS),
        overrides: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """``overrides``: maild config keys by section (``--set``), e.g. {"search": {"enabled": False}}."""
    sizes = QUICK if quick else Sizes()
    if messages:
        sizes = Sizes(**{**sizes.__dict__, "mailbox_messages": messages})
    users, hashes = peers.make_users(6 + sizes.clients)
    accounts = [Account(a, p) for a, p in users.items()]
    big, smtp_user, lmtp_user, pop3_user, mixed_user, small = accounts[:6]
    append_users = accounts[6:]
    cores = len(os.sched_getaffinity(0))  # maild's default [server] workers
    dovecot_v = _version(["dovecot", "--version"])
    postfix_v = _version(["postconf", "-d", "mail_version"])
    print(f"machine: {_machine()}; load average before: {open('/proc/loadavg').read().split()[:3]}")
    print(f"peers: Dovecot {dovecot_v} ({peers.DOVECOT_MAIL_FORMAT}, mail_fsync=optimized), Postfix {postfix_v}; "
          f"maild group commit with fsync; all on 127.0.0.1, same disk ({os.environ.get('TMPDIR', '/tmp')})"
          + (f"; maild overrides {overrides}" if overrides else ""))
    sys.stdout.flush()
    rows: list[dict[str, Any]] = []
    with _terminate_cleanly(), contextlib.ExitStack() as stack:
        maild = stack.enter_context(peers.Maild(users, hashes, overrides=overrides))
        dovecot = stack.enter_context(peers.Dovecot(users, hashes))
        postfix = stack.enter_context(peers.Postfix(users, dovecot.ports["lmtp"]))
        ours = _Target("maild", maild.host, maild.ports, lambda: [p for p in [maild.pid] if p])
        theirs = _Target("Dovecot", dovecot.host, dovecot.ports, lambda: [p for p in [dovecot.pid] if p])
        relay = _Target("Postfix+Dovecot", postfix.host, {"imap": dovecot.ports["imap"], **postfix.ports},
                        lambda: [p for p in (postfix.pid, dovecot.pid) if p])
        for name in ("smtp", "imap", "pop3"):
            if name not in maild.ports:
                raise RuntimeError(f"maild has no {name} server yet (maild/{name}/server.py): nothing to compare")
        spy = _Profiler(profile, lambda: maild.pid)

        # SMTP ingest ------------------------------------------------------------------
        if "smtp" in only:
            rows.extend(_smtp_rows(ours, theirs, relay, maild, dovecot, postfix, smtp_user, lmtp_user, sizes, spy))
        if "login" in only:
            rows.extend(_login_rows(ours, theirs, users, hashes, mixed_user, append_users, sizes, cores, spy,
                                    overrides))
        if "append" in only:
            rows.extend(_append_rows(ours, theirs, append_users, sizes, spy))
        if only & {"reads", "scaling"}:
            rows.extend(_one_mailbox_rows(ours, theirs, big, small, sizes, spy, only))
        if "pop3" in only:
            rows.extend(_pop3_rows(ours, theirs, pop3_user, sizes, spy))
        spy.report()
    print(f"load average after: {open('/proc/loadavg').read().split()[:3]}")
    return rows


def _smtp_rows(ours: _Target, theirs: _Target, relay: _Target, maild: peers.Maild, dovecot: peers.Dovecot,
               postfix: peers.Postfix, smtp_user: Account, lmtp_user: Account, sizes: Sizes,
               spy: _Profiler) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    smtp_what = (f"smtp-source {sizes.smtp_sessions} sessions, {sizes.smtp_messages} x "
                 f"{sizes.smtp_size // 1024} KB, one connection per message")
    with _Cpu(ours.cpu_roots) as c_ours, spy("smtp-ingest"):
        m_acc, m_box = _smtp(ours, maild.ports["smtp"], smtp_user, sizes, lmtp=False)
    with _Cpu(relay.cpu_roots) as c_relay:
        p_acc, p_box = _smtp(relay, postfix.ports["smtp"], smtp_user, sizes, lmtp=False)
    rows.append(_row(f"SMTP ingest, accepted (250): {smtp_what}", "Postfix", m_acc, p_acc, "msg/s",
                     _cpu_note(c_ours, c_relay, sizes.smtp_messages, "msg")))
    rows.append(_row(f"SMTP ingest, all in the IMAP mailbox: {smtp_what}", "Postfix+Dovecot LMTP",
                     m_box, p_box, "msg/s"))
    with _Cpu(theirs.cpu_roots) as c_lmtp:
        l_acc, _l_box = _smtp(theirs, dovecot.ports["lmtp"], lmtp_user, sizes, lmtp=True)
    rows.append(_row(f"SMTP into maild vs LMTP into Dovecot (smtp-source -L), in mailbox at 250: {smtp_what}",
                     "Dovecot LMTP", m_acc, l_acc, "msg/s", _cpu_note(c_ours, c_lmtp, sizes.smtp_messages, "msg")))
    return rows


def _login_rows(ours: _Target, theirs: _Target, users: dict[str, str], hashes: dict[str, str],
                mixed_user: Account, append_users: list[Account], sizes: Sizes, cores: int,
                spy: _Profiler, overrides: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    imap = ours.ports["imap"], theirs.ports["imap"]
    with _Cpu(ours.cpu_roots) as c_ours, spy("imap-login"):
        m = load.imap_logins(ours.host, imap[0], append_users, clients=sizes.clients, total=sizes.logins)
    with _Cpu(theirs.cpu_roots) as c_theirs:
        d = load.imap_logins(theirs.host, imap[1], append_users, clients=sizes.clients, total=sizes.logins)
    rows.append(_row(f"IMAP connect+LOGIN+LOGOUT, {sizes.clients} clients, {sizes.logins} logins, "
                     f"same argon2id hashes; maild workers = {cores}", "Dovecot", m, d, "logins/s",
                     _cpu_note(c_ours, c_theirs, sizes.logins, "login")))
    rows.extend(_process_model(ours, theirs, users, hashes, mixed_user, append_users, sizes, cores, d,
                               c_theirs, overrides))
    return rows


def _append_rows(ours: _Target, theirs: _Target, append_users: list[Account], sizes: Sizes,
                 spy: _Profiler) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    batch = [load.message(i, sizes.message_size) for i in range(200)]
    results = []
    for target in (ours, theirs):
        with _Cpu(target.cpu_roots) as cpu, (spy("imap-append") if target is ours else contextlib.nullcontext()):
            # client n is logged in as append_users[n]
            rate = load.imap_append(target.host, target.ports["imap"], append_users, batch,
                                    clients=len(append_users), total=sizes.append_total)
        results.append((rate, cpu))
    rows.append(_row(f"IMAP APPEND {sizes.message_size // 1024} KB, {sizes.clients} clients each into "
                     f"its own INBOX, {sizes.append_total} messages", "Dovecot", results[0][0], results[1][0],
                     "msg/s", _cpu_note(results[0][1], results[1][1], sizes.append_total, "msg")))
    return rows


def _one_mailbox_rows(ours: _Target, theirs: _Target, big: Account, small: Account, sizes: Sizes,
                      spy: _Profiler, only: frozenset[str]) -> list[dict[str, Any]]:
    """The fill of one INBOX of ``sizes.mailbox_messages``, then the read workloads on it
    ("reads") and the operations whose cost should follow the work ("scaling")."""
    rows: list[dict[str, Any]] = []
    n = sizes.mailbox_messages
    with _Cpu(ours.cpu_roots) as c_ours, spy("imap-append-one-mailbox"):
        m = _fill(ours, big, n, sizes.message_size, sizes.clients)
    with _Cpu(theirs.cpu_roots) as c_theirs:
        d = _fill(theirs, big, n, sizes.message_size, sizes.clients)
    rows.append(_row(f"IMAP APPEND {sizes.message_size // 1024} KB, {sizes.clients} clients into one "
                     f"INBOX, {n:,} messages", "Dovecot", m, d, "msg/s", _cpu_note(c_ours, c_theirs, n, "msg")))
    if "reads" in only:
        rows.extend(_read_rows(ours, theirs, big, n, spy))
    if "scaling" in only:
        rows.extend(_scaling_rows(ours, theirs, big, small, n, sizes, spy))
    return rows


def _read_rows(ours: _Target, theirs: _Target, big: Account, n: int, spy: _Profiler) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    _settle(ours)
    with spy("imap-reads"):
        m_reads = _reads(ours, big, n)
    _settle(theirs)
    d_reads = _reads(theirs, big, n)
    labels = {
        "noop": "IMAP NOOP round trip (the command path's fixed cost)",
        "select": f"IMAP SELECT of a {n:,}-message INBOX",
        "flags": f"IMAP FETCH 1:* (UID FLAGS), {n:,} messages",
        "headers": f"IMAP UID FETCH 1:* of Thunderbird's header fields, size and flags, {n:,} messages",
        "envelope": "IMAP FETCH 500 ENVELOPE (the newest 500)",
        "from": f'IMAP SEARCH FROM "{load.search_from()}" over {n:,} messages',
        "subject": f'IMAP SEARCH SUBJECT "{load.search_subject()}" over {n:,} messages',
        "quickfilter": f'IMAP Thunderbird quick filter (sender, recipients, subject) "{load.search_subject()}" '
                       f"over {n:,} messages",
        "body": f'IMAP SEARCH BODY "{load.search_body()}" over {n:,} messages (no FTS index)',
        "sort": f"IMAP SORT (REVERSE DATE) UTF-8 ALL over {n:,} messages (RFC 5256)",
        "resync": f"IMAP UID FETCH 1:* (FLAGS) (CHANGEDSINCE m), 10 of {n:,} changed since m",
    }
    counted_as = {"noop": "response lines", "select": "EXISTS", "flags": "FETCH responses",
                  "headers": "FETCH responses",
                  "envelope": "FETCH responses", "resync": "FETCH responses",
                  "from": "hits", "subject": "hits", "quickfilter": "hits", "body": "hits",
                  "sort": "messages"}
    for key, label in labels.items():
        (m_first, m_med, m_count), (d_first, d_med, d_count) = m_reads[key], d_reads[key]
        note = f"first run {_fmt(m_first, 'ms')} vs {_fmt(d_first, 'ms')}"
        if m_count != d_count:
            note += f" · RESULT COUNTS DIFFER: maild {m_count}, Dovecot {d_count}"
        else:
            note += f" · {m_count:,} {counted_as[key]} each"
        rows.append(_row(f"{label}; median of {_read_runs(key)}", "Dovecot", m_med, d_med, "ms", note))
    return rows


def _scaling_rows(ours: _Target, theirs: _Target, big: Account, small: Account, n: int, sizes: Sizes,
                  spy: _Profiler) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    # Costs that follow the work (issue 25): the same operations on a mailbox a tenth the
    # size, side by side; the ratio between the two sizes should stay near 1.
    small_n = max(100, n // 10)
    for target in (ours, theirs):
        _fill(target, small, small_n, sizes.message_size, sizes.clients)
    _settle(ours)
    _settle(theirs)
    (m_small, d_small), (m_big, d_big) = _round_trips([ours, theirs], [(small, small_n), (big, n)])
    _settle(ours)
    with spy("imap-scaling"):
        m_small.update(_scaling(ours, small, small_n))
        m_big.update(_scaling(ours, big, n))
    _settle(theirs)
    d_small.update(_scaling(theirs, small, small_n))
    d_big.update(_scaling(theirs, big, n))
    for key, label in SCALING.items():
        grow_m, grow_d = m_big[key] / m_small[key], d_big[key] / d_small[key]
        for count, m_t, d_t in ((small_n, m_small[key], d_small[key]), (n, m_big[key], d_big[key])):
            runs = (f"median of {TURN * SLICES}, servers and sizes in turns on one core"
                    if key in ONE_ROUND_TRIP else f"median of {SCALING_REPEATS}")
            rows.append(_row(f"{label}, {count:,} messages; {runs}", "Dovecot", m_t, d_t,
                             "ms", f"{small_n:,} -> {n:,} messages: maild x{grow_m:.2f}, Dovecot x{grow_d:.2f}"))
    return rows


def _pop3_rows(ours: _Target, theirs: _Target, pop3_user: Account, sizes: Sizes,
               spy: _Profiler) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for target in (ours, theirs):
        _fill(target, pop3_user, sizes.pop3_messages, sizes.pop3_size, clients=1)
    _settle(ours)
    _settle(theirs)
    with spy("pop3-retr"):
        m = _pop3(ours, pop3_user, sizes)
    d = _pop3(theirs, pop3_user, sizes)
    rows.append(_row(f"POP3 RETR of {sizes.pop3_messages} x {sizes.pop3_size // 1024} KB in turn, one client",
                     "Dovecot", m, d, "MB/s"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller workloads (a smoke run)")
    parser.add_argument("--messages", type=int, default=None,
                        help="messages in the read-workload mailbox (default 10,000; 2,000 with --quick)")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="sample maild with py-spy during its workloads; collapsed stacks into DIR")
    parser.add_argument("--only", default=",".join(GROUPS), metavar="GROUPS",
                        help=f"comma-separated row groups to run, of {', '.join(GROUPS)} (default: all)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a maild config override, e.g. search.enabled=false (repeatable)")
    args = parser.parse_args(argv)
    only = frozenset(args.only.split(","))
    if not only <= set(GROUPS):
        parser.error(f"--only: unknown groups {', '.join(sorted(only - set(GROUPS)))}")
    from bench.__main__ import print_table

    print_table(run(quick=args.quick, messages=args.messages, profile=args.profile, only=only,
                    overrides=peers.overrides(args.set)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
