"""NOTIFY (RFC 5465): the client names mailboxes and events, and the server tells it of
them as they happen — also between commands, not only during IDLE. :class:`NotifyCommands`
is a mixin of :class:`maild.imap.server.ImapSession`, which dispatches ``_do_notify`` to it
and calls its hooks: ``_notify_changed`` for every change of the user (from the store's
change feed), ``_notify_announce`` where it announces the selected mailbox's changes,
``_notify_kick`` when something may be sent between commands, ``_notify_own_new`` for
messages its own APPEND/COPY/MOVE put in the selected mailbox. ``_fetch_uids`` is the one
unsolicited FETCH, for MessageNew and for the SEARCH/SORT ``UPDATE (fetch-att ...)``
contexts of §7 (``maild/imap/context.py``).

Implementation notes — invariants a contributor must keep:

1. What is asked: ``NOTIFY SET`` replaces the event groups, ``NOTIFY NONE`` (and a
   notification overflow) removes them; a session that never used NOTIFY and one after
   NOTIFY NONE behave alike. An event goes out when the first group whose filter covers the
   mailbox lists it; a covering group with NONE stops the search (§6). SELECTED and
   SELECTED-DELAYED cover the selected mailbox's message events only; the other filters
   cover every mailbox but the selected one for message events (STATUS, §5.1-5.3), and any
   mailbox for MailboxName, SubscriptionChange and MailboxMetadataChange (LIST, METADATA,
   §5.4-5.6). ServerMetadataChange concerns no mailbox: any group listing it gets it.
   The session's own changes are announced too (§5 only SHOULD omit them; a change record
   does not say which session made it), but for the MessageNew FETCH of its own
   APPEND/COPY/MOVE (§5.2).
2. The selected mailbox: its changes reach the session's ``MailboxView`` as before NOTIFY
   and are announced at the end of every command (RFC 3501 §7.4.1: no EXPUNGE while
   answering FETCH, STORE, SEARCH, SORT, THREAD) and during IDLE, whatever NOTIFY says, so
   sequence numbers stay consistent (a mailbox not named SELECTED keeps RFC 3501's rules,
   as Dovecot does). With SELECTED they also go out between commands: EXISTS (and RECENT),
   then a FETCH with MessageNew's fetch attributes for each new message (§5.2; not for the
   session's own APPEND/COPY/MOVE), EXPUNGE or VANISHED (§5.3) and, with FlagChange,
   FETCH (FLAGS UID) (§5.1). SELECTED-DELAYED holds the EXPUNGEs for a command that
   may carry them (§6.1.2).
3. Between commands means: no command running, none waiting in the input, output not
   paused (backpressure), the server not stopping. A flush then runs like a command
   (``_busy``: input waits) but is none: no tagged answer, the bad-command count and the
   autologout timer are left alone. During IDLE the same flush runs inside the command
   (§4). Flushes never overlap; the end-of-command announcement waits for a running one.
4. Other mailboxes' events wait in ``_NotifyState.pending``, one entry per mailbox (STATUS,
   METADATA) or name (LIST), merged and read from the store when sent, so the answer is
   the state after the event (§5.4: ``\\NonExistent`` for a name without a mailbox, §5.5
   ``\\Subscribed`` iff subscribed, ``OLDNAME`` after RENAME). At most ``MAX_PENDING``
   entries (METADATA's entry names counted each): one more and the session gets
   ``* OK [NOTIFICATIONOVERFLOW]`` and behaves as after NOTIFY NONE (§5.8), so a client that
   stops reading cannot grow the server's memory.
   A NOTIFY naming more than ``MAX_WATCHED`` mailboxes is refused the same way (tagged NO).
5. Errors (§3.1, §5, §6.1): an unknown or unsupported event (AnnotationChange: maild has
   no per-message annotations) is ``NO [BADEVENT (...)]`` listing the supported ones;
   MessageNew without MessageExpunge or the reverse, FlagChange without both, two SELECTED
   groups or a non-message event in one are BAD. A refused NOTIFY leaves the former in force.
6. Every event comes from the store's change feed (``store.subscribe``: the commits of
   every process over the data directory, FOLLOW_API.md), SubscriptionChange from its
   SUBSCRIBE/UNSUBSCRIBE records (written only when the list changes).
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from twisted.internet import defer
from twisted.python.failure import Failure

from maild.filters.spam import JUNK_FOLDER
from maild.imap import context, wire
from maild.imap.commands import EventGroup, Fetch, FetchAtt, Notify, SequenceSet
from maild.imap.framer import Complete
from maild.imap.names import BadName
from maild.store.types import Change, ChangeKind

if TYPE_CHECKING:
    import collections

    from maild.context import ServerContext
    from maild.imap.framer import FrameEvent
    from maild.imap.mailbox import MailboxView
    from maild.imap.server import ImapSession
    from maild.store import Store
    from maild.store.types import Mailbox

log = logging.getLogger("maild.imap.server")

MAX_PENDING = 1000  # other mailboxes' notifications waiting to be sent, per session
MAX_WATCHED = 1000  # mailbox names of SUBTREE / MAILBOXES filters in one NOTIFY
MESSAGE_EVENTS = ("MessageNew", "MessageExpunge", "FlagChange", "AnnotationChange")
SUPPORTED = ("MessageNew", "MessageExpunge", "FlagChange", "MailboxName", "SubscriptionChange",
             "MailboxMetadataChange", "ServerMetadataChange")
_SELECTED = ("SELECTED", "SELECTED-DELAYED")
# The STATUS items each event asks for (§5.1-5.3), in the order they are sent.
_STATUS_ITEMS = {"MessageNew": ("MESSAGES", "UIDNEXT", "UNSEEN"),
                 "MessageExpunge": ("MESSAGES", "UIDNEXT", "UNSEEN"),
                 "FlagChange": ("UIDVALIDITY", "UNSEEN")}
_STATUS_ORDER = ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN")
_EVENT_OF = {ChangeKind.APPEND: "MessageNew", ChangeKind.EXPUNGE: "MessageExpunge",
             ChangeKind.FLAGS: "FlagChange"}


@dataclass
class _NotifyState:
    groups: tuple[EventGroup, ...] | None = None  # the NOTIFY SET in force; None: none
    # Other mailboxes' events to send: ("STATUS", mailbox id) -> events, ("LIST", name) ->
    # the old name after a RENAME (else None), ("METADATA", mailbox id, 0 the server's) ->
    # entry names. Insertion order is sending order.
    pending: dict[tuple[str, object], object] = field(default_factory=dict)
    count: int = 0  # what ``pending`` holds: its entries, and the entry names of METADATA's
    overflow: bool = False  # NOTIFICATIONOVERFLOW is to be sent
    # UIDs the session's own APPEND/COPY/MOVE put in the selected mailbox (no FETCH for
    # them, §5.2), for ``view``.
    own: set[int] = field(default_factory=set)
    view: MailboxView | None = None
    scheduled: bool = False  # a _notify_run is due on the reactor
    running: defer.Deferred[None] | None = None  # a flush in progress, fires when done
    again: bool = False  # something came during the flush: look again after it

    @property
    def selected(self) -> EventGroup | None:
        """The SELECTED or SELECTED-DELAYED group, if it asks for events."""
        for group in self.groups or ():
            if group.filter in _SELECTED:
                return group if group.events else None
        return None


class NotifyCommands:
    """NOTIFY and its notifications, mixed into :class:`maild.imap.server.ImapSession`."""

    # Session state NOTIFY reads, set by ImapSession.
    store: Store
    ctx: ServerContext
    user: str | None
    view: MailboxView | None
    utf8: bool
    condstore: bool
    _closed: bool
    _busy: bool
    _stopping: bool
    _output_paused: bool
    _idle_tag: str | None
    _queue: collections.deque[FrameEvent]

    if TYPE_CHECKING:
        def _user(self) -> str: ...
        def _send(self, line: bytes) -> None: ...
        def _send_status(self, mailbox: Mailbox, items: tuple[str, ...]) -> None: ...
        def _announce(self, expunge: bool, flags: bool = True) -> None: ...
        async def _claim_recent(self) -> None: ...
        async def _do_fetch(self, cmd: Fetch) -> None: ...
        def _process(self) -> None: ...
        def _internal_error(self, failure: Failure) -> None: ...

    @property
    def _notifier(self) -> _NotifyState:
        state = self.__dict__.get("_notify_state")
        if state is None:
            state = self.__dict__["_notify_state"] = _NotifyState()
        return state

    # -- the command (RFC 5465 §3.1) --------------------------------------------------------

    async def _do_notify(self, cmd: Notify) -> None:
        from maild.imap.server import _bad, _no

        state = self._notifier
        if cmd.groups is None:
            state.groups = None  # NOTIFY NONE
            state.pending, state.count = {}, 0
            return
        unsupported = [e for g in cmd.groups for e in g.events if e not in SUPPORTED]
        if unsupported:
            raise _no(f"Unsupported event {unsupported[0][:40]}", f"BADEVENT ({' '.join(SUPPORTED)})")
        selected = 0
        for group in cmd.groups:
            events = set(group.events)
            if ("MessageNew" in events) != ("MessageExpunge" in events):  # §5
                raise _bad("MessageNew and MessageExpunge go together")
            if "FlagChange" in events and "MessageNew" not in events:
                raise _bad("FlagChange needs MessageNew and MessageExpunge")
            if group.filter in _SELECTED:  # §6.1
                selected += 1
                if events - set(MESSAGE_EVENTS):
                    raise _bad("SELECTED takes message events only")
        if selected > 1:
            raise _bad("Only one of SELECTED and SELECTED-DELAYED")
        if sum(len(g.mailboxes) for g in cmd.groups) > MAX_WATCHED:
            raise _no(f"At most {MAX_WATCHED} mailboxes", "NOTIFICATIONOVERFLOW")
        # §6.5, §6.6: names the server cannot hold name no mailbox; they are ignored.
        groups = tuple(EventGroup(g.filter, tuple(n for n in g.mailboxes if not isinstance(n, BadName)),
                                  g.events, g.fetch) for g in cmd.groups)
        state.groups = groups
        state.pending, state.count = {}, 0
        state.overflow = False
        if cmd.status:
            # §3.1: a STATUS for each mailbox with message events but the selected one,
            # before the tagged OK (MessageNew and MessageExpunge always come together).
            view = self.view
            subscribed = _Lazy(lambda: set(self.store.subscriptions(self._user())))
            for mailbox in sorted(self.store.mailboxes(self._user()), key=lambda m: (m.name != "INBOX", m.name)):
                if view is not None and mailbox.id == view.mailbox_id:
                    continue
                if _wanted(groups, mailbox.name, "MessageNew", subscribed):
                    self._notify_status(mailbox, ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN"))
        # The accumulated changes of the selected mailbox follow at the end of the command
        # (the implicit NOOP of §3.1).

    # -- events ------------------------------------------------------------------------------

    def _notify_changed(self, change: Change) -> None:
        """A change of this user (any session's, any process's): queue what NOTIFY asks
        for other than the selected mailbox's message events (those are the view's)."""
        state = self.__dict__.get("_notify_state")
        if state is None or state.groups is None:
            return
        view = self.view
        kind = change.kind
        event = _EVENT_OF.get(kind)
        if event is not None:
            if view is not None and change.mailbox_id == view.mailbox_id:
                return  # the view has it (invariant 2)
            if not any(event in g.events for g in state.groups if g.filter not in _SELECTED):
                return  # asked for nowhere: no need to read the mailbox's name
            name = self._notify_name(change.mailbox_id)
            if name is not None and self._notify_wants(state, name, event):
                self._notify_queue(state, ("STATUS", change.mailbox_id), {event})
        elif kind in (ChangeKind.MAILBOX_CREATE, ChangeKind.MAILBOX_DELETE, ChangeKind.MAILBOX_RENAME):
            old = change.extra.get("old") if kind is ChangeKind.MAILBOX_RENAME else None
            if change.name is not None and (
                    self._notify_wants(state, change.name, "MailboxName")
                    or (isinstance(old, str) and self._notify_wants(state, old, "MailboxName"))):
                self._notify_queue(state, ("LIST", change.name), old if isinstance(old, str) else None)
        elif kind in (ChangeKind.SUBSCRIBE, ChangeKind.UNSUBSCRIBE):
            if change.name is not None and self._notify_wants(state, change.name, "SubscriptionChange"):
                # §5.5: a LIST with \\Subscribed iff subscribed (a RENAME's OLDNAME kept)
                self._notify_queue(state, ("LIST", change.name), state.pending.get(("LIST", change.name)))
        elif kind is ChangeKind.METADATA:
            entries = change.extra.get("entries")
            names = {str(e) for e in entries} if isinstance(entries, list) else set()
            if change.mailbox_id == 0:  # §5.7: the server's (the user's own) entries
                if any("ServerMetadataChange" in g.events for g in state.groups if g.filter not in _SELECTED):
                    self._notify_queue(state, ("METADATA", 0), names)
            else:
                name = self._notify_name(change.mailbox_id)
                if name is not None and self._notify_wants(state, name, "MailboxMetadataChange"):
                    self._notify_queue(state, ("METADATA", change.mailbox_id), names)  # §5.6

    def _notify_name(self, mailbox_id: int) -> str | None:
        mailbox = self.store.mailbox_by_id(self._user(), mailbox_id)
        return None if mailbox is None else mailbox.name

    def _notify_wants(self, state: _NotifyState, name: str, event: str) -> bool:
        assert state.groups is not None
        return _wanted(state.groups, name, event, _Lazy(lambda: set(self.store.subscriptions(self._user()))))

    def _notify_queue(self, state: _NotifyState, key: tuple[str, object], value: object) -> None:
        pending = state.pending
        before = pending.get(key)
        merged: object
        if isinstance(value, set):
            merged = value | before if isinstance(before, set) else value
            added = (key not in pending) + len(merged) - (len(before) if isinstance(before, set) else 0)
        else:
            merged, added = value, key not in pending
        if state.count + added > MAX_PENDING:
            # §5.8: too many for this client; as if it had sent NOTIFY NONE.
            log.info("IMAP NOTIFY overflow for %s: %d notifications waiting", self.user, state.count)
            state.groups = None
            state.pending, state.count = {}, 0
            state.overflow = True
        else:
            pending[key] = merged
            state.count += added
        self._notify_kick()

    def _notify_own_new(self, uids: tuple[int, ...]) -> None:
        """The session's own APPEND/COPY/MOVE put ``uids`` in the selected mailbox: no
        MessageNew FETCH for them (§5.2)."""
        state = self.__dict__.get("_notify_state")
        if state is not None and state.selected is not None and state.selected.fetch:
            if state.view is not self.view:
                state.view, state.own = self.view, set()
            state.own.update(uids)

    def _notify_wake(self) -> None:
        """The selected mailbox changed: during IDLE, or with NOTIFY, look now."""
        state = self.__dict__.get("_notify_state")
        if self._idle_tag is not None or (state is not None and state.groups is not None):
            self._notify_kick()

    def _notify_after(self) -> None:
        """A command was answered: what came during its last steps goes out now."""
        state = self.__dict__.get("_notify_state")
        if state is not None and (state.groups is not None or state.overflow or state.pending):
            self._notify_kick()

    def _notify_resumed(self) -> None:
        """The transport takes output again: what waited for it goes out."""
        if self._idle_tag is not None:
            self._notify_kick()
        else:
            self._notify_after()

    # -- sending -----------------------------------------------------------------------------

    def _notify_kick(self) -> None:
        """Something may be sent: look on the next reactor turn (one look for a batch)."""
        state = self._notifier
        if not state.scheduled and not self._closed:
            state.scheduled = True
            self.ctx.reactor.callLater(0, self._notify_run)

    def _notify_run(self) -> None:
        state = self._notifier
        state.scheduled = False
        if self._closed or self._stopping:
            return
        if state.running is not None:
            state.again = True
            return
        if self._output_paused:
            return  # the transport is full: resumed, the session kicks again
        if self._idle_tag is not None:
            self._notify_start(self._notify_idle(), between=False)  # RFC 2177, RFC 5465 §4
            return
        if self._busy or any(isinstance(e, Complete) for e in self._queue) or not self._notify_due(state):
            return  # a command's end announces it (invariant 3)
        self._busy = True  # input waits while the flush writes
        self._notify_start(self._notify_between(), between=True)

    def _notify_start(self, work: Coroutine[Any, Any, None], between: bool) -> None:
        state = self._notifier
        done: defer.Deferred[None] = defer.Deferred()
        state.running = done

        def finished(_: object) -> None:
            state.running = None
            if between:
                self._busy = False
            done.callback(None)
            if state.again:
                state.again = False
                self._notify_kick()
            if between and not self._closed:
                self._process()

        d = defer.ensureDeferred(work)
        d.addErrback(self._internal_error)
        d.addBoth(finished)

    def _notify_due(self, state: _NotifyState) -> bool:
        if state.pending or state.overflow:
            return True
        group = state.selected
        view = self.view
        if group is None or view is None:
            return False
        return bool(view.pending_new or view.deleted
                    or (view.pending_expunge and group.filter == "SELECTED")
                    or (view.pending_flags and "FlagChange" in group.events))

    async def _notify_idle(self) -> None:
        await self._claim_recent()
        if self._idle_tag is not None:
            await self._notify_send(expunge=True)

    async def _notify_between(self) -> None:
        """Between commands (invariant 3): the selected mailbox's changes as its group
        asks, and the other mailboxes' notifications."""
        group = self._notifier.selected
        if group is None:
            await self._notify_send(expunge=False, selected=False)
            return
        await self._claim_recent()
        # §6.1.2: SELECTED-DELAYED keeps EXPUNGE for a command that may carry it.
        await self._notify_send(expunge=group.filter == "SELECTED", flags="FlagChange" in group.events)

    async def _notify_announce(self, expunge: bool) -> None:
        """The end of a command (``_execute``): the selected mailbox's pending changes as
        RFC 3501 §7.4.1 allows, and whatever NOTIFY has waiting."""
        state = self.__dict__.get("_notify_state")
        if state is None or (state.groups is None and state.running is None and not state.overflow):
            self._announce(expunge)  # as without NOTIFY
            session = cast("ImapSession", self)
            if context.holding(session):
                await context.fetch_held(session)  # RFC 5465 §7
            return
        if state.running is not None:
            await state.running  # no two flushes at once (invariant 3)
        await self._notify_send(expunge)

    async def _notify_send(self, expunge: bool, flags: bool = True, selected: bool = True) -> None:
        state = self._notifier
        view = self.view
        if selected and view is not None:
            last = view.uids[-1] if view.uids else 0
            self._announce(expunge, flags)
            group = state.selected
            if group is not None and group.fetch and view is self.view and not self._closed:
                await self._notify_fetch(view, last, group.fetch)
            session = cast("ImapSession", self)
            if context.holding(session) and not self._closed:
                await context.fetch_held(session)  # RFC 5465 §7: after the FETCHes, the ADDTOs
        if self._closed:
            return
        if state.overflow:
            state.overflow = False
            self._send(b"* OK [NOTIFICATIONOVERFLOW] Too many notifications waiting; NOTIFY is off")
        pending, state.pending, state.count = state.pending, {}, 0
        if pending:
            self._notify_send_pending(pending)

    async def _notify_fetch(self, view: MailboxView, last: int, atts: tuple[FetchAtt, ...]) -> None:
        """§5.2: after EXISTS, a FETCH with MessageNew's attributes for each new message
        (above ``last``), not for the session's own."""
        state = self._notifier
        own = state.own if state.view is view else set()
        fresh = [uid for uid in view.uids[bisect.bisect_right(view.uids, last):] if uid not in own]
        if own:
            own.difference_update(view.uids[bisect.bisect_right(view.uids, last):])
        await self._fetch_uids(fresh, atts)

    async def _fetch_uids(self, uids: list[int], atts: tuple[FetchAtt, ...]) -> None:
        """An unsolicited FETCH of ``uids`` (ascending) with ``atts``, as the FETCH command
        answers (streamed, \\Seen set where asked); a message expunged meanwhile is left out."""
        from maild.imap.server import ImapError

        if not uids:
            return
        ranges: list[tuple[int | None, int | None]] = []
        for uid in uids:
            if ranges and ranges[-1][1] == uid - 1:
                ranges[-1] = (ranges[-1][0], uid)
            else:
                ranges.append((uid, uid))
        try:
            await self._do_fetch(Fetch("*", "FETCH", True, SequenceSet(tuple(ranges)), atts))
        except ImapError as exc:
            if exc.code != "EXPUNGEISSUED":  # an expunged message is announced as such
                self._send(b"* NO " + (b"[%s] " % exc.code.encode() if exc.code else b"") + exc.text.encode())
        except defer.CancelledError:
            raise
        except Exception:  # logged; the client sees a generic answer (server.py invariant 8)
            log.exception("IMAP NOTIFY FETCH failed for %s", self.user)
            self._send(b"* NO [SERVERBUG] Internal error, try again later")

    def _notify_send_pending(self, pending: dict[tuple[str, object], object]) -> None:
        user = self._user()
        view = self.view
        mailboxes: dict[str, Mailbox] | None = None
        subscribed: set[str] = set()
        parents: set[str] = set()  # names with a mailbox below them (\\HasChildren)
        for (kind, key), value in pending.items():
            if kind == "STATUS":
                assert isinstance(key, int) and isinstance(value, set)
                mailbox = self.store.mailbox_by_id(user, key)
                if mailbox is None or (view is not None and view.mailbox_id == key):
                    continue  # gone (its LIST says so), or selected since
                wanted = {item for event in value for item in _STATUS_ITEMS[event]}
                self._notify_status(mailbox, tuple(i for i in _STATUS_ORDER if i in wanted))
            elif kind == "LIST":
                assert isinstance(key, str)
                if mailboxes is None:  # read once for all the LIST responses
                    mailboxes = {m.name: m for m in self.store.mailboxes(user)}
                    subscribed = set(self.store.subscriptions(user))
                    for known in mailboxes:
                        parts = known.split("/")
                        parents.update("/".join(parts[:i]) for i in range(1, len(parts)))
                old = value if isinstance(value, str) else None
                self._send(self._notify_list(key, old, mailboxes.get(key), key in parents, key in subscribed))
            else:  # METADATA, §5.6 / §5.7: the names of the entries that changed
                assert isinstance(value, set)
                if key == 0:
                    name = wire.string("")
                else:
                    assert isinstance(key, int)
                    mailbox = self.store.mailbox_by_id(user, key)
                    if mailbox is None:
                        continue
                    name = wire.mailbox(mailbox.name, self.utf8)
                self._send(b"* METADATA " + name + b"".join(b" " + e.encode() for e in sorted(value)))

    def _notify_status(self, mailbox: Mailbox, items: tuple[str, ...]) -> None:
        # §5.2, §5.3: HIGHESTMODSEQ too once CONDSTORE is enabled.
        self._send_status(mailbox, items + (("HIGHESTMODSEQ",) if self.condstore else ()))

    def _notify_list(self, name: str, old: str | None, mailbox: Mailbox | None, children: bool,
                     subscribed: bool) -> bytes:
        """The LIST response of §5.4 / §5.5: the name's state now, OLDNAME after RENAME."""
        attrs: list[str] = []
        if mailbox is None:
            attrs.append("\\NonExistent")  # §5.4
        else:
            attrs.append("\\HasChildren" if children else "\\HasNoChildren")
            if mailbox.special_use is not None:
                attrs.append(mailbox.special_use.value)
        if subscribed:
            attrs.append("\\Subscribed")  # §5.5
        line = b'* LIST (' + " ".join(attrs).encode() + b') "/" ' + wire.mailbox(name, self.utf8)
        if old is not None:
            line += b' ("OLDNAME" (' + wire.mailbox(old, self.utf8) + b"))"  # RFC 5465 §5.4
        return line


class _Lazy:
    """A value computed at most once, when first asked for (the subscription list)."""

    def __init__(self, make: Callable[[], set[str]]) -> None:
        self._make = make
        self._value: set[str] | None = None

    def get(self) -> set[str]:
        if self._value is None:
            self._value = self._make()
        return self._value


def _covers(group: EventGroup, name: str, subscribed: _Lazy) -> bool:
    """RFC 5465 §6.2-6.6: the non-selected filters."""
    kind = group.filter
    if kind == "PERSONAL":
        return True  # maild has one namespace, the user's own
    if kind == "INBOXES":  # §6.3: where the MDA delivers: INBOX, and Junk for spam
        return name in ("INBOX", JUNK_FOLDER)
    if kind == "SUBSCRIBED":
        return name in subscribed.get()  # §6.4: the list as it is now
    if kind == "SUBTREE":
        return any(name == m or name.startswith(m + "/") for m in group.mailboxes)
    if kind == "MAILBOXES":
        return name in group.mailboxes  # §6.6: no wildcards
    return False


def _wanted(groups: tuple[EventGroup, ...], name: str, event: str, subscribed: _Lazy) -> bool:
    """The first group covering ``name`` that lists ``event`` wants it; one with NONE ends
    the search (§6, invariant 1). Message events of the selected mailbox never come here."""
    for group in groups:
        if group.filter in _SELECTED or not _covers(group, name, subscribed):
            continue
        if not group.events:
            return False
        if event in group.events:
            return True
    return False
