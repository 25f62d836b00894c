"""maild.util.session: the one session core of SMTP, IMAP and POP3 — connection slots,
timers on the reactor's clock (twisted.internet.task.Clock, never a sleep), the TLS
handshake deadline, the bad-command policy, the loopback test, the SASL driver."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet import defer, ssl
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory

from maild import config as configmod
from maild.auth import sasl
from maild.imap.server import ImapFactory, ImapSession
from maild.pop3.server import Pop3Factory, Pop3Session
from maild.smtp.server import SmtpFactory, SmtpSession
from maild.util.session import CommandSession, GatedTLSFactory, LineSession, SessionFactory, is_loopback


class _TcpTransport(StringTransport):
    def __init__(self, host: str = "192.0.2.7") -> None:
        super().__init__(peerAddress=IPv4Address("TCP", host, 40000))
        self.no_delay: list[bool] = []
        self.aborted = False

    def setTcpNoDelay(self, enabled: bool) -> None:  # noqa: N802 - ITCPTransport's name
        self.no_delay.append(enabled)

    def abortConnection(self) -> None:  # noqa: N802
        self.aborted = True
        self.loseConnection()


class _Session(CommandSession):
    def connectionMade(self) -> None:  # noqa: N802
        self.transport.write(b"hello\r\n")


def _ctx(**sections: dict[str, Any]) -> SimpleNamespace:
    config = configmod.from_dict({"hostname": "mx.example.test", "data_dir": "/nonexistent"}, Path("t.toml"))
    for name, values in sections.items():
        config = dataclasses.replace(config, **{name: dataclasses.replace(getattr(config, name), **values)})
    return SimpleNamespace(config=config, reactor=Clock(), tls=None, shared={}, auth=None,
                           store=SimpleNamespace(subscribe=lambda callback: (lambda: None)))


def _connect(factory: Any, host: str = "192.0.2.7") -> tuple[Any, _TcpTransport]:
    transport = _TcpTransport(host)
    session = factory.buildProtocol(transport.getPeer())
    if session is not None:
        session.makeConnection(transport)
    return session, transport


# -- one core, used by all three ---------------------------------------------------------------

CORE = ["_sasl_exchange", "_plaintext_auth_allowed", "_count_bad", "_close", "connectionLost",
        "connectionMade", "_touch", "_start_tls", "handshakeCompleted", "_check_password", "_end_session"]


@pytest.mark.parametrize("cls,names", [
    (ImapSession, CORE),
    (Pop3Session, [*CORE, "_take_line", "_read_line", "dataReceived", "_process"]),
    (SmtpSession, [*CORE, "_take_line", "_read_line", "_process"]),
    (ImapFactory, ["buildProtocol"]), (Pop3Factory, ["buildProtocol"]), (SmtpFactory, ["buildProtocol"]),
])
def test_session_mechanics_are_defined_once_in_the_core(cls: type, names: list[str]) -> None:
    overridden = [name for name in names if inspect.getmodule(getattr(cls, name)).__name__ != "maild.util.session"]
    assert overridden == []
    assert issubclass(cls, (CommandSession, SessionFactory))
    if "_take_line" in names:
        assert issubclass(cls, LineSession)


def test_nagle_is_off_over_tcp_and_under_tls() -> None:
    plain = _TcpTransport()
    _Session().makeConnection(plain)
    assert plain.no_delay == [True]
    wrapped = _TcpTransport()
    tls = TLSMemoryBIOFactory(ssl.CertificateOptions(), False, Factory.forProtocol(_Session))
    tls.buildProtocol(None).makeConnection(wrapped)
    assert wrapped.no_delay == [True]


def test_transports_without_tcp_options_are_accepted() -> None:
    transport = StringTransport()  # a UNIX socket, a test transport: no setTcpNoDelay
    _Session().makeConnection(transport)
    assert transport.value() == b"hello\r\n"


def test_loopback() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.3.4.5", "::1", "::ffff:127.0.0.1"]))
    assert not any(map(is_loopback, ["128.0.0.1", "10.0.0.1", "::2", "", "localhost", "::ffff:10.0.0.1"]))


# -- connection slots: per section, from accept, freed when the session ends -------------------

def test_the_listeners_of_a_section_share_one_count() -> None:
    ctx = _ctx(pop3={"max_connections_per_ip": 2, "max_connections": 3})
    plain, tls = Pop3Factory(ctx, implicit_tls=False), Pop3Factory(ctx, implicit_tls=True)
    first, _ = _connect(plain)
    second, _ = _connect(tls)
    assert plain.connections is tls.connections and plain.connections.per_ip == {"192.0.2.7": 2}
    # Over the per-IP limit: the plain listener answers why, the TLS one builds nothing.
    refused, transport = _connect(plain)
    assert transport.value() == b"-ERR [SYS/TEMP] Too many connections, try again later\r\n"
    assert transport.disconnecting
    assert _connect(tls)[0] is None
    gated = GatedTLSFactory(ssl.CertificateOptions(), False, tls)
    assert gated.buildProtocol(IPv4Address("TCP", "192.0.2.7", 1)) is None
    _connect(plain, "192.0.2.8")  # the total (3) is reached with another IP
    assert _connect(plain, "192.0.2.9")[1].value().startswith(b"-ERR [SYS/TEMP]")
    assert plain.connections.total == 3
    # Another section has its own count.
    imap = ImapFactory(ctx, implicit_tls=False)
    assert imap.connections is not plain.connections and imap.connections.total == 0


def test_the_slot_is_free_when_the_session_closes_not_when_the_transport_is_gone() -> None:
    ctx = _ctx(pop3={"max_connections_per_ip": 1})
    factory = Pop3Factory(ctx, implicit_tls=False)
    session, transport = _connect(factory)
    session.dataReceived(b"QUIT\r\n")
    assert transport.value().endswith(b"signing off\r\n")
    assert transport.disconnecting and factory.connections.total == 0  # connectionLost not yet called
    again, transport2 = _connect(factory)
    assert transport2.value().startswith(b"+OK")
    session.connectionLost(None)  # the late close changes nothing
    assert factory.connections.total == 1


# -- timers on the reactor's clock -------------------------------------------------------------

def test_idle_timer_restarts_on_whole_lines_only() -> None:
    ctx = _ctx(pop3={"idle_timeout": 600.0})
    session, transport = _connect(Pop3Factory(ctx, implicit_tls=False))
    clock: Clock = ctx.reactor
    clock.advance(599)
    session.dataReceived(b"CAPA\r\n")
    clock.advance(599)
    session.dataReceived(b"NO")  # half a line does not count
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.value().endswith(b"-ERR Disconnected for inactivity\r\n")
    assert transport.disconnecting


def test_tls_handshake_must_finish_in_time() -> None:
    ctx = _ctx(imap={"max_connections_per_ip": 1}, tls={"handshake_timeout": 5.0})
    factory = ImapFactory(ctx, implicit_tls=True)
    session, transport = _connect(factory)
    clock: Clock = ctx.reactor
    clock.advance(4.9)
    assert not transport.aborted
    clock.advance(0.2)
    assert transport.aborted and factory.connections.total == 0
    # A finished handshake cancels the deadline.
    session, transport = _connect(factory)
    session.handshakeCompleted()
    clock.advance(10)
    assert not transport.aborted and factory.connections.total == 1


def test_starttls_starts_the_handshake_deadline() -> None:
    ctx = _ctx(tls={"handshake_timeout": 3.0})
    ctx.tls = object()
    session, transport = _connect(Pop3Factory(ctx, implicit_tls=False))
    transport.startTLS = lambda options: None  # type: ignore[attr-defined]
    session.dataReceived(b"STLS\r\n")
    assert transport.value().endswith(b"+OK Begin TLS negotiation\r\n")
    ctx.reactor.advance(3.0)
    assert transport.aborted


# -- one bad-command policy ----------------------------------------------------------------------

def test_bad_commands_in_a_row_end_the_session_a_good_one_resets_the_count() -> None:
    ctx = _ctx(pop3={"max_bad_commands": 3})
    session, transport = _connect(Pop3Factory(ctx, implicit_tls=False))
    session.dataReceived(b"BOGUS\r\nBOGUS\r\nCAPA\r\nBOGUS\r\nBOGUS\r\n")
    assert not transport.disconnecting
    session.dataReceived(b"BOGUS\r\n")
    assert transport.value().endswith(b"-ERR Too many errors, closing connection\r\n")
    assert transport.disconnecting


# -- SASL: one state machine, driven by the core -------------------------------------------------

def _run(exchange: sasl.Exchange, initial: bytes | None, lines: list[bytes]) -> tuple[Any, list[bytes]]:
    sent: list[bytes] = []
    responses = iter(lines)

    class Driver(CommandSession):
        def _send_challenge(self, challenge: bytes) -> None:
            sent.append(challenge)

        async def _read_response(self) -> tuple[bytes, str | None]:
            line = next(responses)
            return (b"", "Line too long") if line == b"TOO LONG" else (line, None)

    result = defer.Deferred.fromCoroutine(Driver()._sasl_exchange(exchange, initial))
    outcome: list[Any] = []
    result.addBoth(outcome.append)
    return outcome[0], sent


def test_sasl_plain_and_login() -> None:
    creds, sent = _run(sasl.start("plain"), None, [b"AGFsaWNlAHNlY3JldA=="])
    assert sent == [b""] and creds == sasl.Credentials("alice", "secret", "", "PLAIN")
    creds, sent = _run(sasl.start("LOGIN"), None, [b"YWxpY2U=", b"c2VjcmV0"])
    assert sent == [b"VXNlcm5hbWU6", b"UGFzc3dvcmQ6"] and creds.authcid == "alice" and creds.password == "secret"
    creds, sent = _run(sasl.start("LOGIN"), sasl.initial_response("YWxpY2U="), [b"c2VjcmV0"])
    assert sent == [b"UGFzc3dvcmQ6"] and creds.mechanism == "LOGIN"


@pytest.mark.parametrize("mechanism,initial,lines,error", [
    ("PLAIN", None, [b"*"], sasl.Cancelled),
    ("LOGIN", None, [b"YWxpY2U=", b" * "], sasl.Cancelled),
    ("PLAIN", "=", [], sasl.Malformed),  # an empty PLAIN message
    ("PLAIN", "!!!", [], sasl.Malformed),
    ("PLAIN", "Ym9iAGFsaWNlAHB3", [], sasl.AuthzidMismatch),  # bob NUL alice NUL pw
    ("LOGIN", None, [b"TOO LONG"], sasl.LineProblem),
    ("LOGIN", None, [b"/w=="], sasl.Malformed),  # not UTF-8
])
def test_sasl_failures(mechanism: str, initial: str | None, lines: list[bytes], error: type) -> None:
    outcome, _ = _run(sasl.start(mechanism), sasl.initial_response(initial), lines)
    assert outcome.check(error), outcome


def test_unknown_mechanism() -> None:
    with pytest.raises(sasl.UnknownMechanism):
        sasl.start("CRAM-MD5")


# -- commands: the coroutine driver (_start) -----------------------------------------------------

class _Commands(CommandSession):
    """Just the command driver: what ran, what was processed after, what failed."""

    def __init__(self) -> None:
        super().__init__()
        self.ctx = SimpleNamespace(reactor=Clock())
        self.processed = 0
        self.errors: list[BaseException] = []

    def _idle_timeout(self) -> float:
        return 60.0

    def _timed_out(self) -> None:
        pass

    def _process(self) -> None:
        self.processed += 1

    def _internal_error(self, failure: Any) -> None:
        self.errors.append(failure.value)


def test_a_command_that_never_waits_ends_inside_start() -> None:
    session, ran = _Commands(), []

    async def noop() -> None:
        ran.append("noop")

    session._start(noop())
    assert ran == ["noop"] and not session._busy
    assert session.processed == 0  # the caller's loop goes on; no nested _process


def test_a_command_that_waits_resumes_with_the_value_or_the_exception() -> None:
    session, seen = _Commands(), []
    store: defer.Deferred[int] = defer.Deferred()
    failing: defer.Deferred[int] = defer.Deferred()

    async def command() -> None:
        seen.append(await store)
        try:
            await failing
        except KeyError as exc:  # a store refusal the command answers (MailboxExists...)
            seen.append(exc.args[0])

    session._start(command())
    assert session._busy and seen == []
    store.callback(5)
    assert seen == [5] and session._busy
    failing.errback(KeyError("exists"))
    assert seen == [5, "exists"] and not session._busy
    assert session.processed == 1  # resumed later: the session reads on
    assert session.errors == []


def test_an_exception_a_command_does_not_handle_reaches_internal_error() -> None:
    session = _Commands()
    waiting: defer.Deferred[None] = defer.Deferred()

    async def broken() -> None:
        await waiting
        raise RuntimeError("bug")

    session._start(broken())
    waiting.callback(None)
    assert [type(e) for e in session.errors] == [RuntimeError] and not session._busy
