"""OBJECTID (RFC 8474): stable ids of mailboxes, messages and threads.

Implementation notes — invariants a contributor must keep:

1. Each id is derived from what the store already keeps, never stored itself, and
   matches ``objectid = 1*255(ALPHA / DIGIT / "_" / "-")`` (RFC 8474 §7): a letter for
   the kind (F, M, T) and 24 hex digits of a BLAKE2b digest.
2. MAILBOXID (§4) comes from the user, the mailbox's store id and its UIDVALIDITY: RENAME
   keeps both (the id survives, §4.1), while a mailbox deleted and created again gets a new
   store id and a new UIDVALIDITY (so a new MAILBOXID). RENAME of INBOX moves its messages
   to a new mailbox, which gets a new id; INBOX keeps its own.
3. EMAILID (§5.1) comes from the message's content as served: its blob's SHA-256 and the
   length of its per-recipient prefix. COPY and MOVE keep both, so the id survives them
   (§5.1: MOVE MUST keep it); identical content has the same id, which §5.1 allows.
4. THREADID (§5.2) comes from the thread's root Message-ID: the first id of References,
   else In-Reply-To's, else the message's own; a message with none of them is a thread of
   its own (its EMAILID's digest). Messages of one conversation thus share it, and it never
   changes, since a message's headers never do.
"""

from __future__ import annotations

import hashlib
import re

from maild.store.types import Envelope, Mailbox, MessageMeta

_DIGEST = 12  # octets: 24 hex digits
_MSG_ID = re.compile(r"<[^<>\s]+>")  # RFC 5322 §3.6.4 msg-id, as THREAD's REFERENCES reads it


def _digest(*parts: object) -> str:
    return hashlib.blake2b("\0".join(str(p) for p in parts).encode("utf-8", "surrogateescape"),
                           digest_size=_DIGEST).hexdigest()


def mailbox_id(user: str, mailbox: Mailbox) -> str:
    return "F" + _digest("mailbox", user, mailbox.id, mailbox.uidvalidity)


def email_id(meta: MessageMeta) -> str:
    return "M" + _digest("email", meta.blob, meta.prefix_len)


def thread_id(envelope: Envelope, meta: MessageMeta) -> str:
    root = (_MSG_ID.findall(envelope.references or "")[:1]
            or _MSG_ID.findall(envelope.in_reply_to or "")[:1]
            or _MSG_ID.findall(envelope.message_id or "")[:1])
    if not root:
        return "T" + _digest("email", meta.blob, meta.prefix_len)
    return "T" + _digest("thread", root[0])


def response_code(user: str, mailbox: Mailbox) -> str:
    """``MAILBOXID (id)``, the response code of SELECT, EXAMINE and CREATE (§4.1, §4.2)."""
    return f"MAILBOXID ({mailbox_id(user, mailbox)})"
