"""USER/PASS (RFC 1939 §7): success, wrong password, unknown user, growing delay, order."""

from __future__ import annotations

import poplib
import time

import pytest

from tests.conftest import MaildServer
from tests.pop3.conftest import Account, Pop3Transcript, deliver, message, tls_context


def test_poplib_user_pass_after_stls(server: MaildServer, account: Account) -> None:
    deliver(server, account.address, message(1))
    client = poplib.POP3(server.host, server.ports["pop3"], timeout=30)
    assert client.stls(tls_context(server)).startswith(b"+OK")
    assert client.user(account.address) == b"+OK Send PASS"
    assert client.pass_(account.password).startswith(b"+OK Logged in, 1 messages")
    assert client.stat()[0] == 1
    client.quit()


def test_login_name_is_case_insensitive(pop: Pop3Transcript, account: Account) -> None:
    pop.cmd(f"USER {account.address.upper()}", ok=True)
    pop.cmd(f"PASS {account.password}", ok=True)


def test_wrong_password_and_unknown_user_get_the_same_answer(pop: Pop3Transcript, account: Account) -> None:
    pop.cmd(f"USER {account.address}", ok=True)
    wrong = pop.cmd("PASS not-the-password", ok=False)
    assert wrong == "-ERR [AUTH] Invalid user name or password"  # RFC 3206 §4
    assert pop.cmd("USER nobody@example.test", ok=True) == "+OK Send PASS"
    assert pop.cmd("PASS whatever", ok=False) == wrong
    # still in AUTHORIZATION: a right password works
    pop.login(account)


def test_failures_are_answered_after_a_growing_delay(pop: Pop3Transcript, account: Account) -> None:
    """The fixture's [auth] failure_delay is 0.2 s, doubling per failure up to 1 s."""
    durations = []
    for _ in range(3):
        pop.cmd(f"USER {account.address}", ok=True)
        start = time.monotonic()
        pop.cmd("PASS wrong-password", ok=False)
        durations.append(time.monotonic() - start)
    assert durations[0] >= 0.2
    assert durations[2] >= 0.8
    assert durations[2] > durations[0]


def test_pass_without_user(pop: Pop3Transcript) -> None:
    assert pop.cmd("PASS secret", ok=False) == "-ERR Send USER first"


def test_user_is_forgotten_after_a_failed_pass(pop: Pop3Transcript, account: Account) -> None:
    pop.cmd(f"USER {account.address}", ok=True)
    pop.cmd("PASS wrong-password", ok=False)
    assert pop.cmd(f"PASS {account.password}", ok=False) == "-ERR Send USER first"


def test_password_with_spaces_is_passed_whole(pop: Pop3Transcript, account: Account) -> None:
    pop.cmd(f"USER {account.address}", ok=True)
    pop.cmd(f"PASS {account.password} ", ok=False)  # the trailing space is part of it


@pytest.mark.parametrize("command", ["USER alice@example.test", "PASS alice-secret"])
def test_refused_before_tls(plain_pop: Pop3Transcript, command: str) -> None:
    assert plain_pop.cmd(command, ok=False).startswith("-ERR [AUTH] Plaintext authentication disallowed")


def test_poplib_without_tls_cannot_log_in(server: MaildServer) -> None:
    client = poplib.POP3(server.host, server.ports["pop3"], timeout=30)
    with pytest.raises(poplib.error_proto, match="Plaintext authentication disallowed"):
        client.user("alice@example.test")
    client.quit()
