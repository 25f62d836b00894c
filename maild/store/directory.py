"""The directory environment: domains, users, aliases, DKIM keys and the outbound queue."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from maild.store import codec, envfile, redo, retry
from maild.store.blobs import BlobDir
from maild.store.codec import jdump, jload
from maild.store.shard import open_env
from maild.store.types import (
    Domain,
    DomainNotFound,
    NotFound,
    StoreError,
    User,
    UserExists,
    UserNotFound,
)
from maild.store.writer import Batch, Writer

DB_NAMES = ("meta", "domains", "users", "userids", "aliases", "queue", "queue_due", "blobref",
            "tokens", "webhooks", *retry.DB_NAMES, redo.DB_NAME)
ALIAS_DEPTH = 8  # alias chains longer than this are a configuration loop


def split_address(address: str) -> tuple[str, str]:
    local, sep, domain = address.rpartition("@")
    if not sep or not local or not domain:
        raise StoreError(f"not an address: {address!r}")
    return local, domain.lower()


def canonical(address: str) -> str:
    local, domain = split_address(address.strip())
    return f"{local.lower()}@{domain}"


class Directory:
    def __init__(self, path: Path, map_size: int, max_batch: int, shards: int,
                 health: Any = None, required: envfile.Required | None = None,
                 redo_log: Callable[[str, Any, dict[str, Any]], redo.RedoLog | None] | None = None,
                 dispatch: Callable[[Callable[[], None]], None] | None = None,
                 meta_sync: bool = True) -> None:
        self.env, self.dbs = open_env(path / "lmdb", map_size, DB_NAMES, "directory", required,
                                      meta_sync)
        self.blobs = BlobDir(path / "blobs")
        self.blobs.root.mkdir(exist_ok=True)
        with self.env.begin(write=True) as txn:
            recorded = txn.get(b"shards", db=self.dbs["meta"])
            if recorded is None:
                txn.put(b"shards", str(shards).encode(), db=self.dbs["meta"])
            elif int(recorded) != shards:
                self.env.close()
                raise StoreError(
                    f"store.shards is {shards} but the data directory {path.parent} was created "
                    f"with {int(recorded)} shards: set store.shards = {int(recorded)}")
        self.redo = None if redo_log is None else redo_log("directory", self.env, self.dbs)
        self.writer = Writer("directory", self.env, self.dbs, blob_dir=self.blobs,
                             max_batch=max_batch, health=health, redo=self.redo, dispatch=dispatch)

    def close(self) -> None:
        self.writer.close()
        self.env.close()

    def write(self, op: Callable[[Batch], Any]) -> Any:
        """Run a directory write and wait for its commit (administrative operations)."""
        return self.writer.run(op)

    # -- domains --------------------------------------------------------------------------

    def _get(self, db: str, key: str) -> Any:
        with self.env.begin() as txn:
            raw = txn.get(key.encode("utf-8"), db=self.dbs[db])
        return None if raw is None else jload(raw)

    def _all(self, db: str) -> list[tuple[str, Any]]:
        with self.env.begin() as txn:
            return [(k.decode("utf-8"), jload(v)) for k, v in txn.cursor(db=self.dbs[db])]

    def domain(self, name: str) -> Domain | None:
        record = self._get("domains", name.lower())
        return None if record is None else Domain(name.lower(), record["created"], record.get("catch_all"))

    def domains(self) -> list[Domain]:
        return [Domain(k, v["created"], v.get("catch_all")) for k, v in self._all("domains")]

    def domain_add(self, name: str) -> Domain:
        name = name.lower().rstrip(".")
        if not name or "@" in name or " " in name or "." not in name:
            raise StoreError(f"not a domain name: {name!r}")

        def op(b: Batch) -> None:
            if b.txn.get(name.encode(), db=b.dbs["domains"]) is not None:
                raise StoreError(f"domain {name} exists")
            b.txn.put(name.encode(), jdump({"created": time.time(), "catch_all": None,
                                            "dkim_keys": []}), db=b.dbs["domains"])
        self.write(op)
        return Domain(name, time.time())

    def _update_domain(self, name: str, change: Callable[[dict[str, Any]], None]) -> None:
        def op(b: Batch) -> None:
            raw = b.txn.get(name.encode(), db=b.dbs["domains"])
            if raw is None:
                raise DomainNotFound(f"no domain {name}")
            record = jload(raw)
            change(record)
            b.txn.put(name.encode(), jdump(record), db=b.dbs["domains"])
        self.write(op)

    def domain_set_catch_all(self, name: str, address: str | None) -> None:
        self._update_domain(name.lower(), lambda r: r.__setitem__("catch_all", address))

    def domain_dkim_keys(self, name: str) -> list[dict[str, Any]]:
        record = self._get("domains", name.lower())
        if record is None:
            raise DomainNotFound(f"no domain {name}")
        return list(record.get("dkim_keys", []))

    def domain_set_dkim_keys(self, name: str, keys: list[dict[str, Any]]) -> None:
        self._update_domain(name.lower(), lambda r: r.__setitem__("dkim_keys", keys))

    def domain_remove(self, name: str) -> None:
        name = name.lower()
        users = [u for u in self.users() if u.address.endswith("@" + name)]
        if users:
            raise StoreError(f"domain {name} still has {len(users)} user(s): remove them first")

        def op(b: Batch) -> None:
            if not b.txn.delete(name.encode(), db=b.dbs["domains"]):
                raise DomainNotFound(f"no domain {name}")
        self.write(op)

    # -- users ----------------------------------------------------------------------------

    @staticmethod
    def _user(address: str, record: dict[str, Any]) -> User:
        return User(address, record["id"], record["shard"], record["password_hash"],
                    record["quota_bytes"], record["created"])

    def user(self, address: str) -> User | None:
        return self.user_as_of(address)[0]

    def user_as_of(self, address: str) -> tuple[User | None, int]:
        """The user and the directory's commit it was read at (see ``as_of``)."""
        try:
            address = canonical(address)
        except StoreError:
            return None, -1
        with self.env.begin() as txn:
            raw = txn.get(address.encode("utf-8"), db=self.dbs["users"])
            stamp = txn.id()
        return (None if raw is None else self._user(address, jload(raw))), stamp

    def as_of(self) -> int:
        """The directory's last commit (LMDB transaction id), by any process: a value read
        at an equal one is still what the directory holds."""
        with self.env.begin() as txn:
            return int(txn.id())

    def users(self) -> list[User]:
        return [self._user(k, v) for k, v in self._all("users")]

    def user_add(self, address: str, password_hash: str, quota_bytes: int, shard_of: Callable[[int], int]) -> User:
        address = canonical(address)
        _, domain = split_address(address)
        if self.domain(domain) is None:
            raise DomainNotFound(f"domain {domain} is not local: add it with 'maild domain add {domain}'")

        def op(b: Batch) -> User:
            if b.txn.get(address.encode(), db=b.dbs["users"]) is not None:
                raise UserExists(f"user {address} exists")
            if b.txn.get(address.encode(), db=b.dbs["aliases"]) is not None:
                raise UserExists(f"{address} is an alias")
            raw = b.txn.get(b"next_user_id", db=b.dbs["meta"])
            user_id = int(raw) if raw else 1
            b.txn.put(b"next_user_id", str(user_id + 1).encode(), db=b.dbs["meta"])
            record = {"id": user_id, "shard": shard_of(user_id), "password_hash": password_hash,
                      "quota_bytes": quota_bytes, "created": time.time()}
            b.txn.put(address.encode(), jdump(record), db=b.dbs["users"])
            b.txn.put(codec.u32(user_id), address.encode(), db=b.dbs["userids"])
            return self._user(address, record)
        return self.write(op)

    def _update_user(self, address: str, change: Callable[[dict[str, Any]], None]) -> None:
        address = canonical(address)

        def op(b: Batch) -> None:
            raw = b.txn.get(address.encode(), db=b.dbs["users"])
            if raw is None:
                raise UserNotFound(f"no user {address}")
            record = jload(raw)
            change(record)
            b.txn.put(address.encode(), jdump(record), db=b.dbs["users"])
        self.write(op)

    def user_set_password(self, address: str, password_hash: str) -> None:
        self._update_user(address, lambda r: r.__setitem__("password_hash", password_hash))

    def user_set_quota(self, address: str, quota_bytes: int) -> None:
        self._update_user(address, lambda r: r.__setitem__("quota_bytes", quota_bytes))

    def user_remove(self, address: str) -> User:
        user = self.user(address)
        if user is None:
            raise UserNotFound(f"no user {address}")

        def op(b: Batch) -> None:
            b.txn.delete(user.address.encode(), db=b.dbs["users"])
            b.txn.delete(codec.u32(user.id), db=b.dbs["userids"])
            for db in ("tokens", "webhooks"):  # the user's API tokens and webhooks go with it
                for key, value in list(b.txn.cursor(db=b.dbs[db])):
                    if jload(value)["user"] == user.address:
                        b.txn.delete(key, db=b.dbs[db])
        self.write(op)
        return user

    # -- API tokens -----------------------------------------------------------------------
    # Bearer tokens of the HTTP API (docs/api.md), keyed by the SHA-256 of the secret: the
    # secret itself is never stored. A record: id (public, short), user, name, created,
    # expires (0: never).

    def token_add(self, digest: bytes, record: dict[str, Any]) -> None:
        def op(b: Batch) -> None:
            if b.txn.get(record["user"].encode(), db=b.dbs["users"]) is None:
                raise UserNotFound(f"no user {record['user']}")
            if not b.txn.put(digest, jdump(record), db=b.dbs["tokens"], overwrite=False):
                raise StoreError("token exists")
        self.write(op)

    def token(self, digest: bytes) -> dict[str, Any] | None:
        with self.env.begin() as txn:
            raw = txn.get(digest, db=self.dbs["tokens"])
        return None if raw is None else dict(jload(raw))

    def tokens(self) -> list[dict[str, Any]]:
        with self.env.begin() as txn:
            return [dict(jload(v)) for _k, v in txn.cursor(db=self.dbs["tokens"])]

    # Webhooks of the HTTP API, keyed by their id: id, user, url, events, secret, created.

    def webhook_add(self, record: dict[str, Any], max_per_user: int) -> None:
        def op(b: Batch) -> None:
            if b.txn.get(record["user"].encode(), db=b.dbs["users"]) is None:
                raise UserNotFound(f"no user {record['user']}")
            mine = sum(1 for _k, v in b.txn.cursor(db=b.dbs["webhooks"]) if jload(v)["user"] == record["user"])
            if mine >= max_per_user:
                raise StoreError(f"at most {max_per_user} webhooks per user")
            b.txn.put(record["id"].encode(), jdump(record), db=b.dbs["webhooks"])
        self.write(op)

    def webhooks(self) -> list[dict[str, Any]]:
        return [dict(v) for _k, v in self._all("webhooks")]

    def webhook_remove(self, webhook_id: str, user: str | None = None) -> None:
        def op(b: Batch) -> None:
            raw = b.txn.get(webhook_id.encode(), db=b.dbs["webhooks"])
            if raw is None or (user is not None and jload(raw)["user"] != user):
                raise NotFound(f"no webhook {webhook_id}")
            b.txn.delete(webhook_id.encode(), db=b.dbs["webhooks"])
        self.write(op)

    def token_revoke(self, token_id: str, user: str | None = None) -> None:
        """Remove the token with public id ``token_id`` (of ``user`` only, when given)."""
        def op(b: Batch) -> None:
            for key, value in list(b.txn.cursor(db=b.dbs["tokens"])):
                record = jload(value)
                if record["id"] == token_id and (user is None or record["user"] == user):
                    b.txn.delete(key, db=b.dbs["tokens"])
                    return
            raise NotFound(f"no token {token_id}")
        self.write(op)

    # -- aliases --------------------------------------------------------------------------

    def aliases(self) -> list[tuple[str, list[str]]]:
        return self._all("aliases")

    def alias_add(self, address: str, targets: list[str]) -> None:
        address = canonical(address)
        _, domain = split_address(address)
        if self.domain(domain) is None:
            raise DomainNotFound(f"domain {domain} is not local")
        targets = [canonical(t) for t in targets]
        if not targets:
            raise StoreError("an alias needs at least one target")

        def op(b: Batch) -> None:
            if b.txn.get(address.encode(), db=b.dbs["users"]) is not None:
                raise UserExists(f"{address} is a user")
            b.txn.put(address.encode(), jdump(targets), db=b.dbs["aliases"])
        self.write(op)

    def alias_remove(self, address: str) -> None:
        address = canonical(address)

        def op(b: Batch) -> None:
            if not b.txn.delete(address.encode(), db=b.dbs["aliases"]):
                raise NotFound(f"no alias {address}")
        self.write(op)

    # -- recipient resolution ---------------------------------------------------------------

    def resolve(self, address: str) -> list[str] | None:
        """Local users for ``address``; None when its domain is not local, [] when unknown."""
        try:
            local, domain = split_address(address)
        except StoreError:
            return None
        domain_record = self.domain(domain)
        if domain_record is None:
            return None
        found = self._expand(f"{local.lower()}@{domain}", 0)
        if found is None and "+" in local:
            # Plus-addressing: user+tag@domain delivers to user@domain.
            found = self._expand(f"{local.split('+', 1)[0].lower()}@{domain}", 0)
        if found is None and domain_record.catch_all:
            found = self._expand(domain_record.catch_all, 0)
        return sorted(set(found or []))

    def _expand(self, address: str, depth: int) -> list[str] | None:
        if depth > ALIAS_DEPTH:
            return None
        if self._get("users", address) is not None:
            return [address]
        targets = self._get("aliases", address)
        if targets is None:
            return None
        out: list[str] = []
        for target in targets:
            out.extend(self._expand(target, depth + 1) or [])
        return out

    def addresses_of(self, address: str) -> set[str]:
        address = canonical(address)
        own = {address}
        for alias, _targets in self.aliases():
            if self._expand(alias, 0) == [address]:
                own.add(alias)
        return own

    # -- outbound queue -------------------------------------------------------------------

    def op_enqueue(self, sha: str, size: int, sender: str, recipients: list[str],
                   now: float) -> Callable[[Batch], list[str]]:
        by_domain: dict[str, list[str]] = {}
        for rcpt in recipients:
            by_domain.setdefault(split_address(rcpt)[1], []).append(rcpt)

        def op(b: Batch) -> list[str]:
            ids = []
            for domain, rcpts in sorted(by_domain.items()):
                entry_id = uuid.uuid4().hex[:16]
                entry = {"id": entry_id, "blob": sha, "size": size, "sender": sender,
                         "domain": domain, "created": now, "attempts": 0, "next_attempt": now,
                         "last_error": None,
                         "recipients": [{"address": r, "state": "pending", "reply": None}
                                        for r in rcpts]}
                b.txn.put(entry_id.encode(), jdump(entry), db=b.dbs["queue"])
                b.txn.put(queue_due_key(now, entry_id), b"", db=b.dbs["queue_due"])
                ref = b.txn.get(bytes.fromhex(sha), db=b.dbs["blobref"])
                count = (codec.read_u64(ref) if ref else 0) + 1
                b.txn.put(bytes.fromhex(sha), codec.u64(count), db=b.dbs["blobref"])
                ids.append(entry_id)
            return ids
        return op

    def queue_entries(self) -> list[dict[str, Any]]:
        return [v for _k, v in self._all("queue")]

    def queue_entry(self, entry_id: str) -> dict[str, Any] | None:
        return self._get("queue", entry_id)

    def queue_due(self, now: float, limit: int = 100) -> list[dict[str, Any]]:
        out = []
        with self.env.begin() as txn:
            for key in txn.cursor(db=self.dbs["queue_due"]).iternext(values=False):
                if codec.read_u64(key[:8]) > int(now * 1000):
                    break
                raw = txn.get(key[8:], db=self.dbs["queue"])
                if raw is not None:
                    out.append(jload(raw))
                if len(out) >= limit:
                    break
        return out

    def op_queue_update(self, entry: dict[str, Any]) -> Callable[[Batch], None]:
        """Replace an entry (attempts, states, next attempt); a finished entry is removed."""
        def op(b: Batch) -> None:
            key = entry["id"].encode()
            raw = b.txn.get(key, db=b.dbs["queue"])
            if raw is None:
                raise NotFound(f"no queue entry {entry['id']}")
            old = jload(raw)
            b.txn.delete(queue_due_key(old["next_attempt"], old["id"]), db=b.dbs["queue_due"])
            if all(r["state"] != "pending" for r in entry["recipients"]):
                b.txn.delete(key, db=b.dbs["queue"])
                sha = bytes.fromhex(entry["blob"])
                count = codec.read_u64(b.txn.get(sha, db=b.dbs["blobref"]) or codec.u64(1)) - 1
                if count > 0:
                    b.txn.put(sha, codec.u64(count), db=b.dbs["blobref"])
                else:
                    b.txn.delete(sha, db=b.dbs["blobref"])
                    b.unlink.add(entry["blob"])
                return
            b.txn.put(key, jdump(entry), db=b.dbs["queue"])
            b.txn.put(queue_due_key(entry["next_attempt"], entry["id"]), b"", db=b.dbs["queue_due"])
        return op


def queue_due_key(when: float, entry_id: str) -> bytes:
    return codec.u64(int(when * 1000)) + entry_id.encode()

