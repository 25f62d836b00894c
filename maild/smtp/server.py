"""maild's SMTP server: inbound MX (RFC 5321) and message submission (RFC 6409, RFC 8314),
written on ``twisted.internet.protocol`` (not twisted.mail, see docs/smtp.md). The session
mechanics — connection limits, timers, the line loop, the bad-command policy, the plaintext
rule, the SASL exchange — are :mod:`maild.util.session`'s; this module holds the commands.

Implementation notes — invariants a contributor must keep:

1. Parse, then execute. Every command line goes through
   :func:`maild.smtp.parser.parse_command`; ``_ALLOWED`` is the one table of which
   command each session state accepts.
2. One command at a time. While a command waits on a Deferred (filters, store, auth) no
   further input is parsed; pipelined commands wait in the buffer and replies go out in
   order (RFC 2920 §3.1).
3. STARTTLS throws away everything the client pipelined behind it and everything learnt
   before it (HELO, transaction) — RFC 3207 §4.2, the CVE-2011-0411 class.
4. DATA ends only at CRLF "." CRLF (:mod:`maild.smtp.data`); a bare CR/LF never ends a
   message nor starts a command. When a limit is hit inside DATA or BDAT the session
   keeps reading and discarding to the end of the message, then answers.
5. Durability: 250 after DATA/BDAT LAST only after the store's Deferred has fired.
6. Submission: AUTH is offered and accepted only over TLS; MAIL needs AUTH; the envelope
   sender and every address of the originator fields (From, Sender, Resent-From,
   Resent-Sender) must belong to the authenticated user.
6a. At end of DATA the header section is parsed once (``tx.header``, the one parser of
   :mod:`maild.util.message`) and the MIME structure walked once (``tx.mime``); every
   filter, mail authentication and delivery read those. A header section that does not
   name one author unambiguously, or MIME nested deeper than ``maild.util.mime.MAX_DEPTH``,
   is refused 554 5.6.0 before any filter runs, on both ports (docs/smtp.md).
6b. MX: an unauthenticated envelope sender in one of our domains is refused at MAIL FROM
   unless SPF passes for it (``reject_unauthenticated_local_sender``).
7. Never an open relay: a recipient outside the local domains, an address literal or a
   local part carrying a relay operator (% ! @) is refused unless the client is
   authenticated on the submission port.
8. Bounded memory: command lines are capped, the input buffer pauses the transport when
   it grows, and the transport's own write buffer pauses us (we are its push producer).
   A message is one buffer while it arrives and one ``bytes`` after, held by one frame
   (docs/smtp.md, "Memory per message": about 2x its size in flight).
9. A client never sees an exception text: unexpected errors are logged and answered
   451 4.3.0.
10. Shutdown (``shutdown()``, called by the daemon): input is no longer read,
   a command in progress (the store's commit after DATA included) finishes and is answered,
   then 421 and close (RFC 5321 §3.8); a message still being received is not stored
   (``_drop_pipelined``, ``_goodbye``).
11. Every refusal of a connection or transaction (421, 451 rate limit, 554 relay, filter
   verdicts) is one ``NOQUEUE: reject:`` log line (:meth:`SmtpSession._log_refusal`).
"""

from __future__ import annotations

import enum
import io
import logging
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from maild.auth import sasl
from maild.config import SmtpConfig
from maild.delivery import new_queue_id
from maild.smtp.data import DataReader, Problem, check_content
from maild.smtp.parser import (
    Auth,
    Bdat,
    Command,
    CommandError,
    Data,
    Hello,
    Help,
    MailFrom,
    MailPath,
    Noop,
    Quit,
    RcptTo,
    Rset,
    StartTls,
    Verb,
    Vrfy,
    parse_command,
)
from maild.smtp.submit import Rates, accept_message, refusal
from maild.store.types import User
from maild.util import metrics
from maild.util.authresults import AuthResults
from maild.util.session import LineSession, SessionFactory, log_refusal
from maild.util.transaction import Action, Reply, Transaction, Verdict

if TYPE_CHECKING:
    from OpenSSL import SSL

    from maild.context import ServerContext

log = logging.getLogger(__name__)

# RFC 4954 §4: an AUTH line may be 12288 octets; ordinary commands are 512 (RFC 5321
# §4.5.3.1.4) but ESMTP parameters extend them, so one cap fits all command lines.
MAX_COMMAND_LINE = 12288 + 2

_PROBLEM_REPLIES: dict[Problem, Reply] = {
    Problem.TOO_BIG: Reply(552, "5.3.4", "Message size exceeds fixed maximum message size"),
    Problem.LINE_TOO_LONG: Reply(550, "5.6.0", "Message has a line longer than 1000 octets"),
    Problem.BARE_NEWLINE: Reply(550, "5.6.0",
                                "Message contains a bare CR, bare LF or NUL; lines end with CRLF"),
}
_INTERNAL_ERROR = Reply(451, "4.3.0", "Internal error, try again later")
# RFC 4954 §4, §6: how a failed SASL exchange is answered (a cancel is 501 5.0.0).
_SASL_REPLIES: dict[type, tuple[int, str, str]] = {
    sasl.UnknownMechanism: (504, "5.5.4", "Unrecognized authentication type"),
    sasl.Malformed: (501, "5.5.2", "Cannot decode the authentication response"),
    sasl.AuthzidMismatch: (535, "5.7.8", "Authentication credentials invalid"),
}


class State(enum.Enum):
    CONNECTED = "connected"  # no HELO/EHLO yet (or reset by STARTTLS)
    GREETED = "greeted"
    MAIL = "mail"  # MAIL FROM accepted, no recipient yet
    RCPT = "rcpt"  # at least one recipient accepted


class Mode(enum.Enum):
    COMMAND = "command"
    DATA = "data"
    BDAT = "bdat"


_ANY = frozenset(State)
# RFC 5321 §4.1.4 command order. DATA and BDAT are checked by their handlers too, since
# DATA in state MAIL is "554 no valid recipients" (RFC 2920 §3.1) and BDAT must consume
# its chunk whatever the state (RFC 3030 §2).
_ALLOWED: dict[type, frozenset[State]] = {
    Hello: _ANY,
    StartTls: frozenset({State.CONNECTED, State.GREETED}),
    Auth: frozenset({State.GREETED}),
    MailFrom: frozenset({State.GREETED}),
    RcptTo: frozenset({State.MAIL, State.RCPT}),
    Data: frozenset({State.MAIL, State.RCPT}),
    Bdat: _ANY,
    Rset: _ANY,
    Noop: _ANY,
    Quit: _ANY,
    Vrfy: _ANY,
    Help: _ANY,
}


def _sequence_hint(cmd: Command, state: State) -> str:
    if state is State.CONNECTED:
        return "Send EHLO first"
    if state is State.GREETED:
        return "Send MAIL FROM first"
    if isinstance(cmd, MailFrom):
        return "Nested MAIL command"
    return "Not permitted during a mail transaction"


class SmtpFactory(SessionFactory):
    """The plain and TLS listeners of a section share its connection count and message
    rates (maild.util.session), so 587 and 465 count a user's messages together."""

    protocol_name = "smtp"

    def __init__(self, ctx: ServerContext, submission: bool, implicit_tls: bool) -> None:
        self.submission = submission
        section = "submission" if submission else "smtp"
        super().__init__(ctx, section, getattr(ctx.config, section), implicit_tls)
        self.config: SmtpConfig
        self.limits: Rates = self.shared("rates", lambda: Rates(self.config, ctx.reactor.seconds,
                                                               getattr(ctx, "tree", None), section))

    def make_session(self) -> SmtpSession:
        return SmtpSession(self)


@implementer(IPushProducer)
class SmtpSession(LineSession):
    ctx: ServerContext
    max_buffered = 256 * 1024  # pipelined input held while a command is busy

    def __init__(self, factory: SmtpFactory) -> None:
        super().__init__(factory)
        self.factory: SmtpFactory
        self.submission = factory.submission
        self.tls = factory.implicit_tls
        self.tx = Transaction(client_ip="", client_port=0, submission=self.submission)
        self.user: User | None = None
        self._greeted = False
        self._mode = Mode.COMMAND
        self._phase = ""  # the filter phase last run (for the refusal's log line)
        self._connect_notes: dict[str, Any] = {}  # filter notes after the connect phase
        self._session_notes: dict[str, Any] = {}  # ... and after HELO: each transaction starts here
        self._local_rcpts: list[str] = []
        self._remote_rcpts: list[str] = []
        self._data: DataReader | None = None
        self._bdat_body = io.BytesIO()  # the BDAT chunks so far, in one buffer
        self._bdat_size = 0
        self._bdat_left = 0
        self._bdat_last = False
        self._bdat_error: Reply | None = None

    # -- connection (the rest is maild.util.session's) -----------------------------------

    def _refuse_connection(self) -> None:
        # RFC 5321 §3.1: a server may answer the connection with 421 and close.
        self._reply(421, "4.7.0", f"{self.hostname} Too many connections, try again later")

    def _greet(self) -> None:
        self.tx.client_ip = self.client_ip
        self.tx.client_port = getattr(self.transport.getPeer(), "port", 0)
        self._register_producer()
        self._start(self._connect())

    async def _connect(self) -> None:
        try:
            verdict = await self._run_filters("connect")
        except Exception:  # a broken filter must not leave a silent session
            log.exception("smtp connect filters failed for %s", self.tx.client_ip)
            self._send(f"421 {self.hostname} Service not available, try again later")
            self._close()
            return
        if verdict.action is not Action.ACCEPT:
            reply = verdict.reply or Reply(554, "5.7.1", "Connection refused")
            self._log_refusal(reply)
            self._send(f"{reply.code} {self.hostname} {reply.text}")
            self._close()
            return
        self._connect_notes = dict(self.tx.notes)
        self._session_notes = dict(self.tx.notes)
        self._send(f"220 {self.hostname} ESMTP maild")

    def _tls_established(self) -> None:
        handle = cast("SSL.Connection", self.transport.getHandle())
        self.tx.tls_version = handle.get_protocol_version_name()
        cipher = handle.get_cipher_name()
        bits = handle.get_cipher_bits()
        self.tx.tls_cipher = f"{cipher} ({bits} bits)" if cipher else None

    def _discard_input(self) -> None:
        super()._discard_input()
        self._data = None
        self._bdat_body = io.BytesIO()

    def _goodbye(self) -> None:
        self._reply(421, "4.3.2", f"{self.hostname} Service shutting down, try again later")  # RFC 5321 §3.8
        self._close()

    # -- timeouts (RFC 5321 §4.5.3.2) --------------------------------------------------------

    def _idle_timeout(self) -> float:
        return self.config.data_timeout if self._mode is not Mode.COMMAND else self.config.command_timeout

    def _timed_out(self) -> None:
        if self._closed:
            return
        if self._busy and self._line_waiter is None:
            self._touch()  # we are the slow one (store, filters), not the client
            return
        self._reply(421, "4.4.2", f"{self.hostname} Timeout, closing connection")
        self._close()

    # -- input: command lines are maild.util.session's, DATA and BDAT octets ours -----------

    def dataReceived(self, data: bytes) -> None:
        if self._mode is not Mode.COMMAND and not self._closed and not self._stopping:
            self._touch()  # RFC 5321 §4.5.3.2.6: the data timeout runs per chunk
        super().dataReceived(data)

    def _line_limit(self) -> int:
        return MAX_COMMAND_LINE

    def _payload(self) -> bool | None:
        if self._mode is Mode.DATA:
            assert self._data is not None
            if not self._buf or not self._data.feed(self._buf):
                return False
            reader, self._data = self._data, None
            self._mode = Mode.COMMAND
            self._start(self._end_of_data(reader.message(), reader.problem))
            return True
        if self._mode is Mode.BDAT:
            if self._bdat_left and not self._buf:
                return False
            self._take_chunk()
            if self._bdat_left:
                return False
            self._mode = Mode.COMMAND
            self._start(self._end_of_chunk())
            return True
        return None

    def _take_chunk(self) -> None:
        size = min(self._bdat_left, len(self._buf))
        if size:
            chunk = bytes(self._buf[:size])
            del self._buf[:size]
            self._bdat_left -= size
            self._bdat_size += size
            if self._bdat_error is None:
                if self._bdat_size > self.config.max_message_size:
                    self._bdat_error = _PROBLEM_REPLIES[Problem.TOO_BIG]
                    self._bdat_body = io.BytesIO()
                else:
                    self._bdat_body.write(chunk)

    # -- running commands --------------------------------------------------------------------

    def _internal_error(self, failure: Failure) -> None:
        if self._closed:
            return
        log.error("smtp session %s:%s: internal error", self.tx.client_ip, self.tx.client_port,
                  exc_info=(failure.type, failure.value, failure.getTracebackObject()))  # type: ignore[arg-type]
        self._reset_transaction()
        self._reply(*_reply_args(_INTERNAL_ERROR))

    def _send(self, text: str) -> None:
        if not self._closed:
            self.transport.write(text.encode("utf-8") + b"\r\n")

    def _reply(self, code: int, enhanced: str, text: str) -> None:
        self._send(f"{code} {enhanced} {text}")  # RFC 2034 §4: enhanced code after the code
        metrics.smtp_reply("submission" if self.submission else "smtp", code, enhanced, text)

    def _reply_multi(self, code: int, lines: list[str]) -> None:
        for line in lines[:-1]:
            self._send(f"{code}-{line}")
        self._send(f"{code} {lines[-1]}")

    def _bad(self, code: int, enhanced: str, text: str) -> None:
        """Answer an erroneous command; too many in a row end the session."""
        if self._count_bad():
            self._reply(421, "4.7.0", f"{self.hostname} Too many errors, closing connection")
            self._close()
            return
        self._reply(code, enhanced, text)

    def _state(self) -> State:
        if self.tx.mail_from is None:
            return State.GREETED if self._greeted else State.CONNECTED
        return State.RCPT if self.tx.rcpt_to else State.MAIL

    async def _command(self, line: bytes, problem: str | None) -> None:
        if problem is not None:
            self._bad(500, "5.5.2", problem)
            return
        try:
            cmd = parse_command(line)
        except CommandError as exc:
            self._bad(exc.code, exc.enhanced, exc.text)
            if line[:5].upper() == b"BDAT ":
                # The chunk size is unknown, so its octets cannot be skipped: reading them as
                # commands would be smuggling. Give up on the connection (RFC 3030 §2).
                self._close()
            return
        state = self._state()
        if state not in _ALLOWED[type(cmd)]:
            self._bad(503, "5.5.1", _sequence_hint(cmd, state))
            return
        await self._dispatch(cmd)

    async def _dispatch(self, cmd: Command) -> None:
        match cmd:
            case Hello():
                await self._hello(cmd)
            case StartTls():
                self._starttls()
            case Auth():
                await self._auth(cmd)
            case MailFrom():
                await self._mail(cmd)
            case RcptTo():
                await self._rcpt(cmd)
            case Data():
                self._data_command()
            case Bdat():
                self._bdat_command(cmd)
            case Rset():
                self._reset_transaction()
                self._reply(250, "2.0.0", "Ok")
            case Noop():
                self._reply(250, "2.0.0", "Ok")
            case Quit():
                self._reply(221, "2.0.0", f"{self.hostname} Bye")
                self._close()
            case Vrfy():
                # RFC 5321 §3.5.3: do not disclose whether a user exists.
                self._reply(252, "2.5.2", "Cannot VRFY user, but will accept message")
            case Help():
                self._reply(214, "2.0.0", "Commands: " + " ".join(v.value for v in Verb))

    # -- filters -------------------------------------------------------------------------------

    async def _run_filters(self, phase: str, *args: Any) -> Verdict:
        self._phase = phase
        return await self.ctx.filters.run(phase, self.tx, *args)

    def _log_refusal(self, reply: Reply, stage: str | None = None, to: str | None = None) -> None:
        """One line per refusal (issue 19 item 2), as Postfix's ``NOQUEUE: reject:``."""
        tx = self.tx
        log_refusal(stage or self._phase.upper().replace("_", " ") or "CONNECT", tx.client_ip,
                    f"{reply.code} {reply.enhanced} {reply.text}",
                    queue_id=tx.queue_id or None,
                    **{"from": None if tx.mail_from is None else f"<{tx.mail_from}>"},
                    to=to if to is not None else (f"<{tx.rcpt_to[0]}>" if tx.rcpt_to else None),
                    nrcpt=len(tx.rcpt_to) if len(tx.rcpt_to) > 1 else None,
                    proto="ESMTP" if tx.esmtp else "SMTP", helo=f"<{tx.helo}>" if tx.helo else None,
                    section=self.factory.section)

    def _refused(self, verdict: Verdict) -> bool:
        """Answer a REJECT or TEMPFAIL verdict; True when the phase was refused."""
        reply = refusal(verdict)
        if reply is None:
            return False
        self._log_refusal(reply)
        self._reply(*_reply_args(reply))
        return True

    # -- session commands ----------------------------------------------------------------------

    def _reset_transaction(self) -> None:
        tx = self.tx
        tx.mail_from = None
        tx.mail_params = {}
        tx.rcpt_to = []
        tx.raw = None
        tx.queue_id = ""
        tx.notes = dict(self._session_notes)
        self._local_rcpts = []
        self._remote_rcpts = []
        self._bdat_body = io.BytesIO()
        self._bdat_size = 0
        self._bdat_error = None

    def _auth_offered(self) -> bool:
        return self.submission and self._plaintext_auth_allowed()

    async def _hello(self, cmd: Hello) -> None:
        self._reset_transaction()  # RFC 5321 §4.1.4: EHLO resets the transaction
        self.tx.helo = cmd.domain
        self.tx.esmtp = cmd.verb is Verb.EHLO
        self._greeted = False
        verdict = await self._run_filters("helo")
        if self._refused(verdict):
            self.tx.helo = None
            return
        self._greeted = True
        self._session_notes = dict(self.tx.notes)
        if cmd.verb is Verb.HELO:
            self._reply_multi(250, [self.hostname])
            return
        greeting = f"{self.hostname} Hello {cmd.domain}"
        if not cmd.domain.startswith("["):  # an address literal is the address already
            greeting += f" [{self.tx.client_ip}]"
        lines = [greeting,
                 "PIPELINING",  # RFC 2920
                 f"SIZE {self.config.max_message_size}",  # RFC 1870
                 "8BITMIME",  # RFC 6152
                 "ENHANCEDSTATUSCODES",  # RFC 2034
                 "SMTPUTF8",  # RFC 6531
                 "CHUNKING"]  # RFC 3030
        if not self.tls and self.ctx.tls is not None:
            lines.append("STARTTLS")  # RFC 3207
        if self._auth_offered():
            lines.append("AUTH PLAIN LOGIN")  # RFC 4954
        lines.append("HELP")
        self._reply_multi(250, lines)

    def _starttls(self) -> None:
        if self.tls:
            self._bad(503, "5.5.1", "TLS already active")
            return
        if self.ctx.tls is None:
            self._reply(454, "4.7.0", "TLS not available")
            return
        self._reply(220, "2.0.0", "Ready to start TLS")
        # RFC 3207 §4.2: discard what was pipelined after STARTTLS (CVE-2011-0411) and
        # everything learnt from the client before TLS.
        self._buf.clear()
        self._start_tls()
        self._greeted = False
        self.tx.helo = None
        self.tx.esmtp = False
        self._session_notes = dict(self._connect_notes)
        self._reset_transaction()

    def _send_challenge(self, challenge: bytes) -> None:
        self._send("334 " + challenge.decode("ascii"))  # RFC 4954 §4

    async def _auth(self, cmd: Auth) -> None:
        if not self.submission:
            self._bad(502, "5.5.1", "AUTH not available on this port")
            return
        if not self.tx.esmtp:
            self._bad(503, "5.5.1", "Send EHLO first")
            return
        if self.user is not None:
            self._bad(503, "5.5.1", "Already authenticated")  # RFC 4954 §4
            return
        if not self._auth_offered():
            self._bad(538, "5.7.11", "Encryption required for requested authentication mechanism")
            return
        try:
            # RFC 4954 §4: "=" is an empty initial response.
            credentials = await self._sasl_exchange(sasl.start(cmd.mechanism),
                                                    sasl.initial_response(cmd.initial_response))
        except sasl.Cancelled:
            self._reply(501, "5.0.0", "Authentication cancelled")  # RFC 4954 §4
            return
        except sasl.SaslError as exc:
            self._bad(*_SASL_REPLIES.get(type(exc), (501, "5.5.2", str(exc))))
            return
        user = await self._check_password(credentials.authcid, credentials.password, credentials.mechanism)
        if user is None:
            self._bad(535, "5.7.8", "Authentication credentials invalid")
            return
        self.user = user
        self.tx.authenticated_user = user.address
        self._reply(235, "2.7.0", "Authentication successful")

    # -- the mail transaction ------------------------------------------------------------------

    async def _mail(self, cmd: MailFrom) -> None:
        if self.submission and self.user is None:
            if not self.tls and not self._auth_offered():
                self._reply(530, "5.7.0", "Must issue a STARTTLS command first")  # RFC 3207 §4
            else:
                self._reply(530, "5.7.0", "Authentication required")  # RFC 4954 §6
            return
        if cmd.params and not self.tx.esmtp:
            self._bad(555, "5.5.4", "Parameters need EHLO")
            return
        if self.ctx.read_only:  # a replication follower: 4yz, the sender retries (RFC 5321 §4.2.1)
            self._reply(451, "4.3.0", "This server is a read-only replica, try again later")
            return
        if cmd.size is not None and cmd.size > self.config.max_message_size:
            self._reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
            return
        if self.user is not None:
            owned = {a.lower() for a in self.ctx.store.addresses_of(self.user.address)}
            if cmd.sender is None or cmd.sender.address.lower() not in owned:
                self._reply(553, "5.7.1", "Sender address not owned by the authenticated user")
                return
        limits = self.factory.limits
        if not limits.per_ip.take(self.tx.client_ip) or (
                self.user is not None and not limits.per_user.take(self.user.address)):
            reply = Reply(451, "4.7.1", "Message rate limit exceeded, try again later")
            self._log_refusal(reply, "MAIL", to="")
            self._reply(*_reply_args(reply))
            return
        self._reset_transaction()  # drops the state of refused BDAT chunks, if any
        self.tx.mail_from = cmd.address
        self.tx.mail_params = dict(cmd.params)
        self.tx.queue_id = new_queue_id()
        verdict = await self._run_filters("mail_from")
        if self._refused(verdict):
            self._reset_transaction()
            return
        if self._forged_local_sender(cmd):
            self._reset_transaction()
            self._reply(550, "5.7.1", "Sender address in a local domain needs authentication")
            return
        self._reply(250, "2.1.0", "Ok")

    def _forged_local_sender(self, cmd: MailFrom) -> bool:
        """MX: an unauthenticated client using one of our domains as envelope sender, with
        no SPF pass for it (the mail authentication filter's result of the MAIL FROM
        phase; RFC 7208 §2.6.3). Postfix's reject_unauthenticated_sender_login_mismatch in
        spirit: only our users send as our domains, through submission."""
        if (self.submission or self.user is not None or cmd.sender is None
                or not self.config.reject_unauthenticated_local_sender
                or self.ctx.store.domain(cmd.sender.domain_key.rstrip(".")) is None):
            return False
        results = self.tx.notes.get("auth_results")
        spf = results.spf if isinstance(results, AuthResults) else None
        return spf is None or spf.result != "pass" or spf.scope != "mailfrom"

    def _postmaster(self) -> MailPath:
        """RFC 5321 §4.5.1: <Postmaster> without a domain."""
        domains = [self.hostname.lower()] + [d.name for d in self.ctx.store.domains()]
        for domain in domains:
            if self.ctx.store.resolve_recipient(f"postmaster@{domain}"):
                return MailPath("postmaster", domain)
        return MailPath("postmaster", domains[-1])

    async def _rcpt(self, cmd: RcptTo) -> None:
        mailbox = cmd.recipient if cmd.recipient is not None else self._postmaster()
        if not mailbox.is_ascii and "SMTPUTF8" not in self.tx.mail_params:
            self._reply(553, "5.6.7", "Non-ASCII address needs SMTPUTF8")  # RFC 6531 §3.5
            return
        if len(self.tx.rcpt_to) >= self.config.max_recipients:
            self._reply(452, "4.5.3", "Too many recipients")  # RFC 5321 §4.5.3.1.10
            return
        address = mailbox.address
        users = None if mailbox.is_literal else self.ctx.store.resolve_recipient(address)
        trusted = self.user is not None
        if users is None or (mailbox.has_routing and not trusted):
            if not trusted:
                self._log_refusal(Reply(554, "5.7.1", "Relay access denied"), "RCPT", to=f"<{address}>")
                self._bad(554, "5.7.1", "Relay access denied")
                return
            local = False
        elif not users or mailbox.has_routing:
            self._reply(550, "5.1.1", "No such user here")
            return
        else:
            local = True
            if self._over_quota(users):
                self._reply(552, "5.2.2", "Mailbox full")
                return
        verdict = await self._run_filters("rcpt_to", address)
        if self._refused(verdict):
            return
        self.tx.rcpt_to.append(address)
        (self._local_rcpts if local else self._remote_rcpts).append(address)
        self._reply(250, "2.1.5", "Ok")

    def _over_quota(self, users: list[str]) -> bool:
        declared = int(self.tx.mail_params.get("SIZE") or 0)
        for user in users:
            quota = self.ctx.store.quota(user)
            if quota.limit_bytes and quota.used_bytes + declared >= quota.limit_bytes:
                return True
        return False

    def _data_command(self) -> None:
        if not self.tx.rcpt_to:
            self._reply(554, "5.5.1", "No valid recipients")  # RFC 2920 §3.1
            return
        if self._bdat_size:
            self._bad(503, "5.5.1", "DATA after BDAT")  # RFC 3030 §2
            return
        self._data = DataReader(self.config.max_message_size, self.config.max_line_length)
        self._mode = Mode.DATA
        self._reply(354, "2.0.0", "End data with <CR><LF>.<CR><LF>")

    def _bdat_command(self, cmd: Bdat) -> None:
        """RFC 3030 §2: the chunk is read whatever happens; the answer comes after it."""
        if self._bdat_error is None:
            if self.tx.mail_from is None:
                self._bdat_error = Reply(503, "5.5.1", "Send MAIL FROM first")
            elif not self.tx.rcpt_to:
                self._bdat_error = Reply(554, "5.5.1", "No valid recipients")
        self._bdat_left = cmd.size
        self._bdat_last = cmd.last
        self._mode = Mode.BDAT

    async def _end_of_chunk(self) -> None:
        if self._bdat_error is not None:
            error = self._bdat_error
            if self._bdat_last:
                self._reset_transaction()
            self._reply(*_reply_args(error))
            return
        if not self._bdat_last:
            self._reply(250, "2.0.0", f"{self._bdat_size} octets received")
            return
        body, self._bdat_body = self._bdat_body.getvalue(), io.BytesIO()  # no copy
        problem = check_content(body, self.config.max_line_length)
        held = [body]
        del body  # only the callee holds the message: it may replace it (docs/smtp.md, "Memory")
        await self._end_of_data(held.pop(), problem)

    async def _end_of_data(self, body: bytes, problem: Problem | None) -> None:
        try:
            if problem is not None:
                self._reply(*_reply_args(_PROBLEM_REPLIES[problem]))
                return
            held = [body]
            del body  # only the callee holds the message: it may replace it (docs/smtp.md, "Memory")
            await self._accept_message(held.pop())
        finally:
            self._reset_transaction()

    async def _accept_message(self, body: bytes) -> None:
        self._phase = "data"  # the stage a filter's refusal is logged at
        held = [body]
        del body  # only the callee holds the message: it may replace it (docs/smtp.md, "Memory")
        reply = await accept_message(self.ctx, self.tx, held.pop(), self.user, self._local_rcpts,
                                     self._remote_rcpts, self._log_refusal,
                                     "submission" if self.submission else "smtp")
        self._reply(*_reply_args(reply))


def _reply_args(reply: Reply) -> tuple[int, str, str]:
    return reply.code, reply.enhanced, reply.text
