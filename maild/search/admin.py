"""`maild reindex`, and the search rows of `maild status` and `maild fsck` (docs/search.md)."""

from __future__ import annotations

import json
import time
from typing import IO, Any

from maild.config import SearchConfig
from maild.search.service import PROGRESS, REQUEST, SearchService
from maild.store import Store

WAIT_TIMEOUT = 24 * 3600.0  # seconds `maild reindex` follows a daemon's rebuild at most


class _Bar:
    """One progress line on a terminal (or a line per step elsewhere)."""

    def __init__(self, out: IO[str], label: str) -> None:
        self.out, self.label, self.start, self.last = out, label, time.monotonic(), 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < 0.2 and done < total:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-6)
        pct = 100 * done // total if total else 100
        filled = pct // 5
        line = (f"{self.label}: [{'#' * filled}{'.' * (20 - filled)}] {done}/{total} messages "
                f"({pct}%), {rate:.0f} msg/s")
        if self.out.isatty():
            self.out.write("\r" + line)
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def end(self) -> None:
        if self.out.isatty():
            self.out.write("\n")


def reindex(store: Store, config: SearchConfig, user: str | None, out: IO[str]) -> int:
    """Rebuild the index of every shard (or of ``user``'s shard, for that user); here when
    no daemon holds the shard's writer, else by asking the daemon and following its
    progress. Returns the messages indexed."""
    shards = list(range(len(store.shards)))
    users = None
    if user is not None:
        u = store.user(user)
        if u is None:
            raise LookupError(f"no user {user}")
        shards, users = [u.shard], [u.address]
    service = SearchService(store, config)
    total = 0
    try:
        for shard in shards:
            bar = _Bar(out, f"shard {shard:02d}")
            ix = service.indexes[shard]
            if ix.acquire_writer(config.writer_memory_mb * 1024 * 1024):
                total += service.rebuild(shard, bar, users)
                while service.step(shard):  # what was committed meanwhile
                    pass
                ix.release_writer()
            else:
                total += _through_daemon(ix.path, users, bar)
            bar.end()
    finally:
        service.stop()
    return total


def _through_daemon(path: Any, users: list[str] | None, bar: _Bar) -> int:
    (path / PROGRESS).unlink(missing_ok=True)
    tmp = path / (REQUEST + ".tmp")
    tmp.write_text(json.dumps({"users": users}))
    tmp.replace(path / REQUEST)
    deadline = time.monotonic() + WAIT_TIMEOUT
    done = 0
    while time.monotonic() < deadline:
        try:
            state = json.loads((path / PROGRESS).read_text())
            done = int(state["done"])
            bar(done, int(state["total"]))
        except (OSError, ValueError, KeyError):
            pass
        if not (path / REQUEST).exists():
            return done
        time.sleep(0.2)
    raise TimeoutError("the daemon did not finish the reindex in time")


def status_rows(store: Store, config: SearchConfig) -> list[dict[str, Any]]:
    """Per shard: log head, index cursor, lag in change records, index bytes."""
    service = SearchService(store, config, create=False)
    try:
        return service.lag()
    finally:
        service.stop()


def drift(store: Store, config: SearchConfig) -> list[str]:
    """Index drift for `maild fsck` (an index that is only behind is not drift)."""
    service = SearchService(store, config, create=False)
    try:
        return [p for shard in range(len(store.shards)) for p in service.drift(shard)]
    finally:
        service.stop()
