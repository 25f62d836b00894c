"""SEARCHRES (RFC 5182), part of IMAP4rev2 (RFC 9051 §6.4.4): ``SEARCH RETURN (SAVE)``
keeps the matching messages as the session's ``$``, which FETCH, STORE, COPY, MOVE, UID
EXPUNGE, SEARCH, SORT and THREAD (and their UID forms) accept as a sequence set.

Implementation notes — invariants a contributor must keep:

1. The saved result is UIDs of the selected mailbox (``MailboxView.saved``), so it follows
   expunges without work: an expunged UID resolves to nothing and UIDs are never reused.
   SELECT, EXAMINE, UNSELECT and CLOSE end the view and with it ``$``: a new view starts
   empty (§2.1). ``$`` is the same messages in the sequence-number and the UID forms.
2. A SEARCH or SORT with SAVE empties ``$`` before it runs, so one that fails leaves it
   empty (§2.1).
3. ``$`` in a search key is replaced by its UIDs (``bind``) before the key is evaluated or
   kept by a CONTEXT=SEARCH update: ``maild.imap.search`` never sees it.
4. SAVE with MIN and/or MAX but neither ALL nor COUNT saves only those messages; otherwise
   every match. SAVE alone sends no ESEARCH response (§2.4).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from maild.imap import search as searching
from maild.imap.commands import SearchKey, SearchOp

if TYPE_CHECKING:
    from maild.imap.mailbox import MailboxView


def saving(returns: tuple[str, ...] | None) -> bool:
    return returns is not None and "SAVE" in returns


def start(view: MailboxView, returns: tuple[str, ...] | None) -> None:
    """Invariant 2: a SAVE search empties ``$`` first."""
    if saving(returns):
        view.saved = frozenset()


def answers(returns: tuple[str, ...]) -> bool:
    """Whether an ESEARCH response is due: not for SAVE alone (§2.4)."""
    return any(option != "SAVE" for option in returns)


def save(view: MailboxView, returns: tuple[str, ...] | None, uids: list[int]) -> None:
    """Keep the result of a SAVE search; ``uids`` in the order of the answer (MIN first)."""
    if not saving(returns) or not uids:
        return
    assert returns is not None
    options = set(returns)
    if options & {"MIN", "MAX"} and not options & {"ALL", "COUNT"}:
        kept = ([uids[0]] if "MIN" in options else []) + ([uids[-1]] if "MAX" in options else [])
        view.saved = frozenset(kept)
    else:
        view.saved = frozenset(uids)


def bind(key: SearchKey, view: MailboxView) -> SearchKey:
    """``key`` with every ``$`` replaced by the saved UIDs (invariant 3)."""
    def uses(k: SearchKey) -> bool:
        return bool(k.op in (SearchOp.SEQ, SearchOp.UID) and getattr(k.value, "saved", False)) \
            or any(uses(c) for c in k.children)
    if not uses(key):
        return key
    bound = searching.uid_set_key(view.saved)

    def replace(k: SearchKey) -> SearchKey:
        if k.op in (SearchOp.SEQ, SearchOp.UID) and getattr(k.value, "saved", False):
            return bound
        if not k.children:
            return k
        return SearchKey(k.op, k.value, tuple(replace(c) for c in k.children))
    return replace(key)
