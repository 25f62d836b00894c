"""Typed values the store hands to its callers; nothing here touches LMDB."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NamedTuple


class StoreError(Exception):
    """Base class of store failures; the message is safe to log, not to show a client."""


class NotFound(StoreError):
    pass


class MailboxNotFound(NotFound):
    pass


class MailboxExists(StoreError):
    pass


class UserExists(StoreError):
    pass


class UserNotFound(NotFound):
    pass


class DomainNotFound(NotFound):
    pass


class QuotaExceeded(StoreError):
    """The user's quota would be exceeded (SMTP 552 5.2.2, IMAP NO [OVERQUOTA])."""


class TooManyEntries(StoreError):
    """A metadata write would leave the user more entries than allowed (IMAP NO [METADATA
    TOOMANY], RFC 5464 §4.3)."""


class ReadOnlyStore(StoreError):
    """This node takes no writes: a replication follower, or a leader fenced by a newer
    epoch (docs/replication.md). SMTP answers 4xx, IMAP NO, so that clients retry."""


class ReplicaTimeout(StoreError):
    """Sync replication: the follower did not confirm a commit in time and the configuration
    says tempfail (the change is committed here; the client is told to try again)."""


class StoreFull(StoreError):
    """The LMDB map or the blob file system is full (SMTP 452 4.3.1)."""


class BlobDamaged(StoreError):
    """A message body no longer matches its sha256: that one message cannot be served
    (IMAP ``NO [SERVERBUG]``, POP3 ``-ERR``); the store has logged the blob's name."""


class FormatError(StoreError):
    """The on-disk format is newer or damaged; the message tells the operator what to do."""


class SpecialUse(enum.StrEnum):
    """RFC 6154 special-use attributes."""

    ALL = "\\All"
    ARCHIVE = "\\Archive"
    DRAFTS = "\\Drafts"
    FLAGGED = "\\Flagged"
    JUNK = "\\Junk"
    SENT = "\\Sent"
    TRASH = "\\Trash"


DEFAULT_MAILBOXES: tuple[tuple[str, SpecialUse | None], ...] = (
    ("INBOX", None),
    ("Sent", SpecialUse.SENT),
    ("Drafts", SpecialUse.DRAFTS),
    ("Junk", SpecialUse.JUNK),
    ("Trash", SpecialUse.TRASH),
    ("Archive", SpecialUse.ARCHIVE),
)

# RFC 3501 §2.3.2 system flags, in the bit order of the message record.
SYSTEM_FLAGS: tuple[str, ...] = ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")
SEEN = "\\Seen"
DELETED = "\\Deleted"


class FlagMode(enum.Enum):
    ADD = "+"
    REMOVE = "-"
    REPLACE = ""


@dataclass(frozen=True)
class User:
    address: str  # canonical lower-case address, the login name
    id: int
    shard: int
    password_hash: str
    quota_bytes: int  # 0: unlimited
    created: float


@dataclass(frozen=True)
class Domain:
    name: str
    created: float
    catch_all: str | None = None  # address receiving mail for unknown local parts


@dataclass(frozen=True)
class Mailbox:
    id: int
    name: str
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    special_use: SpecialUse | None
    messages: int
    unseen: int
    size: int
    # RFC 3501 §2.3.2: the highest UID some session has already been told of as \Recent;
    # a message above it is recent for the next session that selects the mailbox.
    recent_uid: int = 0
    keywords: tuple[str, ...] = ()  # every keyword its messages have carried, in first-use order


@dataclass(frozen=True)
class Envelope:
    """The RFC 3501 §7.4.2 envelope fields, as raw header values (RFC 2047 left encoded)."""

    date: str | None = None
    subject: str | None = None
    from_: str | None = None
    sender: str | None = None
    reply_to: str | None = None
    to: str | None = None
    cc: str | None = None
    bcc: str | None = None
    in_reply_to: str | None = None
    message_id: str | None = None
    references: str | None = None


class MessageMeta(NamedTuple):
    """Per-message metadata; a NamedTuple because FETCH 1:* builds one per message and a
    frozen dataclass costs several times more to construct."""

    uid: int
    flags: frozenset[str]
    internal_date: float  # seconds since the epoch
    size: int  # octets as served: prefix + blob
    modseq: int
    blob: str  # sha256 hex of the blob
    prefix_len: int
    save_date: float | None = None  # RFC 8514: when saved into this mailbox; None if not recorded


@dataclass(frozen=True)
class ExpungeResult:
    uids: list[int]  # the messages expunged (those already gone are left out)
    modseq: int  # the mailbox's mod-sequence the expunge made; 0 when it expunged nothing


@dataclass(frozen=True)
class AppendResult:
    user: str
    mailbox_id: int
    uidvalidity: int
    uid: int
    modseq: int


@dataclass(frozen=True)
class FlagResult:
    uid: int
    flags: frozenset[str]
    modseq: int


@dataclass(frozen=True)
class CopyResult:
    uidvalidity: int
    pairs: list[tuple[int, int]]  # (source uid, destination uid), in source order


@dataclass(frozen=True)
class Recipient:
    """One local delivery of a shared blob: the per-recipient header prefix
    (Return-Path, Delivered-To) lives in the message record, not in the blob, so the
    body is stored once for any number of recipients."""

    user: str
    mailbox: str = "INBOX"
    flags: frozenset[str] = frozenset()
    prefix: bytes = b""


class ChangeKind(enum.StrEnum):
    APPEND = "append"
    FLAGS = "flags"
    EXPUNGE = "expunge"
    MAILBOX_CREATE = "mailbox-create"
    MAILBOX_RENAME = "mailbox-rename"
    MAILBOX_DELETE = "mailbox-delete"
    METADATA = "metadata"  # extra: {"entries": names set or removed}; mailbox_id 0: the user's own
    # name: the mailbox name (that need not exist), mailbox_id 0 (RFC 5465 SubscriptionChange)
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    USER_DELETE = "user-delete"  # the user's partition was removed; mailbox_id 0


@dataclass(frozen=True)
class Change:
    """One committed change, from a shard's change log (delivered after commit)."""

    shard: int
    seq: int
    kind: ChangeKind
    user: str
    mailbox_id: int
    uids: tuple[int, ...] = ()
    modseq: int = 0
    flags: tuple[frozenset[str], ...] = ()  # per uid, for FLAGS
    name: str | None = None  # mailbox name, for mailbox changes
    extra: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Quota:
    used_bytes: int
    limit_bytes: int  # 0: unlimited
    messages: int
