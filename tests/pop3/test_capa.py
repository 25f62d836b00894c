"""Greeting and CAPA (RFC 2449 §5) in each state, before and after TLS."""

from __future__ import annotations

from tests.conftest import MaildServer
from tests.pop3.conftest import Account, Pop3Transcript

COMMON = [b"TOP", b"UIDL", b"RESP-CODES", b"AUTH-RESP-CODE", b"PIPELINING", b"EXPIRE NEVER",
          b"IMPLEMENTATION maild"]


def test_greeting(plain_pop: Pop3Transcript) -> None:
    plain_pop.cmd("NOOP", ok=False)  # NOOP is a TRANSACTION command (RFC 1939 §5)
    assert plain_pop.cmd("QUIT", ok=True) == "+OK mx.example.test signing off"
    assert plain_pop.closed()


def test_capa_before_tls_offers_stls_and_no_passwords(plain_pop: Pop3Transcript) -> None:
    first, caps = plain_pop.multi("CAPA")
    assert first.startswith("+OK")
    assert caps == COMMON + [b"STLS"]


def test_capa_after_stls_offers_user_and_sasl(pop: Pop3Transcript) -> None:
    _, caps = pop.multi("CAPA")
    assert caps == COMMON + [b"USER", b"SASL PLAIN LOGIN"]


def test_capa_after_login(pop: Pop3Transcript, account: Account) -> None:
    pop.login(account)
    _, caps = pop.multi("CAPA")
    assert caps == COMMON


def test_capa_on_995(server: MaildServer) -> None:
    t = Pop3Transcript(server.host, server.ports["pop3s"], implicit_tls=True, cafile=server.cafile)
    t.greeting()
    _, caps = t.multi("CAPA")
    assert caps == COMMON + [b"USER", b"SASL PLAIN LOGIN"]
    t.cmd("STLS", ok=False)
    t.close()
