"""Bad input gets a clear -ERR and changes nothing: unknown commands, long lines, bare LF,
bad UTF-8, commands in the wrong state, too many errors."""

from __future__ import annotations

from tests.conftest import MaildServer
from tests.pop3.conftest import Account, Pop3Transcript, deliver, message, stored


def test_unknown_command(pop: Pop3Transcript) -> None:
    assert pop.cmd("XYZZY", ok=False) == "-ERR Unknown command"
    assert pop.cmd("APOP alice 0123456789abcdef0123456789abcdef", ok=False) == "-ERR Unknown command"
    pop.multi("CAPA")


def test_transaction_commands_before_login(pop: Pop3Transcript) -> None:
    for command in ("STAT", "LIST", "RETR 1", "DELE 1", "RSET", "TOP 1 1", "UIDL", "NOOP"):
        assert pop.cmd(command, ok=False) == "-ERR Log in first"


def test_authorization_commands_after_login(pop: Pop3Transcript, account: Account) -> None:
    pop.login(account)
    for command in ("USER x", "PASS y", "AUTH PLAIN", "STLS"):
        assert pop.cmd(command, ok=False) == "-ERR Command not valid after login"
    pop.cmd("STAT", ok=True)


def test_line_longer_than_255_octets(pop: Pop3Transcript) -> None:
    assert pop.cmd(b"USER " + b"a" * 300, ok=False).startswith("-ERR Line too long")
    # a line with no end at all is discarded as it arrives, then answered once
    pop.send(b"NOOP " + b"x" * 100_000 + b"\r\n")
    assert pop.status(ok=False).startswith("-ERR Line too long")
    pop.multi("CAPA")


def test_line_of_exactly_255_octets(pop: Pop3Transcript) -> None:
    assert pop.cmd(b"PASS " + b"p" * 248, ok=False) == "-ERR Send USER first"


def test_bare_lf_is_refused(pop: Pop3Transcript) -> None:
    pop.send(b"CAPA\n")
    assert pop.status(ok=False) == "-ERR Lines must end with CRLF"


def test_bad_utf8_and_control_characters(pop: Pop3Transcript) -> None:
    assert pop.cmd(b"USER al\xffce", ok=False) == "-ERR Command is not valid UTF-8"
    assert pop.cmd(b"USER a\x00b", ok=False) == "-ERR Control characters are not allowed in commands"


def test_too_many_errors_close_the_session(server: MaildServer, account: Account) -> None:
    deliver(server, account.address, message(1))
    t = Pop3Transcript(server.host, server.ports["pop3"], cafile=server.cafile)
    t.greeting()
    t.stls()
    t.login(account)
    t.cmd("DELE 1", ok=True)
    for _ in range(19):
        t.cmd("BOGUS", ok=False)
    assert t.cmd("BOGUS", ok=False) == "-ERR Too many errors, closing connection"
    assert t.closed()
    assert len(stored(server, account.address)) == 1  # the DELE never took effect


def test_error_answers_change_nothing(pop: Pop3Transcript, server: MaildServer, account: Account) -> None:
    deliver(server, account.address, message(1))
    pop.login(account)
    for command in ("RETR 0", "RETR 2", "DELE 5", "TOP 1", "LIST 1 2", "UIDL x"):
        pop.cmd(command, ok=False)
    pop.cmd("QUIT", ok=True)
    assert len(stored(server, account.address)) == 1
