"""AUTH PLAIN (RFC 5034, RFC 4616): initial response, continuation, cancel, errors."""

from __future__ import annotations

import base64

import pytest

from tests.pop3.conftest import Account, Pop3Transcript, plain


def test_initial_response(pop: Pop3Transcript, account: Account) -> None:
    answer = pop.cmd(f"AUTH PLAIN {plain('', account.address, account.password)}", ok=True)
    assert answer.startswith("+OK Logged in")
    pop.cmd("STAT", ok=True)


def test_continuation(pop: Pop3Transcript, account: Account) -> None:
    assert pop.cmd("AUTH PLAIN") == "+ "
    assert pop.cmd(plain("", account.address, account.password), ok=True).startswith("+OK Logged in")


def test_authzid_equal_to_the_user(pop: Pop3Transcript, account: Account) -> None:
    pop.cmd(f"AUTH PLAIN {plain(account.address, account.address, account.password)}", ok=True)


def test_authzid_of_someone_else_is_refused(pop: Pop3Transcript, account: Account) -> None:
    answer = pop.cmd(f"AUTH PLAIN {plain('bob@example.test', account.address, account.password)}", ok=False)
    assert answer.startswith("-ERR [AUTH] Authorization identity")


def test_wrong_password(pop: Pop3Transcript, account: Account) -> None:
    answer = pop.cmd(f"AUTH PLAIN {plain('', account.address, 'wrong-password')}", ok=False)
    assert answer == "-ERR [AUTH] Invalid user name or password"


def test_cancel(pop: Pop3Transcript, account: Account) -> None:
    assert pop.cmd("AUTH PLAIN") == "+ "
    assert pop.cmd("*", ok=False) == "-ERR Authentication cancelled"
    pop.login(account)


@pytest.mark.parametrize("response", [
    "=",  # empty
    base64.b64encode(b"no-nuls-here").decode(),
    base64.b64encode(b"\0\0password").decode(),  # empty authcid
    base64.b64encode(b"\0user\xff\0pw").decode(),  # not UTF-8
])
def test_malformed_initial_response(pop: Pop3Transcript, response: str) -> None:
    assert pop.cmd(f"AUTH PLAIN {response}", ok=False) == "-ERR [AUTH] Malformed PLAIN response"


def test_malformed_continuation(pop: Pop3Transcript) -> None:
    assert pop.cmd("AUTH PLAIN") == "+ "
    assert pop.cmd("!!!not base64!!!", ok=False) == "-ERR [AUTH] Malformed PLAIN response"
    pop.multi("CAPA")


def test_unsupported_mechanism(pop: Pop3Transcript) -> None:
    assert pop.cmd("AUTH CRAM-MD5", ok=False) == "-ERR Unsupported authentication mechanism"


def test_bare_auth_lists_mechanisms(pop: Pop3Transcript) -> None:
    assert pop.multi("AUTH") == ("+OK Mechanisms follow", [b"PLAIN", b"LOGIN"])


def test_refused_before_tls(plain_pop: Pop3Transcript, account: Account) -> None:
    answer = plain_pop.cmd(f"AUTH PLAIN {plain('', account.address, account.password)}", ok=False)
    assert answer.startswith("-ERR [AUTH] Plaintext authentication disallowed")
    assert plain_pop.cmd("AUTH", ok=False).startswith("-ERR [AUTH] Plaintext")
