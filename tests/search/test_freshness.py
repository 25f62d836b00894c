"""How soon appended mail is searchable and indexed (docs/search.md, "Following the change
log"): SEARCH finds a message the moment its APPEND is answered (uids above the mailbox's
watermark are admitted and read), and the index holds it at once after a quiet spell and
within COMMIT_INTERVAL under a stream, which the indexer commits at most once per
COMMIT_INTERVAL (each tantivy commit costs a segment and merges)."""

from __future__ import annotations

import time
from collections.abc import Callable

from maild.search.index import ShardIndex
from maild.search.service import COMMIT_INTERVAL, index_path
from maild.store import Store
from tests.conftest import MaildServer
from tests.search.daemon import USER, client, uids

STREAM_SECONDS = 2.0
SLACK = 4.0  # a loaded test machine: scheduling, the commit itself


def _mail(word: str) -> bytes:
    return f"From: a@example.org\r\nSubject: s\r\n\r\nthe word is {word}, the rest is filler.\r\n".encode()


class _Watermark:
    """The user's INBOX watermark in the index the daemon commits, read from outside."""

    def __init__(self, server: MaildServer) -> None:
        store = Store(server.data_dir, server.config.store)
        try:
            user, inbox = store.user(USER), store.mailbox(USER, "INBOX")
            assert user is not None and inbox is not None
            self.shard, self.mailbox_id, self.uidvalidity = user.shard, inbox.id, inbox.uidvalidity
        finally:
            store.close()
        self.index = ShardIndex(index_path(server.data_dir, self.shard), 1, create=False)

    def __call__(self) -> int:
        self.index.refresh()
        if self.index.index is None:
            return 0
        return self.index.watermark(self.index.searcher(), USER, self.mailbox_id, self.uidvalidity)

    def wait(self, uid: int, timeout: float) -> float:
        """Seconds until the watermark reaches ``uid`` (fails after ``timeout``)."""
        start = time.monotonic()
        while self() < uid:
            assert time.monotonic() - start < timeout, f"uid {uid} not indexed in {timeout} s"
            time.sleep(0.02)
        return time.monotonic() - start


def test_appended_mail_is_found_at_once_and_indexed_within_the_bound(
        maild_factory: Callable[..., MaildServer]) -> None:
    # A poll far off: only the wake-up by the commit can index the mail in time.
    server = maild_factory(search={"poll_interval": 60.0})
    c = client(server)
    c.select("INBOX")
    c.append("INBOX", "", None, _mail("warmup"))  # the index built, the INBOX known
    watermark = _Watermark(server)
    watermark.wait(1, 30.0)

    # After a quiet spell: found at once, indexed at once (not after COMMIT_INTERVAL).
    time.sleep(COMMIT_INTERVAL)
    c.append("INBOX", "", None, _mail("quietword"))
    assert uids(c, "BODY", "quietword") == [2]
    watermark.wait(2, COMMIT_INTERVAL + SLACK)

    # Under a stream: each message found at once; commits at most one per COMMIT_INTERVAL.
    seen = {watermark()}
    uid, start = 2, time.monotonic()
    while time.monotonic() - start < STREAM_SECONDS:
        uid += 1
        word = f"streamword{uid}"
        c.append("INBOX", "", None, _mail(word))
        assert uids(c, "BODY", word) == [uid]
        seen.add(watermark())
    assert uids(c, "BODY", "streamword") == list(range(3, uid + 1))
    assert len(seen - {2}) <= STREAM_SECONDS / COMMIT_INTERVAL + 2, sorted(seen)
    watermark.wait(uid, COMMIT_INTERVAL + SLACK)
    c.logout()
