"""The ``maild`` command: ``maild -c FILE <command>``.

Every error prints one line (``maild: ...``) and exits non-zero.
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import json
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.python.failure import Failure

from maild import config as configmod
from maild.auth import hash_password
from maild.store import Store
from maild.store.types import StoreError

DEFAULT_CONFIG = "/etc/maild/maild.toml"

Handler = Callable[[argparse.Namespace], int]


def _store(args: argparse.Namespace) -> Store:
    cfg = configmod.load(args.config)
    return Store(cfg.data_dir, cfg.store, replication=cfg.replication)


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise StoreError("passwords differ")
    if len(password) < 8:
        raise StoreError("a password needs at least 8 characters")
    return password


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def cmd_config_example(args: argparse.Namespace) -> int:
    """etc/maild.toml, from the declaration in maild/config.py."""
    sys.stdout.write(configmod.render_example())
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    cfg = configmod.load(args.config)
    from maild.daemon import tls_options

    tls_options(cfg)
    print(f"{args.config}: ok")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    cfg = configmod.load(args.config)
    from maild.util import reactor

    reactor.install()  # before anything imports twisted.internet.reactor (maild/util/reactor.py)
    from maild.supervisor import serve

    return serve(cfg)


def _add_domain(store: Store, name: str, exist_ok: bool = False) -> None:
    """A local domain with its DKIM keys (rsa and ed25519, RFC 6376 / RFC 8463): the one
    path for `domain add` and `demo-init`. ``exist_ok``: an existing domain without keys
    gets them."""
    from maild.mailauth import dkim

    if not (exist_ok and store.domain(name) is not None):
        store.domain_add(name)
    if not store.domain_dkim_keys(name):
        store.domain_set_dkim_keys(name, dkim.generate_keys(name))


def cmd_domain(args: argparse.Namespace) -> int:
    from maild.mailauth import admin

    store = _store(args)
    try:
        if args.action == "add":
            _add_domain(store, args.name)
            print(f"domain {args.name.lower()} added; publish its DNS records "
                  f"(maild domain dns {args.name.lower()})")
        elif args.action == "dns":
            cfg = configmod.load(args.config)
            print("\n".join(admin.zone_lines(cfg, args.name, store.domain_dkim_keys(args.name))))
        elif args.action == "dkim-rotate":
            cfg = configmod.load(args.config)
            try:
                keys, text = admin.rotate(cfg, args.name, store.domain_dkim_keys(args.name),
                                          confirm=args.confirm, remove_old=args.remove_old,
                                          force=args.force)
            except ValueError as exc:
                raise StoreError(str(exc)) from None
            store.domain_set_dkim_keys(args.name, keys)
            print(text)
        elif args.action == "remove":
            store.domain_remove(args.name)
            print(f"domain {args.name.lower()} removed")
        else:
            for domain in store.domains():
                print(domain.name)
    finally:
        store.close()
    return 0


def cmd_user(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        if args.action == "add":
            password = _read_password(args)
            quota = None if args.quota_mb is None else args.quota_mb * 1024 * 1024
            user = store.user_add(args.address, hash_password(password), quota)
            print(f"user {user.address} added (shard {user.shard})")
        elif args.action == "passwd":
            if store.user(args.address) is None:
                raise StoreError(f"no user {args.address}")
            store.user_set_password(args.address, hash_password(_read_password(args)))
            print(f"password of {args.address} changed")
        elif args.action == "remove":
            store.user_remove(args.address)
            print(f"user {args.address} removed with all its mail")
        else:
            rows = []
            for user in store.users():
                quota = store.quota(user.address)
                limit = f"{user.quota_bytes // 1048576} MB" if user.quota_bytes else "-"
                rows.append([user.address, str(user.shard), str(quota.messages),
                             str(quota.used_bytes), limit])
            _table(rows, ["address", "shard", "messages", "bytes", "quota"])
    finally:
        store.close()
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    """HTTP API bearer tokens (docs/api.md): the secret is shown once, stored as a hash."""
    store = _store(args)
    try:
        if args.action == "add":
            if store.user(args.address) is None:
                raise StoreError(f"no user {args.address}")
            if args.expires is not None and args.expires <= 0:
                raise StoreError("--expires: a number of days greater than 0")
            secret, record = store.token_add(args.address, args.name or "", args.expires or 0.0)
            print(secret)
            print(f"token {record['id']} for {record['user']} added (shown once: keep it)", file=sys.stderr)
        elif args.action == "revoke":
            store.token_revoke(args.id)
            print(f"token {args.id} revoked")
        else:
            def when(t: float) -> str:
                return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M") if t else "never"
            _table([[t["id"], t["user"], t["name"] or "-", when(t["created"]), when(t["expires"])]
                    for t in store.tokens(args.address)], ["id", "user", "name", "created", "expires"])
    finally:
        store.close()
    return 0


def cmd_alias(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        if args.action == "add":
            store.alias_add(args.address, args.targets)
            print(f"alias {args.address} -> {', '.join(args.targets)} added")
        elif args.action == "remove":
            store.alias_remove(args.address)
            print(f"alias {args.address} removed")
        else:
            for address, targets in store.aliases():
                print(f"{address} -> {', '.join(targets)}")
    finally:
        store.close()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        status = store.status()
        if store.repl_role != "standalone":
            from maild.replication import admin
            status["replication"] = admin.status(store)
        search_config = cfg_of(args).search
        if search_config.enabled:
            from maild.search import admin as search_admin
            status["search"] = search_admin.status_rows(store, search_config)
    finally:
        store.close()
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"domains {status['domains']}, users {status['users']}")
    _table([[str(i), str(s["users"]), str(s["messages"]), str(s["bytes"])]
            for i, s in status["shards"].items()], ["shard", "users", "messages", "bytes"])
    queue = status["queue"]
    age = "-" if queue["oldest_age"] is None else f"{queue['oldest_age']:.0f}s"
    print(f"outbound queue: {queue['entries']} entries, oldest {age}")
    retry = status["local_retry"]
    if retry["entries"]:
        print(f"local delivery retries: {retry['recipients']} recipient(s) in {retry['entries']} "
              f"entries, oldest {_age(retry['oldest_age'])}")
    print(f"free space in the data directory: {status['free_bytes'] // (1024 * 1024)} MiB")
    replication = status.get("replication")
    if replication is not None:  # details: maild replica status
        reported = replication["daemon"] or {}
        lags = [r["lag_records"] for r in replication["environments"].values()
                if r.get("lag_records") is not None]
        print(f"replication: {replication['role']}, epoch {replication['epoch']}"
              + (f", peers {', '.join(reported.get('peers') or []) or 'none'}" if reported else "")
              + (f", lag {max(lags)} records" if lags else "")
              + (", FENCED" if replication["fenced"] and replication["role"] != "follower" else "")
              + (", SYNC DEGRADED" if reported.get("degraded") else ""))
    for row in status.get("search", []):  # docs/search.md
        state = ("no index yet" if row["cursor"] is None else f"lag {row['lag']} change records")
        print(f"search index shard {row['shard']:02d}: {state} (log at {row['head']}), "
              f"{row['bytes'] // 1024} KiB")
    daemon = status["daemon"]
    if daemon is None:
        print("daemon: not running")
        return 0
    print(f"daemon: pid {daemon['pid']}")
    for where, full in daemon["full"].items():
        print(f"STORE FULL: {where}: writes refused for {_age(time.time() - full['since'])} "
              f"({full['failures']} refused; {full['error']}): free space, maild resumes by itself")
    for damaged in daemon["damaged_blobs"]:
        print(f"DAMAGED BLOB: {damaged['where']}: {damaged['blob']} ({damaged['message']}): "
              "restore it from a backup or run 'maild fsck'")
    return 0


def cfg_of(args: argparse.Namespace) -> configmod.Config:
    return configmod.load(args.config)


def cmd_replica(args: argparse.Namespace) -> int:
    """Replication (docs/replication.md): status, promote, resync, verify."""
    from maild.replication import admin
    if args.action == "resync":
        cfg = configmod.load(args.config)
        moved = admin.resync(cfg.data_dir, cfg)
        print("this node is now an empty follower; it copies the leader when `maild serve` starts"
              + (f"\nits previous data is set aside, never merged: {moved}" if moved else ""))
        return 0
    store = _store(args)
    try:
        if args.action == "promote":
            if store.repl_role == "leader" and store.repl_fence is None:
                raise StoreError("this node is already the leader")
            epoch = admin.promote(store)
            print(f"promoted: this node is the leader under epoch {epoch}; point MX and clients here")
            return 0
        if args.action == "verify":
            from maild.replication import verify
            if args.other is None:  # over the network, from the follower
                if not cfg_of(args).replication.leader:
                    raise StoreError("replica verify: set replication.leader, or name the other "
                                     "node's configuration file")
                try:
                    lines = verify.against_leader(cfg_of(args), store)
                except (OSError, verify.SSL.Error, verify.wire.ProtocolError) as exc:
                    raise StoreError(f"replica verify: the leader did not answer: "
                                     f"{exc or type(exc).__name__}") from None
            else:
                other_cfg = configmod.load(args.other)
                other = Store(other_cfg.data_dir, other_cfg.store, replication=other_cfg.replication)
                try:
                    lines = verify.differences(verify.digest(store), verify.digest(other))
                finally:
                    other.close()
            for line in lines:
                print(line)
            print(f"{len(lines)} difference(s)")
            return 1 if lines else 0
        status = admin.status(store)
    finally:
        store.close()
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    daemon = status["daemon"] or {}
    print(f"role {status['role']}, epoch {status['epoch']}"
          + (f", FENCED: {status['fenced']}" if status["fenced"] and status["role"] != "follower" else "")
          + (f", mode {daemon.get('mode')}" if daemon else ", daemon not running"))
    if daemon.get("degraded"):
        print(f"SYNC MODE DEGRADED to async: {daemon['degraded']}")
    if daemon.get("problem"):
        print(f"leader refused us: {daemon['problem']}")
    if daemon:
        print(f"peers: {', '.join(daemon.get('peers') or []) or 'none connected'}")
    if "apply_lag_p50_ms" in daemon:
        print(f"applied {daemon['apply_lag_p50_ms']:.1f} ms after the leader's commit (p50), "
              f"{daemon['apply_lag_p99_ms']:.1f} ms (p99), last {LAG_SAMPLES_TEXT} records")
    for where, row in status["environments"].items():
        if "auto_resync_from" in row:
            print(f"automatic resync of {where}: it was at record {row['auto_resync_from']}, "
                  "behind the leader's log; copying a snapshot")
        if "snapshot_bytes" in row:
            print(f"copying a snapshot of {where}: {row['snapshot_bytes'] / 1e6:.1f} MB so far")
    rows = []
    for where, row in status["environments"].items():
        lag = row.get("lag_records")
        seconds = row.get("lag_seconds")
        rows.append([where, str(row["position"]), str(row.get("epoch") or "-"),
                     "-" if row.get("follower") is None else str(row["follower"]),
                     "-" if lag is None else str(lag),
                     "-" if lag is None else str(row.get("lag_bytes", 0)),
                     "-" if seconds is None else f"{seconds:.1f}"])
    _table(rows, ["environment", "position", "epoch", "follower at", "lag records", "bytes", "seconds"])
    return 0


LAG_SAMPLES_TEXT = "10,000"


def _age(seconds: float) -> str:
    seconds = max(seconds, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _fired(d: Any) -> Any:
    """The result of a store Deferred (already fired: the CLI's store has no reactor)."""
    out: list[Any] = []
    d.addBoth(out.append)
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def cmd_queue(args: argparse.Namespace) -> int:
    from maild.queue import admin

    cfg = configmod.load(args.config)
    store = Store(cfg.data_dir, cfg.store)
    now = time.time()
    try:
        if args.action == "list":
            rows = []
            for e in sorted(store.queue_entries(), key=lambda e: e["created"]):
                pending = [r["address"] for r in e["recipients"] if r["state"] == "pending"]
                due = e["next_attempt"] - now
                rows.append([e["id"], _age(now - e["created"]), e["sender"] or "<>", e["domain"],
                             ", ".join(pending), str(e["attempts"]),
                             "now" if due <= 0 else f"in {_age(due)}",
                             (e["last_error"] or "-")[:60]])
            _table(rows, ["id", "age", "sender", "domain", "recipients", "attempts",
                          "next try", "last error"])
            print(f"{len(rows)} entries")
        elif args.action == "show":
            entry = admin.find(store, args.id)
            if args.json:
                print(json.dumps(entry, indent=2))
            else:
                for key in ("id", "domain", "sender", "size", "attempts", "last_error"):
                    print(f"{key}: {entry.get(key) if entry.get(key) is not None else '-'}")
                print(f"age: {_age(now - entry['created'])}")
                print(f"next try: {datetime.datetime.fromtimestamp(entry['next_attempt']):%Y-%m-%d %H:%M:%S}")
                for r in entry["recipients"]:
                    print(f"  <{r['address']}> {r['state']}" + (f": {r['reply']}" if r["reply"] else ""))
        elif args.action == "retry":
            entries = store.queue_entries() if args.all else [admin.find(store, args.id)]
            for entry in entries:
                _fired(admin.retry(store, entry, now))
            print(f"{len(entries)} entries due now")
        elif args.action == "delete":
            entry = admin.find(store, args.id)
            _fired(admin.delete(store, entry))
            print(f"queue entry {entry['id']} deleted")
        else:
            entry = admin.find(store, args.id)
            _fired(admin.bounce(store, entry, cfg.hostname, now))
            print(f"queue entry {entry['id']} bounced" + ("" if entry["sender"] else " (null sender: no DSN)"))
    finally:
        store.close()
    return 0


def cmd_fsck(args: argparse.Namespace) -> int:
    from maild.store.fsck import fsck

    store = _store(args)
    search_drift: list[str] = []
    try:
        report = fsck(store, repair=args.repair, progress=sys.stderr.isatty())
        if cfg_of(args).search.enabled:  # index drift (docs/search.md): `maild reindex` mends it
            from maild.search import admin as search_admin
            search_drift = search_admin.drift(store, cfg_of(args).search)
    finally:
        store.close()
    for problem in search_drift:
        print(problem)
    for problem in report.problems:
        print(problem)
    for note in report.notes:
        print(f"note: {note}")
    for fixed in report.repaired:
        print(f"repaired: {fixed}")
    print(f"fsck: {report.summary()}")
    if search_drift:
        print(f"search index: {len(search_drift)} problem(s); 'maild reindex' rebuilds the index")
    return 0 if (not report.problems or args.repair and not report.unrepaired) and not search_drift else 1


def cmd_reindex(args: argparse.Namespace) -> int:
    """`maild reindex [--user ADDRESS]`: rebuild the search index (docs/search.md)."""
    from maild.search import admin as search_admin

    cfg = cfg_of(args)
    store = Store(cfg.data_dir, cfg.store, replication=cfg.replication)
    try:
        count = search_admin.reindex(store, cfg.search, args.user, sys.stderr)
    except LookupError as exc:
        print(f"maild: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(f"reindexed {count} messages" + (f" of {args.user}" if args.user else ""))
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    """`maild backup DIR` (a hot snapshot) or `maild backup verify DIR`."""
    from maild.store import backup

    cfg = configmod.load(args.config)
    if args.target[0] == "verify" and len(args.target) == 2:
        snapshot = backup.snapshot_dir(Path(args.target[1]))
        report = backup.verify(snapshot, cfg.store, Store, backup.default_progress())
        for problem in report.problems:
            print(problem)
        print(f"verify {snapshot}: {report.blobs} blobs hashed; fsck of the copy: {report.fsck}")
        return 1 if report.problems else 0
    if len(args.target) != 1:
        raise StoreError("usage: maild backup DIR | maild backup verify DIR")
    store = Store(cfg.data_dir, cfg.store)
    try:
        result = backup.backup(store, Path(args.target[0]), backup.default_progress())
    finally:
        store.close()
    print(result.summary())
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """`maild restore DIR`: the newest snapshot of DIR (or the snapshot DIR names) into the
    configured, empty data directory, then fsck of the result."""
    from maild.store import backup
    from maild.store.fsck import fsck

    cfg = configmod.load(args.config)
    snapshot = backup.snapshot_dir(Path(args.source))
    manifest = backup.manifest_of(snapshot)
    if manifest["shards"] != cfg.store.shards:
        raise StoreError(f"the backup has {manifest['shards']} shards but store.shards is "
                         f"{cfg.store.shards}: set store.shards = {manifest['shards']}")
    count = backup.restore(snapshot, cfg.data_dir, backup.default_progress())
    gone = any(e["gone"] for e in manifest["environments"].values())
    store = Store(cfg.data_dir, cfg.store)
    try:
        report = fsck(store, repair=gone)
    finally:
        store.close()
    for problem in report.problems:
        print(problem)
    print(f"restored {snapshot} into {cfg.data_dir}: {count} blob files; fsck: {report.summary()}")
    return 0 if not report.problems or gone and not report.unrepaired else 1


def cmd_import(args: argparse.Namespace) -> int:
    """`maild import ADDRESS PATH`: an mbox, a directory of mbox files or a Maildir(++)."""
    from maild.transfer.importer import import_mail

    cfg = configmod.load(args.config)
    store = Store(cfg.data_dir, cfg.store)
    try:
        report = import_mail(store, args.address, Path(args.path), data_dir=cfg.data_dir,
                             mailbox=args.mailbox, variant="mboxo" if args.mboxo else "mboxrd",
                             restart=args.restart, out=sys.stderr,
                             mapped_max_kib=args.mapped_max_mb * 1024)
    finally:
        store.close()
    for problem in report.problems:
        print(f"problem: {problem}")
    print(report.summary())
    return 1 if report.failed else 0


def cmd_export(args: argparse.Namespace) -> int:
    from maild.transfer.importer import export_mail

    store = _store(args)
    try:
        count = export_mail(store, args.address, Path(args.dir), args.format, out=sys.stderr,
                            mapped_max_kib=args.mapped_max_mb * 1024)
    finally:
        store.close()
    print(f"exported {count} messages of {args.address} to {args.dir} ({args.format})")
    return 0


def _write_pem(cert: Any, key: Any, cert_path: Path, key_path: Path) -> None:
    """The certificate, and its key readable by the owner only."""
    from cryptography.hazmat.primitives import serialization

    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.touch(mode=0o600)
    key_path.chmod(0o600)  # before the key is in it
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _dev_ca(cert_path: Path, key_path: Path) -> tuple[Any, Any]:
    """The local development CA (certificate, key): loaded when both files exist, else made.
    Kept between runs so a user imports it into a client once, as with mkcert."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        return cert, key
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "maild development CA"),
                      x509.NameAttribute(NameOID.COMMON_NAME,
                                         f"maild development CA {secrets.token_hex(4)}")])
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            # RFC 5280 §4.2.1.9/§4.2.1.3: a CA that signs leaf certificates and nothing else
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    _write_pem(cert, key, cert_path, key_path)
    return cert, key


def cmd_dev_cert(args: argparse.Namespace) -> int:
    """A TLS certificate for development and tests, signed by a local CA (made once).

    The server certificate is a leaf (CA:FALSE, serverAuth) for the host names and
    127.0.0.1/::1: clients such as Thunderbird refuse a server certificate that is a CA."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    cert_path, key_path = Path(args.cert), Path(args.key)
    ca_path = Path(args.ca) if args.ca else cert_path.parent / "ca.pem"
    ca_key_path = Path(args.ca_key) if args.ca_key else ca_path.with_name(ca_path.stem + "-key.pem")
    ca_cert, ca_key = _dev_ca(ca_path, ca_key_path)
    names = list(dict.fromkeys([*args.hostname, "localhost"]))  # the dev names, in order
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(n) for n in names]
                + [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write_pem(cert, key, cert_path, key_path)
    print(f"certificate for {', '.join(names)}, 127.0.0.1, ::1: {cert_path}, key {key_path}")
    print(f"signed by the development CA {ca_path}: import it into your mail client once")
    return 0


def cmd_demo_init(args: argparse.Namespace) -> int:
    """Create the demo domain and user on a new data directory; print the password."""
    store = _store(args)
    try:
        _add_domain(store, "example.test", exist_ok=True)  # DKIM keys too, as `domain add`
        if store.user("demo@example.test") is not None:
            print("demo@example.test exists (password printed when it was created)")
            return 0
        password = secrets.token_urlsafe(12)
        store.user_add("demo@example.test", hash_password(password))
    finally:
        store.close()
    print(f"demo user: demo@example.test  password: {password}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maild", description="maild mail server")
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="TOML configuration file")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("serve", help="run the daemon in the foreground").set_defaults(func=cmd_serve)
    sub.add_parser("check", help="validate the configuration").set_defaults(func=cmd_check)
    sub.add_parser("config-example", help="print the example configuration with every key, its default "
                   "and documentation (etc/maild.toml)").set_defaults(func=cmd_config_example)

    domain = sub.add_parser("domain", help="local domains")
    dsub = domain.add_subparsers(dest="action", required=True)
    for action in ("add", "remove"):
        dsub.add_parser(action).add_argument("name")
    dsub.add_parser("list")
    dsub.add_parser("dns", help="zone-file lines to publish: MX, SPF, DKIM, DMARC"
                    ).add_argument("name")
    p = dsub.add_parser("dkim-rotate", help="add a new DKIM key pair; --confirm to sign with it")
    p.add_argument("name")
    step = p.add_mutually_exclusive_group()
    step.add_argument("--confirm", action="store_true", help="sign with the pending keys")
    step.add_argument("--remove-old", action="store_true", help="drop the retired keys")
    p.add_argument("--force", action="store_true", help="--confirm without checking DNS")
    domain.set_defaults(func=cmd_domain)

    user = sub.add_parser("user", help="mail users")
    usub = user.add_subparsers(dest="action", required=True)
    for action in ("add", "passwd"):
        p = usub.add_parser(action)
        p.add_argument("address")
        p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
        if action == "add":
            p.add_argument("--quota-mb", type=int, default=None, help="quota in MiB (0: none)")
    usub.add_parser("remove").add_argument("address")
    usub.add_parser("list")
    user.set_defaults(func=cmd_user)

    token = sub.add_parser("token", help="HTTP API bearer tokens: add (prints the secret once), list, revoke")
    tsub = token.add_subparsers(dest="action", required=True)
    p = tsub.add_parser("add")
    p.add_argument("address")
    p.add_argument("--name", default="", help="what the token is for (shown by list)")
    p.add_argument("--expires", type=float, default=None, metavar="DAYS", help="days it is valid (default: forever)")
    tsub.add_parser("list").add_argument("address", nargs="?")
    tsub.add_parser("revoke").add_argument("id")
    token.set_defaults(func=cmd_token)

    alias = sub.add_parser("alias", help="address aliases")
    asub = alias.add_subparsers(dest="action", required=True)
    p = asub.add_parser("add")
    p.add_argument("address")
    p.add_argument("targets", nargs="+")
    asub.add_parser("remove").add_argument("address")
    asub.add_parser("list")
    alias.set_defaults(func=cmd_alias)

    p = sub.add_parser("status", help="shards, users, messages, bytes, queue")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    replica = sub.add_parser("replica", help="replication: status, promote, resync, verify")
    rsub = replica.add_subparsers(dest="action", required=True)
    rsub.add_parser("status", help="role, epoch, positions, lag").add_argument("--json", action="store_true")
    rsub.add_parser("promote", help="make this follower the leader under a new epoch")
    rsub.add_parser("resync", help="set this node's data aside; start again as an empty follower "
                                   "(daemon stopped)")
    rsub.add_parser("verify", help="compare with the leader's content, over the network, or with "
                              "another data directory (exit 1 on differences)"
                    ).add_argument("other", nargs="?", help="the other node's configuration file "
                                                            "(default: ask replication.leader)")
    replica.set_defaults(func=cmd_replica)

    queue = sub.add_parser("queue", help="the outbound queue: list, show, retry, delete, bounce")
    qsub = queue.add_subparsers(dest="action", required=True)
    qsub.add_parser("list")
    p = qsub.add_parser("show")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")
    p = qsub.add_parser("retry", help="make entries due now")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("id", nargs="?")
    target.add_argument("--all", action="store_true")
    qsub.add_parser("delete", help="remove an entry, no DSN").add_argument("id")
    qsub.add_parser("bounce", help="give up now: DSN to the sender, remove").add_argument("id")
    queue.set_defaults(func=cmd_queue)

    p = sub.add_parser("fsck", help="verify the store; --repair rebuilds what can be rebuilt")
    p.add_argument("--repair", action="store_true")
    p.set_defaults(func=cmd_fsck)

    p = sub.add_parser("reindex", help="rebuild the search index (asks the running daemon, else here)")
    p.add_argument("--user", metavar="ADDRESS", help="only this user's mail")
    p.set_defaults(func=cmd_reindex)

    p = sub.add_parser("backup", help="a consistent snapshot of the store while it serves, "
                       "incremental in DIR; 'backup verify DIR' checks one")
    p.add_argument("target", nargs="+", metavar="[verify] DIR")
    p.set_defaults(func=cmd_backup)
    p = sub.add_parser("restore", help="restore a backup (DIR's newest snapshot) into the empty data dir")
    p.add_argument("source", metavar="DIR")
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("import", help="import an mbox file, a directory of mbox files or a "
                       "Maildir(++) into a user's mailboxes (resumable)")
    p.add_argument("address")
    p.add_argument("path")
    p.add_argument("--mailbox", help="the target mailbox of a single mbox file (default INBOX)")
    p.add_argument("--mboxo", action="store_true",
                   help="unquote only '>From ' (mboxo); the default is mboxrd ('>+From ')")
    p.add_argument("--restart", action="store_true", help="forget an interrupted import's journal")
    p.add_argument("--mapped-max-mb", type=int, default=64,
                   help="give back the store's mapped pages above this much resident file "
                   "memory (default 64)")
    p.set_defaults(func=cmd_import)
    p = sub.add_parser("export", help="write a user's mailboxes to a Maildir++ tree or mbox files")
    p.add_argument("address")
    p.add_argument("dir")
    p.add_argument("--format", choices=("maildir", "mbox"), default="maildir")
    p.add_argument("--mapped-max-mb", type=int, default=64,
                   help="give back the store's mapped pages above this much resident file "
                   "memory (default 64)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("dev-cert", help="write a development TLS certificate signed by a local CA")
    p.add_argument("--hostname", action="append", default=[],
                   help="a name for the certificate (repeatable; localhost is always included)")
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--ca", help="the CA certificate (made if missing; default: ca.pem beside --cert)")
    p.add_argument("--ca-key", help="the CA key (default: ca-key.pem beside the CA)")
    p.set_defaults(func=cmd_dev_cert)

    sub.add_parser("demo-init", help="create example.test and demo@example.test if missing"
                   ).set_defaults(func=cmd_demo_init)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (configmod.ConfigError, StoreError) as exc:
        for line in str(exc).splitlines():  # a ConfigError: one line per problem
            print(f"maild: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
