"""The search indexer's CPU per indexed message, split by stage (issue 21's mixed row).

A throwaway store (one shard, no daemon) gets ``--messages`` 4 KB messages of bench.load's
corpus, appended one per change record as IMAP APPEND makes them. Then, each stage timed
alone over every message, in CPU time of the whole process (tantivy's indexing, merging
and commit threads included):

- read: the message and its envelope from the store;
- parse: ``field_texts`` (the texts the matcher compares: MIME decoding, casefolding);
- grams / shingles: our tokenising of those texts into the token strings;
- tantivy: building the documents and ``add_document``, then committing every ``k``
  messages for several ``k`` (a commit writes and syncs a segment; merges follow), with
  the cost of an empty commit beside it;
- the whole indexer: ``SearchService.step`` over the log, as the daemon's thread runs
  it, the commit every ``--per-commit`` records (what a stream of appends gathers in
  COMMIT_INTERVAL), bookkeeping (cursor, watermark, reading the log) included.

    .venv/bin/python -m bench.indexer                       # 2,000 messages
    .venv/bin/python -m bench.indexer --messages 500 --per-commit 60 300
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench import load
from maild.config import SearchConfig, StoreConfig
from maild.search import grams, shingles
from maild.search.changes import shard_identity
from maild.search.index import SHINGLED, ShardIndex, field_texts
from maild.search.service import SearchService
from maild.store import Store

USER = "bench@example.test"


def _cpu() -> float:
    """CPU seconds of this process, every thread (tantivy's too)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@contextmanager
def _timed(out: dict[str, float], name: str) -> Iterator[None]:
    c0, w0 = _cpu(), time.perf_counter()
    yield
    out[name] = _cpu() - c0
    out[name + " wall"] = time.perf_counter() - w0


def _fill(root: Path, count: int, size: int) -> Store:
    store = Store(root / "data", StoreConfig(shards=1, map_size_mb=1024, directory_map_size_mb=64))
    store.domain_add("example.test")
    store.user_add(USER, "hash")
    inbox = store.require_mailbox(USER, "INBOX")
    for i in range(count):
        store.append(USER, inbox.id, load.message(i, size=size, to=USER)).addErrback(lambda f: f.raiseException())
    return store


def _stages(store: Store, index_root: Path, count: int, per_commit: list[int]) -> dict[str, float]:
    inbox = store.require_mailbox(USER, "INBOX")
    uids = store.uids(USER, inbox.id)[:count]
    out: dict[str, float] = {}
    with _timed(out, "read"):
        raws = [(store.read(USER, inbox.id, uid, verify=False), store.envelope(USER, inbox.id, uid)) for uid in uids]
    with _timed(out, "parse"):
        texts = [field_texts(raw, env) for raw, env in raws]
    with _timed(out, "prepare"):
        prepared = [{name: grams.prepare(text) for name, text in t.items()} for t in texts]
    with _timed(out, "grams"):
        for t in prepared:
            for text in t.values():
                grams.prepared_tokens(text)
    with _timed(out, "shingles"):
        for t in prepared:
            for name in SHINGLED:
                if t.get(name):
                    shingles.shingles(t[name])
    for k in per_commit:
        path = index_root / f"k{k}"
        shutil.rmtree(path, ignore_errors=True)
        ix = ShardIndex(path, 1_000_000)
        assert ix.acquire_writer(64 * 1024 * 1024)
        with _timed(out, f"add+commit every {k}, merges included"):
            for n, (uid, t) in enumerate(zip(uids, texts, strict=True), 1):
                ix.add(USER, inbox.id, inbox.uidvalidity, uid, t)
                if n % k == 0:
                    ix.commit(n)
            ix.commit(len(uids))
            ix.release_writer(wait=True)
        assert ix.acquire_writer(64 * 1024 * 1024)
        with _timed(out, f"empty commits x{count // k} after k={k}"):
            for n in range(count // k):
                ix.commit(n)
            ix.release_writer(wait=True)
    return out


def _whole(store: Store, per_commit: int, count: int) -> tuple[float, float, int]:
    """(CPU s, wall s, commits) of the service indexing the log from the start, committing
    every ``per_commit`` records."""
    shutil.rmtree(store.data_dir / "search", ignore_errors=True)
    service = SearchService(store, SearchConfig(batch=per_commit))
    ix = service.indexes[0]
    assert ix.acquire_writer(64 * 1024 * 1024)
    ix.commit(0, shard_identity(store, 0))  # an empty index, cursor 0: no rebuild
    commits = 0
    try:
        c0, w0 = _cpu(), time.perf_counter()
        while service.step(0):
            commits += 1
        ix.release_writer(wait=True)  # the merges the commits started, counted too
        cpu, wall = _cpu() - c0, time.perf_counter() - w0
    finally:
        service.stop()
    return cpu, wall, commits


def run(messages: int = 2000, size: int = 4096, per_commit: list[int] | None = None) -> list[tuple[str, float]]:
    per_commit = per_commit or [1, 10, 60, 300]
    root = Path(tempfile.mkdtemp(prefix="maild-bench-indexer-"))
    rows: list[tuple[str, float]] = []
    try:
        store = _fill(root, messages, size)
        try:
            stages = _stages(store, root / "ix", messages, per_commit)
            for name, seconds in stages.items():
                if not name.endswith(" wall"):
                    rows.append((name, seconds / messages * 1000))
            for k in per_commit:
                cpu, wall, commits = _whole(store, k, messages)
                rows.append((f"SearchService.step, {k} records per commit ({commits} commits)", cpu / messages * 1000))
        finally:
            store.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.indexer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--per-commit", type=int, nargs="+", default=[1, 10, 60, 300])
    args = parser.parse_args(argv)
    load1 = os.getloadavg()[0]
    rows = run(args.messages, args.size, args.per_commit)
    print(f"CPU ms per indexed message ({args.messages} messages of {args.size} B, load {load1:.1f}):")
    for name, ms in rows:
        print(f"  {name:<60} {ms:8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
