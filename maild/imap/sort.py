"""SORT (RFC 5256 §3) with RFC 5957's DISPLAYFROM and DISPLAYTO: the messages a search
key matches, ordered by keys taken from their message records and stored envelopes.

Strings compare under i;ascii-casemap (RFC 5256 §3: ASCII letters folded, other octets
as they are), display names under i;unicode-casemap (RFC 5957 §3, here case folding).
Messages equal under every criterion keep their sequence order, REVERSE or not.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

from maild.imap import mime
from maild.imap import search as searching
from maild.imap.parser import SearchKey, SortCriterion, SortKey
from maild.store.types import Envelope, MessageMeta

# RFC 5256 §2.1 ABNF, matched case-insensitively on the decoded subject.
_BLOB = r"\[[^\[\]]*\][ \t]*"  # subj-blob: "[" *BLOBCHAR "]" *WSP
_TRAILER = re.compile(r"(?:\(fwd\)|[ \t])\Z", re.IGNORECASE)  # subj-trailer
_LEADER = re.compile(rf"(?:(?:{_BLOB})*(?:re|fwd?)[ \t]*(?:{_BLOB})?:|[ \t])", re.IGNORECASE)
_LEADING_BLOB = re.compile(_BLOB)
_FWD_HEADER = re.compile(r"\[fwd:", re.IGNORECASE)  # subj-fwd-hdr
_WHITESPACE = re.compile(r"[ \t\r\n]+")


def base_subject(subject: str | None) -> str:
    """The base subject of RFC 5256 §2.1: encoded words decoded, runs of white space made
    one space, and reply and forward markers ("Re:", "Fwd:", "[list]", "(fwd)") removed."""
    text = _WHITESPACE.sub(" ", mime.header_text(subject or ""))  # step 1
    while True:
        while (trailer := _TRAILER.search(text)) is not None:  # step 2
            text = text[:trailer.start()]
        while True:  # steps 3 to 5
            before = text
            while (leader := _LEADER.match(text)) is not None and leader.end():
                text = text[leader.end():]
            blob = _LEADING_BLOB.match(text)
            if blob is not None and blob.end() < len(text):  # step 4: not the whole subject
                text = text[blob.end():]
            if text == before:
                break
        # Step 6: "[fwd: subject]" is the subject forwarded.
        if _FWD_HEADER.match(text) and text.endswith("]"):
            text = text[5:-1]
            continue
        return text


def _ascii_casemap(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape").upper()  # bytes.upper() folds ASCII only


def _first_mailbox(value: str | None) -> tuple[str, str]:
    """(display name, addr-spec) of a header's first mailbox; empty strings when none."""
    if not value:
        return "", ""
    for name, address in mime.address_pairs(value):
        if name or address:
            return mime.header_text(name), address
    return "", ""


def _addr_mailbox(value: str | None) -> bytes:
    """RFC 5256 §3 FROM, TO, CC: the local part ([IMAP] addr-mailbox) of the first address."""
    address = _first_mailbox(value)[1]
    return _ascii_casemap(address.rpartition("@")[0] if "@" in address else address)


def _display(value: str | None) -> str:
    """RFC 5957 §3: the first mailbox's display name, or its addr-spec when it has none."""
    name, address = _first_mailbox(value)
    return (name.strip() or address).casefold()


def _sent_date(envelope: Envelope, meta: MessageMeta) -> float:
    """RFC 5256 §3 DATE: the Date header in UTC, or the internal date when it has none."""
    if envelope.date:
        try:
            return parsedate_to_datetime(envelope.date).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            pass
    return meta.internal_date


_ENVELOPE_KEYS: dict[SortKey, Callable[[Envelope, MessageMeta], Any]] = {
    SortKey.CC: lambda env, meta: _addr_mailbox(env.cc),
    SortKey.DATE: _sent_date,
    SortKey.FROM: lambda env, meta: _addr_mailbox(env.from_),
    SortKey.SUBJECT: lambda env, meta: _ascii_casemap(base_subject(env.subject)),
    SortKey.TO: lambda env, meta: _addr_mailbox(env.to),
    SortKey.DISPLAYFROM: lambda env, meta: _display(env.from_),
    SortKey.DISPLAYTO: lambda env, meta: _display(env.to),
}
_RECORD_KEYS: dict[SortKey, Callable[[MessageMeta], Any]] = {
    SortKey.ARRIVAL: lambda meta: meta.internal_date,
    SortKey.SIZE: lambda meta: meta.size,
}


def sort(store: Any, user: str, mailbox_id: int, uids: list[int], key: SearchKey,
         criteria: tuple[SortCriterion, ...]) -> list[tuple[int, int]]:
    """(sequence number, uid) of the messages of ``uids`` matching ``key``, sorted. Reads
    every match's record and, for envelope criteria, its envelope: run off the reactor."""
    found = searching.search(store, user, mailbox_id, uids, key)
    if not found:
        return []
    matched = [uid for _, uid, _ in found]
    metas = {m.uid: m for m in store.messages(user, mailbox_id, matched)}
    envelopes: dict[int, Envelope] = {}
    if any(c.key in _ENVELOPE_KEYS for c in criteria):
        wanted = set(matched)
        envelopes = {uid: stored.envelope for uid, stored in store.envelopes(user, mailbox_id) if uid in wanted}
    rows = [(seq, uid) for seq, uid, _ in found if uid in metas]  # in sequence order
    empty = Envelope()
    # Stable sorts from the last criterion to the first: ties keep the order the later
    # criteria, and finally the sequence numbers, gave them (RFC 5256 §3).
    for criterion in reversed(criteria):
        record_key = _RECORD_KEYS.get(criterion.key)
        if record_key is not None:
            values = {uid: record_key(metas[uid]) for _, uid in rows}
        else:
            envelope_key = _ENVELOPE_KEYS[criterion.key]
            values = {uid: envelope_key(envelopes.get(uid, empty), metas[uid]) for _, uid in rows}
        rows.sort(key=lambda row: values[row[1]], reverse=criterion.reverse)
    return rows
