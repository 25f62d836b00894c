"""LIST and LSUB (RFC 3501 §6.3.8-9, RFC 9051 §6.3.9) with LIST-EXTENDED (RFC 5258),
LIST-STATUS (RFC 5819), SPECIAL-USE (RFC 6154) and CHILDREN (RFC 3348).
:class:`ListCommands` is a mixin of :class:`maild.imap.server.ImapSession`, which
dispatches ``_do_list``/``_do_lsub`` to it; the session state it reads is declared on it.

Implementation notes — invariants a contributor must keep:

1. The subscription list is a list of names kept apart from the mailboxes (RFC 5258 §3):
   LIST (SUBSCRIBED) and LSUB list it, so a subscribed name may have no mailbox
   (``\\NonExistent``); plain LIST lists the mailboxes.
2. Superiors of listed names are candidates too: ``%`` matches them, LSUB shows an
   unsubscribed parent of a subscribed child as ``\\Noselect`` (RFC 3501 §6.3.9), and
   RECURSIVEMATCH answers CHILDINFO (RFC 5258 §3.5).
3. A reference or pattern that is not valid mUTF-7 matches nothing and LIST answers OK
   (a BAD is for syntax errors); INBOX matches case-insensitively (RFC 3501 §5.1).
4. LIST-STATUS items are checked before the first LIST line (IMAP4rev2 refuses RECENT), so
   a refused command writes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from maild.imap import imap4rev2, wire
from maild.imap.commands import ListCommand
from maild.imap.names import BadName

if TYPE_CHECKING:
    from maild.imap.server import ImapSession
    from maild.store import Store
    from maild.store.types import Mailbox


class ListCommands:
    """LIST and LSUB, mixed into :class:`maild.imap.server.ImapSession`."""

    # Session state LIST reads, set by ImapSession.
    store: Store
    utf8: bool

    if TYPE_CHECKING:
        def _user(self) -> str: ...
        def _send(self, line: bytes) -> None: ...
        def _send_status(self, mailbox: Mailbox, items: tuple[str, ...]) -> None: ...

    async def _do_list(self, cmd: ListCommand) -> None:
        user = self._user()
        mailboxes = self.store.mailboxes(user)
        lsub = cmd.name == "LSUB"
        if "STATUS" in cmd.returns:
            imap4rev2.check_status_items(cast("ImapSession", self), cmd.status)  # before any LIST response
        if cmd.patterns == ("",) and not cmd.extended:
            # RFC 3501 §6.3.8: the hierarchy delimiter and root.
            self._send(b'* %s (\\Noselect) "/" ""' % cmd.name.encode())
            return
        patterns = tuple(p for p in cmd.patterns if not isinstance(p, BadName))
        if isinstance(cmd.reference, BadName) or not patterns:
            return  # a name that is not valid mUTF-7 matches nothing; LIST is still OK
        matcher = _pattern_matcher(cmd.reference, patterns)
        by_name = {m.name: m for m in mailboxes}
        subscribed_only = lsub or "SUBSCRIBED" in cmd.selection
        want_subscribed = subscribed_only or "SUBSCRIBED" in cmd.returns
        subscribed = set(self.store.subscriptions(user)) if want_subscribed else set()
        # RFC 5258 §3: LIST (SUBSCRIBED) lists the subscription list, which may name
        # mailboxes that do not exist; plain LIST the mailboxes. Their superiors are
        # candidates too ('%' matches, LSUB's \Noselect parents, RECURSIVEMATCH).
        names = set(subscribed if subscribed_only else by_name)
        for name in list(names):
            parts = name.split("/")
            names.update("/".join(parts[:i]) for i in range(1, len(parts)))
        recursive = "RECURSIVEMATCH" in cmd.selection
        for name in sorted(names, key=lambda n: (n != "INBOX", n)):
            if not matcher(name):
                continue
            mailbox = by_name.get(name)
            prefix = name + "/"
            attrs: list[str] = []
            subscribed_child = subscribed_only and any(s.startswith(prefix) for s in subscribed)
            childinfo = recursive and subscribed_child  # RFC 5258 §3.5 (RFC 9051 §6.3.9's table)
            if subscribed_only and name not in subscribed:
                if not subscribed_child:
                    continue
                if lsub:
                    # RFC 3501 §6.3.9: a '%' that stops above a subscribed name shows its
                    # unsubscribed parent as \Noselect; with '*' the child itself matches.
                    if any(matcher(s) for s in subscribed if s.startswith(prefix)):
                        continue
                    attrs.append("\\Noselect")
                elif not recursive:
                    continue
            if "SPECIAL-USE" in cmd.selection and not (mailbox and mailbox.special_use):
                continue
            if not lsub:
                if mailbox is None:
                    # Implies \Noselect (RFC 5258 §3.4); said too for RFC 3501 clients.
                    attrs += ["\\NonExistent"] if cmd.extended else ["\\NonExistent", "\\Noselect"]
                elif any(n.startswith(prefix) for n in by_name):
                    attrs.append("\\HasChildren")
                else:
                    attrs.append("\\HasNoChildren")
                if mailbox is not None and mailbox.special_use is not None:
                    attrs.append(mailbox.special_use.value)  # RFC 6154 §2
                if want_subscribed and name in subscribed:
                    attrs.append("\\Subscribed")
            elif mailbox is None and "\\Noselect" not in attrs:
                attrs.append("\\Noselect")  # a subscribed name whose mailbox is gone
            line = b"* %s (%s) \"/\" %s" % (cmd.name.encode(), " ".join(attrs).encode(), wire.mailbox(name, self.utf8))
            if childinfo:
                line += b' ("CHILDINFO" ("SUBSCRIBED"))'
            self._send(line)
            if "STATUS" in cmd.returns and mailbox is not None:
                self._send_status(mailbox, cmd.status)  # RFC 5819

    _do_lsub = _do_list


def _pattern_matcher(reference: str, patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """RFC 3501 §6.3.8: ``*`` matches anything, ``%`` anything but the delimiter."""
    regexes = []
    for pattern in patterns:
        full = reference + pattern
        out = "".join(".*" if ch == "*" else "[^/]*" if ch == "%" else re.escape(ch) for ch in full)
        regexes.append((re.compile(out + r"\Z", re.DOTALL),
                        re.compile(out + r"\Z", re.DOTALL | re.IGNORECASE)))

    def match(name: str) -> bool:
        # INBOX is case-insensitive (RFC 3501 §5.1).
        return any(exact.match(name) or (name == "INBOX" and folded.match(name))
                   for exact, folded in regexes)
    return match
