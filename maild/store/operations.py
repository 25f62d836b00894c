"""The store's write operations: each ``op_*`` returns a function of a writer
:class:`~maild.store.writer.Batch` that the shard's writer thread runs inside one LMDB write
transaction, with every other operation of its group commit.

Implementation notes — invariants a contributor must keep:

1. An operation changes LMDB only through ``b.txn`` (so the replication redo log records
   it, maild/store/redo.py) and records what happened with :func:`_change` in the same
   transaction: the change log is the bus (docs/architecture.md).
2. An operation that raises leaves nothing: the writer runs it again in a nested
   transaction of its own (writer.py), so partial writes never commit.
3. Counters (messages, used bytes, unseen, HIGHESTMODSEQ, blob reference counts) change in
   the same operation as the records they count; ``maild fsck`` recomputes them from the
   records.
4. Bodies are referenced by sha256; a reference count that reaches 0 queues the blob file
   for removal after the commit (``b.unlink``), never before.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from maild.store import codec
from maild.store.codec import MessageRecord, jdump, jload, mbox_key, msg_key

# "subs": the subscription list, (user id, mailbox name) -> b"", names that need not exist
# (RFC 3501 §6.3.6, §6.3.9).
from maild.store.shard import mailbox_uids
from maild.store.types import (
    SEEN,
    ChangeKind,
    ExpungeResult,
    FlagMode,
    FlagResult,
    MailboxExists,
    MailboxNotFound,
    NotFound,
    QuotaExceeded,
    SpecialUse,
    TooManyEntries,
)
from maild.store.writer import Batch

MAX_KEYWORDS = 1000  # keywords remembered per mailbox (for IMAP's FLAGS, RFC 3501 §7.2.6)

# Mailbox and user records decoded, by their exact stored bytes. Every append reads and
# rewrites both, and the bytes it reads are nearly always those the previous write to the
# same record produced: decoding them is then a copy of what was encoded. Keyed by
# content, so an entry is never stale, whoever wrote the bytes.
_DECODED: dict[bytes, dict[str, Any]] = {}
_DECODED_MAX = 16_384


def _load_record(raw: bytes) -> dict[str, Any]:
    cached = _DECODED.get(raw)
    return dict(cached) if cached is not None else jload(raw)


def _dump_record(record: dict[str, Any]) -> bytes:
    data = jdump(record)
    if len(_DECODED) >= _DECODED_MAX:
        _DECODED.clear()
    # The values are str, int, bool, None or a list never changed in place: a shallow copy.
    _DECODED[data] = dict(record)
    return data


def _uinfo(b: Batch, user_id: int) -> dict[str, Any]:
    raw = b.txn.get(codec.u32(user_id), db=b.dbs["uinfo"])
    if raw is None:
        raise NotFound(f"user id {user_id} has no partition in this shard")
    return _load_record(raw)


def _put_uinfo(b: Batch, user_id: int, info: dict[str, Any]) -> None:
    b.txn.put(codec.u32(user_id), _dump_record(info), db=b.dbs["uinfo"])


def _mbox(b: Batch, user_id: int, mailbox_id: int) -> dict[str, Any]:
    raw = b.txn.get(mbox_key(user_id, mailbox_id), db=b.dbs["mbox"])
    if raw is None:
        raise MailboxNotFound(f"mailbox {mailbox_id} does not exist")
    return _load_record(raw)


def _put_mbox(b: Batch, user_id: int, mailbox_id: int, record: dict[str, Any]) -> None:
    b.txn.put(mbox_key(user_id, mailbox_id), _dump_record(record), db=b.dbs["mbox"])


def _change(b: Batch, kind: ChangeKind, user: str, mailbox_id: int, **fields: Any) -> None:
    b.changes.append({"kind": kind.value, "user": user, "mailbox_id": mailbox_id, **fields})


def op_create_partition(user_id: int, mailboxes: Iterable[tuple[str, SpecialUse | None]]) -> Callable[[Batch], None]:
    mailboxes = list(mailboxes)

    def op(b: Batch) -> None:
        if b.txn.get(codec.u32(user_id), db=b.dbs["uinfo"]) is None:
            _put_uinfo(b, user_id, {"next_mailbox_id": 1, "last_uidvalidity": 0,
                                    "used_bytes": 0, "messages": 0})
        for name, special in mailboxes:
            if b.txn.get(codec.name_key(user_id, name), db=b.dbs["mboxname"]) is None:
                _create_mailbox(b, "", user_id, name, special)
                # The default folders start subscribed; CREATE never subscribes (RFC 3501 §6.3.3).
                b.txn.put(codec.name_key(user_id, name), b"", db=b.dbs["subs"])
    return op


def _create_mailbox(b: Batch, user: str, user_id: int, name: str, special: SpecialUse | None) -> int:
    if b.txn.get(codec.name_key(user_id, name), db=b.dbs["mboxname"]) is not None:
        raise MailboxExists(f"mailbox {name!r} exists")
    info = _uinfo(b, user_id)
    mailbox_id = info["next_mailbox_id"]
    uidvalidity = max(int(time.time()), info["last_uidvalidity"] + 1)
    info["next_mailbox_id"] = mailbox_id + 1
    info["last_uidvalidity"] = uidvalidity
    _put_uinfo(b, user_id, info)
    _put_mbox(b, user_id, mailbox_id, {
        "name": name, "uidvalidity": uidvalidity, "uidnext": 1, "highestmodseq": 1,
        "special_use": special.value if special else None,
        "messages": 0, "unseen": 0, "size": 0,
    })
    b.txn.put(codec.name_key(user_id, name), codec.u32(mailbox_id), db=b.dbs["mboxname"])
    if user:
        _change(b, ChangeKind.MAILBOX_CREATE, user, mailbox_id, name=name)
    return mailbox_id


def _create_parents(b: Batch, user: str, user_id: int, name: str) -> None:
    """RFC 3501 §6.3.3: the superior hierarchical names of ``name`` that do not exist yet,
    in the caller's transaction (so a failed CREATE or RENAME leaves none behind)."""
    parts = name.split("/")
    for i in range(1, len(parts)):
        parent = "/".join(parts[:i])
        if b.txn.get(codec.name_key(user_id, parent), db=b.dbs["mboxname"]) is None:
            _create_mailbox(b, user, user_id, parent, None)


def op_create_mailbox(user: str, user_id: int, name: str, special: SpecialUse | None) -> Callable[[Batch], int]:
    def op(b: Batch) -> int:
        if b.txn.get(codec.name_key(user_id, name), db=b.dbs["mboxname"]) is not None:
            raise MailboxExists(f"mailbox {name!r} exists")
        _create_parents(b, user, user_id, name)
        return _create_mailbox(b, user, user_id, name, special)
    return op


def op_claim_recent(user_id: int, mailbox_id: int, upto: int) -> Callable[[Batch], int]:
    """RFC 3501 §2.3.2: claim the messages up to UID ``upto`` as \\Recent for the calling
    session; the claim before (those above it and up to ``upto`` are the caller's). Read
    and written in one write transaction, which LMDB's write lock orders against those of
    every process: no two sessions get the same message."""
    def op(b: Batch) -> int:
        record = _mbox(b, user_id, mailbox_id)
        before = record.get("recent_uid", 0)
        if upto > before:
            record["recent_uid"] = upto
            _put_mbox(b, user_id, mailbox_id, record)
        return int(before)
    return op


def op_rename_mailbox(user: str, user_id: int, old: str, new: str) -> Callable[[Batch], None]:
    def op(b: Batch) -> None:
        names = b.dbs["mboxname"]
        old_id = b.txn.get(codec.name_key(user_id, old), db=names)
        if old_id is None:
            raise MailboxNotFound(f"mailbox {old!r} does not exist")
        if b.txn.get(codec.name_key(user_id, new), db=names) is not None:
            raise MailboxExists(f"mailbox {new!r} exists")
        _create_parents(b, user, user_id, new)
        if old == "INBOX":
            # RFC 3501 §6.3.5: renaming INBOX moves its messages to a new mailbox and
            # leaves INBOX empty.
            inbox = codec.read_u32(old_id)
            target = _create_mailbox(b, user, user_id, new, None)
            _move_all(b, user, user_id, inbox, target)
            return
        prefix = old + "/"
        renames = []
        cur = b.txn.cursor(db=names)
        start = codec.name_key(user_id, old)
        if cur.set_range(start):
            for key, value in cur:
                if key[:4] != codec.u32(user_id):
                    break
                name = key[4:].decode("utf-8")
                if name == old or name.startswith(prefix):
                    renames.append((name, codec.read_u32(value)))
                elif not name.startswith(old):
                    break
        for name, mid in renames:
            renamed = new + name[len(old):]
            if b.txn.get(codec.name_key(user_id, renamed), db=names) is not None:
                raise MailboxExists(f"mailbox {renamed!r} exists")
            b.txn.delete(codec.name_key(user_id, name), db=names)
            b.txn.put(codec.name_key(user_id, renamed), codec.u32(mid), db=names)
            if b.txn.delete(codec.name_key(user_id, name), db=b.dbs["subs"]):
                b.txn.put(codec.name_key(user_id, renamed), b"", db=b.dbs["subs"])  # as Dovecot does
            record = _mbox(b, user_id, mid)
            record["name"] = renamed
            _put_mbox(b, user_id, mid, record)
            _change(b, ChangeKind.MAILBOX_RENAME, user, mid, name=renamed, extra={"old": name})
    return op


def _move_all(b: Batch, user: str, user_id: int, src: int, dst: int) -> None:
    uids = mailbox_uids(b.txn, b.dbs["msg"], mbox_key(user_id, src))
    if uids:
        _copy(b, user, user_id, src, uids, dst, move=True)


def op_delete_mailbox(user: str, user_id: int, name: str) -> Callable[[Batch], None]:
    def op(b: Batch) -> None:
        raw = b.txn.get(codec.name_key(user_id, name), db=b.dbs["mboxname"])
        if raw is None:
            raise MailboxNotFound(f"mailbox {name!r} does not exist")
        mid = codec.read_u32(raw)
        prefix = mbox_key(user_id, mid)
        _expunge(b, user, user_id, mid, mailbox_uids(b.txn, b.dbs["msg"], prefix), log=False)
        for db in ("modseq", "expunged", "metadata"):
            cur = b.txn.cursor(db=b.dbs[db])
            while cur.set_range(prefix) and cur.key()[:8] == prefix:
                cur.delete()
        b.txn.delete(prefix, db=b.dbs["mbox"])
        b.txn.delete(codec.name_key(user_id, name), db=b.dbs["mboxname"])
        _change(b, ChangeKind.MAILBOX_DELETE, user, mid, name=name)
    return op


def op_set_subscribed(user: str, user_id: int, name: str, subscribed: bool) -> Callable[[Batch], None]:
    """Add or remove a name of the subscription list; the mailbox need not exist
    (RFC 3501 §6.3.6, §6.3.9: a subscription outlives its mailbox). Logged when the list
    changes (RFC 5465 §5.4 SubscriptionChange is sent for a change only)."""
    def op(b: Batch) -> None:
        key = codec.name_key(user_id, name)
        held = b.txn.get(key, db=b.dbs["subs"]) is not None
        if subscribed == held:
            return
        if subscribed:
            b.txn.put(key, b"", db=b.dbs["subs"])
        else:
            b.txn.delete(key, db=b.dbs["subs"])
        _change(b, ChangeKind.SUBSCRIBE if subscribed else ChangeKind.UNSUBSCRIBE, user, 0, name=name)
    return op


def _messages(b: Batch, user_id: int, mailbox_id: int,
              uids: Iterable[int]) -> Iterator[tuple[int, bytes, MessageRecord]]:
    """(uid, key, record) of each of ``uids`` still in the mailbox; the others are skipped."""
    for uid in uids:
        key = msg_key(user_id, mailbox_id, uid)
        raw = b.txn.get(key, db=b.dbs["msg"])
        if raw is not None:
            yield uid, key, MessageRecord.decode(raw)


def _ref(b: Batch, sha: bytes, delta: int) -> None:
    db = b.dbs["blobref"]
    raw = b.txn.get(sha, db=db)
    count = (codec.read_u64(raw) if raw else 0) + delta
    if count > 0:
        b.txn.put(sha, codec.u64(count), db=db)
    else:
        b.txn.delete(sha, db=db)
        if not b.txn.delete(sha, db=b.dbs["blobdata"]):
            b.unlink.add(sha.hex())


def _insert(b: Batch, user_id: int, mailbox_id: int, record: dict[str, Any], rec: MessageRecord,
            envelope: bytes) -> int:
    """Put one message into a mailbox record (caller stores the mailbox record)."""
    uid = record["uidnext"]
    record["uidnext"] = uid + 1
    record["highestmodseq"] += 1
    rec.modseq = record["highestmodseq"]
    rec.saved = time.time()  # RFC 8514 §3: appended, delivered, copied or moved here now
    key = msg_key(user_id, mailbox_id, uid)
    b.txn.put(key, rec.encode(), db=b.dbs["msg"])
    b.txn.put(key, envelope, db=b.dbs["env"])
    b.txn.put(codec.modseq_key(user_id, mailbox_id, rec.modseq), codec.u32(uid), db=b.dbs["modseq"])
    record["messages"] += 1
    record["size"] += len(rec.prefix) + rec.blob_size
    if SEEN not in rec.flags:
        b.txn.put(key, b"", db=b.dbs["unseen"])
        record["unseen"] += 1
    _note_keywords(record, rec.flags)
    return uid


def _note_keywords(record: dict[str, Any], flags: frozenset[str]) -> None:
    """Remember in the mailbox record the keywords its messages have carried (they are
    never forgotten, as in Dovecot), up to MAX_KEYWORDS."""
    for flag in flags:
        if not flag.startswith("\\"):
            known = record.get("keywords", [])
            if flag not in known and len(known) < MAX_KEYWORDS:
                # A new list: decoded records share theirs with _DECODED (a shallow copy).
                record["keywords"] = [*known, flag]


def _charge(b: Batch, user_id: int, size: int, count: int, quota: int) -> None:
    info = _uinfo(b, user_id)
    if size > 0 and quota and info["used_bytes"] + size > quota:
        raise QuotaExceeded(f"quota of {quota} bytes exceeded")
    info["used_bytes"] += size
    info["messages"] += count
    _put_uinfo(b, user_id, info)


def op_append(user: str, user_id: int, mailbox_id: int | str, sha: str, blob_size: int,
              prefix: bytes, flags: frozenset[str], internal_date: float, envelope: dict[str, str],
              quota: int, inline: bytes | None, shape: int = 0) -> Callable[[Batch], tuple[int, int, int, int]]:
    """Append one message; ``mailbox_id`` may be a name (delivery); ``shape``: the body's
    codec.SHAPE_* bits, as staging found them (0: unknown). Returns (mailbox id,
    uidvalidity, uid, modseq)."""
    env_bytes = jdump(envelope)

    def op(b: Batch) -> tuple[int, int, int, int]:
        mid = mailbox_id
        if isinstance(mid, str):
            raw = b.txn.get(codec.name_key(user_id, mid), db=b.dbs["mboxname"])
            if raw is None:
                raise MailboxNotFound(f"mailbox {mid!r} does not exist")
            mid = codec.read_u32(raw)
        record = _mbox(b, user_id, mid)
        _charge(b, user_id, len(prefix) + blob_size, 1, quota)
        rec = MessageRecord(0, internal_date, blob_size, flags, bytes.fromhex(sha), prefix, shape=shape)
        uid = _insert(b, user_id, mid, record, rec, env_bytes)
        _put_mbox(b, user_id, mid, record)
        if inline is not None:
            b.txn.put(rec.sha, inline, db=b.dbs["blobdata"], overwrite=False)
        _ref(b, rec.sha, +1)
        _change(b, ChangeKind.APPEND, user, mid, uids=[uid], modseq=rec.modseq)
        return mid, record["uidvalidity"], uid, rec.modseq
    return op


def op_all(operations: list[Callable[[Batch], Any]]) -> Callable[[Batch], list[Any]]:
    """The operations as one: their results in order, or, when one raises, none of their
    writes (the writer rolls the whole operation back)."""
    def op(b: Batch) -> list[Any]:
        return [operation(b) for operation in operations]
    return op


def op_set_metadata(user: str, user_id: int, mailbox_id: int, items: list[tuple[str, bytes | None]],
                    max_entries: int) -> Callable[[Batch], None]:
    """Set (or, with None, remove) metadata entries of a mailbox, or of the user with
    mailbox id 0, all or none: TooManyEntries when the user would have more than
    ``max_entries`` in all."""
    def op(b: Batch) -> None:
        if mailbox_id:
            _mbox(b, user_id, mailbox_id)  # MailboxNotFound if it was deleted meanwhile
        db = b.dbs["metadata"]
        for name, value in items:
            key = mbox_key(user_id, mailbox_id) + name.encode("utf-8")
            if value is None:
                b.txn.delete(key, db=db)
            else:
                b.txn.put(key, value, db=db)
        if any(value is not None for _, value in items):
            prefix, count = codec.u32(user_id), 0
            cur = b.txn.cursor(db=db)
            if cur.set_range(prefix):
                for key in cur.iternext(keys=True, values=False):
                    if key[:4] != prefix:
                        break
                    count += 1
                    if count > max_entries:
                        raise TooManyEntries(f"more than {max_entries} metadata entries")
        _change(b, ChangeKind.METADATA, user, mailbox_id, extra={"entries": [name for name, _ in items]})
    return op


def op_set_flags(user: str, user_id: int, mailbox_id: int, uids: list[int], flags: frozenset[str],
                 mode: FlagMode, unchanged_since: int | None) -> Callable[[Batch], tuple[list[FlagResult], list[int]]]:
    def op(b: Batch) -> tuple[list[FlagResult], list[int]]:
        record = _mbox(b, user_id, mailbox_id)
        changed: list[FlagResult] = []
        failed: list[int] = []
        for uid, key, rec in _messages(b, user_id, mailbox_id, uids):
            if unchanged_since is not None and rec.modseq > unchanged_since:
                failed.append(uid)  # RFC 7162 §3.1.3
                continue
            if mode is FlagMode.ADD:
                new = rec.flags | flags
            elif mode is FlagMode.REMOVE:
                new = rec.flags - flags
            else:
                new = frozenset(flags)
            if new == rec.flags:
                continue
            b.txn.delete(codec.modseq_key(user_id, mailbox_id, rec.modseq), db=b.dbs["modseq"])
            record["highestmodseq"] += 1
            rec.modseq = record["highestmodseq"]
            was_seen, seen = SEEN in rec.flags, SEEN in new
            rec.flags = new
            _note_keywords(record, new)
            b.txn.put(key, rec.encode(), db=b.dbs["msg"])
            b.txn.put(codec.modseq_key(user_id, mailbox_id, rec.modseq), codec.u32(uid), db=b.dbs["modseq"])
            if was_seen and not seen:
                b.txn.put(key, b"", db=b.dbs["unseen"])
                record["unseen"] += 1
            elif seen and not was_seen:
                b.txn.delete(key, db=b.dbs["unseen"])
                record["unseen"] -= 1
            changed.append(FlagResult(uid, new, rec.modseq))
        if changed:
            _put_mbox(b, user_id, mailbox_id, record)
            _change(b, ChangeKind.FLAGS, user, mailbox_id, uids=[c.uid for c in changed],
                    modseq=changed[-1].modseq, flags=[sorted(c.flags) for c in changed])
        return changed, failed
    return op


def _copy(b: Batch, user: str, user_id: int, src: int, uids: list[int], dst: int, *,
          move: bool, quota: int = 0) -> tuple[int, list[tuple[int, int]]]:
    src_record = _mbox(b, user_id, src)
    dst_record = _mbox(b, user_id, dst) if dst != src else src_record
    pairs = []
    added = 0
    for uid, key, rec in _messages(b, user_id, src, uids):
        envelope = b.txn.get(key, db=b.dbs["env"]) or b"{}"
        new_uid = _insert(b, user_id, dst, dst_record, rec, envelope)
        pairs.append((uid, new_uid))
        added += len(rec.prefix) + rec.blob_size
        if not move:
            _ref(b, rec.sha, +1)
    if not pairs:
        return dst_record["uidvalidity"], pairs
    _put_mbox(b, user_id, dst, dst_record)
    new_uids = [p[1] for p in pairs]
    _change(b, ChangeKind.APPEND, user, dst, uids=new_uids, modseq=dst_record["highestmodseq"],
            extra={"source_mailbox_id": src, "source_uids": [p[0] for p in pairs], "moved": move})
    if move:
        _expunge(b, user, user_id, src, [p[0] for p in pairs], keep_blobs=True)
    else:
        _charge(b, user_id, added, len(pairs), quota)
    return dst_record["uidvalidity"], pairs


def op_copy(user: str, user_id: int, src: int, uids: list[int], dst: int, move: bool,
            quota: int) -> Callable[[Batch], tuple[int, list[tuple[int, int]]]]:
    return lambda b: _copy(b, user, user_id, src, uids, dst, move=move, quota=quota)


def _expunge(b: Batch, user: str, user_id: int, mailbox_id: int, uids: Iterable[int], *,
             keep_blobs: bool = False, log: bool = True) -> list[int]:
    record = _mbox(b, user_id, mailbox_id)
    removed = []
    freed = 0
    for uid, key, rec in _messages(b, user_id, mailbox_id, uids):
        b.txn.delete(key, db=b.dbs["msg"])
        b.txn.delete(key, db=b.dbs["env"])
        b.txn.delete(codec.modseq_key(user_id, mailbox_id, rec.modseq), db=b.dbs["modseq"])
        if b.txn.delete(key, db=b.dbs["unseen"]):
            record["unseen"] -= 1
        record["messages"] -= 1
        size = len(rec.prefix) + rec.blob_size
        record["size"] -= size
        freed += size
        if not keep_blobs:
            _ref(b, rec.sha, -1)
        removed.append(uid)
    if not removed:
        return removed
    record["highestmodseq"] += 1
    modseq = record["highestmodseq"]
    _put_mbox(b, user_id, mailbox_id, record)
    b.txn.put(codec.modseq_key(user_id, mailbox_id, modseq),
              b"".join(codec.u32(u) for u in removed), db=b.dbs["expunged"])
    if not keep_blobs:
        _charge(b, user_id, -freed, -len(removed), 0)
    if log:
        _change(b, ChangeKind.EXPUNGE, user, mailbox_id, uids=removed, modseq=modseq)
    return removed


def op_expunge(user: str, user_id: int, mailbox_id: int, uids: list[int]) -> Callable[[Batch], ExpungeResult]:
    def op(b: Batch) -> ExpungeResult:
        removed = _expunge(b, user, user_id, mailbox_id, uids)
        # Read before any later operation of the batch can change the mailbox again.
        return ExpungeResult(removed, _mbox(b, user_id, mailbox_id)["highestmodseq"] if removed else 0)
    return op


def op_purge_partition(user: str, user_id: int) -> Callable[[Batch], None]:
    """Remove a user's whole partition (user removal), logged as USER_DELETE."""
    def op(b: Batch) -> None:
        prefix = codec.u32(user_id)
        cur = b.txn.cursor(db=b.dbs["msg"])
        if cur.set_range(prefix):
            for key, value in cur:
                if key[:4] != prefix:
                    break
                _ref(b, MessageRecord.decode(value).sha, -1)
        for db in ("msg", "env", "unseen", "modseq", "expunged", "mbox", "mboxname", "subs", "metadata"):
            cur = b.txn.cursor(db=b.dbs[db])
            while cur.set_range(prefix) and cur.key()[:4] == prefix:
                cur.delete()
        b.txn.delete(prefix, db=b.dbs["uinfo"])
        _change(b, ChangeKind.USER_DELETE, user, 0)
    return op
