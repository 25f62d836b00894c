"""Full-text search (issue 22): SEARCH BODY/TEXT and Thunderbird's quick filter over a large
mailbox, reindex rate, index size per GB of mail, index lag under SMTP ingest.

A throwaway `maild serve` (bench.peers.Maild). The mailbox is filled directly through the
store (``store.append_many``, the daemon stopped: 100,000 IMAP APPENDs would take minutes
and measure APPEND), then ``maild reindex`` builds the index (the reindex rate and the
index size), then the daemon answers each query ``RUNS`` times over one IMAP connection
(p50 and p99 of all runs): words found in one message each (100 such messages are
added), as selective as most users' queries, and phrases of the corpus's 27 words, where
every 3-gram is in every message (an n-gram index's worst case; the index answers phrases
of words from its word shingles, docs/search.md). The lag rows: 2,000
messages from smtp-source (20 sessions) to another user while probe messages with a
unique word go to the bench user over SMTP; per probe, the time from its 250 to the first
SEARCH BODY that finds it, and to its being in the index (the mailbox's watermark past
it, read from the index the daemon commits).

    python -m bench --only search                   # through `make bench`
    python -c "import bench.search as b; print(b.run(messages=100_000))"
"""

from __future__ import annotations

import smtplib
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

from bench import load
from bench.peers import Maild, make_users, wait_listening

MESSAGES = 100_000
RUNS = 5  # runs of each query
PROBES = 100  # lag probes
RARE = 100  # messages with a word of their own


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def _fill(server: Maild, user: str, count: int) -> int:
    """``count`` bench messages into the user's INBOX through the store; their bytes."""
    from maild import config as configmod
    from maild.store import Store

    server.stop()
    store = Store(server.root / "data", configmod.load(server.config_path).store)
    total = 0
    try:
        inbox = store.require_mailbox(user, "INBOX")
        for start in range(0, count, 1000):
            batch = [load.message(i, size=4096, to=user) for i in range(start, min(start + 1000, count))]
            total += sum(len(m) for m in batch)
            d = store.append_many(user, inbox.id, [(m, (), None) for m in batch])
            d.addErrback(lambda f: f.raiseException())
        # Words as selective as a user's usual query (a name, an order number): one message
        # each, among the rest.
        rare = [(f"Subject: order {k}\r\nFrom: shop@example.org\r\n\r\nYour order zanzibar{k:03d} "
                 f"(ticket #{40_000 + k}) has shipped.\r\n").encode() for k in range(RARE)]
        total += sum(len(m) for m in rare)
        store.append_many(user, inbox.id, [(m, (), None) for m in rare]).addErrback(lambda f: f.raiseException())
    finally:
        store.close()
    return total


def _index_bytes(server: Maild) -> int:
    root = server.root / "data" / "search"
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


def _queries(count: int) -> list[tuple[str, list[str]]]:
    words = ["invoice meeting agenda", "budget shipment review", "quarterly budget shipment review",
             "deadline forecast", "payroll holiday update summary", "roadmap customer"]
    return [
        ("SEARCH BODY, a word in one message", [f"UID SEARCH BODY zanzibar{k:03d}" for k in (4, 42, 77, 99)]),
        ("SEARCH TEXT, a word in one message", [f'UID SEARCH TEXT "ticket #{40_000 + k}"' for k in (4, 42, 77, 99)]),
        ("SEARCH BODY, common words (27-word corpus)", [f'UID SEARCH BODY "{w}"' for w in words]),
        ("SEARCH TEXT", [f'UID SEARCH TEXT "{w}"' for w in ["sender7@host7", "Report 13 week 6",
                                                            "budget shipment review", "bench.4242@"]]),
        ("Thunderbird quick filter", [load.quick_search(t) for t in ["sender7", "Report 13", "host5", "nobody"]]),
    ]


def _timings(conn: load.Imap, commands: list[str]) -> tuple[list[float], int]:
    times, hits = [], 0
    for _ in range(RUNS):
        for command in commands:
            elapsed, response = load.timed(conn, command)
            times.append(elapsed * 1000)
            hits += sum(len(line.split()) - 2 for line in response.split(b"\r\n") if line.startswith(b"* SEARCH"))
    return times, hits // RUNS


def _lag(server: Maild, users: dict[str, str], probes: int, background: int) -> dict[str, list[float]]:
    """Per probe: seconds from its 250 to SEARCH finding it, and to its being indexed."""
    from maild.search.index import ShardIndex
    from maild.search.service import index_path

    target, other = list(users)[:2]
    host, smtp_port = server.host, server.ports["smtp"]
    conn = load.Imap(host, server.ports["imap"])
    conn.login(target, users[target])
    conn.command("SELECT INBOX")
    indexes = [ShardIndex(index_path(server.root / "data", i), 1, create=False) for i in range(4)]
    found: list[float] = []
    indexed: list[float] = []
    source = threading.Thread(target=load.smtp_source, args=(host, smtp_port, other),
                              kwargs={"sessions": 20, "messages": background})
    source.start()
    try:
        with smtplib.SMTP(host, smtp_port, timeout=30) as smtp:
            for n in range(probes):
                word = f"lagprobe{n}x{int(time.time())}"
                body = f"Subject: probe {n}\r\nFrom: p@example.org\r\n\r\nthe word is {word}\r\n"
                smtp.sendmail("p@example.org", [target], body.encode())
                acked = time.perf_counter()
                uid = 0
                while not uid:
                    response = conn.command(f"UID SEARCH BODY {word}")
                    hits = [int(x) for line in response.split(b"\r\n") if line.startswith(b"* SEARCH")
                            for x in line.split()[2:]]
                    uid = hits[0] if hits else 0
                found.append(time.perf_counter() - acked)
                while not _indexed(indexes, target, uid):
                    time.sleep(0.005)
                indexed.append(time.perf_counter() - acked)
                time.sleep(0.02)
    finally:
        source.join()
        conn.close()
    return {"found": found, "indexed": indexed}


def _indexed(indexes: list[Any], user: str, uid: int) -> bool:
    """Some shard's committed index has the user's INBOX (mailbox 1) past ``uid``."""
    import tantivy

    from maild.search.index import SCHEMA

    for ix in indexes:
        ix.refresh()
        if ix.index is None:
            continue
        searcher = ix.searcher()
        query = tantivy.Query.term_query(SCHEMA, "mb", f"{user}\x001")
        hits = searcher.search(query, 1, count=False, order_by_field="uid").hits
        if hits and int(hits[0][0]) >= uid:
            return True
    return False


def run(quick: bool = False, messages: int | None = None) -> list[dict[str, Any]]:
    count = messages or (5_000 if quick else MESSAGES)
    users, hashes = make_users(2, prefix="search")
    user = next(iter(users))
    rows: list[dict[str, Any]] = []
    with Maild(users, hashes, overrides={"store": {"shards": 4}}) as server:
        mail_bytes = _fill(server, user, count)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "maild.cli", "-c", str(server.config_path), "reindex"],
                       check=True, capture_output=True, timeout=3600)
        elapsed = time.perf_counter() - start
        size = _index_bytes(server)
        rows.append({"workload": f"maild reindex, {count:,} messages of 4 KB", "msg/s": count / elapsed,
                     "seconds": elapsed})
        rows.append({"workload": "index size per GB of mail", "GB": size / mail_bytes,
                     "result": f"{size / mail_bytes:.2f} GB per GB ({size / 2**20:,.0f} MiB for "
                               f"{mail_bytes / 2**20:,.0f} MiB)"})
        server.spawn([sys.executable, "-m", "maild.cli", "-c", str(server.config_path), "serve"], server.log_path)
        wait_listening(list(server.ports.values()), server.process, server.log_path, "maild")
        conn = load.Imap(server.host, server.ports["imap"])
        try:
            conn.login(user, users[user])
            conn.command("SELECT INBOX")
            for label, commands in _queries(count):
                times, hits = _timings(conn, commands)
                rows.append({"workload": f"{label}, {count:,} messages ({len(commands)} queries x {RUNS})",
                             "result": f"p50 {statistics.median(times):.1f} ms  p99 {_percentile(times, 99):.1f} ms"
                                       f"  ({hits:,} hits per round)"})
                if label.startswith("SEARCH BODY, common"):
                    for command in commands:  # the spread: how common the words are decides
                        ms, hits = _timings(conn, [command])
                        rows.append({"workload": f"  {command[11:]}", "result": f"p50 {statistics.median(ms):.1f} ms"
                                                                               f"  ({hits:,} hits)"})
        finally:
            conn.close()
        probes = 30 if quick else PROBES
        lag = _lag(server, users, probes, 500 if quick else 2000)
        for key, label in (("found", "SEARCH finds it"), ("indexed", "in the index")):
            values = [v * 1000 for v in lag[key]]
            rows.append({"workload": f"250 to {label}, {probes} probes under smtp-source ingest",
                         "result": f"p50 {statistics.median(values):.0f} ms  p99 {_percentile(values, 99):.0f} ms"})
    return rows


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
