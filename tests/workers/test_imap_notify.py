"""NOTIFY (RFC 5465) across worker processes: a session on one worker hears, between
commands, of what a session of the same user on the other worker does — other mailboxes'
STATUS (§5.2), LIST for a new mailbox and a subscription (§5.4, §5.5), EXISTS and the
MessageNew FETCH in its selected mailbox (§5.2) — from the store's change log."""

from __future__ import annotations

import time

from tests.imap.conftest import Transcript, append, message
from tests.workers.conftest import needs_bus
from tests.workers.test_imap_bus import WAKE, pair  # noqa: F401 (the fixture)

pytestmark = needs_bus


def told(s: Transcript, n: int) -> list[bytes]:
    """The next ``n`` responses, sent without a command, each within WAKE seconds."""
    s.sock.settimeout(WAKE)
    try:
        started = time.monotonic()
        out = [s.line() for _ in range(n)]
        assert time.monotonic() - started < WAKE * n
        return out
    finally:
        s.sock.settimeout(10)


def test_notify_across_workers(pair: tuple[Transcript, Transcript]) -> None:  # noqa: F811
    a, b = pair
    b.ok("NOTIFY SET (selected (MessageNew (UID) MessageExpunge)) "
         "(personal (MessageNew MessageExpunge MailboxName SubscriptionChange))")
    append(a, "Archive", message("to the archive"))
    assert told(b, 1) == [b"* STATUS Archive (MESSAGES 1 UIDNEXT 2 UNSEEN 1)"]
    a.ok("CREATE Cross")
    assert told(b, 1) == [b'* LIST (\\HasNoChildren) "/" Cross']
    a.ok("SUBSCRIBE Cross")
    assert told(b, 1) == [b'* LIST (\\HasNoChildren \\Subscribed) "/" Cross']
    uid = append(a, "INBOX", message("to the inbox"))
    got = told(b, 3)
    assert got[0] == b"* 1 EXISTS" and got[1].endswith(b" RECENT") and got[2] == b"* 1 FETCH (UID %d)" % uid
    a.ok("LOGOUT")
    b.ok("LOGOUT")
