"""A store under write load, for the kill -9 test: prints one line per acknowledged append.

    python -m tests.store.appender DATA_DIR WRITERS

Each writer appends distinct messages in a loop to alice's INBOX; "ack UID SHA256" is
printed (and flushed) only when the store's Deferred has fired, i.e. after fsync.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import sys
from pathlib import Path

from twisted.internet import defer, reactor

from maild.store import Store
from tests.store.conftest import SMALL

counter = itertools.count()


@defer.inlineCallbacks
def writer(store: Store, mailbox_id: int, n: int):  # type: ignore[no-untyped-def]
    while True:
        i = next(counter)
        body = os.urandom(64).hex() * (1 + i % 20)
        raw = f"Subject: msg {i} from writer {n}\r\n\r\n{body}\r\n".encode()
        result = yield store.append("alice@example.test", mailbox_id, raw)
        sys.stdout.write(f"ack {result.uid} {hashlib.sha256(raw).hexdigest()}\n")
        sys.stdout.flush()


def main() -> None:
    store = Store(Path(sys.argv[1]), SMALL, reactor)
    mailbox_id = store.require_mailbox("alice@example.test", "INBOX").id
    for n in range(int(sys.argv[2])):
        reactor.callWhenRunning(writer, store, mailbox_id, n)
    reactor.run()


if __name__ == "__main__":
    main()
