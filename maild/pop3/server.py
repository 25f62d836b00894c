"""maild's POP3 server (RFC 1939) with CAPA (RFC 2449), STLS (RFC 2595) and SASL PLAIN and
LOGIN (RFC 5034), written on ``twisted.internet.protocol`` (not twisted.mail, see docs/pop3.md).
The session mechanics — connection limits, timers, the line loop, the bad-command policy,
the plaintext rule, the SASL exchange — are :mod:`maild.util.session`'s; this module holds
the commands.

Implementation notes — invariants a contributor must keep:

1. Parse, then execute. Every command line goes through
   :func:`maild.pop3.parser.parse_command`; ``_ALLOWED`` is the one table of which command
   each state (AUTHORIZATION, TRANSACTION, UPDATE — RFC 1939 §3) accepts.
2. One command at a time. While a command waits (auth, store, a RETR being streamed) no
   further input is parsed; pipelined commands (RFC 2449 §6.6) wait in the buffer and
   answers go out in order.
3. STLS throws away everything the client pipelined behind it in the same packet and the
   name given to USER before it (RFC 2595 §4, the CVE-2011-0411 class).
4. Passwords only over TLS: USER, PASS and AUTH are refused on a plain connection unless
   ``[pop3] allow_plaintext_auth_on_loopback`` is set and the client is on loopback.
   Wrong credentials get ``-ERR [AUTH]`` (RFC 3206 §4) after the auth penalty's delay
   (docs/security.md); the answer never says whether the user exists.
5. The maildrop is a snapshot of INBOX taken at login; message numbers never change
   during a session. One POP3 session per user (RFC 1939 §8, ``-ERR [IN-USE]``, RFC 2449
   §8.1.1), across every worker process of the daemon (the store's maildrop_lock);
   IMAP is not blocked. The lock is released when the session ends (_session_ended), or
   when its worker dies.
6. Nothing is deleted before QUIT: DELE only marks, and a connection that ends any other
   way (drop, timeout, shutdown) deletes nothing (RFC 1939 §6). At QUIT the marked
   messages are expunged from the store, so IMAP sessions see them go.
7. UIDLs are ``<UIDVALIDITY>.<UID>`` of INBOX: stable for the life of the message and
   never reused (RFC 1939 §7 "unique-id").
8. RETR and TOP stream the message from ``store.open_message`` in fixed-size chunks through
   a pull producer; a message is never read whole into memory. Byte-stuffing and line ends
   are :mod:`maild.pop3.encoder`'s job; a body the store recorded as clean at delivery
   (CRLF only, no line starting with ".") goes out as stored, unscanned. One chunk is
   always read ahead: the store checks a body's sha256 as it is read and fails the read
   that reaches the end, so the end of a damaged body is never sent, and a message of one
   chunk is refused ``-ERR [SYS/PERM]`` before its "+OK". A client that reads nothing for
   ``idle_timeout`` is disconnected like an idle one.
9. \\Seen set by RETR is written in batches (every SEEN_BATCH messages, SEEN_FLUSH_SECONDS
   after the first, at QUIT and when the connection ends): a download of a thousand
   messages is a handful of store commits, not a thousand fsyncs. QUIT answers after its
   batch is committed.
10. A client never sees an exception text: unexpected errors are logged and answered
   ``-ERR [SYS/TEMP]``. After "+OK" of RETR/TOP has gone out an error can only close the
   connection.
11. Shutdown (``shutdown()``, called by the daemon): input is no longer
   read, a command in progress (a RETR being sent, QUIT's expunge) finishes and is
   answered, then the connection closes. POP3 has no unsolicited response, and a session
   that ends without QUIT deletes nothing (RFC 1939 §6; invariant 6).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.interfaces import IPullProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from maild.auth import sasl
from maild.config import Pop3Config
from maild.pop3.encoder import MessageEncoder
from maild.pop3.parser import (
    MAX_COMMAND_LINE,
    Auth,
    Capa,
    Command,
    CommandError,
    Dele,
    List,
    Noop,
    Pass,
    Quit,
    Retr,
    Rset,
    Stat,
    Stls,
    Top,
    Uidl,
    UserCommand,
    parse_command,
)
from maild.store.sending import MessageReader
from maild.store.types import SEEN, BlobDamaged, FlagMode, MessageMeta, NotFound, StoreFull
from maild.util import metrics
from maild.util.limits import MaildropLocks, TreeMaildropLocks
from maild.util.session import LineSession, SessionFactory

if TYPE_CHECKING:
    from maild.context import ServerContext

log = logging.getLogger(__name__)

# RFC 5034 §4 limits the AUTH command line to 255 octets, not the client's responses.
MAX_SASL_LINE = 4096
SEEN_BATCH = 64  # RETRs whose \Seen flags are written in one store commit at most
SEEN_FLUSH_SECONDS = 1.0  # how long a retrieved message may wait for its \Seen
CHUNK = 256 * 1024  # octets read from the message and written per step (a 100 KB message: one)
MECHANISMS = sasl.MECHANISMS

_INTERNAL_ERROR = "-ERR [SYS/TEMP] Internal error, try again later"


class State(enum.Enum):
    AUTHORIZATION = "authorization"
    TRANSACTION = "transaction"
    UPDATE = "update"


_AUTHORIZATION = frozenset({State.AUTHORIZATION})
_TRANSACTION = frozenset({State.TRANSACTION})
_ALLOWED: dict[type, frozenset[State]] = {
    UserCommand: _AUTHORIZATION,  # RFC 1939 §7
    Pass: _AUTHORIZATION,
    Auth: _AUTHORIZATION,  # RFC 5034 §4
    Stls: _AUTHORIZATION,  # RFC 2595 §4
    Capa: _AUTHORIZATION | _TRANSACTION,  # RFC 2449 §5
    Quit: _AUTHORIZATION | _TRANSACTION,  # RFC 1939 §4, §6
    Stat: _TRANSACTION,  # RFC 1939 §5
    List: _TRANSACTION,
    Retr: _TRANSACTION,
    Dele: _TRANSACTION,
    Noop: _TRANSACTION,
    Rset: _TRANSACTION,
    Top: _TRANSACTION,  # RFC 1939 §7
    Uidl: _TRANSACTION,
}



@dataclass
class Maildrop:
    """The snapshot of INBOX a session works on; message n is ``messages[n - 1]``."""

    user: str
    mailbox_id: int
    uidvalidity: int
    messages: list[MessageMeta]
    deleted: set[int] = field(default_factory=set)  # message numbers marked by DELE

    def get(self, msg: int) -> MessageMeta | None:
        """The message numbered ``msg``, or None when there is none or it is deleted."""
        if msg > len(self.messages) or msg in self.deleted:
            return None
        return self.messages[msg - 1]

    def live(self) -> list[tuple[int, MessageMeta]]:
        return [(n, m) for n, m in enumerate(self.messages, 1) if n not in self.deleted]

    def totals(self) -> tuple[int, int]:
        live = self.live()
        return len(live), sum(m.size for _, m in live)

    def uidl(self, meta: MessageMeta) -> str:
        return f"{self.uidvalidity}.{meta.uid}"


class Pop3Factory(SessionFactory):
    """The plain and TLS listeners share the section's connection count and the maildrop
    locks (users with a POP3 session in TRANSACTION)."""

    protocol_name = "pop3"

    def __init__(self, ctx: ServerContext, implicit_tls: bool) -> None:
        super().__init__(ctx, "pop3", ctx.config.pop3, implicit_tls)
        self.config: Pop3Config
        tree = getattr(ctx, "tree", None)
        self.locked: MaildropLocks = self.shared(
            "locked", lambda: MaildropLocks() if tree is None else TreeMaildropLocks(ctx.store.maildrop_lock))

    def make_session(self) -> Pop3Session:
        return Pop3Session(self)


@implementer(IPullProducer)
class _MessageSender:
    """Streams one message through a :class:`MessageEncoder` as the transport drains."""

    def __init__(self, status: bytes, source: MessageReader, encoder: MessageEncoder, consumer: Any) -> None:
        self.source = source
        self.encoder = encoder
        self.consumer = consumer
        self._status: bytes = status  # the "+OK" line, sent with the first chunk
        self.finished: defer.Deferred[bool] = defer.Deferred()  # True: all sent
        self.chunks = 0  # chunks handed to the transport: progress, for the stall timeout
        self.failure: Exception | None = None  # why it ended early
        self._ahead: bytes | None = None

    @property
    def unsent(self) -> bool:
        """Nothing has been written yet, not even the "+OK" line."""
        return bool(self._status)

    def _read(self) -> bytes:
        return b"" if self.encoder.done else self.source.read(CHUNK)

    def start(self) -> defer.Deferred[bool]:
        self.consumer.registerProducer(self, False)
        return self.finished

    def resumeProducing(self) -> None:
        if self.finished.called:
            return
        try:
            while True:
                # One chunk read ahead, so the last one goes out in one write with the
                # terminator: a lone ".\r\n" segment would wait for the client's delayed
                # ACK (Nagle), 40 ms per message.
                chunk = self._ahead if self._ahead is not None else self._read()
                self._ahead = self._read() if chunk else b""
                data = self._status + self.encoder.feed(chunk)
                self._status = b""
                if not self._ahead or self.encoder.done:
                    self.consumer.write(data + self.encoder.finish())
                    self._end(True)
                    return
                if data:
                    self.chunks += 1
                    self.consumer.write(data)
                    return
        except BlobDamaged as exc:  # the store has logged the blob's name
            self.failure = exc
            self._end(False)
        except Exception as exc:  # a blob read failed: log, give up
            log.exception("pop3: reading a message failed while sending it")
            self.failure = exc
            self._end(False)

    def stopProducing(self) -> None:
        self._end(False)

    def _end(self, complete: bool) -> None:
        if self.finished.called:
            return
        self.source.close()
        self.consumer.unregisterProducer()
        self.finished.callback(complete)


class Pop3Session(LineSession):
    ctx: ServerContext

    def __init__(self, factory: Pop3Factory) -> None:
        super().__init__(factory)
        self.factory: Pop3Factory
        self.state = State.AUTHORIZATION
        self.maildrop: Maildrop | None = None
        self._user_name: str | None = None  # from USER, waiting for PASS
        self._locked: str | None = None
        self._seen_updates: list[defer.Deferred[Any]] = []
        self._seen_pending: list[int] = []  # uids RETR has sent, \Seen not yet written
        self._seen_flush: Any = None  # the delayed call that writes them
        self._sender: _MessageSender | None = None  # the RETR/TOP being streamed
        self._sender_mark = -1  # its progress when the idle timer last fired

    # -- connection (the rest is maild.util.session's) -----------------------------------

    def _refuse_connection(self) -> None:
        self._send("-ERR [SYS/TEMP] Too many connections, try again later")  # RFC 3206 §4

    def _greet(self) -> None:
        self._send(f"+OK {self.hostname} maild POP3 ready")

    def _goodbye(self) -> None:
        self._close()  # RFC 1939 has no unsolicited response; §6: no UPDATE state

    def _session_ended(self) -> None:
        """Free the maildrop lock and write the \\Seen flags of what was retrieved
        (invariant 9). Nothing is deleted here (invariant 6)."""
        self._write_seen()
        if self._locked is not None:
            self.factory.locked.release(self._locked)  # invariant 5
            self._locked = None

    # -- idle timeout (RFC 1939 §3: at least 10 minutes) --------------------------------------

    def _idle_timeout(self) -> float:
        return self.config.idle_timeout

    def _timed_out(self) -> None:
        if self._closed:
            return
        if self._busy and self._line_waiter is None:
            sender = self._sender
            if sender is None or sender.chunks != self._sender_mark:
                self._sender_mark = sender.chunks if sender is not None else -1
                self._touch()  # we are waiting on the store, or the client is reading
                return
            # The client has read nothing of a RETR/TOP for a whole idle_timeout: the
            # unsent data can never be flushed, so abort rather than close.
            log.info("pop3 session %s: client stopped reading, aborting", self.client_ip)
            self._end_session()
            self._closed = True
            self.transport.abortConnection()
            return
        # RFC 1939 §3: an autologout timer closes without entering the UPDATE state.
        self._send("-ERR Disconnected for inactivity")
        self._close()

    # -- input ------------------------------------------------------------------------------

    def _line_limit(self) -> int:
        return MAX_SASL_LINE if self._line_waiter is not None else MAX_COMMAND_LINE

    # -- running commands --------------------------------------------------------------------

    def _internal_error(self, failure: Failure) -> None:
        if self._closed:
            return
        log.error("pop3 session %s: internal error", self.client_ip,
                  exc_info=(failure.type, failure.value, failure.getTracebackObject()))  # type: ignore[arg-type]
        self._send(_INTERNAL_ERROR)

    def _send(self, text: str) -> None:
        if not self._closed:
            self.transport.write(text.encode("utf-8") + b"\r\n")

    def _send_multi(self, first: str, lines: list[str]) -> None:
        """A multi-line response (RFC 1939 §3); the lines here never begin with "."."""
        self._send(first)
        if not self._closed:
            self.transport.write(b"".join(line.encode("utf-8") + b"\r\n" for line in lines) + b".\r\n")

    def _bad(self, text: str) -> None:
        """Answer an erroneous command; too many in a row end the session."""
        if self._count_bad():
            self._send("-ERR Too many errors, closing connection")
            self._close()
            return
        self._send(f"-ERR {text}")

    async def _command(self, line: bytes, problem: str | None) -> None:
        if problem is not None:
            self._bad(problem)
            return
        try:
            cmd = parse_command(line)
        except CommandError as exc:
            self._bad(str(exc))
            return
        if self.state not in _ALLOWED[type(cmd)]:
            self._bad("Log in first" if self.state is State.AUTHORIZATION
                      else "Command not valid after login")
            return
        await self._dispatch(cmd)

    @metrics.timed_command("pop3")
    async def _dispatch(self, cmd: Command) -> None:
        match cmd:
            case Capa():
                self._capa()
            case Stls():
                self._stls()
            case UserCommand():
                self._user(cmd)
            case Pass():
                await self._pass(cmd)
            case Auth():
                await self._auth(cmd)
            case Quit():
                await self._quit()
            case Stat():
                count, size = self._drop().totals()
                self._send(f"+OK {count} {size}")  # RFC 1939 §5 drop listing
            case List():
                self._list(cmd)
            case Uidl():
                self._uidl(cmd)
            case Retr():
                await self._retrieve(cmd.msg, None)
            case Top():
                await self._retrieve(cmd.msg, cmd.lines)
            case Dele():
                self._dele(cmd)
            case Rset():
                drop = self._drop()
                drop.deleted.clear()  # RFC 1939 §5 RSET
                count, size = drop.totals()
                self._send(f"+OK Maildrop has {count} messages ({size} octets)")
            case Noop():
                self._send("+OK")

    # -- AUTHORIZATION -------------------------------------------------------------------------

    def _refuse_plaintext(self) -> None:
        self._send("-ERR [AUTH] Plaintext authentication disallowed on non-secure connections, use STLS")

    def _capa(self) -> None:
        lines = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING",
                 "EXPIRE NEVER",  # RFC 2449 §6.7: maild never deletes mail on its own
                 "IMPLEMENTATION maild"]
        if self.state is State.AUTHORIZATION:
            if not self.tls and self.ctx.tls is not None:
                lines.append("STLS")  # RFC 2595 §4
            if self._plaintext_auth_allowed():
                lines += ["USER", "SASL " + " ".join(MECHANISMS)]  # RFC 2449 §6.3, RFC 5034 §5
        self._send_multi("+OK Capability list follows", lines)

    def _stls(self) -> None:
        if self.tls:
            self._bad("TLS already active")
            return
        if self.ctx.tls is None:
            self._send("-ERR STLS not available")
            return
        self._send("+OK Begin TLS negotiation")
        # RFC 2595 §4: discard what was pipelined after STLS and what was learnt before TLS.
        self._buf.clear()
        self._user_name = None
        self._start_tls()

    def _user(self, cmd: UserCommand) -> None:
        if not self._plaintext_auth_allowed():
            self._refuse_plaintext()
            return
        self._user_name = cmd.name
        self._send("+OK Send PASS")  # RFC 1939 §7: the same answer whether the user exists or not

    async def _pass(self, cmd: Pass) -> None:
        if not self._plaintext_auth_allowed():
            self._refuse_plaintext()
            return
        name, self._user_name = self._user_name, None
        if name is None:
            self._bad("Send USER first")
            return
        await self._login(name, cmd.password, "USER")

    async def _auth(self, cmd: Auth) -> None:
        if not self._plaintext_auth_allowed():
            self._refuse_plaintext()
            return
        if cmd.mechanism is None:
            self._send_multi("+OK Mechanisms follow", list(MECHANISMS))
            return
        try:
            credentials = await self._sasl_exchange(sasl.start(cmd.mechanism),
                                                    sasl.initial_response(cmd.initial_response))
        except sasl.Cancelled:
            self._send("-ERR Authentication cancelled")  # RFC 5034 §4
            return
        except sasl.UnknownMechanism:
            self._send("-ERR Unsupported authentication mechanism")
            return
        except sasl.AuthzidMismatch:
            self._send("-ERR [AUTH] Authorization identity must be empty or the user itself")
            return
        except sasl.LineProblem as exc:
            self._bad(str(exc))
            return
        except sasl.SaslError:
            self._bad(f"[AUTH] Malformed {cmd.mechanism} response")
            return
        await self._login(credentials.authcid, credentials.password, credentials.mechanism)

    def _send_challenge(self, challenge: bytes) -> None:
        self._send("+ " + challenge.decode("ascii"))  # RFC 5034 §4

    async def _login(self, username: str, password: str, mechanism: str) -> None:
        user = await self._check_password(username, password, mechanism)
        if self._closed:
            return
        if user is None:
            self._send("-ERR [AUTH] Invalid user name or password")  # RFC 3206 §4
            return
        inbox = self.ctx.store.mailbox(user.address, "INBOX")
        if inbox is None:
            self._send("-ERR [SYS/PERM] The account has no INBOX")
            return
        # Invariant 5: the lock and the snapshot are taken in one step, with no wait between.
        if not self.factory.locked.acquire(user.address):
            self._send("-ERR [IN-USE] Maildrop is locked by another POP3 session")  # RFC 2449 §8.1.1
            return
        self._locked = user.address
        self.maildrop = Maildrop(user.address, inbox.id, inbox.uidvalidity,
                                 list(self.ctx.store.messages(user.address, inbox.id)))
        self.state = State.TRANSACTION
        count, size = self.maildrop.totals()
        self._send(f"+OK Logged in, {count} messages ({size} octets)")

    # -- TRANSACTION ---------------------------------------------------------------------------

    def _drop(self) -> Maildrop:
        assert self.maildrop is not None
        return self.maildrop

    def _missing(self, msg: int) -> None:
        drop = self._drop()
        if msg <= len(drop.messages) and msg in drop.deleted:
            self._send(f"-ERR Message {msg} is deleted")
        else:
            self._send(f"-ERR No such message {msg}")

    def _list(self, cmd: List) -> None:
        # RFC 1939 §5 scan listing: "msg size"
        self._listing(cmd.msg, lambda meta: str(meta.size),
                      lambda drop: "+OK {} messages ({} octets)".format(*drop.totals()))

    def _uidl(self, cmd: Uidl) -> None:
        # RFC 1939 §7 unique-id listing: "msg unique-id"
        self._listing(cmd.msg, self._drop().uidl, lambda drop: "+OK Unique-ID listing follows")

    def _listing(self, msg: int | None, item: Callable[[MessageMeta], str],
                 first: Callable[[Maildrop], str]) -> None:
        """LIST and UIDL: ``+OK msg item`` for one message, else the multi-line listing of
        every message not deleted, ``first`` its first line."""
        drop = self._drop()
        if msg is not None:
            meta = drop.get(msg)
            if meta is None:
                self._missing(msg)
            else:
                self._send(f"+OK {msg} {item(meta)}")
            return
        self._send_multi(first(drop), [f"{n} {item(m)}" for n, m in drop.live()])

    def _dele(self, cmd: Dele) -> None:
        drop = self._drop()
        if drop.get(cmd.msg) is None:
            self._missing(cmd.msg)
            return
        if self.ctx.read_only:  # a replication follower keeps every message (docs/replication.md)
            self._send("-ERR [SYS/TEMP] This server is a read-only replica, no deletions")  # RFC 3206
            return
        drop.deleted.add(cmd.msg)  # invariant 6: expunged at QUIT only
        self._send(f"+OK Message {cmd.msg} deleted")

    async def _retrieve(self, msg: int, body_lines: int | None) -> None:
        drop = self._drop()
        meta = drop.get(msg)
        if meta is None:
            self._missing(msg)
            return
        try:
            opened = self.ctx.store.open_message(drop.user, drop.mailbox_id, meta.uid)
        except (NotFound, FileNotFoundError):
            self._send(f"-ERR Message {msg} was removed by another session")
            return
        except BlobDamaged:  # the store logged the blob's name; RFC 3206 §4 SYS/PERM
            self._send(f"-ERR [SYS/PERM] Message {msg} is damaged on the server")
            return
        status = f"+OK {meta.size} octets" if body_lines is None else "+OK Top of message follows"
        sender = self._sender = _MessageSender(status.encode() + b"\r\n", opened.stream,
                                               MessageEncoder(body_lines, opened.shape), self.transport)
        self._sender_mark = -1
        complete = await sender.start()
        self._sender = None
        if not complete:
            if sender.unsent and isinstance(sender.failure, BlobDamaged) and not self._closed:
                self._send(f"-ERR [SYS/PERM] Message {msg} is damaged on the server")  # as above
                return
            self._close()  # invariant 10: after "+OK" only the connection's end can tell
            return
        if body_lines is None and self.config.mark_seen_on_retr and SEEN not in meta.flags:
            self._mark_seen(drop, msg, meta)

    def _mark_seen(self, drop: Maildrop, msg: int, meta: MessageMeta) -> None:
        drop.messages[msg - 1] = MessageMeta(meta.uid, meta.flags | {SEEN}, meta.internal_date, meta.size,
                                             meta.modseq, meta.blob, meta.prefix_len)
        self._seen_pending.append(meta.uid)
        if len(self._seen_pending) >= SEEN_BATCH:
            self._write_seen()
        elif self._seen_flush is None:
            self._seen_flush = self.ctx.reactor.callLater(SEEN_FLUSH_SECONDS, self._write_seen)

    def _write_seen(self) -> None:
        """Write the pending \\Seen flags (invariant 9)."""
        if self._seen_flush is not None and self._seen_flush.active():
            self._seen_flush.cancel()
        self._seen_flush = None
        drop, uids, self._seen_pending = self.maildrop, self._seen_pending, []
        if not uids or drop is None:
            return
        # maybeDeferred: the answers to the RETRs are out, so even a synchronous failure may
        # only be logged
        d = defer.maybeDeferred(self.ctx.store.set_flags, drop.user, drop.mailbox_id, uids, {SEEN},
                                FlagMode.ADD)
        d.addErrback(lambda f: log.warning("pop3: marking %d messages of %s seen failed: %s",
                                           len(uids), drop.user, f.getErrorMessage()))
        self._seen_updates.append(d)

    # -- UPDATE --------------------------------------------------------------------------------

    async def _quit(self) -> None:
        if self.state is State.AUTHORIZATION:
            self._send(f"+OK {self.hostname} signing off")
            self._close()
            return
        drop = self._drop()
        self.state = State.UPDATE  # RFC 1939 §6
        self._write_seen()
        await defer.DeferredList(self._seen_updates)
        uids = [drop.messages[n - 1].uid for n in sorted(drop.deleted)]
        try:
            if uids:
                await self.ctx.store.expunge(drop.user, drop.mailbox_id, uids)
        except Exception as exc:  # RFC 1939 §6: say so, keep the connection's end
            if isinstance(exc, StoreFull):  # the store has logged it once
                log.warning("pop3: expunge at QUIT refused for %s: store full", drop.user)
            else:
                log.exception("pop3: expunge at QUIT failed for %s", drop.user)
            self._send("-ERR [SYS/TEMP] Some deleted messages not removed")
            self._close()
            return
        count, _ = drop.totals()
        self._send(f"+OK {self.hostname} signing off ({count} messages left)")
        self._close()
