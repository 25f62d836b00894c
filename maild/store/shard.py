"""One shard: an LMDB environment holding whole user partitions, its blob names and its
change log. Reads run on the caller's thread; writes are operations for the writer."""

from __future__ import annotations

import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import lmdb

from maild.store import codec, envfile, redo
from maild.store.blobs import BlobDir
from maild.store.codec import MessageRecord, jdump, jload, mbox_key, msg_key
from maild.store.types import (
    SEEN,
    ChangeKind,
    Envelope,
    ExpungeResult,
    FlagMode,
    FlagResult,
    FormatError,
    Mailbox,
    MailboxExists,
    MailboxNotFound,
    MessageMeta,
    NotFound,
    QuotaExceeded,
    SpecialUse,
    TooManyEntries,
)
from maild.store.writer import Batch, Writer

# "subs": the subscription list, (user id, mailbox name) -> b"", names that need not exist
# (RFC 3501 §6.3.6, §6.3.9).
DB_NAMES = ("meta", "mbox", "mboxname", "msg", "env", "unseen", "modseq", "expunged",
            "blobref", "blobdata", "uinfo", "changes", "subs", "metadata", redo.DB_NAME)
CHANGES_RETAINED = 200_000  # the change log keeps this many records per shard
MAX_KEYWORDS = 1000  # keywords remembered per mailbox (for IMAP's FLAGS, RFC 3501 §7.2.6)


def open_env(path: Path, map_size: int, names: Iterable[str], what: str,
             required: envfile.Required | None = None) -> tuple[lmdb.Environment, dict[str, Any]]:
    """Open (or, unless ``required`` says why it must exist, create) an environment."""
    envfile.check(path, what, required)
    path.mkdir(parents=True, exist_ok=True)
    try:
        env = lmdb.open(str(path), map_size=map_size, max_dbs=len(tuple(names)) + 2,
                        sync=True, metasync=True, max_readers=1024)
        dbs = {name: env.open_db(name.encode()) for name in names}
    except lmdb.Error as exc:
        raise FormatError(f"{what} at {path} cannot be opened ({exc}): restore it from a "
                          "backup or a replica; 'maild fsck' reports what else is damaged") from None
    with env.begin(write=True) as txn:
        raw = txn.get(b"format", db=dbs["meta"])
        if raw is None:
            txn.put(b"format", str(codec.FORMAT_VERSION).encode(), db=dbs["meta"])
        elif int(raw) > codec.FORMAT_VERSION:
            env.close()
            raise FormatError(
                f"{what} at {path} has format {int(raw)}, newer than this maild "
                f"(format {codec.FORMAT_VERSION}): upgrade maild before opening it")
        elif int(raw) < codec.FORMAT_VERSION:  # pragma: no cover - no older format exists yet
            env.close()
            raise FormatError(f"{what} at {path} has old format {int(raw)}: run a migration")
    return env, dbs


def mailbox_uids(txn: lmdb.Transaction[bytes], db: Any, prefix: bytes) -> list[int]:
    """The uids under ``user | mailbox`` in a message-keyed database, ascending."""
    cur = txn.cursor(db=db)
    if not cur.set_range(prefix):
        return []
    end = codec.mbox_key_after(prefix)
    keys: list[bytes] = []
    for key in cur.iternext(keys=True, values=False):
        if key >= end:
            break
        keys.append(key)
    return codec.msg_uids(keys)


# Shard.messages reads a run of uids in one cursor pass when they are at least one in this
# many of the uids their range could hold, and looks each up otherwise.
SCAN_DENSITY = 4
UID_CACHE_MAX = 4_000_000  # uids remembered per shard, over all mailboxes (4 octets each)


class Shard:
    def __init__(self, index: int, path: Path, map_size: int, max_batch: int,
                 on_commit: Callable[[list[dict[str, Any]]], None] | None,
                 dispatch: Callable[[Callable[[], None]], None] | None = None,
                 ops_lock: threading.Lock | None = None, health: Any = None,
                 required: envfile.Required | None = None,
                 redo_log: Callable[[str, lmdb.Environment, dict[str, Any]], redo.RedoLog | None] | None = None,
                 ) -> None:
        self.index = index
        self.path = path
        self.env, self.dbs = open_env(path / "lmdb", map_size, DB_NAMES, f"shard {index}", required)
        self.blobs = BlobDir(path / "blobs")
        self.blobs.root.mkdir(exist_ok=True)
        with self.env.begin() as txn:
            cur = txn.cursor(db=self.dbs["changes"])
            self._next_seq = codec.read_u64(cur.key()) + 1 if cur.last() else 1
        self._migrate_subscriptions()
        # The replication log; None: replication is off (docs/replication.md).
        self.redo = None if redo_log is None else redo_log(f"shard {index:02d}", self.env, self.dbs)
        self._uid_cache: OrderedDict[bytes, tuple[bytes, array[int]]] = OrderedDict()
        self._uid_cache_size = 0
        self._uid_cache_lock = threading.Lock()  # reads run on the reactor and in worker threads
        self.writer = Writer(f"shard{index:02d}", self.env, self.dbs, blob_dir=self.blobs,
                             max_batch=max_batch, on_commit=on_commit,
                             log_changes=self._log_changes, dispatch=dispatch, ops_lock=ops_lock,
                             health=health, redo=self.redo)

    def close(self) -> None:
        self.writer.close()
        self.env.close()

    def _migrate_subscriptions(self) -> None:
        """Shards written before the "subs" table kept a ``subscribed`` flag in each
        mailbox record: copy those into the table once."""
        with self.env.begin(write=True) as txn:
            if txn.get(b"subs-migrated", db=self.dbs["meta"]) is not None:
                return
            for key, value in txn.cursor(db=self.dbs["mbox"]):
                record = jload(value)
                if record.pop("subscribed", False):
                    txn.put(codec.name_key(codec.read_u32(key[:4]), record["name"]), b"", db=self.dbs["subs"])
            txn.put(b"subs-migrated", b"1", db=self.dbs["meta"])

    # -- change log ---------------------------------------------------------------------

    def _log_changes(self, b: Batch) -> None:
        db = self.dbs["changes"]
        for change in b.changes:
            change["shard"] = self.index
            change["seq"] = self._next_seq
            b.txn.put(codec.u64(self._next_seq), jdump(change), db=db)
            self._next_seq += 1
        oldest = self._next_seq - CHANGES_RETAINED
        if oldest > 1:
            cur = b.txn.cursor(db=db)
            while cur.first() and codec.read_u64(cur.key()) < oldest:
                cur.delete()

    def renumber_changes(self, txn: lmdb.Transaction[bytes]) -> None:
        """A snapshot was copied in: number local change records after its own."""
        cur = txn.cursor(db=self.dbs["changes"])
        self._next_seq = codec.read_u64(cur.key()) + 1 if cur.last() else 1

    def note_applied(self, ops: list[redo.Op]) -> None:
        """A replicated record was applied: number local change records after its own."""
        for kind, name, key, _ in ops:
            if name == "changes" and kind == redo.PUT:
                self._next_seq = max(self._next_seq, codec.read_u64(key) + 1)

    # -- reads ----------------------------------------------------------------------------

    def _user_rows(self, db: str, user_id: int) -> list[tuple[bytes, bytes]]:
        """(key after the user id, value) of a user's rows of ``db``, in key order."""
        prefix = codec.u32(user_id)
        out = []
        with self.env.begin() as txn:
            cur = txn.cursor(db=self.dbs[db])
            if cur.set_range(prefix):
                for key, value in cur:
                    if not key.startswith(prefix):
                        break
                    out.append((key[4:], value))
        return out

    def mailbox_records(self, user_id: int) -> list[Mailbox]:
        out = [codec.mailbox_from(codec.read_u32(key), jload(value)) for key, value in self._user_rows("mbox", user_id)]
        return sorted(out, key=lambda m: (m.name != "INBOX", m.name))

    def subscriptions(self, user_id: int) -> list[str]:
        return [key.decode("utf-8") for key, _ in self._user_rows("subs", user_id)]

    def mailbox_id(self, txn: lmdb.Transaction[bytes], user_id: int, name: str) -> int | None:
        raw = txn.get(codec.name_key(user_id, name), db=self.dbs["mboxname"])
        return None if raw is None else codec.read_u32(raw)

    def mailbox_by_name(self, user_id: int, name: str) -> Mailbox | None:
        with self.env.begin() as txn:
            mid = self.mailbox_id(txn, user_id, name)
            if mid is None:
                return None
            raw = txn.get(mbox_key(user_id, mid), db=self.dbs["mbox"])
            return None if raw is None else codec.mailbox_from(mid, jload(raw))

    def mailbox_by_id(self, user_id: int, mailbox_id: int) -> Mailbox | None:
        with self.env.begin() as txn:
            raw = txn.get(mbox_key(user_id, mailbox_id), db=self.dbs["mbox"])
            return None if raw is None else codec.mailbox_from(mailbox_id, jload(raw))

    def uids(self, user_id: int, mailbox_id: int) -> list[int]:
        """The mailbox's uids, ascending. Remembered against the bytes of the mailbox
        record, read in the same transaction: every change to a mailbox's uid set rewrites
        that record (uidnext and messages on append, messages and highestmodseq on
        expunge), so the same record means the same uids, whichever process wrote."""
        key = mbox_key(user_id, mailbox_id)
        with self.env.begin() as txn:
            stamp = txn.get(key, db=self.dbs["mbox"])
            if stamp is not None:
                with self._uid_cache_lock:
                    hit = self._uid_cache.get(key)
                    if hit is not None and hit[0] == stamp:
                        self._uid_cache.move_to_end(key)
                        return hit[1].tolist()
            uids = mailbox_uids(txn, self.dbs["msg"], key)
        if stamp is not None:
            self._remember_uids(key, stamp, uids)
        return uids

    def _remember_uids(self, key: bytes, stamp: bytes, uids: list[int]) -> None:
        packed = array("I", uids)
        with self._uid_cache_lock:
            old = self._uid_cache.pop(key, None)
            if old is not None:
                self._uid_cache_size -= len(old[1])
            self._uid_cache[key] = (stamp, packed)
            self._uid_cache_size += len(packed)
            while self._uid_cache_size > UID_CACHE_MAX and len(self._uid_cache) > 1:
                _, (_, evicted) = self._uid_cache.popitem(last=False)
                self._uid_cache_size -= len(evicted)

    def messages(self, user_id: int, mailbox_id: int, uids: Iterable[int] | None) -> Iterator[MessageMeta]:
        """Metadata of the mailbox's messages, or of those of ``uids`` that exist, in uid order."""
        prefix = mbox_key(user_id, mailbox_id)
        wanted: set[int] | None = None
        start, end = prefix, codec.mbox_key_after(prefix)
        if uids is not None:
            ordered = sorted(set(uids))
            if not ordered:
                return
            if len(ordered) * SCAN_DENSITY < ordered[-1] - ordered[0] + 1:
                # A few uids spread over the mailbox: look each one up.
                with self.env.begin(buffers=True) as view_txn:
                    view_cur = view_txn.cursor(db=self.dbs["msg"])
                    for uid in ordered:
                        view = view_cur.get(msg_key(user_id, mailbox_id, uid))
                        if view is not None:
                            yield codec.decode_meta(uid, view)
                return
            # Dense (FETCH 1:*): one pass over the range beats a B-tree descent per uid.
            start = msg_key(user_id, mailbox_id, ordered[0])
            end = msg_key(user_id, mailbox_id, ordered[-1] + 1) if ordered[-1] < 0xFFFFFFFF else end
            wanted = set(ordered) if len(ordered) < ordered[-1] - ordered[0] + 1 else None
        with self.env.begin() as txn:
            cur = txn.cursor(db=self.dbs["msg"])
            if not cur.set_range(start):
                return
            for key, value in cur:
                if key >= end:
                    break
                uid = codec.msg_uid(key)
                if wanted is None or uid in wanted:
                    yield codec.decode_meta(uid, value)

    def locate(self, user_id: int, mailbox_id: int, uid: int) -> tuple[MessageRecord, bytes | None] | None:
        """A message's record and, when its body is kept inline, the body (one transaction);
        None when there is no such message."""
        with self.env.begin() as txn:
            raw = txn.get(msg_key(user_id, mailbox_id, uid), db=self.dbs["msg"])
            if raw is None:
                return None
            record = MessageRecord.decode(raw)
            return record, txn.get(record.sha, db=self.dbs["blobdata"])

    def envelope(self, user_id: int, mailbox_id: int, uid: int) -> Envelope:
        with self.env.begin() as txn:
            raw = txn.get(msg_key(user_id, mailbox_id, uid), db=self.dbs["env"])
        if raw is None:
            raise NotFound(f"no message uid {uid} in mailbox {mailbox_id}")
        return codec.StoredEnvelope(raw).envelope

    def envelopes(self, user_id: int, mailbox_id: int, admit: Callable[[bytes], bool] | None = None
                  ) -> Iterator[tuple[int, codec.StoredEnvelope]]:
        """(uid, envelope) of every message of a mailbox in uid order, in one transaction;
        only those whose stored bytes ``admit`` accepts, when given."""
        prefix = mbox_key(user_id, mailbox_id)
        end = codec.mbox_key_after(prefix)
        with self.env.begin() as txn:
            cur = txn.cursor(db=self.dbs["env"])
            if cur.set_range(prefix):
                for key, value in cur:
                    if key >= end:
                        break
                    if admit is None or admit(value):
                        yield codec.msg_uid(key), codec.StoredEnvelope(value)

    def unseen_uids(self, user_id: int, mailbox_id: int) -> list[int]:
        prefix = mbox_key(user_id, mailbox_id)
        with self.env.begin() as txn:
            return mailbox_uids(txn, self.dbs["unseen"], prefix)

    def first_unseen_uid(self, user_id: int, mailbox_id: int) -> int | None:
        prefix = mbox_key(user_id, mailbox_id)
        with self.env.begin() as txn:
            cur = txn.cursor(db=self.dbs["unseen"])
            if cur.set_range(prefix) and cur.key()[:8] == prefix:
                return codec.msg_uid(cur.key())
        return None

    def changed_since(self, user_id: int, mailbox_id: int, modseq: int) -> list[MessageMeta]:
        with self.env.begin() as txn:
            cur = txn.cursor(db=self.dbs["modseq"])
            uids = []
            if cur.set_range(codec.modseq_key(user_id, mailbox_id, modseq + 1)):
                prefix = mbox_key(user_id, mailbox_id)
                for key, value in cur:
                    if key[:8] != prefix:
                        break
                    uids.append(codec.read_u32(value))
        return sorted(self.messages(user_id, mailbox_id, sorted(uids)), key=lambda m: m.uid)

    def expunged_since(self, user_id: int, mailbox_id: int, modseq: int) -> list[int]:
        out: list[int] = []
        with self.env.begin() as txn:
            cur = txn.cursor(db=self.dbs["expunged"])
            if cur.set_range(codec.modseq_key(user_id, mailbox_id, modseq + 1)):
                prefix = mbox_key(user_id, mailbox_id)
                for key, value in cur:
                    if key[:8] != prefix:
                        break
                    out.extend(codec.read_u32(value[i:i + 4]) for i in range(0, len(value), 4))
        return sorted(out)

    def metadata(self, user_id: int, mailbox_id: int) -> dict[str, bytes]:
        """The metadata entries (RFC 5464) of a mailbox, or of the user (mailbox id 0)."""
        prefix = mbox_key(user_id, mailbox_id)
        out: dict[str, bytes] = {}
        with self.env.begin() as txn:
            cur = txn.cursor(db=self.dbs["metadata"])
            if cur.set_range(prefix):
                for key, value in cur:
                    if key[:8] != prefix:
                        break
                    out[key[8:].decode("utf-8")] = bytes(value)
        return out

    def usage(self, user_id: int) -> tuple[int, int]:
        with self.env.begin() as txn:
            raw = txn.get(codec.u32(user_id), db=self.dbs["uinfo"])
        info = jload(raw) if raw else {}
        return info.get("used_bytes", 0), info.get("messages", 0)


# -- write operations: each runs inside the writer thread with a Batch -------------------

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
    session; the claim before (those above it and up to ``upto`` are the caller's). One
    writer per shard makes the claim atomic: no two sessions get the same message."""
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


def op_set_subscribed(user_id: int, name: str, subscribed: bool) -> Callable[[Batch], None]:
    """Add or remove a name of the subscription list; the mailbox need not exist
    (RFC 3501 §6.3.6, §6.3.9: a subscription outlives its mailbox)."""
    def op(b: Batch) -> None:
        if subscribed:
            b.txn.put(codec.name_key(user_id, name), b"", db=b.dbs["subs"])
        else:
            b.txn.delete(codec.name_key(user_id, name), db=b.dbs["subs"])
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
              quota: int, inline: bytes | None) -> Callable[[Batch], tuple[int, int, int, int]]:
    """Append one message; ``mailbox_id`` may be a name (delivery). Returns
    (mailbox id, uidvalidity, uid, modseq)."""
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
        rec = MessageRecord(0, internal_date, blob_size, flags, bytes.fromhex(sha), prefix)
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


def op_purge_partition(user_id: int) -> Callable[[Batch], None]:
    """Remove a user's whole partition (user removal)."""
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
    return op
