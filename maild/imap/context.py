"""CONTEXT=SEARCH and CONTEXT=SORT (RFC 5267 §4): SEARCH / SORT RETURN (PARTIAL lo:hi),
the CONTEXT hint, and RETURN (UPDATE) contexts that the server keeps up to date with ADDTO
and REMOVEFROM.

Implementation notes — invariants a contributor must keep:

1. A context belongs to the selected mailbox: it lives in :class:`Contexts` beside the
   session's ``MailboxView`` and is dropped with it (any SELECT, EXAMINE, CLOSE or
   UNSELECT), or by CANCELUPDATE (§4.3.5). It remembers the search key (and SORT's
   criteria), whether the command was a UID command, and the matching UIDs in order.
2. SEARCH results are in mailbox order, so their ADDTO and REMOVEFROM use context position
   0 (§4.3.3, §4.3.4) with the set in mailbox order. SORT results carry positions: removals
   are listed from the last position to the first and additions from the first to the
   last, one pair each, so every position is right when the client applies the pairs in
   order (§4.3.2); sort keys never change, so the results that stay keep their order.
   Numbers are as the command's: UIDs for UID SEARCH / UID SORT, else sequence numbers.
3. Ordering (§4.3.3, §4.3.4): REMOVEFROM for expunged messages goes out before their
   EXPUNGE (``expunged``, with the numbers still valid); the rest of the changes — new
   messages (after their EXISTS) and flag changes — by re-running the search in
   ``refresh``, at the end of each command and during IDLE, only after something changed.
   A context keeps its key unbound: RECENT (and NEW, OLD) is bound to the session's
   \\Recent messages at each run (``search.bind_recent``), since claiming new ones changes it.
4. Bounded work: at most ``MAX_CONTEXTS`` per session, and only for search keys answered
   from the message records and envelopes (not BODY/TEXT/HEADER reads); otherwise the
   search is answered and ``* NO [NOUPDATE "tag"]`` says no updates follow (§4.3.1). A
   tag already naming an UPDATE context is refused with BAD (§4.3).
5. PARTIAL lo:hi (§4.4) answers ``PARTIAL (lo:hi set)`` with the results at those 1-based
   positions, or NIL when there are none.
6. ``UPDATE (fetch-att ...)`` (RFC 5465 §7, with NOTIFY): a new message that joins the
   results is FETCHed with those attributes after its EXISTS and before the ADDTO naming
   it; one that joins by a flag change is not. ``refresh`` is synchronous, so it holds
   back such a context's ADDTO in ``Contexts.held`` and ``fetch_held`` (awaited by the
   session right after ``refresh``) sends the FETCHes, then the ADDTO.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from maild.imap import search as searching
from maild.imap import sort as sorting
from maild.imap import wire
from maild.imap.commands import FetchAtt, SearchKey, SortCriterion
from maild.imap.mailbox import MailboxView

if TYPE_CHECKING:
    from maild.imap.server import ImapSession

MAX_CONTEXTS = 5


@dataclass
class _Context:
    tag: str
    uid: bool
    key: SearchKey
    uids: list[int]  # matching: ascending, or in SORT's order
    criteria: tuple[SortCriterion, ...] = ()  # a SORT context
    fetch: tuple[FetchAtt, ...] = ()  # RFC 5465 §7: FETCH for new messages that join
    newest: int = 0  # the mailbox's highest UID at the last refresh: above it, new messages


@dataclass
class Contexts:
    view: MailboxView | None = None
    items: dict[str, _Context] = field(default_factory=dict)
    dirty: bool = False
    # ADDTOs held for their FETCHes (invariant 6): context, (position, number) pairs, UIDs
    held: list[tuple[_Context, list[tuple[int, int]], list[int]]] = field(default_factory=list)

    def of(self, view: MailboxView | None) -> dict[str, _Context]:
        if view is not self.view:
            self.view, self.items, self.dirty, self.held = view, {}, False, []
        return self.items


def _contexts(session: ImapSession) -> Contexts:
    found = session.__dict__.get("_search_contexts")
    if found is None:
        found = session.__dict__["_search_contexts"] = Contexts()
    return found


def partial(returns: tuple[str, ...], numbers: list[int]) -> bytes:
    """`` PARTIAL (lo:hi set)`` when asked for (§4.4), else nothing."""
    for option in returns:
        if option.startswith("PARTIAL "):
            span = option.split(" ", 1)[1]
            low, high = (int(n) for n in span.split(":"))
            chosen = numbers[low - 1:high]
            from maild.imap.server import _compress
            return b" PARTIAL (" + span.encode() + b" " + (_compress(chosen) if chosen else b"NIL") + b")"
    return b""


def check_tag(session: ImapSession, tag: str, returns: tuple[str, ...] | None) -> None:
    from maild.imap.server import _bad

    if returns and "UPDATE" in returns and tag in _contexts(session).of(session.view):
        raise _bad("Tag already names an UPDATE context")  # RFC 5267 §4.3


def register(session: ImapSession, tag: str, uid: bool, key: SearchKey, returns: tuple[str, ...] | None,
             uids: list[int], criteria: tuple[SortCriterion, ...] = (), fetch: tuple[FetchAtt, ...] = ()) -> None:
    """After a SEARCH or SORT: keep an UPDATE context, or say NOUPDATE (§4.3.1)."""
    if not returns or "UPDATE" not in returns:
        return
    items = _contexts(session).of(session.view)
    if len(items) >= MAX_CONTEXTS or searching.reads_messages(key):
        session._send(b"* NO [NOUPDATE " + wire.string(tag) + b"] Not updating this search")
        return
    view = session.view
    newest = view.uids[-1] if view is not None and view.uids else 0
    items[tag] = _Context(tag, uid, key, list(uids) if criteria else sorted(uids), criteria, fetch, newest)


def cancel(session: ImapSession, tags: tuple[str, ...]) -> None:
    items = _contexts(session).of(session.view)
    for tag in tags:
        items.pop(tag, None)  # RFC 5267 §4.3.5


def _line(context: _Context, item: bytes, pairs: list[tuple[int, int]]) -> bytes:
    """An ESEARCH update of (position, number) pairs: one set at position 0 for SEARCH."""
    from maild.imap.server import _compress

    head = b"* ESEARCH (TAG " + wire.string(context.tag) + b")" + (b" UID" if context.uid else b"")
    if not context.criteria:
        return head + b" " + item + b" (0 " + _compress(sorted(n for _, n in pairs)) + b")"
    return head + b" " + item + b" (" + b" ".join(b"%d %d" % pair for pair in pairs) + b")"


def _remove(context: _Context, gone: set[int]) -> list[tuple[int, int]]:
    """Drop ``gone`` from the results: (position, uid) pairs, last position first."""
    out = [(i + 1, u) for i, u in enumerate(context.uids) if u in gone]
    out.reverse()
    context.uids = [u for u in context.uids if u not in gone]
    return out


def expunged(session: ImapSession, gone: list[tuple[int, int]]) -> None:
    """Before the EXPUNGEs of ``gone`` ((sequence number, uid), numbers still valid)."""
    state = _contexts(session)
    items = state.of(session.view)
    if not items:
        return
    state.dirty = True
    seqs = {uid: seq for seq, uid in gone}
    for context in items.values():
        removed = _remove(context, set(seqs))
        if removed:
            session._send(_line(context, b"REMOVEFROM",
                                [(pos, uid if context.uid else seqs[uid]) for pos, uid in removed]))


def changed(session: ImapSession) -> None:
    """Something in the selected mailbox changed: refresh the contexts at the next chance."""
    _contexts(session).dirty = True


def refresh(session: ImapSession) -> None:
    """After EXISTS and flag updates: ADDTO and REMOVEFROM for what now (no longer) matches."""
    state = session.__dict__.get("_search_contexts")
    if state is None or not state.dirty:
        return  # no context, or nothing changed since its last refresh
    view = session.view
    items = state.of(view)
    if not items or not state.dirty or view is None:
        return
    state.dirty = False
    uids = list(view.uids)
    for context in items.values():
        # RECENT (NEW, OLD) is this session's \Recent now (RFC 3501 §2.3.2, §6.4.4).
        key = searching.bind_recent(context.key, view.recent)
        if context.criteria:
            now = [uid for _, uid in sorting.sort(session.store, session._user(), view.mailbox_id,
                                                  view.uidvalidity, uids, key, context.criteria)]
        else:
            now = [uid for _, uid, _ in searching.search(session.store, session._user(), view.mailbox_id,
                                                           uids, key)]
        removed = _remove(context, set(context.uids) - set(now))
        if removed:
            session._send(_line(context, b"REMOVEFROM", _numbers(view, context, removed)))
        kept = set(context.uids)
        added = [(i + 1, u) for i, u in enumerate(now) if u not in kept]  # first position first
        context.uids = now
        fresh = [u for _, u in added if u > context.newest] if context.fetch else []
        context.newest = uids[-1] if uids else context.newest
        if fresh:
            state.held.append((context, _numbers(view, context, added), fresh))  # invariant 6
        elif added:
            session._send(_line(context, b"ADDTO", _numbers(view, context, added)))


def holding(session: ImapSession) -> bool:
    """ADDTOs wait for the FETCH of their new messages (invariant 6)."""
    state = session.__dict__.get("_search_contexts")
    return state is not None and bool(state.held)


async def fetch_held(session: ImapSession) -> None:
    """RFC 5465 §7: the FETCH of each new message that joined a context with fetch
    attributes, then that context's ADDTO."""
    state = _contexts(session)
    held, state.held = state.held, []
    for context, pairs, fresh in held:
        await session._fetch_uids(fresh, context.fetch)
        if context.tag in state.items and pairs:
            session._send(_line(context, b"ADDTO", pairs))


def _numbers(view: MailboxView, context: _Context, pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    if context.uid:
        return pairs
    out: list[tuple[int, Any]] = [(pos, view.seq_of(u)) for pos, u in pairs]
    return [(pos, n) for pos, n in out if n is not None]
