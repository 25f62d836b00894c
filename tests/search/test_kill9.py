"""kill -9 of a real daemon while it indexes (rebuilding, then following the change log
under IMAP APPENDs): after a restart the index is consistent — one document per message,
no drift for `maild fsck`, SEARCH answers what was acknowledged (docs/search.md, index.py
note 4: the cursor is committed with the documents it accounts for)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import tantivy

from maild.search.index import SCHEMA, ShardIndex, version_term
from maild.search.service import index_path
from maild.store.types import Mailbox
from tests.conftest import MaildServer
from tests.search.daemon import USER, client, uids, wait_indexed
from tests.store.conftest import result

GROUPS = 7


def _raw(i: int) -> bytes:
    return (f"From: sender{i}@example.org\r\nTo: {USER}\r\nSubject: message {i}\r\n\r\n"
            f"tok{i}x grp{i % GROUPS}y filler text " + "lorem ipsum " * 20 + "\r\n").encode()


def _docs(server: MaildServer, mailbox: Mailbox) -> int:
    """Documents the committed index holds for the mailbox (duplicates would count twice)."""
    total = 0
    for shard in range(2):
        ix = ShardIndex(index_path(server.data_dir, shard), 1000, create=False)
        if ix.index is None:
            continue
        query = tantivy.Query.term_query(SCHEMA, "mbv", version_term(USER, mailbox.id, mailbox.uidvalidity))
        total += ix.searcher().search(query, 1, count=True).count
    return total


def test_kill9_while_indexing_leaves_the_index_consistent(maild_factory: Callable[..., MaildServer]) -> None:
    rng = random.Random(22)
    server = maild_factory(search={"batch": 100})
    server.stop()
    store = server.store()
    try:
        inbox = store.mailbox(USER, "INBOX")
        assert inbox is not None
        for start in range(0, 3000, 500):
            result(store.append_many(USER, inbox.id, [(_raw(i), (), None) for i in range(start, start + 500)]))
    finally:
        store.close()
    expected = {i + 1: i for i in range(3000)}  # uid -> message number
    # 1. Killed while rebuilding the index from the store.
    server.start()
    time.sleep(rng.uniform(0.3, 1.0))
    server.kill()
    # 2. Killed while following the log under APPENDs.
    server.start()
    acked: list[tuple[int, int]] = []
    stop = threading.Event()

    def appender() -> None:
        c = client(server)
        try:
            for i in range(3000, 3400):
                if stop.is_set():
                    return
                typ, data = c.append("INBOX", "", None, _raw(i))
                assert typ == "OK"
                acked.append((int(data[0].split(b"]")[0].split()[-1]), i))
        except Exception:
            return  # the daemon was killed under it
    thread = threading.Thread(target=appender)
    thread.start()
    deadline = time.monotonic() + 30
    while len(acked) < 150 and time.monotonic() < deadline:
        time.sleep(0.01)
    server.kill()
    stop.set()
    thread.join(timeout=30)
    expected.update(dict(acked))
    server.start()
    wait_indexed(server)
    c = client(server)
    typ, data = c.select("INBOX")
    count = int(data[0])
    assert count >= len(expected)  # unacknowledged appends may have been committed too
    for group in range(GROUPS):
        found = uids(c, "BODY", f"grp{group}y")
        want = sorted(uid for uid, i in expected.items() if i % GROUPS == group)
        assert set(want) <= set(found), group
        assert len(found) == len([1 for uid in found if uid in expected or uid > 3000])
    for uid, i in rng.sample(sorted(expected.items()), 20):
        assert uids(c, "BODY", f"tok{i}x") == [uid]
    c.logout()
    server.stop()
    store = server.store()
    try:
        inbox = store.mailbox(USER, "INBOX")
        assert inbox is not None
        assert _docs(server, inbox) == len(store.uids(USER, inbox.id))
    finally:
        store.close()
    # maild_factory runs `maild fsck` (index drift included) at teardown
