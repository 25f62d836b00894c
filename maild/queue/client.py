"""maild's own SMTP client (RFC 5321) for outbound delivery, on
``twisted.internet.protocol`` (not twisted.mail: see :mod:`maild.queue.wire`).

Implementation notes — invariants a contributor must keep:

1. One transaction per connection: greeting, EHLO (HELO when EHLO is refused as
   unknown), STARTTLS, MAIL, RCPT..., DATA, QUIT. :func:`transfer` is that sequence, top
   to bottom; :class:`SmtpClientProtocol` only moves bytes and matches replies to
   commands in order (RFC 2920 §3.1).
2. Every wait for a reply has a timer (RFC 5321 §4.5.3.2); when it fires the connection
   is aborted. A malformed reply aborts the connection too. Either is a failure of this
   MX (:class:`SessionError`), so the caller tries the next one.
3. STARTTLS whenever offered unless the policy is "none" (RFC 3207). After TLS the
   capabilities learnt in clear are forgotten and EHLO is sent again (RFC 3207 §4.2).
   Policy "required" and no STARTTLS (or a refused one) is a temporary failure, 4.7.4,
   and nothing of the message is sent in clear.
4. The message goes out through :func:`maild.queue.wire.encode_data` once, whole.
5. Results are per recipient: a refused RCPT keeps its own reply; the reply to MAIL,
   to DATA or to the final "." applies to every recipient it concerns.
6. Limits of the server are respected before anything is sent: SIZE (RFC 1870 §6),
   SMTPUTF8 (RFC 6531 §3.2) — the message is refused here, with the status a server
   would have given, rather than sent in a form the server did not agree to.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from twisted.internet import defer, error
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from maild.queue.wire import (
    Capabilities,
    ProtocolError,
    Reply,
    ReplyParser,
    encode_data,
    has_8bit,
    needs_smtputf8,
)
from maild.util.transport import ConnectionTransport

if TYPE_CHECKING:
    from OpenSSL import SSL

log = logging.getLogger(__name__)

QUIT_TIMEOUT = 5.0


class SessionError(Exception):
    """This MX could not take the message: connection, greeting, EHLO or TLS failed.
    ``reply`` is the server's reply, or one made up for a local failure (4xx)."""

    def __init__(self, reply: Reply, stage: str, from_server: bool = True) -> None:
        super().__init__(f"{stage}: {reply}")
        self.reply = reply
        self.stage = stage
        self.from_server = from_server


class ReplyTimeout(Exception):
    """The server did not answer in time (RFC 5321 §4.5.3.2)."""


def local_failure(enhanced: str, text: str, code: int = 451) -> Reply:
    return Reply(code, (f"{enhanced} {text}",), local=True)


@dataclass
class ClientOptions:
    helo: str  # our hostname, for EHLO (RFC 5321 §4.1.1.1)
    tls_policy: str  # none, opportunistic, required
    tls_creator: Any  # IOpenSSLClientConnectionCreator for STARTTLS
    command_timeout: float = 300.0
    data_timeout: float = 600.0


@dataclass
class Outcome:
    """The result of one transaction: a reply per recipient."""

    replies: dict[str, Reply] = field(default_factory=dict)
    tls: str | None = None  # "TLSv1.3 TLS_AES_256_GCM_SHA384" when STARTTLS was used


class SmtpClientProtocol(Protocol):
    transport: ConnectionTransport

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self._parser = ReplyParser()
        self._early: deque[Reply] = deque()  # replies nobody waits for yet
        self._waiting: deque[tuple[defer.Deferred[Reply], Any]] = deque()
        self._lost: Failure | None = None

    # -- transport events -------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        try:
            replies = self._parser.feed(data)
        except ProtocolError as exc:
            self._abort(exc)
            return
        for reply in replies:
            if self._waiting:
                d, timer = self._waiting.popleft()
                timer.cancel()
                d.callback(reply)
            else:
                self._early.append(reply)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._lost = reason
        while self._waiting:
            d, timer = self._waiting.popleft()
            if timer.active():
                timer.cancel()
            d.errback(reason)

    # -- used by transfer() ---------------------------------------------------------

    def send(self, *lines: str) -> None:
        self.transport.write(b"".join(line.encode("utf-8") + b"\r\n" for line in lines))

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def expect(self, timeout: float) -> defer.Deferred[Reply]:
        """The next reply, in order; fails when the connection is lost or on timeout."""
        if self._early:
            return defer.succeed(self._early.popleft())
        if self._lost is not None:
            return defer.fail(self._lost)
        d: defer.Deferred[Reply] = defer.Deferred()
        timer = self.reactor.callLater(timeout, self._abort, ReplyTimeout(
            f"no reply within {timeout:g}s"))
        self._waiting.append((d, timer))
        return d

    def start_tls(self, creator: Any) -> None:
        self.transport.startTLS(creator)

    def tls_description(self) -> str | None:
        try:
            handle = cast("SSL.Connection", self.transport.getHandle())
            return f"{handle.get_protocol_version_name()} {handle.get_cipher_name()}"
        except AttributeError:
            return None

    def close(self) -> None:
        if self.transport is not None and self._lost is None:
            self.transport.loseConnection()

    def _abort(self, reason: Exception) -> None:
        failure = Failure(reason)
        while self._waiting:
            d, timer = self._waiting.popleft()
            if timer.active():
                timer.cancel()
            d.errback(failure)
        self._lost = failure
        if self.transport is not None:
            self.transport.abortConnection()


async def _reply(proto: SmtpClientProtocol, timeout: float, stage: str) -> Reply:
    try:
        return await proto.expect(timeout)
    except Exception as exc:  # every cause is a failure of this MX
        raise SessionError(local_failure("4.4.2", f"{stage}: {describe(exc)}"), stage,
                           from_server=False) from None


def describe(exc: BaseException) -> str:
    """A short text for a local failure (logged and put into DSNs, never a traceback)."""
    if isinstance(exc, error.ConnectionDone):
        return "connection closed by the server"
    if isinstance(exc, error.ConnectionLost):
        return "connection lost"
    if isinstance(exc, ProtocolError):
        return f"protocol error: {exc}"
    return str(exc) or type(exc).__name__


async def _hello(proto: SmtpClientProtocol, opts: ClientOptions) -> Capabilities:
    proto.send(f"EHLO {opts.helo}")
    reply = await _reply(proto, opts.command_timeout, "EHLO")
    if reply.code == 250:
        return Capabilities.from_ehlo(reply)
    if reply.code in (500, 502):  # RFC 5321 §3.2: EHLO not recognised, fall back to HELO
        proto.send(f"HELO {opts.helo}")
        reply = await _reply(proto, opts.command_timeout, "HELO")
        if reply.code == 250:
            return Capabilities()
    raise SessionError(reply, "EHLO")


async def _secure(proto: SmtpClientProtocol, opts: ClientOptions,
                  caps: Capabilities) -> tuple[Capabilities, str | None]:
    if opts.tls_policy == "none":
        return caps, None
    if "STARTTLS" not in caps:
        if opts.tls_policy == "required":
            raise SessionError(local_failure("4.7.4", "TLS is required but was not offered"),
                               "STARTTLS", from_server=False)
        return caps, None
    proto.send("STARTTLS")
    reply = await _reply(proto, opts.command_timeout, "STARTTLS")
    if reply.code != 220:
        if opts.tls_policy == "required":
            raise SessionError(reply, "STARTTLS")
        return caps, None  # opportunistic: carry on in clear
    proto.start_tls(opts.tls_creator)
    try:
        caps = await _hello(proto, opts)  # RFC 3207 §4.2: forget what was learnt in clear
    except SessionError as exc:  # mostly a failed handshake; the caller may retry in clear
        raise SessionError(exc.reply, "TLS", exc.from_server) from None
    return caps, proto.tls_description()


def _mail_command(sender: str, size: int, caps: Capabilities, raw: bytes, utf8: bool) -> str:
    params = []
    if "SIZE" in caps:
        params.append(f"SIZE={size}")  # RFC 1870 §6
    if has_8bit(raw) and "8BITMIME" in caps:
        params.append("BODY=8BITMIME")  # RFC 6152 §3
    if utf8:
        params.append("SMTPUTF8")  # RFC 6531 §3.4
    return f"MAIL FROM:<{sender}>" + "".join(" " + p for p in params)


async def transfer(proto: SmtpClientProtocol, opts: ClientOptions, sender: str,
                   recipients: list[str], raw: bytes) -> Outcome:
    """One transaction on a connected ``proto``. Raises :class:`SessionError` when this
    MX should not be used (the caller tries the next one); otherwise every recipient has
    a reply in the :class:`Outcome`."""
    try:
        greeting = await _reply(proto, opts.command_timeout, "greeting")
        if greeting.code != 220:  # RFC 5321 §3.1: 554 (or 421) means no service here
            raise SessionError(greeting, "greeting")
        caps, tls = await _secure(proto, opts, await _hello(proto, opts))
        outcome = Outcome(tls=tls)
        data = encode_data(raw)
        utf8 = needs_smtputf8(sender, recipients, raw)
        refusal = None
        if utf8 and "SMTPUTF8" not in caps:
            # RFC 6531 §3.2: no SMTPUTF8 at the server: do not send, return to the sender.
            refusal = Reply(553, ("5.6.7 the receiving server does not support SMTPUTF8, "
                                  "needed for this message",), local=True)
        elif caps.size and len(data) > caps.size:
            refusal = Reply(552, (f"5.3.4 message size {len(data)} exceeds the limit of "
                                  f"{caps.size} of the receiving server",), local=True)
        if refusal is not None:
            outcome.replies = dict.fromkeys(recipients, refusal)
            return outcome
        await _envelope(proto, opts, caps, sender, recipients, raw, len(data), utf8, outcome)
        accepted = [r for r in recipients if r not in outcome.replies]
        if accepted:
            proto.send("DATA")
            reply = await _reply(proto, opts.command_timeout, "DATA")
            if reply.code == 354:
                proto.write(data)
                reply = await _reply(proto, opts.data_timeout, "end of data")
            outcome.replies.update(dict.fromkeys(accepted, reply))
        await _quit(proto)
        return outcome
    finally:
        proto.close()


async def _envelope(proto: SmtpClientProtocol, opts: ClientOptions, caps: Capabilities,
                    sender: str, recipients: list[str], raw: bytes, size: int, utf8: bool,
                    outcome: Outcome) -> None:
    """MAIL and RCPT, pipelined when offered (RFC 2920); refused recipients get their
    reply in ``outcome``."""
    mail = _mail_command(sender, size, caps, raw, utf8)
    rcpts = [f"RCPT TO:<{r}>" for r in recipients]
    if "PIPELINING" in caps:
        proto.send(mail, *rcpts)
        replies = [await _reply(proto, opts.command_timeout, "MAIL")]
        for _ in rcpts:
            replies.append(await _reply(proto, opts.command_timeout, "RCPT"))
    else:
        proto.send(mail)
        replies = [await _reply(proto, opts.command_timeout, "MAIL")]
        if replies[0].code == 250:
            for line in rcpts:
                proto.send(line)
                replies.append(await _reply(proto, opts.command_timeout, "RCPT"))
    if replies[0].code != 250:
        outcome.replies.update(dict.fromkeys(recipients, replies[0]))
        return
    for address, reply in zip(recipients, replies[1:], strict=True):
        if not reply.positive:
            outcome.replies[address] = reply


async def _quit(proto: SmtpClientProtocol) -> None:
    proto.send("QUIT")
    try:
        await proto.expect(QUIT_TIMEOUT)
    except Exception:  # the transaction is over; QUIT is a courtesy
        log.debug("no reply to QUIT")
