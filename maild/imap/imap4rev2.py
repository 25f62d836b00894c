"""IMAP4rev2 (RFC 9051), advertised beside IMAP4rev1 as Dovecot 2.4 and Stalwart do: a
session is IMAP4rev1 (RFC 3501) until the client sends ``ENABLE IMAP4rev2`` (RFC 9051
§6.3.1), then RFC 9051's rules hold for the rest of it (Appendix E, "Changes from RFC 3501").

Implementation notes — invariants a contributor must keep:

1. Everything RFC 9051 folds in from extensions is offered to both kinds of session
   (UNSELECT, UIDPLUS, MOVE, ESEARCH, SEARCHRES, ENABLE, IDLE, SASL-IR, LIST-EXTENDED,
   LIST-STATUS, LITERAL+ (which is more than LITERAL-), BINARY, SPECIAL-USE, STATUS=SIZE,
   NAMESPACE, CHILDREN, ID); only what differs between the two protocols is switched here.
2. No \\Recent (Appendix E): ``ImapSession.recent_flag`` is False, so no session
   claims or shows it (no RECENT response, no \\Recent in FLAGS), STATUS RECENT and the
   SEARCH keys RECENT, NEW and OLD are not in the grammar and answer BAD (§6.3.11, §6.4.4).
3. SEARCH answers ESEARCH (§6.4.4, §7.3.4): without RETURN it is ``RETURN (ALL)``; SORT
   and THREAD are extensions and keep their own responses.
4. Mailbox names are UTF-8 both ways (§5.1; no modified UTF-7), which is the session's
   ``utf8`` switch also set by UTF8=ACCEPT; unlike RFC 6855 SEARCH still takes CHARSET
   (§6.4.4: US-ASCII and UTF-8).
5. SELECT and EXAMINE send the mailbox's LIST response and no UNSEEN response code
   (§6.3.2: FLAGS, EXISTS, LIST are required; UNSEEN was removed, Appendix E).
6. STATUS DELETED (§6.3.11, the messages with \\Deleted) is offered to every session.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from maild.imap import wire
from maild.imap.commands import SearchKey, SearchOp
from maild.store.types import Mailbox

if TYPE_CHECKING:
    from maild.imap.server import ImapSession


def enable(session: ImapSession) -> bool:
    """ENABLE IMAP4rev2 (RFC 9051 §6.3.1); False when it already was."""
    if session.rev2:
        return False
    session.rev2 = True
    session.recent_flag = False  # invariant 2
    session.utf8 = True  # invariant 4
    return True


def check_search_key(session: ImapSession, key: SearchKey) -> None:
    """Invariant 2: RECENT, NEW and OLD are not IMAP4rev2 search keys (§6.4.4)."""
    if session.rev2 and _uses_recent(key):
        from maild.imap.server import _bad
        raise _bad("RECENT, NEW and OLD are not IMAP4rev2 search keys")


def _uses_recent(key: SearchKey) -> bool:
    return key.op is SearchOp.RECENT or any(_uses_recent(k) for k in key.children)


def check_status_items(session: ImapSession, items: tuple[str, ...]) -> None:
    """Invariant 2: STATUS RECENT is not an IMAP4rev2 status item (§6.3.11)."""
    if session.rev2 and "RECENT" in items:
        from maild.imap.server import _bad
        raise _bad("RECENT is not an IMAP4rev2 status item")


def search_returns(session: ImapSession, returns: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """Invariant 3: an IMAP4rev2 SEARCH without RETURN is RETURN (ALL)."""
    return ("ALL",) if session.rev2 and returns is None else returns


def select_list(session: ImapSession, mailbox: Mailbox, others: list[str]) -> bytes:
    """Invariant 5: the selected mailbox's LIST response (§6.3.2), with the attributes plain
    LIST gives it: children (RFC 9051 §7.3.1) and special use."""
    prefix = mailbox.name + "/"
    attrs = ["\\HasChildren" if any(n.startswith(prefix) for n in others) else "\\HasNoChildren"]
    if mailbox.special_use is not None:
        attrs.append(mailbox.special_use.value)
    return b'* LIST (%s) "/" %s' % (" ".join(attrs).encode(), wire.mailbox(mailbox.name, session.utf8))
