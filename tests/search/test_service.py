"""The service call the HTTP API searches with: every mailbox or one, by field, the same
case-insensitive substring semantics as IMAP SEARCH; kept by the indexer through expunge
and mailbox delete."""

from __future__ import annotations

import pytest

from maild.search import SearchService
from maild.store import Store
from tests.search.conftest import USER, catch_up
from tests.store.conftest import result


def _mail(subject: str, sender: str, body: str, attachment: str = "") -> bytes:
    head = f"From: {sender}\r\nTo: {USER}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n"
    if not attachment:
        return (head + f"\r\n{body}\r\n").encode()
    return (head + "Content-Type: multipart/mixed; boundary=X\r\n\r\n--X\r\n\r\n" + body
            + f"\r\n--X\r\nContent-Type: application/pdf; name=\"{attachment}\"\r\n\r\n%PDF\r\n--X--\r\n").encode()


def test_search_service(indexed: tuple[Store, SearchService]) -> None:
    store, service = indexed
    inbox = store.require_mailbox(USER, "INBOX")
    archive = result(store.create_mailbox(USER, "Old"))
    store.append(USER, inbox.id, _mail("Budget 2025", "Carol <carol@example.org>", "the numbers"))
    store.append(USER, inbox.id, _mail("Lunch", "dave@example.net", "pizza?", "Menu.PDF"))
    store.append(USER, archive.id, _mail("old budget", "carol@example.org", "archived numbers"))
    catch_up(service)
    assert service.search(USER, None, "BUDGET", ["subject"]) == {inbox.id: [1], archive.id: [1]}
    assert service.search(USER, inbox.id, "budget", ["subject"]) == {inbox.id: [1]}
    assert service.search(USER, None, "numbers", ["body"]) == {inbox.id: [1], archive.id: [1]}
    assert service.search(USER, None, "carol", ["from"]) == {inbox.id: [1], archive.id: [1]}
    assert service.search(USER, None, "menu.pdf", ["attachment"]) == {inbox.id: [2]}
    assert service.search(USER, None, "menu", ["text"]) == {inbox.id: [2]}
    assert service.search(USER, None, "pizza", ["subject", "body"]) == {inbox.id: [2]}
    with pytest.raises(ValueError):
        service.search(USER, None, "x", ["nonsense"])
    result(store.expunge(USER, inbox.id, [1]))
    result(store.delete_mailbox(USER, "Old"))
    catch_up(service)
    assert service.search(USER, None, "numbers", ["body"]) == {}
    assert service.drift(0) == [] and service.drift(1) == []


def test_an_index_of_another_environment_is_rebuilt(indexed: tuple[Store, SearchService]) -> None:
    """A shard restored or resynced in place (another data file) may hold other messages
    under the same uids: its old index is rebuilt, never trusted."""
    from maild.search.index import BODY, Needle

    store, service = indexed
    inbox = store.require_mailbox(USER, "INBOX")
    store.append(USER, inbox.id, _mail("one", "a@example.org", "the real text"))
    catch_up(service)
    shard = store.user(USER).shard  # type: ignore[union-attr]
    ix = service.indexes[shard]
    ix.add(USER, inbox.id, inbox.uidvalidity, 1, {BODY: "a ghost"})  # what the other one held
    ix.commit(ix.cursor_or_none(), identity=1)
    assert service.step(shard)  # rebuilt
    reader = service.reader(USER, inbox.id, inbox.uidvalidity, 10)
    assert reader.matching(Needle(BODY, "ghost")) == set()
    assert reader.matching(Needle(BODY, "real")) == {1}
    assert not service.step(shard)
