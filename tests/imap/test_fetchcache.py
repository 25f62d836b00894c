"""maild.imap.fetchcache: ENVELOPE, BODYSTRUCTURE and a message's own header fields are kept
across commands and sessions, and one user's never answer another's FETCH."""

from __future__ import annotations

import smtplib
from collections.abc import Callable
from typing import Any

from maild.imap import fetchcache
from maild.imap.fetchcache import FetchCache
from maild.store.types import MessageMeta
from tests.imap.conftest import Transcript, fresh_account, message


def _meta(uid: int, blob: str = "ab" * 32, prefix_len: int = 40) -> MessageMeta:
    return MessageMeta(uid, frozenset(), 0.0, 100, 1, blob, prefix_len)


def test_made_once_per_message_and_item_then_least_recently_used_out() -> None:
    cache = FetchCache(max_bytes=3 * (100 + fetchcache._ENTRY_OVERHEAD))  # room for three
    made: list[str] = []

    def make(value: str) -> Callable[[MessageMeta], bytes]:
        return lambda meta: (made.append(value), value.encode().ljust(100))[1]

    for uid in (1, 2, 3):
        cache.get("a@x", 7, 1, _meta(uid), "ENVELOPE", make(f"m{uid}"))
    assert cache.get("a@x", 7, 1, _meta(1), "ENVELOPE", make("again")).startswith(b"m1")  # kept
    assert made == ["m1", "m2", "m3"]
    cache.get("a@x", 7, 1, _meta(4), "ENVELOPE", make("m4"))  # evicts 2, the least recently used
    assert len(cache) == 3
    assert cache.get("a@x", 7, 1, _meta(2), "ENVELOPE", make("m2 again")).startswith(b"m2 again")
    # Any other user, UIDVALIDITY, mailbox, body or prefix is another message.
    for key in (("b@x", 7, 1, _meta(1)), ("a@x", 8, 1, _meta(1)), ("a@x", 7, 2, _meta(1)),
                ("a@x", 7, 1, _meta(1, blob="cd" * 32)), ("a@x", 7, 1, _meta(1, prefix_len=41))):
        assert cache.get(*key, "ENVELOPE", make("other")).startswith(b"other")


def test_an_entry_larger_than_the_cache_is_not_kept() -> None:
    cache = FetchCache(max_bytes=1000)
    assert cache.get("a@x", 7, 1, _meta(1), "BODYSTRUCTURE", lambda meta: b"x" * 5000) == b"x" * 5000
    assert len(cache) == 0


def test_same_message_same_uid_for_two_users_stays_apart(imap_server: Any,
                                                           connect: Callable[..., Transcript]) -> None:
    """One SMTP transaction to two users whose addresses have the same length: the same body,
    prefixes of the same length, the same mailbox id and uid, UIDVALIDITY likely the same."""
    first, second = fresh_account(), fresh_account()
    with smtplib.SMTP(imap_server.host, imap_server.ports["smtp"], timeout=10) as smtp:
        smtp.sendmail("someone@remote.example", [first.address, second.address], message("shared"))
    fetch = "UID FETCH 1 (ENVELOPE BODYSTRUCTURE BODY.PEEK[HEADER.FIELDS (Delivered-To Subject)])"
    for round_ in range(2):  # the second round answers from the cache
        for account in (first, second):
            s = connect(user=account.address, password=account.password)
            s.ok("SELECT INBOX")
            line = s.ok(fetch)[0]
            assert f"Delivered-To: <{account.address}>".encode() in line or \
                f"Delivered-To: {account.address}".encode() in line, (round_, account, line)
            other = second if account is first else first
            assert other.address.encode() not in line
            assert b'"shared"' in line and b'("TEXT" "PLAIN"' in line


def test_resizing_evicts_and_zero_keeps_nothing() -> None:
    """[imap] fetch_cache_mb sizes the process's cache at start-up; 0 turns it off."""
    cache = FetchCache(max_bytes=10 * (100 + fetchcache._ENTRY_OVERHEAD))
    for uid in range(10):
        cache.get("a@x", 7, 1, _meta(uid), "ENVELOPE", lambda meta: b"v" * 100)
    assert len(cache) == 10
    cache.resize(4 * (100 + fetchcache._ENTRY_OVERHEAD))
    assert len(cache) == 4
    cache.resize(0)
    assert len(cache) == 0
    assert cache.get("a@x", 7, 1, _meta(1), "ENVELOPE", lambda meta: b"w") == b"w"
    assert len(cache) == 0
