"""UIDL (RFC 1939 §7): <UIDVALIDITY>.<UID>, stable across sessions and restarts, never reused."""

from __future__ import annotations

from collections.abc import Callable

from tests.conftest import USERS, MaildServer
from tests.pop3.conftest import Account, Pop3Transcript, deliver, message, uidvalidity


def uidls(server: MaildServer, account: Account, quit_after: tuple[str, ...] = ()) -> list[bytes]:
    t = Pop3Transcript(server.host, server.ports["pop3s"], implicit_tls=True, cafile=server.cafile)
    t.greeting()
    t.login(account)
    listing = t.multi("UIDL")[1]
    for command in quit_after:
        t.cmd(command, ok=True)
    t.cmd("QUIT", ok=True)
    t.close()
    return listing


def test_uidl_listing_and_single(pop: Pop3Transcript, server: MaildServer, account: Account) -> None:
    for n in range(2):
        deliver(server, account.address, message(n))
    validity = uidvalidity(server, account.address)
    pop.login(account)
    assert pop.multi("UIDL") == ("+OK Unique-ID listing follows", [f"1 {validity}.1".encode(),
                                                                    f"2 {validity}.2".encode()])
    assert pop.cmd("UIDL 2", ok=True) == f"+OK 2 {validity}.2"
    assert pop.cmd("UIDL 3", ok=False) == "-ERR No such message 3"


def test_uidls_survive_deletion_of_others_and_are_never_reused(server: MaildServer, account: Account) -> None:
    for n in range(3):
        deliver(server, account.address, message(n))
    first = [line.split()[1] for line in uidls(server, account, ("DELE 1", "DELE 3"))]
    second = [line.split()[1] for line in uidls(server, account)]
    assert second == [first[1]]  # message 2 kept its id though it is now message 1
    deliver(server, account.address, message(9))
    third = [line.split()[1] for line in uidls(server, account)]
    assert third[0] == first[1]
    assert third[1] not in first  # the id of a deleted message is not given to new mail


def test_uidls_survive_a_restart(maild_factory: Callable[..., MaildServer]) -> None:
    server = maild_factory()
    alice = Account("alice@example.test", USERS["alice@example.test"])
    deliver(server, alice.address, message(1))
    before = uidls(server, alice)
    server.restart()
    assert uidls(server, alice) == before
