"""The replication (redo) log of one LMDB environment: what a follower needs to reproduce
the leader's state exactly (docs/replication.md).

When replication is on, every write transaction of the environment (the directory, each
shard) records its physical operations -- (database name, key, value) puts, deletes and
clears -- as one record in the ``repl`` database, in the same transaction, under the next
sequence number of that environment (1, 2, 3, ...). The sequence is read from the last key
inside the write transaction, so writers in other processes (``maild user add``) number
their records in the same order LMDB serialises their transactions.

A follower applies a record's operations in one transaction and writes the same record
under the same sequence number into its own ``repl`` database in that transaction: its
position is the last key there (or ``repl_base`` in ``meta`` after a snapshot), so a crash
at any moment leaves neither a gap nor a double apply, and a promoted follower serves the
same log to the next follower.

Record format, version 1 (all integers big-endian)::

    u8 version (1) | u32 epoch | u64 commit time in ms | op*
    op = u8 kind ('P' put, 'D' delete, 'C' clear the database)
         | u8 name length | name | u32 key length | key | u32 value length | value

``epoch`` is the leader's epoch when it committed the record: a returning old leader whose
record at some position carries another epoch than the new leader's has diverged there.
"""

from __future__ import annotations

import json
import os
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lmdb

from maild.store import codec

VERSION = 1
DEFAULT_RETAIN = 100_000  # records kept per environment when no configuration says
DB_NAME = "repl"
_HEAD = struct.Struct(">BIQ")
_LEN = struct.Struct(">I")
PUT, DELETE, CLEAR = b"P", b"D", b"C"
Op = tuple[bytes, str, bytes, bytes]  # kind, database name, key, value


class RecordError(ValueError):
    """A record that is not version 1 or is cut short."""


def encode(epoch: int, ops: list[Op], when: float | None = None) -> bytes:
    parts = [_HEAD.pack(VERSION, epoch, int((time.time() if when is None else when) * 1000))]
    for kind, name, key, value in ops:
        raw = name.encode()
        parts.append(kind + bytes((len(raw),)) + raw + _LEN.pack(len(key)) + key
                     + _LEN.pack(len(value)) + value)
    return b"".join(parts)


def header(record: bytes) -> tuple[int, float]:
    """(epoch, commit time in seconds) of a record."""
    if len(record) < _HEAD.size or record[0] != VERSION:
        raise RecordError("unknown redo record version")
    _, epoch, ms = _HEAD.unpack_from(record)
    return epoch, ms / 1000


def decode(record: bytes) -> list[Op]:
    header(record)
    ops: list[Op] = []
    view = memoryview(record)
    pos = _HEAD.size
    try:
        while pos < len(record):
            kind = bytes(view[pos:pos + 1])
            n = record[pos + 1]
            name = bytes(view[pos + 2:pos + 2 + n]).decode()
            pos += 2 + n
            (klen,) = _LEN.unpack_from(record, pos)
            key = bytes(view[pos + 4:pos + 4 + klen])
            pos += 4 + klen
            (vlen,) = _LEN.unpack_from(record, pos)
            value = bytes(view[pos + 4:pos + 4 + vlen])
            pos += 4 + vlen
            if kind not in (PUT, DELETE, CLEAR) or len(value) != vlen or len(key) != klen:
                raise RecordError("damaged redo record")
            ops.append((kind, name, key, value))
    except (IndexError, struct.error) as exc:
        raise RecordError("redo record cut short") from exc
    return ops


class RecordingCursor:
    """An LMDB cursor whose writes are also recorded."""

    def __init__(self, cursor: Any, name: str, ops: list[Op]) -> None:
        self._cursor = cursor
        self._name = name
        self._ops = ops

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._cursor, attr)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._cursor)

    def put(self, key: bytes, value: bytes, *args: Any, **kwargs: Any) -> bool:
        done = bool(self._cursor.put(key, value, *args, **kwargs))
        if done:
            self._ops.append((PUT, self._name, bytes(key), bytes(value)))
        return done

    def replace(self, key: bytes, value: bytes) -> Any:
        old = self._cursor.replace(key, value)
        self._ops.append((PUT, self._name, bytes(key), bytes(value)))
        return old

    def delete(self, *args: Any, **kwargs: Any) -> bool:
        key = bytes(self._cursor.key())
        done = bool(self._cursor.delete(*args, **kwargs))
        if done:
            self._ops.append((DELETE, self._name, key, b""))
        return done

    def pop(self, key: bytes) -> Any:
        old = self._cursor.pop(key)
        if old is not None:
            self._ops.append((DELETE, self._name, bytes(key), b""))
        return old


class RecordingTxn:
    """An LMDB write transaction whose writes are also recorded as redo operations; reads
    and everything else go to the transaction itself (``raw``)."""

    def __init__(self, txn: lmdb.Transaction[bytes], names: dict[int, str], ops: list[Op]) -> None:
        self.raw = txn
        self._names = names  # id(database handle) -> name
        self.ops = ops

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.raw, attr)

    def _name(self, db: Any) -> str:
        return self._names[id(db)]

    def put(self, key: bytes, value: bytes, *args: Any, db: Any = None, **kwargs: Any) -> bool:
        done = bool(self.raw.put(key, value, *args, db=db, **kwargs))  # type: ignore[misc]
        if done:
            self.ops.append((PUT, self._name(db), bytes(key), bytes(value)))
        return done

    def replace(self, key: bytes, value: bytes, db: Any = None) -> Any:
        old = self.raw.replace(key, value, db=db)
        self.ops.append((PUT, self._name(db), bytes(key), bytes(value)))
        return old

    def delete(self, key: bytes, value: bytes = b"", db: Any = None) -> bool:
        done = bool(self.raw.delete(key, value, db=db))
        if done:
            self.ops.append((DELETE, self._name(db), bytes(key), b""))
        return done

    def pop(self, key: bytes, db: Any = None) -> Any:
        old = self.raw.pop(key, db=db)
        if old is not None:
            self.ops.append((DELETE, self._name(db), bytes(key), b""))
        return old

    def drop(self, db: Any, delete: bool = True) -> None:
        if delete:
            raise ValueError("databases are fixed: only their contents may be dropped")
        self.raw.drop(db, delete=False)
        self.ops.append((CLEAR, self._name(db), b"", b""))

    def cursor(self, db: Any = None) -> RecordingCursor:
        return RecordingCursor(self.raw.cursor(db=db), self._name(db), self.ops)


class RedoLog:
    """The redo log of one environment."""

    def __init__(self, where: str, env: lmdb.Environment, dbs: dict[str, Any], retain: int,
                 epoch: Any) -> None:
        self.where = where  # "directory", "shard 00"
        self.env = env
        self.dbs = dbs
        self.db = dbs[DB_NAME]
        self.retain = retain  # records kept; a follower further behind needs a snapshot
        self._epoch = epoch  # a callable: the node's current epoch
        self.names = {id(handle): name for name, handle in dbs.items() if name != DB_NAME}

    @property
    def epoch(self) -> int:
        return int(self._epoch())

    def wrap(self, txn: lmdb.Transaction[bytes], ops: list[Op]) -> RecordingTxn:
        return RecordingTxn(txn, self.names, ops)

    # -- the leader ---------------------------------------------------------------------

    def append(self, txn: lmdb.Transaction[bytes], ops: list[Op]) -> int:
        """Record ``ops`` as the next record, in ``txn``; return its sequence number."""
        seq = self.last(txn) + 1
        self.put_record(txn, seq, encode(self.epoch, ops))
        return seq

    def put_record(self, txn: lmdb.Transaction[bytes], seq: int, record: bytes) -> None:
        txn.put(codec.u64(seq), record, db=self.db)
        if self.retain and seq > self.retain and seq % 64 == 0:  # trim now and then
            cur = txn.cursor(db=self.db)
            floor = seq - self.retain
            while cur.first() and codec.read_u64(cur.key()) <= floor:
                cur.delete()

    def last(self, txn: lmdb.Transaction[bytes]) -> int:
        """The environment's position: the last record's number (0: none yet, or a
        snapshot being copied)."""
        if txn.get(b"repl_snapshot", db=self.dbs["meta"]) is not None:
            return 0
        cur = txn.cursor(db=self.db)
        if cur.last():
            return codec.read_u64(cur.key())
        raw = txn.get(b"repl_base", db=self.dbs["meta"])
        return 0 if raw is None else int(raw)

    def position(self) -> int:
        with self.env.begin() as txn:
            return self.last(txn)

    def first(self) -> int:
        """The oldest record still held (0: none)."""
        with self.env.begin() as txn:
            cur = txn.cursor(db=self.db)
            return codec.read_u64(cur.key()) if cur.first() else 0

    def epoch_at(self, seq: int) -> int | None:
        """The epoch of record ``seq``, None when it is not held."""
        with self.env.begin() as txn:
            raw = txn.get(codec.u64(seq), db=self.db)
            if raw is None:
                base = txn.get(b"repl_base", db=self.dbs["meta"])
                if base is not None and int(base) == seq:
                    epoch = txn.get(b"repl_base_epoch", db=self.dbs["meta"])
                    return None if epoch is None else int(epoch)
                return None
            return header(bytes(raw))[0]

    def lag(self, after: int, max_count: int = 10_000) -> tuple[int, float | None]:
        """(bytes, seconds) a follower at ``after`` is behind: the size of the records it
        lacks (the first ``max_count`` of them at most) and the age of the oldest one."""
        size, oldest = 0, None
        with self.env.begin() as txn:
            cur = txn.cursor(db=self.db)
            if cur.set_range(codec.u64(after + 1)):
                for n, value in enumerate(cur.iternext(keys=False, values=True)):
                    if n == 0:
                        oldest = header(bytes(value[:_HEAD.size]))[1]
                    size += len(value)
                    if n + 1 >= max_count:
                        break
        return size, None if oldest is None else max(0.0, time.time() - oldest)

    def records(self, after: int, max_bytes: int, max_count: int = 1000) -> list[tuple[int, bytes]]:
        """Records after ``after`` in order, at most about ``max_bytes`` of them (at least
        one when there is one)."""
        out: list[tuple[int, bytes]] = []
        size = 0
        with self.env.begin() as txn:
            cur = txn.cursor(db=self.db)
            if not cur.set_range(codec.u64(after + 1)):
                return out
            for key, value in cur:
                out.append((codec.read_u64(key), bytes(value)))
                size += len(value)
                if size >= max_bytes or len(out) >= max_count:
                    break
        return out

    # -- the follower -------------------------------------------------------------------

    def apply(self, txn: lmdb.Transaction[bytes], seq: int, record: bytes) -> list[Op]:
        """Apply record ``seq`` in ``txn`` (the follower's writer) and keep it, unless it is
        applied already; return its operations ([] when it was)."""
        have = self.last(txn)
        if seq <= have:
            return []
        if seq != have + 1:
            raise RecordError(f"{self.where}: record {seq} does not follow {have}")
        ops = decode(record)
        for kind, name, key, value in ops:
            db = self.dbs[name]
            if kind == PUT:
                txn.put(key, value, db=db)
            elif kind == DELETE:
                txn.delete(key, db=db)
            else:
                txn.drop(db, delete=False)
        self.put_record(txn, seq, record)
        return ops

    def items(self, txn: lmdb.Transaction[bytes]) -> Iterator[tuple[str, bytes, bytes]]:
        """Every (database, key, value) but the log and its own meta keys: a snapshot's
        content, as of ``txn``."""
        for name, handle in self.dbs.items():
            if name == DB_NAME:
                continue
            for key, value in txn.cursor(db=handle):
                if name == "meta" and bytes(key).startswith(b"repl_"):
                    continue
                yield name, bytes(key), bytes(value)

    # -- snapshots (a follower that starts empty) ---------------------------------------

    def snapshot_begin(self, txn: lmdb.Transaction[bytes]) -> None:
        """Empty every database and mark the copy unfinished: a follower that crashes
        during a snapshot reports position 0 and gets a new one."""
        for handle in self.dbs.values():
            txn.drop(handle, delete=False)
        txn.put(b"repl_snapshot", b"1", db=self.dbs["meta"])

    def snapshot_put(self, txn: lmdb.Transaction[bytes], chunk: bytes) -> None:
        for kind, name, key, value in decode(chunk):
            if kind == PUT and not (name == "meta" and key.startswith(b"repl_")):
                txn.put(key, value, db=self.dbs[name])

    def snapshot_end(self, txn: lmdb.Transaction[bytes], position: int, epoch: int) -> None:
        txn.delete(b"repl_snapshot", db=self.dbs["meta"])
        txn.put(b"repl_base", str(position).encode(), db=self.dbs["meta"])
        txn.put(b"repl_base_epoch", str(epoch).encode(), db=self.dbs["meta"])

    def needs_snapshot(self) -> bool:
        """A follower's environment that must be copied whole first: a copy was begun and
        not finished, or it never had a record nor a copy."""
        with self.env.begin() as txn:
            meta = self.dbs["meta"]
            if txn.get(b"repl_snapshot", db=meta) is not None:
                return True
            return txn.get(b"repl_base", db=meta) is None and not txn.cursor(db=self.db).last()

    def unbacked_blobs(self, after: bytes = b"", limit: int = 64) -> tuple[list[str], bytes | None]:
        """Up to ``limit`` blob names referenced after key ``after`` whose body is not
        inline; and the key to go on from (None: done). The caller checks the files."""
        out: list[str] = []
        with self.env.begin() as txn:
            cur = txn.cursor(db=self.dbs["blobref"])
            if not cur.set_range(after):
                return out, None
            inline = self.dbs.get("blobdata")
            for key in cur.iternext(values=False):
                key = bytes(key)
                if key == after:
                    continue
                if inline is None or txn.get(key, db=inline) is None:
                    out.append(key.hex())
                if len(out) >= limit:
                    return out, key
        return out, None


def replicated_op(log: RedoLog, seq: int, record: bytes,
                  after: Callable[[list[Op]], None] | None = None) -> Callable[[Any], int]:
    """A writer operation applying record ``seq`` (marked ``replicated``: it runs on a
    fenced node, and writes no record of its own). The change-log records it carries are
    published to this process's subscribers after the commit, as local writes' are, so
    IMAP sessions on a follower see applied mail; blob files whose last reference it
    removes are unlinked after the commit."""
    def op(b: Any) -> int:
        txn = getattr(b.txn, "raw", b.txn)
        ops = log.apply(txn, seq, record)
        b.logged = True
        for kind, name, key, value in ops:
            if name == "changes" and kind == PUT:
                b.changes.append(codec.jload(value))
            elif name == "blobref" and kind == DELETE:
                b.unlink.add(key.hex())
        if after is not None and ops:
            after(ops)
        return len(ops)
    op.replicated = True  # type: ignore[attr-defined]
    return op


def snapshot_op(log: RedoLog, step: str, chunk: bytes = b"", position: int = 0, epoch: int = 0,
                after: Callable[[lmdb.Transaction[bytes]], None] | None = None) -> Callable[[Any], int]:
    """A writer operation for one step of copying a snapshot: "begin", "put" (a chunk
    encoded as a record of puts), "link" (nothing but the staged blobs it is submitted
    with) or "end" (the copy is complete at ``position``)."""
    def op(b: Any) -> int:
        txn = getattr(b.txn, "raw", b.txn)
        b.logged = True
        if step == "begin":
            log.snapshot_begin(txn)
        elif step == "put":
            log.snapshot_put(txn, chunk)
        elif step == "end":
            log.snapshot_end(txn, position, epoch)
            if after is not None:
                after(txn)
        return 0
    op.replicated = True  # type: ignore[attr-defined]
    return op


def blobs_referenced(ops: list[Op]) -> list[str]:
    """The blob names (sha256 hex) whose reference a record adds and whose body it does
    not carry inline: the follower must hold their files before applying it."""
    inline = {key for kind, name, key, _ in ops if kind == PUT and name == "blobdata"}
    return [key.hex() for kind, name, key, _ in ops
            if kind == PUT and name == "blobref" and key not in inline]


# -- the node's replication state: data_dir/replication.json ---------------------------------

STATE_FILE = "replication.json"


def read_state(data_dir: Path) -> dict[str, Any]:
    """{"epoch": n, "role": "leader"|"follower"|None (None: as configured),
    "history": [[epoch, {environment: first position}], ...], "fenced": reason|None};
    {} when the node never replicated."""
    try:
        return dict(json.loads((data_dir / STATE_FILE).read_text()))
    except FileNotFoundError:
        return {}


def never_led(state: dict[str, Any]) -> bool:
    """Whether this node's current data was only ever written by its leaders: it was made
    a follower (created as one, or by `maild replica resync`, which sets the old data
    aside) and never promoted since (promote sets "led"). Such data holds no diverged
    tail of its own, so a copy of the leader may replace it (docs/replication.md)."""
    return state.get("role") == "follower" and not state.get("led")


def write_state(data_dir: Path, state: dict[str, Any]) -> None:
    """Replace the state file durably (write, fsync, rename, fsync the directory)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / f".{STATE_FILE}.{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(state, fh, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, data_dir / STATE_FILE)
    fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
