"""Does a message contain a text? The one exact matcher (RFC 3501 §6.4.4: case-insensitive
substring), used by IMAP SEARCH's scan (maild/imap/search.py) and by the search service to
verify the index's candidates: an answer from the index equals the scan's because both end
here.

Implementation notes — invariants a contributor must keep:

1. Comparison is ``needle.casefold() in text.casefold()`` over the texts of
   :mod:`maild.util.text`; the index (maild/search/index.py) stores the n-grams of exactly
   these casefolded texts, field by field (:func:`field_texts`), so what it rules out the
   matcher would have refused too.
2. Envelope fields (From, To, Cc, Bcc, Subject, ...) are read from the stored envelope; an
   address field also matches its parsed form (names decoded, comments gone).
3. A message read raises NotFound/FileNotFoundError when it was expunged meanwhile: the
   caller skips it (RFC 2180 §4.1).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING

from maild.store.codec import EnvelopeFilter, StoredEnvelope
from maild.store.types import Envelope, MessageMeta
from maild.util import address
from maild.util.text import all_headers_text, attachment_names, body_text, header_text, header_values

if TYPE_CHECKING:
    from maild.store import Store

# header name -> the Envelope attribute holding its first value
ENVELOPE_HEADERS = {"from": "from_", "to": "to", "cc": "cc", "bcc": "bcc", "subject": "subject",
                    "date": "date", "message-id": "message_id", "in-reply-to": "in_reply_to",
                    "sender": "sender", "reply-to": "reply_to", "references": "references"}
# Address fields: SEARCH FROM/TO/CC/BCC match the parsed addresses too (RFC 3501 §6.4.4
# "contains the specified string"; a comment or folding may split the address's text).
ADDRESS_FIELDS = {"from_", "to", "cc", "bcc", "sender", "reply_to"}


class Message:
    """Lazily loaded facts about one message during a search."""

    def __init__(self, store: Store, user: str, mailbox_id: int, uid: int, seq: int,
                 meta: MessageMeta | None, stored: StoredEnvelope | None = None) -> None:
        self.store = store
        self.user = user
        self.mailbox_id = mailbox_id
        self.uid = uid
        self.seq = seq
        self.meta = meta
        self._stored = stored  # from the search's scan of the mailbox's envelopes
        self._envelope: Envelope | None = None
        self._raw: bytes | None = None
        self._text: dict[str, str] = {}
        # The search index's exact answers (key -> matching uids), when it vouches for
        # this message: the scan's answer without reading it (docs/search.md).
        self.known: dict[int, set[int]] | None = None

    def envelope(self) -> Envelope:
        if self._envelope is None:
            self._envelope = (self._stored.envelope if self._stored is not None
                              else self.store.envelope(self.user, self.mailbox_id, self.uid))
        return self._envelope

    def envelope_may_contain(self, needle: str, attr: str) -> bool:
        return self._stored is None or _needle_filter(needle, attr in ADDRESS_FIELDS).admits_stored(self._stored)

    def raw(self) -> bytes:
        if self._raw is None:
            self._raw = self.store.read(self.user, self.mailbox_id, self.uid, verify=False)
        return self._raw

    def cached(self, name: str, make: Callable[[], str]) -> str:
        if name not in self._text:
            self._text[name] = make().casefold()
        return self._text[name]


def header_contains(msg: Message, name: str, needle: str) -> bool:
    """SEARCH HEADER name needle (and FROM, TO, CC, BCC, SUBJECT)."""
    attr = ENVELOPE_HEADERS.get(name.lower())
    folded = needle.casefold()
    if attr is not None:
        if not msg.envelope_may_contain(needle, attr):
            return False
        value = getattr(msg.envelope(), attr)
        if value is None:
            return False
        if folded in msg.cached("h:" + attr, lambda: header_text(value)):
            return True
        # The parsed addresses only when the text did not match and could differ from them
        # (comments, quotes, groups, routes, spacing); one plain mailbox is its own parse.
        return attr in ADDRESS_FIELDS and not address.is_simple(value) \
            and folded in msg.cached("a:" + attr, lambda: address_text(value))
    return any(folded in v.casefold() for v in header_values(msg.raw(), name))


def body_contains(msg: Message, needle: str) -> bool:
    """SEARCH BODY: the decoded text of the text parts."""
    return needle.casefold() in msg.cached("body", lambda: body_text(msg.raw()))


def text_contains(msg: Message, needle: str) -> bool:
    """SEARCH TEXT: the header, the text parts and the attachments' file names (the MIME
    headers that name them are in the body, RFC 3501 §6.4.4)."""
    folded = needle.casefold()
    return (folded in msg.cached("headers", lambda: all_headers_text(msg.raw()))
            or folded in msg.cached("body", lambda: body_text(msg.raw()))
            or folded in msg.cached("names", lambda: "\n".join(attachment_names(msg.raw()))))


def address_text(value: str) -> str:
    """The parsed addresses of a header as ``Name <local@domain>, ...`` (names decoded,
    comments gone, a group by its name)."""
    out = []
    for a in address.parse(value):
        if a.is_group_end:
            continue
        name = header_text(a.name) if a.name else ""
        out.append(f"{name} <{a.addr_spec}>" if name and not a.is_group_start else a.addr_spec)
    return ", ".join(out)


def envelope_text(attr: str, value: str) -> str:
    """Every text :func:`header_contains` compares for an envelope field (the index holds
    the n-grams of it): the decoded value, and for an address field its parsed form."""
    text = header_text(value)
    if attr in ADDRESS_FIELDS and not address.is_simple(value):  # as header_contains reads it
        return text + "\n" + address_text(value)
    return text


def needle_clauses(needle: str, addresses: bool) -> list[list[str]]:
    """What the stored envelope must contain for ``needle`` to match: the needle, or for an
    address field each of its pieces between '@', '.' and spaces (which comments and
    folding may separate in the header)."""
    if not addresses:
        return [[needle]]
    return [[piece] for piece in re.split(r"[@.\s]+", needle) if piece]


@lru_cache(maxsize=256)
def _needle_filter(needle: str, addresses: bool = False) -> EnvelopeFilter:
    """The filter for a header key's text, made once (it is asked once per message)."""
    return EnvelopeFilter(needle_clauses(needle, addresses))
