"""maild.util.session.CommandSession: what every SMTP, POP3 and IMAP session gets from it at
connection time, over plain TCP and inside TLS."""

from __future__ import annotations

from twisted.internet import ssl
from twisted.internet.protocol import Factory
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory

from maild.imap.server import ImapSession
from maild.pop3.server import Pop3Session
from maild.smtp.server import SmtpSession
from maild.util.session import CommandSession


class _TcpTransport(StringTransport):
    def __init__(self) -> None:
        super().__init__()
        self.no_delay: list[bool] = []

    def setTcpNoDelay(self, enabled: bool) -> None:  # noqa: N802 - ITCPTransport's name
        self.no_delay.append(enabled)


class _Session(CommandSession):
    def connectionMade(self) -> None:  # noqa: N802
        pass


def test_every_protocol_session_is_a_command_session() -> None:
    assert all(issubclass(cls, CommandSession) for cls in (ImapSession, Pop3Session, SmtpSession))


def test_nagle_is_off_over_tcp_and_under_tls() -> None:
    plain = _TcpTransport()
    _Session().makeConnection(plain)
    assert plain.no_delay == [True]
    wrapped = _TcpTransport()
    tls = TLSMemoryBIOFactory(ssl.CertificateOptions(), False, Factory.forProtocol(_Session))
    tls.buildProtocol(None).makeConnection(wrapped)
    assert wrapped.no_delay == [True]


def test_transports_without_tcp_options_are_accepted() -> None:
    session = _Session()
    session.makeConnection(StringTransport())  # a UNIX socket, a test transport
    assert session.transport is not None
