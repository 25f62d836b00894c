"""DELE and QUIT (RFC 1939 §5, §6): deletion only at QUIT, as real expunges IMAP sees;
a connection that ends any other way deletes nothing."""

from __future__ import annotations

import imaplib
import poplib
import ssl
import time
from collections.abc import Callable

import pytest

from tests.conftest import USERS, MaildServer
from tests.pop3.conftest import Account, Pop3Transcript, deliver, message, poplib_session, stored


def imap_uids(server: MaildServer, account: Account) -> list[bytes]:
    imap = imaplib.IMAP4_SSL(server.host, server.ports["imaps"],
                             ssl_context=ssl.create_default_context(cafile=str(server.cafile)))
    imap.login(account.address, account.password)
    imap.select("INBOX")
    _, data = imap.uid("SEARCH", "ALL")
    imap.logout()
    return data[0].split()


def test_dele_then_quit_expunges(server: MaildServer, account: Account) -> None:
    for n in range(3):
        deliver(server, account.address, message(n))
    client = poplib_session(server, account)
    assert client.dele(1) == b"+OK Message 1 deleted"
    client.dele(3)
    assert client.quit() == b"+OK mx.example.test signing off (1 messages left)"
    assert list(stored(server, account.address)) == [2]
    assert imap_uids(server, account) == [b"2"]


def test_idle_imap_session_sees_the_expunge(server: MaildServer, account: Account) -> None:
    deliver(server, account.address, message(1))
    imap = imaplib.IMAP4_SSL(server.host, server.ports["imaps"],
                             ssl_context=ssl.create_default_context(cafile=str(server.cafile)))
    imap.login(account.address, account.password)
    imap.select("INBOX")
    client = poplib_session(server, account)  # IMAP does not block POP3
    client.dele(1)
    client.quit()
    deadline = time.monotonic() + 10
    while imap.response("EXPUNGE")[1] != [b"1"]:  # pushed to the session after the commit
        assert time.monotonic() < deadline, "the IMAP session never saw the expunge"
        imap.noop()
    imap.logout()


def test_dropped_connection_keeps_everything(server: MaildServer, account: Account) -> None:
    for n in range(2):
        deliver(server, account.address, message(n))
    before = stored(server, account.address)
    t = Pop3Transcript(server.host, server.ports["pop3s"], implicit_tls=True, cafile=server.cafile)
    t.greeting()
    t.login(account)
    t.cmd("DELE 1", ok=True)
    t.cmd("DELE 2", ok=True)
    t.close()  # no QUIT
    # the lock is released with the connection, and nothing was deleted
    client = poplib_session(server, account)
    assert client.stat()[0] == 2
    client.quit()
    assert set(stored(server, account.address)) == set(before)


def test_quit_in_authorization_deletes_nothing(plain_pop: Pop3Transcript, server: MaildServer,
                                               account: Account) -> None:
    deliver(server, account.address, message(1))
    assert plain_pop.cmd("QUIT", ok=True) == "+OK mx.example.test signing off"
    assert plain_pop.closed()
    assert len(stored(server, account.address)) == 1


def test_daemon_killed_before_quit_keeps_everything(maild_factory: Callable[..., MaildServer]) -> None:
    server = maild_factory()
    alice = Account("alice@example.test", USERS["alice@example.test"])
    deliver(server, alice.address, message(1))
    client = poplib_session(server, alice)
    client.dele(1)
    server.kill()
    server.start()
    assert len(stored(server, alice.address)) == 1
    client = poplib_session(server, alice)
    assert client.stat()[0] == 1
    client.quit()


def test_quit_after_retr_of_everything(server: MaildServer, account: Account) -> None:
    """The fetchmail pattern without keep: RETR, DELE each, QUIT."""
    for n in range(5):
        deliver(server, account.address, message(n))
    client = poplib_session(server, account)
    for n in range(1, 6):
        assert client.retr(n)[1][-1] == f"body of {n - 1}".encode()
        client.dele(n)
    client.quit()
    assert stored(server, account.address) == {}
    client = poplib_session(server, account)
    assert client.stat() == (0, 0)
    with pytest.raises(poplib.error_proto, match="-ERR No such message 1"):
        client.retr(1)
    client.quit()
