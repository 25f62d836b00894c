"""[pop3] allow_plaintext_auth_on_loopback = true: USER/PASS and AUTH without TLS from
127.0.0.1 (for local tools); CAPA then offers them."""

from __future__ import annotations

import poplib

from tests.conftest import MaildServer
from tests.pop3.conftest import Account, Pop3Transcript, deliver, message, plain

MAILD_OVERRIDES = {"pop3": {"allow_plaintext_auth_on_loopback": True}}


def test_user_pass_without_tls_on_loopback(server: MaildServer, account: Account) -> None:
    deliver(server, account.address, message(1))
    client = poplib.POP3(server.host, server.ports["pop3"], timeout=30)
    assert {"USER", "STLS", "SASL"} <= set(client.capa())
    client.user(account.address)
    client.pass_(account.password)
    assert client.stat()[0] == 1
    client.quit()


def test_auth_plain_without_tls_on_loopback(plain_pop: Pop3Transcript, account: Account) -> None:
    plain_pop.cmd(f"AUTH PLAIN {plain('', account.address, account.password)}", ok=True)
