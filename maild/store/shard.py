"""One shard: an LMDB environment holding whole user partitions, its blob names and its
change log. Reads run on the caller's thread; writes are the operations of
maild/store/operations.py, run by the shard's writer."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, cast

import lmdb

from maild.config import StoreConfig
from maild.store import changelog, codec, envfile, redo, views
from maild.store.blobs import BlobDir
from maild.store.codec import MessageRecord, jload, mbox_key, msg_key
from maild.store.mapgate import Env
from maild.store.types import (
    Envelope,
    FormatError,
    Mailbox,
    MessageMeta,
    NotFound,
)
from maild.store.writer import Batch, Writer

# "subs": the subscription list, (user id, mailbox name) -> b"", names that need not exist
# (RFC 3501 §6.3.6, §6.3.9).
DB_NAMES = ("meta", "mbox", "mboxname", "msg", "env", "unseen", "modseq", "expunged",
            "blobref", "blobdata", "uinfo", "changes", "subs", "metadata", redo.DB_NAME)


def open_env(path: Path, map_size: int, names: Iterable[str], what: str,
             required: envfile.Required | None = None,
             meta_sync: bool = True) -> tuple[lmdb.Environment, dict[str, Any]]:
    """Open (or, unless ``required`` says why it must exist, create) an environment.
    ``meta_sync``: with MDB_NOMETASYNC, its writer syncing the meta page after the write
    lock (``[store] shared_meta_sync``, maild/store/metasync.py)."""
    envfile.check(path, what, required)
    path.mkdir(parents=True, exist_ok=True)
    try:
        # Env: follows a map another process grew (mapgate.py); typed as what it wraps.
        env = cast(lmdb.Environment, Env(
            lmdb.open(str(path), map_size=map_size, max_dbs=len(tuple(names)) + 2,
                      sync=True, metasync=not meta_sync, max_readers=1024), what))
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
INDEX_CACHE_BYTES = 64 * 1024 * 1024  # [store] mailbox_index_mb's default
MAILBOX_RECORDS_CACHED = 4096  # decoded mailbox records kept per shard (~1 KB each)


class Shard:
    def __init__(self, index: int, path: Path, map_size: int, max_batch: int,
                 on_commit: Callable[[list[dict[str, Any]]], None] | None,
                 dispatch: Callable[[Callable[[], None]], None] | None = None,
                 ops_lock: threading.Lock | None = None, health: Any = None,
                 required: envfile.Required | None = None,
                 redo_log: Callable[[str, lmdb.Environment, dict[str, Any]], redo.RedoLog | None] | None = None,
                 token: str = "", kept: int = StoreConfig.changes_kept,
                 retained: int = StoreConfig.changes_retained,
                 index_cache_bytes: int = INDEX_CACHE_BYTES, meta_sync: bool = True) -> None:
        self.index = index
        self.path = path
        self.env, self.dbs = open_env(path / "lmdb", map_size, DB_NAMES, f"shard {index}", required,
                                      meta_sync)
        self.blobs = BlobDir(path / "blobs")
        self.blobs.root.mkdir(exist_ok=True)
        # Named change-log cursors: this node's own, not in self.dbs, so the replication
        # log neither records nor copies them (changelog.py invariant 4).
        self.cursors_db = self.env.open_db(b"cursors")
        self.token = token  # written into each change record (changelog.py invariant 2)
        # The log keeps its last ``kept`` records, and those after the oldest named cursor
        # up to ``retained`` (the hard bound): changelog.py invariant 5.
        self.kept, self.retained = kept, max(kept, retained)
        self._migrate_subscriptions()
        # The replication log; None: replication is off (docs/replication.md).
        self.redo = None if redo_log is None else redo_log(f"shard {index:02d}", self.env, self.dbs)
        # Packed per-mailbox columns, checked against the mailbox record at every read
        # (maild/store/views.py); reads run on the reactor and in worker threads.
        self.indexes = views.IndexCache(index_cache_bytes)
        # Decoded mailbox records, each kept with the record's bytes it was decoded from and
        # returned only while the stored record is still those bytes: SELECT, STATUS and
        # every command naming a mailbox read it, and the JSON decoding was a third of a
        # SELECT. Shared and immutable (Mailbox is frozen); at most MAILBOX_RECORDS_CACHED.
        self._mailbox_records: dict[bytes, tuple[bytes, Mailbox]] = {}
        # The mailbox a read by name (mailbox_by_name, open_mailbox) found, by (user id, name),
        # with the id of the snapshot it was read in: a read transaction of that same id
        # sees the very same database, so it is returned with no further read (an LMDB
        # transaction id names one committed state, whichever process committed it).
        # At most MAILBOX_RECORDS_CACHED.
        self._named: dict[tuple[int, str], tuple[int, Mailbox]] = {}
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
        changelog.log_records(b, self.index, self.token, self.dbs["changes"], self.cursors_db,
                              self.kept, self.retained)

    def log_head(self) -> int:
        return changelog.head(self.env, self.dbs["changes"])

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
            found = self._named_in(txn, user_id, name, False)
        return None if found is None else found[0]

    def open_mailbox(self, user_id: int, name: str) -> tuple[Mailbox, views.MailboxIndex] | None:
        """The mailbox called ``name`` and its index, read in one transaction (SELECT,
        EXAMINE); None: there is no such mailbox."""
        with self.env.begin() as txn:
            found = self._named_in(txn, user_id, name, True)
        if found is None or found[1] is None:
            return None
        return found[0], found[1]

    def _named_in(self, txn: lmdb.Transaction[bytes], user_id: int, name: str,
                  with_index: bool) -> tuple[Mailbox, views.MailboxIndex | None] | None:
        """The mailbox called ``name`` as ``txn`` sees it, and its index when asked for. The
        mailbox an earlier call read in a snapshot of the same id is returned as it was
        (no name lookup, no record read); the index always comes from the index cache, so
        only that cache, bounded by ``[store] mailbox_index_mb``, holds indexes."""
        snapshot = txn.id()
        key = (user_id, name)
        found = self._named.get(key)
        if found is not None and found[0] == snapshot:
            mailbox = found[1]
        else:
            mid = self.mailbox_id(txn, user_id, name)
            if mid is None:
                return None
            record_key = mbox_key(user_id, mid)
            raw = txn.get(record_key, db=self.dbs["mbox"])
            if raw is None:
                return None
            mailbox = self._mailbox_record(record_key, mid, raw)
            if len(self._named) >= MAILBOX_RECORDS_CACHED:
                self._named.clear()
            self._named[key] = (snapshot, mailbox)
        index = views.mailbox_index(txn, self.dbs, self.indexes, user_id, mailbox.id) if with_index else None
        return mailbox, index

    def mailbox_by_id(self, user_id: int, mailbox_id: int) -> Mailbox | None:
        with self.env.begin() as txn:
            key = mbox_key(user_id, mailbox_id)
            raw = txn.get(key, db=self.dbs["mbox"])
            return None if raw is None else self._mailbox_record(key, mailbox_id, raw)

    def _mailbox_record(self, key: bytes, mailbox_id: int, raw: bytes) -> Mailbox:
        """The Mailbox of a stored record, decoded once per version of the record."""
        found = self._mailbox_records.get(key)
        if found is not None and found[0] == raw:
            return found[1]
        mailbox = codec.mailbox_from(mailbox_id, jload(raw))
        if len(self._mailbox_records) >= MAILBOX_RECORDS_CACHED:
            self._mailbox_records.clear()
        self._mailbox_records[key] = (bytes(raw), mailbox)
        return mailbox

    def uids(self, user_id: int, mailbox_id: int) -> list[int]:
        """The mailbox's uids, ascending (from its index, :meth:`mailbox_index`)."""
        index = self.mailbox_index(user_id, mailbox_id)
        return [] if index is None else index.uids.tolist()

    def mailbox_index(self, user_id: int, mailbox_id: int) -> views.MailboxIndex | None:
        """The mailbox's packed columns as of now (maild/store/views.py): kept between calls
        and checked against the mailbox record read in the same transaction, so a change
        by any process is seen; None when there is no such mailbox."""
        with self.env.begin() as txn:
            return views.mailbox_index(txn, self.dbs, self.indexes, user_id, mailbox_id)

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
