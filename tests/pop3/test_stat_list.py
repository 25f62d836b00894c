"""STAT, LIST, NOOP, RSET (RFC 1939 §5) on a maildrop of a few messages."""

from __future__ import annotations

from tests.conftest import MaildServer
from tests.pop3.conftest import Account, Pop3Transcript, deliver, message, stored


def sizes(server: MaildServer, account: Account) -> list[int]:
    return [len(raw) for _, raw in stored(server, account.address).values()]


def test_empty_maildrop(pop: Pop3Transcript, account: Account) -> None:
    assert pop.login(account) == "+OK Logged in, 0 messages (0 octets)"
    assert pop.cmd("STAT", ok=True) == "+OK 0 0"
    assert pop.multi("LIST") == ("+OK 0 messages (0 octets)", [])
    assert pop.cmd("LIST 1", ok=False) == "-ERR No such message 1"


def test_stat_and_list(pop: Pop3Transcript, server: MaildServer, account: Account) -> None:
    for n in range(3):
        deliver(server, account.address, message(n, b"x" * (100 * n) + b"\r\n"))
    expected = sizes(server, account)
    pop.login(account)
    assert pop.cmd("STAT", ok=True) == f"+OK 3 {sum(expected)}"
    first, listing = pop.multi("LIST")
    assert first == f"+OK 3 messages ({sum(expected)} octets)"
    assert listing == [f"{n} {size}".encode() for n, size in enumerate(expected, 1)]
    assert pop.cmd("LIST 2", ok=True) == f"+OK 2 {expected[1]}"
    assert pop.cmd("LIST 4", ok=False) == "-ERR No such message 4"


def test_sizes_are_the_octets_retr_sends(pop: Pop3Transcript, server: MaildServer, account: Account) -> None:
    deliver(server, account.address, message(1, b".starts with a dot\r\nplain\r\n"))
    pop.login(account)
    size = int(pop.cmd("LIST 1", ok=True).split()[2])
    assert pop.cmd("RETR 1", ok=True) == f"+OK {size} octets"
    assert sum(len(line) + 2 for line in pop.body()) == size


def test_deleted_messages_leave_the_listings(pop: Pop3Transcript, server: MaildServer, account: Account) -> None:
    for n in range(3):
        deliver(server, account.address, message(n))
    expected = sizes(server, account)
    pop.login(account)
    pop.cmd("DELE 2", ok=True)
    assert pop.cmd("STAT", ok=True) == f"+OK 2 {expected[0] + expected[2]}"
    assert pop.multi("LIST")[1] == [f"1 {expected[0]}".encode(), f"3 {expected[2]}".encode()]
    assert pop.cmd("LIST 2", ok=False) == "-ERR Message 2 is deleted"
    assert pop.multi("UIDL")[1][1].startswith(b"3 ")


def test_rset_undeletes(pop: Pop3Transcript, server: MaildServer, account: Account) -> None:
    for n in range(2):
        deliver(server, account.address, message(n))
    total = sum(sizes(server, account))
    pop.login(account)
    pop.cmd("DELE 1", ok=True)
    pop.cmd("DELE 2", ok=True)
    assert pop.cmd("STAT", ok=True) == "+OK 0 0"
    assert pop.cmd("RSET", ok=True) == f"+OK Maildrop has 2 messages ({total} octets)"
    assert pop.cmd("QUIT", ok=True) == "+OK mx.example.test signing off (2 messages left)"
    assert len(stored(server, account.address)) == 2


def test_noop(pop: Pop3Transcript, account: Account) -> None:
    pop.login(account)
    assert pop.cmd("NOOP", ok=True) == "+OK"


def test_maildrop_is_a_snapshot_at_login(pop: Pop3Transcript, server: MaildServer, account: Account) -> None:
    deliver(server, account.address, message(1))
    pop.login(account)
    deliver(server, account.address, message(2))
    assert pop.cmd("STAT", ok=True).startswith("+OK 1 ")
    pop.cmd("QUIT", ok=True)
    assert len(stored(server, account.address)) == 2


def test_pipelined_commands_are_answered_in_order(pop: Pop3Transcript, server: MaildServer,
                                                  account: Account) -> None:
    """RFC 2449 §6.6 PIPELINING: many commands in one packet, answers in order."""
    for n in range(3):
        deliver(server, account.address, message(n))
    pop.login(account)
    pop.send(b"STAT\r\nLIST\r\nRETR 1\r\nTOP 2 0\r\nDELE 3\r\nUIDL 3\r\nNOOP\r\n")
    assert pop.status(ok=True).startswith("+OK 3 ")
    pop.body()
    pop.status(ok=True)
    assert pop.body()[-1] == b"body of 0"
    pop.status(ok=True)
    assert pop.body()[-1] == b""
    assert pop.status(ok=True) == "+OK Message 3 deleted"
    assert pop.status(ok=False) == "-ERR Message 3 is deleted"
    assert pop.status(ok=True) == "+OK"
