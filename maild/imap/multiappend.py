"""MULTIAPPEND (RFC 3502): APPEND with one or more messages, atomically.

Implementation notes — invariants a contributor must keep:

1. All or nothing (RFC 3502 §6.3.11): the messages of one APPEND go to the store as one
   operation of one commit (``Store.append_many``); when any fails (quota, the mailbox
   deleted meanwhile, the store full) the mailbox is as before and the answer is NO.
2. A zero-length message literal is an error answered NO, which cancels the whole APPEND
   (RFC 3502 §6.3.11); this holds for a single-message APPEND too, since the extension
   redefines the command.
3. Memory is bounded before any data is read: the framer checks each literal against
   APPENDLIMIT and the whole command against APPENDLIMIT + ``max_command_size``, and the
   parser takes at most ``parser.MAX_MULTIAPPEND`` messages.
4. CATENATE messages (RFC 4469) are built (``catenate.build``) before any is stored, so a
   bad URL in any of them appends nothing.
5. The answer carries APPENDUID with the uid-set of the new messages in the order given
   (RFC 3502 "MULTIAPPEND Interaction with UIDPLUS Extension", RFC 4315 §3), and, when the
   target is the selected mailbox, EXISTS for all of them before the tagged OK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from maild.imap import catenate
from maild.imap.commands import Append, AppendMessage, MultiAppend

if TYPE_CHECKING:
    from maild.imap.server import ImapSession


async def append(session: ImapSession, cmd: Append | MultiAppend) -> str:
    """Run an APPEND of several messages (or of an empty one); the tagged OK's code."""
    from maild.imap.server import _compress, _no  # the session's module, loaded by now

    messages: tuple[AppendMessage | Append, ...] = tuple(cmd.messages) if isinstance(cmd, MultiAppend) else (cmd,)
    if any(not m.message and not getattr(m, "catenate", ()) for m in messages):
        raise _no("A zero-length message cancels the APPEND")  # RFC 3502 §6.3.11
    mailbox = session._mailbox(cmd.mailbox, "TRYCREATE")  # RFC 3501 §6.3.11
    raws = [catenate.build(session, parts) if (parts := getattr(m, "catenate", ())) else m.message
            for m in messages]
    results = await session.store.append_many(
        session._user(), mailbox.id,
        [(raw, m.flags, m.date.timestamp() if m.date else None) for raw, m in zip(raws, messages, strict=True)])
    uids = [r.uid for r in results]
    view = session.view
    if view is not None and view.mailbox_id == mailbox.id:
        view.note_new(tuple(uids))  # EXISTS in this response
        session._notify_own_new(tuple(uids))
    return f"APPENDUID {results[0].uidvalidity} {_compress(uids).decode()}"
