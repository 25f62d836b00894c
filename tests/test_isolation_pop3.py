"""One user never sees another's mail over POP3: alice's and bob's maildrops are separate
in every listing, retrieval, deletion and login path."""

from __future__ import annotations

import base64
import poplib
import smtplib
import ssl

import pytest

from tests.conftest import USERS, MaildServer

ALICE, BOB = "alice@example.test", "bob@example.test"


def deliver(server: MaildServer, rcpt: str, marker: str) -> None:
    raw = (f"From: sender@remote.example\r\nTo: {rcpt}\r\nSubject: {marker}\r\n\r\n"
           f"secret body {marker}\r\n").encode()
    with smtplib.SMTP(server.host, server.ports["smtp"], timeout=30) as smtp:
        smtp.sendmail("sender@remote.example", [rcpt], raw)


def session(server: MaildServer, user: str) -> poplib.POP3_SSL:
    client = poplib.POP3_SSL(server.host, server.ports["pop3s"], timeout=30,
                             context=ssl.create_default_context(cafile=str(server.cafile)))
    client.user(user)
    client.pass_(USERS[user])
    return client


def everything(client: poplib.POP3_SSL) -> bytes:
    count = client.stat()[0]
    return b"\n".join(b"\n".join(client.retr(n)[1]) for n in range(1, count + 1))


def test_each_user_sees_only_their_own_maildrop(maild_server: MaildServer) -> None:
    for n in range(3):
        deliver(maild_server, ALICE, f"alice-{n}")
    deliver(maild_server, BOB, "bob-0")
    alice, bob = session(maild_server, ALICE), session(maild_server, BOB)  # at the same time
    assert alice.stat()[0] == 3
    assert bob.stat()[0] == 1
    alice_mail, bob_mail = everything(alice), everything(bob)
    assert b"alice-" in alice_mail and b"bob-" not in alice_mail
    assert b"bob-0" in bob_mail and b"alice-" not in bob_mail
    # bob's message numbers stop at 1 even though alice has 3
    for command in (bob.retr, bob.list, bob.dele):
        with pytest.raises(poplib.error_proto, match="No such message 2"):
            command(2)
    with pytest.raises(poplib.error_proto, match="No such message 2"):
        bob.top(2, 0)
    assert (len(alice.uidl()[1]), len(bob.uidl()[1])) == (3, 1)
    alice.quit()
    bob.quit()


def test_deleting_in_one_maildrop_leaves_the_other(maild_server: MaildServer) -> None:
    deliver(maild_server, ALICE, "alice-0")
    deliver(maild_server, BOB, "bob-0")
    alice = session(maild_server, ALICE)
    alice.dele(1)
    alice.quit()
    bob = session(maild_server, BOB)
    assert b"bob-0" in everything(bob)
    bob.quit()
    alice = session(maild_server, ALICE)
    assert alice.stat() == (0, 0)
    alice.quit()


def test_one_users_lock_does_not_block_another(maild_server: MaildServer) -> None:
    alice = session(maild_server, ALICE)
    bob = session(maild_server, BOB)
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        session(maild_server, ALICE)
    bob.quit()
    alice.quit()


def test_no_login_into_another_users_maildrop(maild_server: MaildServer) -> None:
    deliver(maild_server, ALICE, "alice-0")
    client = poplib.POP3_SSL(maild_server.host, maild_server.ports["pop3s"], timeout=30,
                             context=ssl.create_default_context(cafile=str(maild_server.cafile)))
    client.user(ALICE)
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        client.pass_(USERS[BOB])  # bob's password is not alice's
    # SASL PLAIN: bob authenticating as himself but asking to act as alice
    proxy = base64.b64encode(f"{ALICE}\0{BOB}\0{USERS[BOB]}".encode()).decode()
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\] Authorization identity"):
        client._shortcmd(f"AUTH PLAIN {proxy}")
    # the session is still unauthenticated: no listing of anyone's mail
    with pytest.raises(poplib.error_proto, match="Log in first"):
        client.stat()
    client.quit()
