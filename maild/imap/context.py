"""CONTEXT=SEARCH (RFC 5267 §4): SEARCH RETURN (PARTIAL lo:hi), the CONTEXT hint, and
RETURN (UPDATE) contexts that the server keeps up to date with ADDTO and REMOVEFROM.

Implementation notes — invariants a contributor must keep:

1. A context belongs to the selected mailbox: it lives in :class:`Contexts` beside the
   session's ``MailboxView`` and is dropped with it (any SELECT, EXAMINE, CLOSE or
   UNSELECT), or by CANCELUPDATE (§4.3.5). It remembers the search key, whether the
   command was UID SEARCH, and the matching UIDs.
2. Results are in mailbox order, so every ADDTO and REMOVEFROM uses context position 0
   (§4.3.3, §4.3.4) with the set in mailbox order, numbered as the command was: UIDs for
   UID SEARCH, sequence numbers for SEARCH.
3. Ordering (§4.3.3, §4.3.4): REMOVEFROM for expunged messages goes out before their
   EXPUNGE (``expunged``, with the numbers still valid); the rest of the changes — new
   messages (after their EXISTS) and flag changes — by re-running the search in
   ``refresh``, at the end of each command and during IDLE, only after something changed.
4. Bounded work: at most ``MAX_CONTEXTS`` per session, and only for search keys answered
   from the message records and envelopes (not BODY/TEXT/HEADER reads); otherwise the
   search is answered and ``* NO [NOUPDATE "tag"]`` says no updates follow (§4.3.1). A
   tag already naming an UPDATE context is refused with BAD (§4.3).
5. PARTIAL lo:hi (§4.4) answers ``PARTIAL (lo:hi set)`` with the results at those 1-based
   positions, or NIL when there are none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from maild.imap import search as searching
from maild.imap import wire
from maild.imap.mailbox import MailboxView
from maild.imap.parser import SearchKey

if TYPE_CHECKING:
    from maild.imap.server import ImapSession

MAX_CONTEXTS = 5


@dataclass
class _Context:
    tag: str
    uid: bool
    key: SearchKey
    uids: list[int]  # matching, ascending


@dataclass
class Contexts:
    view: MailboxView | None = None
    items: dict[str, _Context] = field(default_factory=dict)
    dirty: bool = False

    def of(self, view: MailboxView | None) -> dict[str, _Context]:
        if view is not self.view:
            self.view, self.items, self.dirty = view, {}, False
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
             uids: list[int]) -> None:
    """After a SEARCH: keep an UPDATE context, or say NOUPDATE (§4.3.1)."""
    if not returns or "UPDATE" not in returns:
        return
    items = _contexts(session).of(session.view)
    if len(items) >= MAX_CONTEXTS or searching.reads_messages(key):
        session._send(b"* NO [NOUPDATE " + wire.string(tag) + b"] Not updating this search")
        return
    items[tag] = _Context(tag, uid, key, sorted(uids))


def cancel(session: ImapSession, tags: tuple[str, ...]) -> None:
    items = _contexts(session).of(session.view)
    for tag in tags:
        items.pop(tag, None)  # RFC 5267 §4.3.5


def _line(context: _Context, item: bytes, numbers: list[int]) -> bytes:
    from maild.imap.server import _compress

    return (b"* ESEARCH (TAG " + wire.string(context.tag) + b")" + (b" UID" if context.uid else b"")
            + b" " + item + b" (0 " + _compress(sorted(numbers)) + b")")


def expunged(session: ImapSession, gone: list[tuple[int, int]]) -> None:
    """Before the EXPUNGEs of ``gone`` ((sequence number, uid), numbers still valid)."""
    state = _contexts(session)
    items = state.of(session.view)
    if not items:
        return
    state.dirty = True
    for context in items.values():
        members = set(context.uids)
        removed = [(seq, uid) for seq, uid in gone if uid in members]
        if removed:
            context.uids = [u for u in context.uids if u not in {uid for _, uid in removed}]
            session._send(_line(context, b"REMOVEFROM", [uid if context.uid else seq for seq, uid in removed]))


def changed(session: ImapSession) -> None:
    """Something in the selected mailbox changed: refresh the contexts at the next chance."""
    _contexts(session).dirty = True


def refresh(session: ImapSession) -> None:
    """After EXISTS and flag updates: ADDTO and REMOVEFROM for what now (no longer) matches."""
    state = _contexts(session)
    view = session.view
    items = state.of(view)
    if not items or not state.dirty or view is None:
        return
    state.dirty = False
    uids = list(view.uids)
    for context in items.values():
        found = searching.search(session.store, session._user(), view.mailbox_id, uids, context.key)
        now = [uid for _, uid, _ in found]
        before = set(context.uids)
        after = set(now)
        gone = [u for u in context.uids if u not in after]
        new = [u for u in now if u not in before]
        context.uids = now
        if gone:
            session._send(_line(context, b"REMOVEFROM", _numbers(view, context, gone)))
        if new:
            session._send(_line(context, b"ADDTO", _numbers(view, context, new)))


def _numbers(view: MailboxView, context: _Context, uids: list[int]) -> list[int]:
    if context.uid:
        return uids
    out: list[Any] = [view.seq_of(u) for u in uids]
    return [n for n in out if n is not None]
