"""STLS (RFC 2595 §4): upgrade, then log in; pipelined input behind STLS is discarded."""

from __future__ import annotations

import poplib
import socket
import ssl

from tests.conftest import MaildServer
from tests.pop3.conftest import Account, Pop3Transcript, deliver, message, tls_context


def test_stls_then_user_pass_with_poplib(server: MaildServer, account: Account) -> None:
    deliver(server, account.address, message(1))
    client = poplib.POP3(server.host, server.ports["pop3"], timeout=30)
    assert "STLS" in client.capa()
    client.stls(tls_context(server))
    assert "STLS" not in client.capa()
    client.user(account.address)
    client.pass_(account.password)
    assert client.retr(1)[1][-1] == b"body of 1"
    client.quit()


def test_command_pipelined_in_the_same_packet_is_discarded(server: MaildServer, account: Account) -> None:
    """CVE-2011-0411 class: a command injected behind STLS before the handshake must not be
    executed inside the TLS session."""
    raw = socket.create_connection((server.host, server.ports["pop3"]), timeout=10)
    buf = b""
    while not buf.endswith(b"\r\n"):
        buf += raw.recv(4096)
    raw.sendall(b"STLS\r\nUSER " + account.address.encode() + b"\r\nCAPA\r\n")
    answer = raw.recv(4096)
    assert answer == b"+OK Begin TLS negotiation\r\n"
    tls = ssl.create_default_context(cafile=str(server.cafile)).wrap_socket(raw, server_hostname="localhost")
    tls.sendall(b"PASS " + account.password.encode() + b"\r\n")
    reply = b""
    while not reply.endswith(b"\r\n"):
        reply += tls.recv(4096)
    # The USER before the handshake was thrown away, and so was the CAPA: the first thing
    # the TLS session answers is the PASS.
    assert reply == b"-ERR Send USER first\r\n"
    tls.sendall(b"NOOP\r\n")
    assert tls.recv(4096) == b"-ERR Log in first\r\n"
    tls.close()


def test_stls_twice(pop: Pop3Transcript) -> None:
    assert pop.cmd("STLS", ok=False) == "-ERR TLS already active"


def test_implicit_tls_on_995(server: MaildServer, account: Account) -> None:
    deliver(server, account.address, message(1))
    client = poplib.POP3_SSL(server.host, server.ports["pop3s"], context=tls_context(server), timeout=30)
    client.user(account.address)
    client.pass_(account.password)
    assert client.stat()[0] == 1
    assert client.retr(1)[1][-1] == b"body of 1"
    client.quit()
