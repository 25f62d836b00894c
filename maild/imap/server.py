"""maild's IMAP server (RFC 3501 IMAP4rev1 plus the extensions in ``CAPABILITIES``),
written on ``twisted.internet.protocol`` (not twisted.mail, see docs/imap.md). The session
mechanics — connection limits, timers, the bad-command policy, the plaintext rule, the SASL
exchange — are :mod:`maild.util.session`'s; this module frames input and holds the commands.

Implementation notes — invariants a contributor must keep:

1. Parse, then execute. Bytes go through :class:`maild.imap.framer.Framer` (limits are
   checked before data is read) and :func:`maild.imap.parser.parse_command`; ``ALLOWED``
   is the one table of which command each session state accepts.
2. One command at a time. While a command waits on a Deferred nothing else is executed;
   pipelined commands wait in ``_queue`` and the transport is paused when it grows.
3. STARTTLS throws away everything pipelined behind it (RFC 3501 §6.2.1, CVE-2011-0411).
   LOGIN and AUTHENTICATE only over TLS, unless ``[imap] allow_plaintext_auth_on_loopback``
   and the peer is a loopback address; LOGINDISABLED is advertised otherwise. Before
   authentication a line or literal is at most ``PRE_AUTH_LIMIT`` (8 KiB), after it the
   ``[imap]`` limits apply.
4. Durability: a write command answers OK only after the store's Deferred has fired.
5. Other sessions' changes arrive through the store's change feed into the
   :class:`MailboxView` and are announced only where RFC 3501 §7.4.1 allows: EXPUNGE (or
   VANISHED, once QRESYNC is enabled) never while answering FETCH, STORE, SEARCH or SORT
   (the UID forms may), never with no command in progress except during IDLE or as a
   NOTIFY SELECTED asks (RFC 5465, ``maild/imap/notify.py``, whose notes hold its rules).
6. Capabilities are advertised only when complete; the list is ``CAPABILITIES``. An
   extension with logic of its own lives in its own module (multiappend, catenate, binary,
   preview, objectid, savedate, metadata, context, compress, searchres, notify), whose notes hold
   its rules; so do IMAP4rev2's differences from IMAP4rev1 (imap4rev2, switched on by
   ENABLE IMAP4rev2);
   this module only dispatches to it and calls its hooks.
7. Bounded memory: FETCH streams large bodies with backpressure (``maild/imap/fetch.py``,
   whose notes hold FETCH's rules); the session is the transport's push producer.
   After COMPRESS DEFLATE, ``self.transport`` is a :class:`compress.DeflateTransport` around
   the real one, and input reaches ``dataReceived`` inflated (``maild/imap/compress.py``).
8. A client never sees an exception text: unexpected errors are logged and answered
   ``NO [SERVERBUG]``.
9. Only what a message can never change goes through the FETCH cache (``maild/imap/fetch.py``).
10. Shutdown (``shutdown()``, called by the daemon): input is no longer read,
   a command in progress finishes and is answered, then ``* BYE`` and close (RFC 3501
   §7.1.5); an IDLE session (waiting for the client) gets its ``* BYE`` at once.
11. APPEND to Sent of a message submission filed there moments ago answers with that
    copy's UID and stores nothing (``maild.delivery.sentcopy``; per user, bounded scan).
12. \\Recent (RFC 3501 §2.3.2) is session state: a message is claimed through
    ``store.claim_recent`` (atomic in the shard's writer) before the session announces it,
    so exactly one session holds it; it is never stored with the message.
13. A mailbox name the server will not hold arrives as a :class:`BadName` and is answered
    NO (``_check_names``), never BAD; BAD is for syntax errors.
14. A FETCH never fails for a message another session expunged meanwhile (RFC 2180 §4.1.3,
    ``maild/imap/fetch.py``).
15. SELECT's kept answer (``_select_answer``) is used only while the store returns the very
    Mailbox record and index it was made from (both immutable, renewed by any change of
    the mailbox in any process); what is the session's own (RECENT, the resync) is never
    kept. A kept parse (``maild/imap/parser.py``) is a frozen command, only retagged.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import enum
import logging
import time
from array import array
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, task, threads
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from maild.auth import sasl
from maild.config import ImapConfig
from maild.delivery.sentcopy import submitted_copy
from maild.imap import (
    compress,
    context,
    fastfetch,
    fetchcache,
    imap4rev2,
    metadata,
    mime,
    multiappend,
    names,
    objectid,
    searchres,
    wire,
)
from maild.imap import search as searching
from maild.imap import sort as sorting
from maild.imap.commands import (
    Append,
    Authenticate,
    CancelUpdate,
    Command,
    Compress,
    Copy,
    Create,
    Enable,
    GetMetadata,
    Id,
    ListCommand,
    Login,
    MailboxCommand,
    MultiAppend,
    Qresync,
    QuotaCommand,
    Rename,
    Search,
    Select,
    SetMetadata,
    Sort,
    Status,
    StoreFlags,
    StoreMode,
    Thread,
    UidExpunge,
)
from maild.imap.fetch import FetchCommands
from maild.imap.framer import Complete, FrameEvent, Framer, NeedContinuation, Rejected
from maild.imap.list import ListCommands
from maild.imap.mailbox import BadSequence, MailboxView
from maild.imap.names import BadName
from maild.imap.notify import NotifyCommands
from maild.imap.parser import ParseError, parse_command
from maild.imap.thread import thread as thread_messages
from maild.store.types import (
    DELETED,
    BlobDamaged,
    Change,
    ChangeKind,
    FlagMode,
    Mailbox,
    MailboxExists,
    MailboxNotFound,
    MessageMeta,
    NotFound,
    QuotaExceeded,
    ReadOnlyStore,
    ReplicaTimeout,
    SpecialUse,
    StoreFull,
    User,
)
from maild.util import metrics, transport
from maild.util.session import CommandSession, SessionFactory

if TYPE_CHECKING:
    from maild.context import ServerContext

log = logging.getLogger(__name__)

MAX_QUEUED_BYTES = 1024 * 1024  # pipelined input held while a command runs
# Before authentication a line or literal is at most what LOGIN or AUTHENTICATE needs
# (RFC 4954's 12288 octets of SASL is SMTP's; a user name and password fit in far less).
PRE_AUTH_LIMIT = 8 * 1024
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
RECENT = frozenset({"\\Recent"})

# RFC numbers in docs/imap.md; each is advertised only because it is complete.
CAPABILITIES = ("IMAP4rev1", "IMAP4rev2", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE",
                "UIDPLUS", "MOVE", "SPECIAL-USE", "CREATE-SPECIAL-USE", "CONDSTORE", "UNSELECT",
                "CHILDREN", "LIST-EXTENDED", "LIST-STATUS", "ESEARCH", "QUOTA", "QUOTA=RES-STORAGE",
                "SORT", "SORT=DISPLAY", "ESORT", "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES", "QRESYNC",
                "MULTIAPPEND", "OBJECTID", "UTF8=ACCEPT", "STATUS=SIZE", "SAVEDATE", "BINARY",
                "PREVIEW", "COMPRESS=DEFLATE", "METADATA", "CATENATE", "CONTEXT=SEARCH",
                "CONTEXT=SORT", "SEARCHRES", "NOTIFY")
PRE_AUTH_CAPABILITIES = ("IMAP4rev1", "IMAP4rev2", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE")


class State(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


_ANY = {"CAPABILITY", "NOOP", "LOGOUT", "ID"}
_AUTHENTICATED = _ANY | {"ENABLE", "SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE",
                         "UNSUBSCRIBE", "LIST", "LSUB", "STATUS", "APPEND", "NAMESPACE", "IDLE",
                         "GETQUOTA", "GETQUOTAROOT", "SETQUOTA", "COMPRESS", "GETMETADATA",
                         "SETMETADATA", "NOTIFY"}
# RFC 3501 §6: the commands each state accepts. ENABLE is for the authenticated state only
# (RFC 5161 §3.1).
ALLOWED: dict[State, frozenset[str]] = {
    State.NOT_AUTHENTICATED: frozenset(_ANY | {"STARTTLS", "AUTHENTICATE", "LOGIN"}),
    State.AUTHENTICATED: frozenset(_AUTHENTICATED),
    State.SELECTED: frozenset((_AUTHENTICATED - {"ENABLE"}) | {
        "CHECK", "CLOSE", "UNSELECT", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY", "MOVE",
        "SORT", "THREAD", "UID SEARCH", "UID FETCH", "UID STORE", "UID COPY", "UID MOVE",
        "UID EXPUNGE", "UID SORT", "UID THREAD", "CANCELUPDATE"}),
    State.LOGOUT: frozenset(),
}
# RFC 3501 §7.4.1: no EXPUNGE while answering these (SORT answers sequence numbers too).
_NO_EXPUNGE_DURING = {"FETCH", "STORE", "SEARCH", "SORT", "THREAD"}


class _Answered(enum.Enum):
    """A handler that already sent its own tagged response returns ``ANSWERED``."""

    ANSWERED = "answered"


ANSWERED = _Answered.ANSWERED


SELECT_ANSWERS_KEPT = 4096  # ImapFactory.select_answers: about 0.5 KB each


@dataclasses.dataclass(frozen=True)
class _SelectAnswer:
    """SELECT's untagged responses for one version of a mailbox (``_select_answer``)."""

    mailbox: Mailbox  # the record and index it was made from: valid while both are current
    index: Any
    uidnext: int
    head: bytes  # FLAGS
    readonly: bytes  # PERMANENTFLAGS () and EXISTS (EXAMINE)
    writable: bytes  # PERMANENTFLAGS and EXISTS (SELECT)
    unseen: bytes  # [UNSEEN n], or nothing
    tail: bytes  # UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, MAILBOXID


class ImapError(Exception):
    """A tagged NO or BAD: ``text`` is public, never an exception text."""

    def __init__(self, status: str, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.code = code


def _no(text: str, code: str | None = None) -> ImapError:
    return ImapError("NO", text, code)


def _bad(text: str) -> ImapError:
    return ImapError("BAD", text)


def _check_names(cmd: Command) -> None:
    """A mailbox name the server cannot hold is a NO, its syntax being right (RFC 3501
    §7.1.2; a BAD is for syntax errors only). LIST patterns are the exception: one that is
    not valid mUTF-7 matches nothing (see ``maild.imap.list``)."""
    if isinstance(cmd, ListCommand):
        return
    for name, value in vars(cmd).items():  # a command's fields (frozen dataclasses)
        if isinstance(value, BadName):
            creates = isinstance(cmd, Create) or (isinstance(cmd, Rename) and name == "new")
            raise _no(value.reason, "CANNOT" if creates else "NONEXISTENT")


_HANDLERS: dict[str, str] = {}  # command name -> its ImapSession method's name (_execute)


def _check_charset(charset: str | None) -> None:
    """SEARCH and SORT: the charsets of their strings we decode (RFC 3501 §6.4.4)."""
    if charset not in (None, "UTF-8", "US-ASCII"):
        raise _no("Supported charsets: UTF-8 US-ASCII", "BADCHARSET (UTF-8 US-ASCII)")


class ImapFactory(SessionFactory):
    protocol_name = "imap"

    def __init__(self, ctx: ServerContext, implicit_tls: bool) -> None:
        super().__init__(ctx, "imap", ctx.config.imap, implicit_tls)
        self.config: ImapConfig
        fetchcache.CACHE.resize(self.config.fetch_cache_mb * 1024 * 1024)
        fastfetch.LINES.resize(self.config.response_cache_mb * 1024 * 1024)
        sorting.CACHE.resize(self.config.sort_cache_mb * 1024 * 1024)
        self.sessions: dict[str, set[ImapSession]] = {}
        self.select_answers: dict[tuple[str, int], _SelectAnswer] = {}  # _select_answer
        self._unsubscribe = ctx.store.subscribe(self._changed)

    def make_session(self) -> ImapSession:
        return ImapSession(self)

    def _changed(self, change: Change) -> None:
        for session in list(self.sessions.get(change.user, ())):
            session.store_changed(change)

    def stopFactory(self) -> None:
        self._unsubscribe()


@implementer(IPushProducer)
class ImapSession(FetchCommands, ListCommands, NotifyCommands, CommandSession):
    ctx: ServerContext

    def __init__(self, factory: ImapFactory) -> None:
        super().__init__(factory)
        self.factory: ImapFactory
        self.store = factory.ctx.store
        self.tls = factory.implicit_tls
        self.state = State.NOT_AUTHENTICATED
        self.user: str | None = None
        self.view: MailboxView | None = None
        self.condstore = False
        self.qresync = False  # RFC 7162 §3.2.3, by ENABLE QRESYNC
        # RFC 3501 §2.3.2 \Recent: claimed at SELECT and for new messages announced. The
        # hook for IMAP4rev2 (RFC 9051 has no \Recent): ENABLE IMAP4rev2 sets it False.
        self.recent_flag = True
        self.rev2 = False  # RFC 9051, by ENABLE IMAP4rev2 (maild/imap/imap4rev2.py)
        # Pre-authentication limits until LOGIN/AUTHENTICATE succeeds (_authenticate).
        self._framer = Framer(min(self.config.max_line_length, PRE_AUTH_LIMIT),
                              min(self.config.max_command_size, PRE_AUTH_LIMIT), PRE_AUTH_LIMIT)
        self.utf8 = False  # RFC 6855 §3, by ENABLE UTF8=ACCEPT: names in UTF-8, no SEARCH CHARSET
        self._queue: collections.deque[FrameEvent] = collections.deque()
        self._resume: defer.Deferred[None] | None = None
        self._line_waiter: defer.Deferred[bytes] | None = None
        self._idle_tag: str | None = None
        self._cache: tuple[int, bytes, mime.Part | None] | None = None  # uid, raw, parsed

    # -- connection (the rest is maild.util.session's) -----------------------------------

    def _refuse_connection(self) -> None:
        self._send(b"* BYE [UNAVAILABLE] Too many connections, try again later")  # RFC 5530 §3

    def _greet(self) -> None:
        self._register_producer()
        self._send(b"* OK [CAPABILITY " + self._capabilities() + b"] maild IMAP ready")

    def _discard_input(self) -> None:
        for waiter in (self._resume, self._line_waiter):
            if waiter is not None and not waiter.called:
                waiter.cancel()
        self._resume = self._line_waiter = None
        self._queue.clear()
        self._framer.reset()

    def _session_ended(self) -> None:
        self.state = State.LOGOUT
        self._leave_user()

    def _leave_user(self) -> None:
        if self.user is not None:
            sessions = self.factory.sessions.get(self.user)
            if sessions is not None:
                sessions.discard(self)
                if not sessions:
                    del self.factory.sessions[self.user]

    def _drop_pipelined(self) -> None:  # invariant 10
        self._queue.clear()

    def _goodbye(self) -> None:
        self._send(b"* BYE maild is shutting down, try again later")  # RFC 3501 §7.1.5
        self._close()

    def _send(self, line: bytes) -> None:
        if not self._closed:
            self.transport.write(line + b"\r\n")

    def _write(self, data: bytes) -> None:
        if not self._closed:
            self.transport.write(data)

    def _output_resumed(self) -> None:
        waiter, self._resume = self._resume, None
        if waiter is not None:
            waiter.callback(None)
        self._notify_resumed()

    async def _drain(self) -> None:
        """Wait until the transport wants more output (backpressure for big FETCHes)."""
        if self._output_paused and not self._closed:
            self._resume = defer.Deferred()
            await self._resume

    def _input_backlog(self) -> bool:
        queued = sum(len(e.data) for e in self._queue if isinstance(e, Complete))
        return queued + self._framer.pending > MAX_QUEUED_BYTES

    # -- autologout (RFC 3501 §5.4) ----------------------------------------------------------

    def _idle_timeout(self) -> float:
        return (self.config.autologout_unauthenticated if self.state is State.NOT_AUTHENTICATED
                else self.config.autologout_authenticated)

    def _timed_out(self) -> None:
        if self._closed:
            return
        if self._busy and self._line_waiter is None and self._idle_tag is None:
            self._touch()  # we are the slow one (store, auth), not the client
            return
        self._send(b"* BYE Autologout; idle for too long")
        self._close()

    # -- input -------------------------------------------------------------------------------

    def dataReceived(self, data: bytes, inflated: bool = False) -> None:
        if self._closed or self._stopping:
            return
        if not inflated and isinstance(self.transport, compress.DeflateTransport):
            self.transport.received(data)  # RFC 4978: inflated, then back here
            return
        pending = self._framer.pending
        events = self._framer.feed(data)
        if events or self._framer.pending < pending + len(data):
            self._touch()  # a command or literal data, not a line trickled byte by byte
        self._queue.extend(events)
        self._process()

    def _process(self) -> None:
        while self._queue and not self._closed and not self._output_paused:
            event = self._queue[0]
            if isinstance(event, NeedContinuation):
                self._queue.popleft()
                if not self._busy or self._line_waiter is not None:
                    self._send(b"+ Ready for literal data")
                    continue
                self._queue.appendleft(event)
                break
            if self._busy and self._line_waiter is None and self._idle_tag is None:
                break
            self._queue.popleft()
            if isinstance(event, Rejected):
                self._rejected(event)
                continue
            assert isinstance(event, Complete)
            if self._idle_tag is not None:
                self._idle_line(event.data)
            elif self._line_waiter is not None:
                waiter, self._line_waiter = self._line_waiter, None
                waiter.callback(event.data)
            else:
                self._command(event.data)
        self._update_read_pause()

    def _rejected(self, event: Rejected) -> None:
        tag = (event.tag or "*").encode("ascii")
        if event.code == "TOOBIG":
            self._send(tag + b" NO [TOOBIG] " + event.text.encode())
        else:
            self._send(tag + b" BAD " + event.text.encode())
        if event.fatal:
            self._send(b"* BYE Too much data")
            self._close()
        else:
            self._bad_command()

    def _bad_command(self) -> None:
        """Counted by the session core; too many in a row end the session."""
        if self._count_bad():
            self._send(b"* BYE Too many invalid commands")
            self._close()

    def _command(self, data: bytes) -> None:
        try:
            cmd = parse_command(data, self.utf8)
        except ParseError as exc:
            tag = (exc.tag or "*").encode("ascii")
            self._send(tag + b" BAD " + exc.text.encode("ascii", "replace"))
            self._bad_command()
            return
        if cmd.name not in ALLOWED[self.state]:
            self._send(cmd.tag.encode() + b" BAD " + cmd.name.encode() + b" not allowed now")
            self._bad_command()
            return
        self._start(self._execute(cmd))

    def _internal_error(self, failure: Failure) -> None:
        log.error("IMAP session crashed: %s", failure.getTraceback())
        self._send(b"* BYE Internal error")
        self._close()

    async def _read_response(self) -> tuple[bytes, str | None]:
        """The next client line (a SASL response); the session is busy meanwhile."""
        self._line_waiter = defer.Deferred()
        self._process()
        return await self._line_waiter, None

    def _send_challenge(self, challenge: bytes) -> None:
        self._send(b"+ " + challenge)  # RFC 3501 §7.5

    @metrics.timed_command("imap")
    async def _execute(self, cmd: Command) -> None:
        method = _HANDLERS.get(cmd.name)
        if method is None:
            method = _HANDLERS[cmd.name] = "_do_" + cmd.name.replace(" ", "_").lower()
        handler = getattr(self, method)
        status, code, text = "OK", None, f"{cmd.name} completed"
        try:
            _check_names(cmd)
            result = await handler(cmd)
            if result is ANSWERED:
                return
            if isinstance(result, tuple):
                code, text = result
            elif isinstance(result, str):
                code = result
        except ImapError as exc:
            status, code, text = exc.status, exc.code, exc.text
        except BadSequence as exc:
            status, text = "BAD", str(exc)
        except MailboxNotFound:
            status, code, text = "NO", "NONEXISTENT", "No such mailbox"
        except MailboxExists:
            status, code, text = "NO", "ALREADYEXISTS", "Mailbox already exists"
        except QuotaExceeded:
            status, code, text = "NO", "OVERQUOTA", "Quota exceeded"
        except StoreFull:
            status, code, text = "NO", "LIMIT", "Storage is full, try again later"
        except ReadOnlyStore:  # RFC 5530 §3 UNAVAILABLE; docs/replication.md
            status, code, text = "NO", "UNAVAILABLE", "This server is a read-only replica"
        except ReplicaTimeout:
            status, code, text = "NO", "UNAVAILABLE", "Not confirmed by the replica, try again later"
        except BlobDamaged:  # the store logged the blob's name (RFC 5530 §3 SERVERBUG)
            status, code, text = "NO", "SERVERBUG", "A message is damaged on the server"
        except defer.CancelledError:
            return
        except Exception:  # logged; the client sees a generic answer
            log.exception("IMAP %s failed for %s", cmd.name, self.user)
            status, code, text = "NO", "SERVERBUG", "Internal error, try again later"
        if self._closed:
            return
        if self.state is State.LOGOUT:
            self._send(cmd.tag.encode() + b" OK LOGOUT completed")
            self._close()
            return
        await self._claim_recent()
        if self._closed:
            return
        base = cmd.name.split(" ")[-1]
        await self._notify_announce(expunge=not (base in _NO_EXPUNGE_DURING and not cmd.name.startswith("UID ")))
        if self._closed:
            return
        line = f"{cmd.tag} {status} " + (f"[{code}] " if code else "") + text
        self._send(line.encode("utf-8"))
        self._notify_after()
        if not self._queue:
            transport.send_now(self.transport)  # the answer leaves before the bookkeeping

    # -- untagged updates from other sessions (RFC 3501 §7.4.1) --------------------------------

    def store_changed(self, change: Change) -> None:
        self._notify_changed(change)  # other mailboxes' events, RFC 5465 (maild/imap/notify.py)
        view = self.view
        if view is None or change.mailbox_id != view.mailbox_id:
            return
        if change.kind is ChangeKind.APPEND:
            view.note_new(change.uids)
        elif change.kind is ChangeKind.EXPUNGE:
            view.note_expunged(change.uids)
        elif change.kind is ChangeKind.FLAGS:
            view.note_flags(change.uids, change.flags)
        elif change.kind is ChangeKind.MAILBOX_DELETE:
            view.deleted = True
        elif change.kind is ChangeKind.MAILBOX_RENAME and change.name:
            view.name = change.name
        context.changed(self)
        self._notify_wake()  # during IDLE, or between commands with NOTIFY

    async def _claim_recent(self) -> None:
        """RFC 3501 §2.3.2: claim the new messages about to be announced, so that they are
        \\Recent in exactly one session: the store keeps, per mailbox, the highest UID a
        session has claimed, and the writer updates it atomically."""
        view = self.view
        if view is None or view.readonly or not self.recent_flag or not view.pending_new:
            return
        fresh = [uid for uid in view.pending_new if uid > view.claimed]
        if not fresh:
            return
        upto = max(fresh)
        view.claimed = upto
        before = await self._claim(view.mailbox_id, upto)
        view.recent.update(uid for uid in fresh if uid > before)

    async def _claim(self, mailbox_id: int, upto: int) -> int:
        """The store's \\Recent claim up to ``upto``: the claim before it (the messages
        above are ours). Read first: when another session was told first, no write."""
        user = self._user()
        mailbox = self.store.mailbox_by_id(user, mailbox_id)
        if mailbox is None or mailbox.recent_uid >= upto:
            return upto
        try:
            return int(await self.store.claim_recent(user, mailbox_id, upto))
        except (MailboxNotFound, NotFound):
            return upto  # the mailbox went away meanwhile; its deletion is announced
        except StoreFull:
            log.warning("IMAP \\Recent claim not stored for %s: store full", user)
            return upto

    def _announce(self, expunge: bool, flags: bool = True) -> None:
        view = self.view
        if view is None or self._closed:
            return
        if view.deleted:
            self._send(b"* BYE The selected mailbox was deleted")
            self._close()
            return
        if not (view.pending_expunge or view.pending_new or view.pending_flags):
            context.refresh(self)  # nothing came since the last announcement: the usual case
            return
        if expunge:
            gone = view.take_expunges()
            context.expunged(self, gone)  # RFC 5267 §4.3.4: REMOVEFROM before EXPUNGE
            if self.qresync and gone:
                # RFC 7162 §3.2.10: VANISHED, not EXPUNGE, once QRESYNC is enabled.
                self._send(b"* VANISHED " + _compress(sorted(uid for _, uid in gone)))
            else:
                for seq, _ in gone:
                    self._send(b"* %d EXPUNGE" % seq)
        if view.take_new():
            self._send(b"* %d EXISTS" % view.exists)
            if self.recent_flag:
                self._send(b"* %d RECENT" % len(view.recent))  # RFC 3501 §7.3.2
        uids = view.take_flags() if flags else []
        if uids:
            assert self.user is not None
            for meta in self.store.messages(self.user, view.mailbox_id, uids):
                number = view.seq_of(meta.uid)
                if number is not None:
                    self._send(b"* %d FETCH (" % number + self._flag_items(meta, uid=True) + b")")
        context.refresh(self)  # RFC 5267 §4.3.3: ADDTO after EXISTS

    def _flags(self, meta: MessageMeta) -> frozenset[str]:
        """The message's flags as this session sees them: \\Recent where it is ours."""
        view = self.view
        return meta.flags | RECENT if view is not None and meta.uid in view.recent else meta.flags

    def _flag_list(self, view: MailboxView, permanent: bool) -> bytes:
        """FLAGS and PERMANENTFLAGS (RFC 3501 §7.2.6, §7.1): the system flags and the
        mailbox's keywords; ``\\*``, any new keyword may be stored."""
        names = [*SYSTEM_FLAGS, *sorted(view.keywords)] + (["\\*"] if permanent else [])
        return b"(" + " ".join(names).encode("utf-8") + b")"

    def _announce_keywords(self, flags: frozenset[str]) -> None:
        """RFC 3501 §7.2.6: a FLAGS (and PERMANENTFLAGS) response naming a keyword before
        any FETCH that carries it."""
        view = self.view
        if view is None:
            return
        new = {f for f in flags if f[:1] != "\\"} - view.keywords
        if new:
            view.keywords.update(new)
            self._send(b"* FLAGS " + self._flag_list(view, False))
            if not view.readonly:
                self._send(b"* OK [PERMANENTFLAGS " + self._flag_list(view, True) + b"] Flags permitted")

    def _flag_items(self, meta: MessageMeta, uid: bool) -> bytes:
        self._announce_keywords(meta.flags)
        out = b"FLAGS " + wire.flags(self._flags(meta))
        if uid:
            out += b" UID %d" % meta.uid
        if self.condstore:
            out += b" MODSEQ (%d)" % meta.modseq
        return out

    # -- capabilities, any state -------------------------------------------------------------

    def _capabilities(self) -> bytes:
        if self.state is State.NOT_AUTHENTICATED:
            caps = list(PRE_AUTH_CAPABILITIES)
            if not self.tls and self.ctx.tls is not None:
                caps.append("STARTTLS")
            if self._plaintext_auth_allowed():
                caps += ["AUTH=PLAIN", "AUTH=LOGIN"]
            else:
                caps.append("LOGINDISABLED")  # RFC 3501 §6.2.3
        else:
            caps = [*CAPABILITIES, f"APPENDLIMIT={self.config.append_limit}"]
        return " ".join(caps).encode()

    async def _do_capability(self, cmd: Command) -> None:
        self._send(b"* CAPABILITY " + self._capabilities())

    async def _do_noop(self, cmd: Command) -> None:
        pass

    async def _do_check(self, cmd: Command) -> None:
        pass  # every write is already durable

    async def _do_logout(self, cmd: Command) -> None:
        self._send(b"* BYE maild logging out")
        self.state = State.LOGOUT

    async def _do_compress(self, cmd: Compress) -> _Answered:
        return await compress.start(self, cmd)  # RFC 4978

    async def _do_id(self, cmd: Id) -> None:
        # RFC 2971 §3.3: the server's own identification.
        self._send(b'* ID ("name" "maild" "vendor" "maild")')

    # -- not authenticated ---------------------------------------------------------------------

    async def _do_starttls(self, cmd: Command) -> _Answered:
        if self.tls or self.ctx.tls is None:
            raise _bad("TLS is already active" if self.tls else "STARTTLS is not available")
        # RFC 3501 §6.2.1 / CVE-2011-0411: whatever was pipelined behind STARTTLS is dropped.
        self._queue.clear()
        self._framer.reset()
        self._send(cmd.tag.encode() + b" OK Begin TLS negotiation now")
        self._start_tls()
        return ANSWERED

    def _require_plaintext_ok(self) -> None:
        if not self._plaintext_auth_allowed():
            raise _no("Authentication requires TLS (use STARTTLS or port 993)", "PRIVACYREQUIRED")

    async def _do_login(self, cmd: Login) -> tuple[str, str]:
        self._require_plaintext_ok()
        return await self._authenticate(cmd.username, cmd.password, "LOGIN")

    async def _do_authenticate(self, cmd: Authenticate) -> tuple[str, str]:
        self._require_plaintext_ok()
        try:
            # RFC 4959 §3: SASL-IR, "=" for an empty initial response.
            credentials = await self._sasl_exchange(sasl.start(cmd.mechanism), sasl.initial_response(cmd.initial))
        except sasl.UnknownMechanism:
            raise _no("Unsupported authentication mechanism", "CANNOT") from None
        except sasl.AuthzidMismatch:
            raise _no("Authorization identity must match", "AUTHORIZATIONFAILED") from None
        except sasl.SaslError as exc:
            raise _bad(str(exc)) from None  # RFC 3501 §6.2.2: a cancel is BAD too
        return await self._authenticate(credentials.authcid, credentials.password, credentials.mechanism)

    async def _authenticate(self, username: str, password: str, mechanism: str) -> tuple[str, str]:
        user: User | None = await self._check_password(username, password, mechanism)
        if user is None:
            raise _no("Authentication failed", "AUTHENTICATIONFAILED")
        self.user = user.address
        self.state = State.AUTHENTICATED
        # Full limits from now on (the pre-authentication ones are PRE_AUTH_LIMIT).
        self._framer.max_line = self.config.max_line_length
        self._framer.max_command = self.config.max_command_size
        self._framer.append_limit = self.config.append_limit
        self.factory.sessions.setdefault(self.user, set()).add(self)
        return "CAPABILITY " + self._capabilities().decode(), "Logged in"

    # -- authenticated -------------------------------------------------------------------------

    def _user(self) -> str:
        assert self.user is not None
        return self.user

    def _mailbox(self, name: str, code: str = "NONEXISTENT") -> Mailbox:
        mailbox = self.store.mailbox(self._user(), name)
        if mailbox is None:
            raise _no("No such mailbox", code)
        return mailbox

    async def _do_enable(self, cmd: Enable) -> None:
        enabled = []
        if "CONDSTORE" in cmd.capabilities and not self.condstore:
            self.condstore = True  # RFC 7162 §3.1
            enabled.append(b"CONDSTORE")
        if "QRESYNC" in cmd.capabilities and not self.qresync:
            self.qresync = self.condstore = True  # RFC 7162 §3.2.3: QRESYNC implies CONDSTORE
            enabled.append(b"QRESYNC")
        if "UTF8=ACCEPT" in cmd.capabilities and not self.utf8:
            self.utf8 = True
            enabled.append(b"UTF8=ACCEPT")
        # RFC 9051 §6.3.1 (capability names are not case-sensitive: RFC 5161 §3.1)
        if "IMAP4REV2" in {c.upper() for c in cmd.capabilities} and imap4rev2.enable(self):
            enabled.append(b"IMAP4rev2")
        self._send(b"* ENABLED" + b"".join(b" " + e for e in enabled))

    def _enable_condstore(self) -> None:
        """A CONDSTORE-enabling command (RFC 7162 §3.1): the first while a mailbox is
        selected is answered with its HIGHESTMODSEQ too."""
        if self.condstore:
            return
        self.condstore = True
        view = self.view
        if view is not None:
            mailbox = self.store.mailbox_by_id(self._user(), view.mailbox_id)
            if mailbox is not None:
                self._send(b"* OK [HIGHESTMODSEQ %d] Highest" % mailbox.highestmodseq)

    async def _do_namespace(self, cmd: Command) -> None:
        self._send(b'* NAMESPACE (("" "/")) NIL NIL')  # RFC 2342: personal only

    async def _do_select(self, cmd: Select) -> str:
        if cmd.qresync is not None and not self.qresync:
            raise _bad("ENABLE QRESYNC before using it")  # RFC 7162 §3.2.5
        if self.view is not None:
            self.view = None
            self.state = State.AUTHENTICATED
            self._send(b"* OK [CLOSED] Previous mailbox closed")  # RFC 7162 §3.2.11
        if self.ctx.read_only and not cmd.readonly:  # a replica: RFC 3501 §6.3.1 [READ-ONLY]
            cmd = dataclasses.replace(cmd, readonly=True)
        user = self._user()
        opened = self.store.open_mailbox(user, cmd.mailbox)
        if opened is None:
            raise _no("No such mailbox", "NONEXISTENT")
        mailbox, index = opened
        uids = index.uids  # the session's sequence map, shared until it changes (MailboxView)
        if cmd.condstore:
            self.condstore = True
        view = MailboxView(mailbox.id, mailbox.name, cmd.readonly, mailbox.uidvalidity, uids, uids_shared=True)
        view.keywords = set(mailbox.keywords)
        if self.recent_flag:
            # RFC 3501 §2.3.2: SELECT claims the messages no session was told of yet;
            # EXAMINE shows them \Recent without taking the flag from the next session
            # (RFC 3501 §6.3.2). Changes committed while the claim waits reach the view.
            newest = uids[-1] if uids else 0
            before = mailbox.recent_uid
            if not cmd.readonly and newest > before:
                self.view = view
                try:
                    before = await self._claim(mailbox.id, newest)
                finally:
                    self.view = None
                view.claimed = newest
            view.recent = set(uids[bisect.bisect_right(uids, before):])
        answer = self._select_answer(user, mailbox, index, view)
        out = [answer.head, answer.readonly if cmd.readonly else answer.writable]
        if self.recent_flag:
            out.append(b"* %d RECENT\r\n" % len(view.recent))
        if self.rev2:  # RFC 9051 §6.3.2: LIST is required, UNSEEN is gone
            out += [imap4rev2.select_list(self, mailbox, [m.name for m in self.store.mailboxes(user)]), b"\r\n"]
        else:
            out.append(answer.unseen)
        out.append(answer.tail)
        self._write(b"".join(out))
        self.view = view  # before the resync's FETCH responses, which show its \\Recent
        self.state = State.SELECTED
        if cmd.qresync is not None and cmd.qresync.uidvalidity == mailbox.uidvalidity:
            self._resync(view, cmd.qresync, answer.uidnext)
        return "READ-ONLY" if cmd.readonly else "READ-WRITE"

    def _select_answer(self, user: str, mailbox: Mailbox, index: Any, view: MailboxView) -> _SelectAnswer:
        """SELECT's untagged responses but RECENT (this session's), made once per version of
        the mailbox: kept while the store returns the same Mailbox record and the same
        index (both shared and immutable, renewed by any change of the mailbox)."""
        answers = self.factory.select_answers
        key = (user, mailbox.id)
        answer = answers.get(key)
        if answer is not None and answer.mailbox is mailbox and answer.index is index:
            return answer
        uids = index.uids
        unseen = b""
        first_unseen = self.store.first_unseen_uid(user, mailbox.id)
        if first_unseen is not None:
            seq = view.seq_of(first_unseen)
            if seq is not None:
                unseen = b"* OK [UNSEEN %d] First unseen\r\n" % seq
        uidnext = max(index.uidnext, uids[-1] + 1 if uids else 1)
        head = b"* FLAGS " + self._flag_list(view, False) + b"\r\n"
        answer = _SelectAnswer(
            mailbox, index, uidnext, head,
            b"* OK [PERMANENTFLAGS ()] Flags permitted\r\n* %d EXISTS\r\n" % len(uids),
            b"* OK [PERMANENTFLAGS " + self._flag_list(view, True) + b"] Flags permitted\r\n"
            b"* %d EXISTS\r\n" % len(uids),
            unseen,
            b"* OK [UIDVALIDITY %d] UIDs valid\r\n" % mailbox.uidvalidity
            + b"* OK [UIDNEXT %d] Predicted next UID\r\n" % uidnext
            + b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % index.highestmodseq  # RFC 7162 §3.1.2.1
            + b"* OK [%s] Ok\r\n" % objectid.response_code(user, mailbox).encode())  # RFC 8474 §4.2
        if len(answers) >= SELECT_ANSWERS_KEPT:
            answers.clear()
        answers[key] = answer
        return answer

    _do_examine = _do_select

    def _resync(self, view: MailboxView, known: Qresync, uidnext: int) -> None:
        """RFC 7162 §3.2.5.1: what changed since the client's mod-sequence, before SELECT's
        tagged OK. Every expunge keeps its modseq, so the answer is exact."""
        user = self._user()
        vanished = self.store.expunged_since(user, view.mailbox_id, known.modseq)
        if known.known_uids is not None:
            vanished = [uid for uid in vanished if known.known_uids.contains(uid, uidnext - 1)]
        if vanished:
            self._send(b"* VANISHED (EARLIER) " + _compress(vanished))
        for meta in self.store.changed_since(user, view.mailbox_id, known.modseq):
            seq = view.seq_of(meta.uid)
            if seq is not None:
                self._send(b"* %d FETCH (" % seq + self._flag_items(meta, uid=True) + b")")

    async def _do_create(self, cmd: Create) -> str:
        special = None
        if cmd.special_use:
            if len(cmd.special_use) > 1:
                raise _no("Only one special-use attribute per mailbox", "USEATTR")
            try:
                special = SpecialUse(next(s for s in SpecialUse if s.value.lower() == cmd.special_use[0].lower()))
            except StopIteration:
                raise _no("Unknown special-use attribute", "USEATTR") from None
        if cmd.mailbox == "INBOX":
            raise _no("INBOX always exists", "ALREADYEXISTS")
        # RFC 3501 §6.3.3: the superior hierarchical names are created too, in the same
        # store transaction (a CREATE that fails leaves none of them behind). CREATE does
        # not subscribe (RFC 3501 §6.3.6).
        created = await self.store.create_mailbox(self._user(), cmd.mailbox, special)
        return objectid.response_code(self._user(), created)  # RFC 8474 §4.1

    async def _do_delete(self, cmd: MailboxCommand) -> None:
        if cmd.mailbox == "INBOX":
            raise _no("INBOX cannot be deleted", "CANNOT")
        self._mailbox(cmd.mailbox)
        prefix = cmd.mailbox + "/"
        if any(m.name.startswith(prefix) for m in self.store.mailboxes(self._user())):
            raise _no("Delete the mailboxes inside it first", "INUSE")
        await self.store.delete_mailbox(self._user(), cmd.mailbox)

    async def _do_rename(self, cmd: Rename) -> None:
        self._mailbox(cmd.old)
        if self.store.mailbox(self._user(), cmd.new) is not None:
            raise _no("Target mailbox exists", "ALREADYEXISTS")
        if cmd.new == "INBOX" or cmd.new.startswith(cmd.old + "/"):
            raise _no("Cannot rename there", "CANNOT")
        if cmd.old != "INBOX":  # the inferiors move too: their new names must be valid
            prefix = cmd.old + "/"
            for m in self.store.mailboxes(self._user()):
                if m.name.startswith(prefix):
                    moved = names.check(cmd.new + m.name[len(cmd.old):])
                    if isinstance(moved, BadName):
                        raise _no(moved.reason, "CANNOT")
        # The new name's missing superiors are made in the rename's transaction.
        await self.store.rename_mailbox(self._user(), cmd.old, cmd.new)

    async def _do_subscribe(self, cmd: MailboxCommand) -> None:
        # RFC 3501 §6.3.6: a name that does not exist (yet, or any more) may be subscribed;
        # the list is names, kept apart from the mailboxes.
        await self.store.set_subscribed(self._user(), cmd.mailbox, True)

    async def _do_unsubscribe(self, cmd: MailboxCommand) -> None:
        await self.store.set_subscribed(self._user(), cmd.mailbox, False)

    def _recent_count(self, mailbox: Mailbox) -> int:
        """STATUS RECENT: the messages no session has claimed yet, and this session's own
        (RFC 3501 §2.3.2)."""
        if not self.recent_flag:
            return 0
        index = self.store.mailbox_index(self._user(), mailbox.id) \
            if mailbox.uidnext - 1 > mailbox.recent_uid else None
        count = 0 if index is None else len(index.uids) - bisect.bisect_right(index.uids, mailbox.recent_uid)
        view = self.view
        if view is not None and view.mailbox_id == mailbox.id:
            count += sum(1 for uid in view.recent if uid <= mailbox.recent_uid and view.seq_of(uid))
        return count

    def _send_status(self, mailbox: Mailbox, items: tuple[str, ...]) -> None:
        imap4rev2.check_status_items(self, items)
        recent = self._recent_count(mailbox) if "RECENT" in items else 0
        deleted = 0
        if "DELETED" in items:  # RFC 9051 §6.3.11
            index = self.store.mailbox_index(self._user(), mailbox.id)
            deleted = 0 if index is None else index.count_flag(DELETED)
        values = {"MESSAGES": mailbox.messages, "RECENT": recent, "UIDNEXT": mailbox.uidnext,
                  "UIDVALIDITY": mailbox.uidvalidity, "UNSEEN": mailbox.unseen,
                  "HIGHESTMODSEQ": mailbox.highestmodseq, "SIZE": mailbox.size,
                  "APPENDLIMIT": self.config.append_limit, "DELETED": deleted}
        if "MAILBOXID" in items:  # RFC 8474 §4.3 (a digest: only when asked)
            values["MAILBOXID"] = f"({objectid.mailbox_id(self._user(), mailbox)})"
        body = " ".join(f"{item} {values[item]}" for item in items)
        self._send(b"* STATUS " + wire.mailbox(mailbox.name, self.utf8) + b" (" + body.encode() + b")")

    async def _do_status(self, cmd: Status) -> None:
        self._send_status(self._mailbox(cmd.mailbox), cmd.items)

    async def _do_append(self, cmd: Append | MultiAppend) -> str:
        if isinstance(cmd, MultiAppend) or not cmd.message:
            return await multiappend.append(self, cmd)  # RFC 3502
        mailbox = self._mailbox(cmd.mailbox, "TRYCREATE")  # RFC 3501 §6.3.11
        # The client's own copy of what submission filed in Sent: one copy (sentcopy.py).
        uid = submitted_copy(self.store, self._user(), mailbox, cmd.message, time.time(),
                             self.config.sent_copy_window)
        if uid is not None:
            return f"APPENDUID {mailbox.uidvalidity} {uid}"  # RFC 4315 §3
        date = cmd.date.timestamp() if cmd.date else None
        result = await self.store.append(self._user(), mailbox.id, cmd.message, cmd.flags, date)
        if self.view is not None and self.view.mailbox_id == mailbox.id:
            self.view.note_new((result.uid,))  # EXISTS in this response
            self._notify_own_new((result.uid,))
        return f"APPENDUID {result.uidvalidity} {result.uid}"  # RFC 4315 §3

    async def _do_getmetadata(self, cmd: GetMetadata) -> str | None:
        return await metadata.get(self, cmd)  # RFC 5464 §4.2

    async def _do_setmetadata(self, cmd: SetMetadata) -> None:
        await metadata.set_(self, cmd)  # RFC 5464 §4.3

    async def _do_getquotaroot(self, cmd: MailboxCommand) -> None:
        self._mailbox(cmd.mailbox)
        quota = self.store.quota(self._user())
        if not quota.limit_bytes:
            self._send(b"* QUOTAROOT " + wire.mailbox(cmd.mailbox, self.utf8))  # no quota root
            return
        self._send(b"* QUOTAROOT " + wire.mailbox(cmd.mailbox, self.utf8) + b' ""')
        self._send_quota()

    def _send_quota(self) -> None:
        quota = self.store.quota(self._user())
        # RFC 9208 §5.1: STORAGE in units of 1024 octets.
        used = (quota.used_bytes + 1023) // 1024
        self._send(b'* QUOTA "" (STORAGE %d %d)' % (used, quota.limit_bytes // 1024))

    async def _do_getquota(self, cmd: QuotaCommand) -> None:
        if cmd.root != "" or not self.store.quota(self._user()).limit_bytes:
            raise _no("No such quota root", "NONEXISTENT")
        self._send_quota()

    async def _do_setquota(self, cmd: QuotaCommand) -> None:
        raise _no("Quotas are set by the administrator", "NOPERM")

    async def _do_idle(self, cmd: Command) -> None:
        # RFC 2177: updates flow while idling; "DONE" ends it.
        self._idle_tag = cmd.tag
        self._send(b"+ idling")
        # Waiting for DONE from now: it may come while the announcement below writes.
        waiter = self._line_waiter = defer.Deferred()
        try:
            await self._notify_announce(expunge=True)
            await waiter
        finally:
            self._idle_tag = None

    def _idle_line(self, data: bytes) -> None:
        waiter, self._line_waiter = self._line_waiter, None
        if waiter is None:
            return
        if data.strip().upper() == b"DONE":
            waiter.callback(data)
        else:
            waiter.errback(_bad("Expected DONE"))

    # -- selected ------------------------------------------------------------------------

    def _view(self) -> MailboxView:
        assert self.view is not None
        return self.view

    def _writable(self) -> MailboxView:
        view = self._view()
        if view.readonly:
            raise _no("Mailbox is read-only", "READ-ONLY")
        return view

    def _deselect(self) -> None:
        self.view = None
        self.state = State.AUTHENTICATED

    async def _do_close(self, cmd: Command) -> None:
        view = self._view()
        self._deselect()
        if not view.readonly:
            deleted = self._deleted(view, None)
            if deleted:
                await self.store.expunge(self._user(), view.mailbox_id, deleted)  # silently

    async def _do_unselect(self, cmd: Command) -> None:
        self._deselect()  # RFC 3691

    async def _expunge(self, only: set[int] | None) -> str | None:
        view = self._writable()
        targets = self._deleted(view, only)
        if not targets:
            return None
        result = await self.store.expunge(self._user(), view.mailbox_id, targets)
        view.note_expunged(tuple(result.uids))
        # the EXPUNGE responses go out with the other pending ones, in _announce
        if not self.qresync or not result.uids:
            return None
        # RFC 7162 §3.2.7: the expunge's mod-sequence in the tagged OK. Other sessions'
        # changes committed in the same batch, perhaps with lower mod-sequences, are
        # published just after this resumes: wait one reactor turn so that they are
        # announced before it (RFC 7162 errata 1810: a client must not be told a
        # mod-sequence past changes it has not seen).
        await task.deferLater(self.ctx.reactor, 0, lambda: None)
        return f"HIGHESTMODSEQ {result.modseq}"

    def _deleted(self, view: MailboxView, only: set[int] | None) -> list[int]:
        """The uids of the session's messages (of ``only``, when given) that carry
        \\Deleted, from the store's mailbox index: nothing to look at when it counts none."""
        index = self.store.mailbox_index(self._user(), view.mailbox_id)
        if index is None or not index.count_flag(DELETED):
            return []
        marked = {i for i, flags in enumerate(index.flag_sets) if DELETED in flags}
        uids = [u for u, f in zip(index.uids, index.flag_ids, strict=True) if f in marked]
        return [u for u in uids if (only is None or u in only) and view.index_of(u) is not None]

    async def _do_expunge(self, cmd: Command) -> str | None:
        return await self._expunge(None)

    async def _do_uid_expunge(self, cmd: UidExpunge) -> str | None:
        view = self._view()
        return await self._expunge({view.uids[i] for i in view.resolve(cmd.sequence, uid=True)})

    async def _do_search(self, cmd: Search) -> None:
        view = self._view()
        returns = imap4rev2.search_returns(self, cmd.returns)  # RFC 9051 §6.4.4: ESEARCH
        context.check_tag(self, cmd.tag, returns)
        searchres.start(view, returns)  # RFC 5182 §2.1
        if self.utf8 and not self.rev2 and cmd.charset is not None:
            raise _bad("No CHARSET after ENABLE UTF8=ACCEPT")  # RFC 6855 §3
        _check_charset(cmd.charset)
        imap4rev2.check_search_key(self, cmd.key)
        uids = list(view.uids)
        user = self._user()
        unbound = searchres.bind(cmd.key, view)  # "$"
        key = searching.bind_recent(unbound, view.recent)
        if searching.reads_messages(key):
            found = await threads.deferToThread(searching.search, self.store, user, view.mailbox_id,
                                                uids, key)
        else:
            found = searching.search(self.store, user, view.mailbox_id, uids, key)
        # RFC 7162 §3.1.5: MODSEQ in the answer when the search used it.
        with_modseq = _uses_modseq(cmd.key)
        if with_modseq:
            self._enable_condstore()
        numbers = [uid if cmd.uid else seq for seq, uid, _ in found]
        searchres.save(view, returns, [uid for _, uid, _ in found])  # RFC 5182 §2.4
        if returns is None:
            line = b"* SEARCH" + b"".join(b" %d" % n for n in numbers)
            if with_modseq and numbers:
                line += b" (MODSEQ %d)" % max(m for _, _, m in found)
            self._send(line)
            return
        line = _esearch(cmd.tag, cmd.uid, returns, numbers) + context.partial(returns, numbers)
        if with_modseq and numbers:
            # RFC 4731 §3.2, RFC 7162 §3.1.5: the highest mod-sequence of the messages the
            # answer returns: MIN's and/or MAX's alone, all of them with ALL or COUNT.
            returned = found if not returns or {"ALL", "COUNT"} & set(returns) else \
                [found[i] for i, opt in ((0, "MIN"), (-1, "MAX")) if opt in returns]
            line += b" MODSEQ %d" % max(m for _, _, m in returned)
        if searchres.answers(returns):  # SAVE alone: no ESEARCH (RFC 5182 §2.4)
            self._send(line)
        context.register(self, cmd.tag, cmd.uid, unbound, returns, [uid for _, uid, _ in found],
                         fetch=cmd.update_fetch)  # RFC 5267 §4.3, RFC 5465 §7

    _do_uid_search = _do_search

    async def _do_cancelupdate(self, cmd: CancelUpdate) -> None:
        context.cancel(self, cmd.tags)  # RFC 5267 §4.3.5

    async def _do_sort(self, cmd: Sort) -> None:
        view = self._view()
        _check_charset(cmd.charset)
        # Every match's record and, for most criteria, its envelope: off the reactor.
        context.check_tag(self, cmd.tag, cmd.returns)
        searchres.start(view, cmd.returns)  # RFC 5182 §2.1
        imap4rev2.check_search_key(self, cmd.key)
        unbound = searchres.bind(cmd.key, view)  # "$"
        # The session's sequence map as it is now, copied (memcpy): the thread must not see it move.
        ordered = await threads.deferToThread(sorting.sort, self.store, self._user(), view.mailbox_id,
                                              view.uidvalidity, array("I", view.uids),
                                              searching.bind_recent(unbound, view.recent), cmd.criteria)
        if searchres.saving(cmd.returns):
            searchres.save(view, cmd.returns, [uid for _, uid in ordered])
        if cmd.returns is None:
            # RFC 5256 §4: the SORT response, numbers in sorted order (kept with a kept order).
            self._send(sorting.response_line(ordered, cmd.uid))
            return
        numbers = [uid for _, uid in ordered] if cmd.uid else [seq for seq, _ in ordered]
        # RFC 5267 §3.2: MIN and MAX are the first and last in sort order, ALL keeps that order.
        if searchres.answers(cmd.returns):
            self._send(_esearch(cmd.tag, cmd.uid, cmd.returns, numbers) + context.partial(cmd.returns, numbers))
        context.register(self, cmd.tag, cmd.uid, unbound, cmd.returns, [uid for _, uid in ordered],
                         cmd.criteria, cmd.update_fetch)  # RFC 5267 §4.3, RFC 5465 §7

    _do_uid_sort = _do_sort

    async def _do_thread(self, cmd: Thread) -> None:
        view = self._view()
        _check_charset(cmd.charset)
        imap4rev2.check_search_key(self, cmd.key)
        key = searching.bind_recent(searchres.bind(cmd.key, view), view.recent)
        answer = await threads.deferToThread(thread_messages, self.store, self._user(), view.mailbox_id,
                                             view.uidvalidity, list(view.uids), key, cmd.algorithm, cmd.uid)
        self._send(b"* THREAD" + (b" " + answer if answer else b""))  # RFC 5256 §4

    _do_uid_thread = _do_thread

    async def _do_store(self, cmd: StoreFlags) -> str | None:
        view = self._writable()
        user = self._user()
        indexes = view.resolve(cmd.sequence, cmd.uid)
        uids = [view.uids[i] for i in indexes]
        if cmd.unchanged_since is not None:
            self._enable_condstore()
        mode = {StoreMode.ADD: FlagMode.ADD, StoreMode.REMOVE: FlagMode.REMOVE,
                StoreMode.REPLACE: FlagMode.REPLACE}[cmd.mode]
        changed, failed = await self.store.set_flags(user, view.mailbox_id, uids, cmd.flags, mode,
                                                     cmd.unchanged_since)
        for result in changed:
            view.echo[result.uid] = result.flags
        changed_uids = {r.uid for r in changed}
        failed_set = set(failed)
        # RFC 7162 §3.1.3: with CONDSTORE, .SILENT still reports the new MODSEQ.
        report = [u for u in uids if u not in failed_set
                  and (not cmd.silent or (self.condstore and u in changed_uids))]
        # RFC 7162 §3.2.4: once QRESYNC is enabled every FETCH response carries the UID.
        with_uid = cmd.uid or self.qresync
        for meta in self.store.messages(user, view.mailbox_id, report):
            seq = view.seq_of(meta.uid)
            if seq is not None:
                if cmd.silent:
                    body = (b"UID %d " % meta.uid if with_uid else b"") + b"MODSEQ (%d)" % meta.modseq
                    self._send(b"* %d FETCH (%s)" % (seq, body))
                else:
                    self._send(b"* %d FETCH (" % seq + self._flag_items(meta, with_uid) + b")")
        if failed:
            return "MODIFIED " + _compress(sorted(failed) if cmd.uid else
                                           sorted(view.seq_of(u) or 0 for u in failed)).decode()
        return None

    _do_uid_store = _do_store

    async def _do_copy(self, cmd: Copy) -> str | None:
        view = self._writable() if cmd.move else self._view()
        user = self._user()
        target = self._mailbox(cmd.mailbox, "TRYCREATE")  # RFC 3501 §6.4.7
        uids = [view.uids[i] for i in view.resolve(cmd.sequence, cmd.uid)]
        if not uids:
            if cmd.uid:
                return None  # RFC 4315 §3: nothing copied, no COPYUID
            raise _no("No messages")
        op = self.store.move if cmd.move else self.store.copy
        result = await op(user, view.mailbox_id, uids, target.id)
        if not result.pairs:
            return None
        if target.id == view.mailbox_id:
            view.note_new(tuple(p[1] for p in result.pairs))
            self._notify_own_new(tuple(p[1] for p in result.pairs))
        sources = _compress([p[0] for p in result.pairs]).decode()
        targets = _compress([p[1] for p in result.pairs]).decode()
        code = f"COPYUID {result.uidvalidity} {sources} {targets}"
        if not cmd.move:
            return code
        # RFC 6851 §4.3: COPYUID in an untagged OK before the EXPUNGEs.
        self._send(b"* OK [" + code.encode() + b"] Moved")
        view.note_expunged(tuple(p[0] for p in result.pairs))
        return None

    _do_uid_copy = _do_copy
    _do_move = _do_copy
    _do_uid_move = _do_copy


def _esearch(tag: str, uid: bool, returns: tuple[str, ...], numbers: list[int]) -> bytes:
    """The ESEARCH response (RFC 4731 §3.1) to SEARCH or SORT RETURN, ``numbers`` in the
    command's order (SORT's: RFC 5267 §3.2)."""
    line = b"* ESEARCH (TAG " + wire.string(tag) + b")" + (b" UID" if uid else b"")
    if numbers:
        if "MIN" in returns:
            line += b" MIN %d" % numbers[0]
        if "MAX" in returns:
            line += b" MAX %d" % numbers[-1]
        if "ALL" in returns:
            line += b" ALL " + _compress(numbers)
    if "COUNT" in returns:
        line += b" COUNT %d" % len(numbers)
    return line


def _compress(numbers: list[int]) -> bytes:
    """Numbers as an RFC 3501 sequence set in the order given: 1:3,5,7:9. Only runs that
    rise by one become ranges (a range such as 5:3 means 3:5), so SORT's order survives."""
    out: list[str] = []
    start = prev = None
    for n in numbers:
        if prev is not None and n == prev + 1:
            prev = n
            continue
        if start is not None:
            out.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = n
    if start is not None:
        out.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(out).encode()


def _uses_modseq(key: Any) -> bool:
    return key.op.value == "MODSEQ" or any(_uses_modseq(k) for k in key.children)
