"""The maildrop lock (RFC 1939 §8, RFC 2449 §8.1.1 [IN-USE]): one POP3 session per user."""

from __future__ import annotations

import imaplib
import poplib
import ssl

import pytest

from tests.conftest import MaildServer
from tests.pop3.conftest import Account, Pop3Transcript, deliver, message, plain, poplib_session


def test_second_session_gets_in_use(server: MaildServer, account: Account) -> None:
    first = poplib_session(server, account)
    with pytest.raises(poplib.error_proto, match=r"-ERR \[IN-USE\] Maildrop is locked"):
        poplib_session(server, account)
    first.quit()
    poplib_session(server, account).quit()  # released at QUIT


def test_in_use_on_995_and_with_auth_plain(server: MaildServer, account: Account) -> None:
    first = poplib_session(server, account)
    t = Pop3Transcript(server.host, server.ports["pop3s"], implicit_tls=True, cafile=server.cafile)
    t.greeting()
    answer = t.cmd(f"AUTH PLAIN {plain('', account.address, account.password)}", ok=False)
    assert answer.startswith("-ERR [IN-USE]")
    first.quit()
    # still in AUTHORIZATION: once the lock is free the same connection logs in
    t.cmd(f"AUTH PLAIN {plain('', account.address, account.password)}", ok=True)
    t.close()


def test_other_users_are_not_blocked(server: MaildServer, account: Account) -> None:
    first = poplib_session(server, account)
    other = Account("alice@example.test", "alice-secret")
    poplib_session(server, other).quit()
    first.quit()


def test_imap_is_not_blocked(server: MaildServer, account: Account) -> None:
    deliver(server, account.address, message(1))
    first = poplib_session(server, account)
    imap = imaplib.IMAP4_SSL(server.host, server.ports["imaps"],
                             ssl_context=ssl.create_default_context(cafile=str(server.cafile)))
    imap.login(account.address, account.password)
    assert imap.select("INBOX")[1] == [b"1"]
    imap.logout()
    first.quit()


def test_lock_released_when_the_connection_drops(server: MaildServer, account: Account) -> None:
    t = Pop3Transcript(server.host, server.ports["pop3s"], implicit_tls=True, cafile=server.cafile)
    t.greeting()
    t.login(account)
    t.close()
    poplib_session(server, account).quit()
