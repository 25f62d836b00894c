"""Verify (and with ``repair``, rebuild) the store's derived state.

Checked per shard: every message record's mailbox, blob file and blob checksum; the blob
reference counts; the unseen and modseq indexes; each mailbox's counters, UIDNEXT and
HIGHESTMODSEQ; the name index; each user's usage; orphan blob files; that every directory
user has a partition. A missing or damaged blob is one problem naming the messages it held
(the counters it upsets are counted as they stand, not reported again). Repair recomputes
indexes, counters and refcounts from the message records, drops records whose blob is gone
or damaged (reported as lost), and removes orphan blob files — none while any user lacks a
partition in their shard (that environment is not the one their mail was in, and the files
may be the only copies of their bodies): the spirit of Cyrus ``reconstruct`` and ``mox
verifydata``.
"""

from __future__ import annotations

import hashlib
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import lmdb

from maild.store import codec, retry
from maild.store.codec import MessageRecord, jdump, jload
from maild.store.types import SEEN, ChangeKind
from maild.store.writer import Batch

if TYPE_CHECKING:
    from maild.store import Store
    from maild.store.shard import Shard


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    unrepaired: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # harmless: e.g. orphans of an interrupted write
    messages: int = 0
    blobs: int = 0

    def summary(self) -> str:
        state = "clean" if not self.problems else f"{len(self.problems)} problem(s)"
        return f"{self.messages} messages, {self.blobs} blobs checked: {state}"


def fsck(store: Store, repair: bool = False, progress: bool = False) -> Report:
    report = Report()
    users_by_shard: dict[int, dict[int, str]] = defaultdict(dict)
    for user in store.users():
        users_by_shard[user.shard][user.id] = user.address
    # Users the directory places on a shard that holds no partition for them: that shard's
    # environment is not the one their mail was in (recreated empty, swapped). Unreferenced
    # blob files may be the only copies of their bodies left, so --repair removes none,
    # anywhere, until the right environment is back.
    homeless = [address for shard in store.shards
                for address in _without_partition(shard, users_by_shard[shard.index])]
    for shard in store.shards:
        _check_shard(shard, users_by_shard[shard.index], report, repair, progress, bool(homeless))
    _check_directory(store, report, repair and not homeless)
    if repair and homeless:
        report.unrepaired.append("blob files kept")
        report.notes.append(f"no blob file removed: {len(homeless)} user(s) have no partition in "
                            "their shard (restore that shard's environment, then run fsck again)")
    return report


def _without_partition(shard: Shard, users: dict[int, str]) -> list[str]:
    with shard.env.begin() as txn:
        return [address for user_id, address in users.items()
                if txn.get(user_id.to_bytes(4, "big"), db=shard.dbs["uinfo"]) is None]


def _check_directory(store: Store, report: Report, repair: bool) -> None:
    directory = store.directory
    refs: Counter[str] = Counter(e["blob"] for e in directory.queue_entries())
    refs.update(e["sha"] for e in retry.entries(directory.env, directory.dbs) if not e["inline"])
    with directory.env.begin() as txn:
        stored = {k.hex(): codec.read_u64(v) for k, v in txn.cursor(db=directory.dbs["blobref"])}
    files = set(directory.blobs.names())
    for sha, count in refs.items():
        if sha not in files:
            report.problems.append(f"directory: queued blob {sha} is missing")
            report.unrepaired.append(sha)
        if stored.get(sha) != count:
            report.problems.append(f"directory: blob {sha} refcount {stored.get(sha)} != {count}")
    for sha in files - set(refs):
        report.notes.append(f"directory: orphan queue blob file {sha} (--repair removes it)")
        if repair:
            directory.blobs.remove(sha)
            report.repaired.append(f"removed orphan queue blob {sha}")
    if repair and any(stored.get(s) != c for s, c in refs.items()):
        def op(b: Batch) -> None:
            b.txn.drop(b.dbs["blobref"], delete=False)
            for sha, count in refs.items():
                b.txn.put(bytes.fromhex(sha), codec.u64(count), db=b.dbs["blobref"])
        directory.write(op)
        report.repaired.append("directory: recomputed queue blob refcounts")


def _check_shard(shard: Shard, users: dict[int, str], report: Report, repair: bool, progress: bool,
                 keep_files: bool) -> None:
    where = f"shard {shard.index:02d}"
    dbs = shard.dbs
    files = set(shard.blobs.names())
    refs: Counter[bytes] = Counter()
    lost: list[bytes] = []  # message keys whose blob is gone or damaged
    mailboxes: dict[tuple[int, int], dict[str, Any]] = {}
    expect_unseen: set[bytes] = set()
    expect_modseq: dict[bytes, bytes] = {}
    counters: dict[tuple[int, int], dict[str, int]] = defaultdict(
        lambda: {"messages": 0, "unseen": 0, "size": 0, "maxuid": 0, "maxmodseq": 0})
    usage: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    checked: dict[str, bool] = {}
    bad_blobs: dict[str, str] = {}  # sha -> "missing" or "damaged ..."
    consequences: dict[str, list[str]] = defaultdict(list)  # sha -> the messages it holds
    lost_details: list[tuple[int, int, int, bool, bytes, bytes, bytes]] = []

    with shard.env.begin() as txn:
        for key, value in txn.cursor(db=dbs["mbox"]):
            user_id, mid = int.from_bytes(key[:4], "big"), int.from_bytes(key[4:8], "big")
            mailboxes[(user_id, mid)] = jload(value)
        partitions = {int.from_bytes(k, "big") for k in txn.cursor(db=dbs["uinfo"]).iternext(values=False)}
        for user_id, address in users.items():
            if user_id not in partitions:
                report.problems.append(f"{where}: user {address} has no partition")
                if repair:
                    report.unrepaired.append(address)
        for user_id in partitions - set(users):
            report.problems.append(f"{where}: partition of unknown user id {user_id}")
        names = {}
        for key, value in txn.cursor(db=dbs["mboxname"]):
            names[(int.from_bytes(key[:4], "big"), codec.read_u32(value))] = key[4:].decode("utf-8")
        for (user_id, mid), record in mailboxes.items():
            if names.get((user_id, mid)) != record["name"]:
                report.problems.append(f"{where}: mailbox {record['name']!r} (user {user_id}) missing from name index")
        total = txn.stat(dbs["msg"])["entries"]
        for n, (key, value) in enumerate(txn.cursor(db=dbs["msg"])):
            if progress and n % 10000 == 0:
                print(f"\r{where}: {n}/{total} messages", end="", file=sys.stderr)
            report.messages += 1
            user_id, mid, uid = int.from_bytes(key[:4], "big"), int.from_bytes(key[4:8], "big"), codec.msg_uid(key)
            rec = MessageRecord.decode(value)
            sha = rec.sha.hex()
            if (user_id, mid) not in mailboxes:
                report.problems.append(f"{where}: message uid {uid} in missing mailbox {mid} (user {user_id})")
                lost.append(key)
                continue
            if sha not in checked:
                body = txn.get(rec.sha, db=dbs["blobdata"])
                if body is not None:
                    checked[sha] = hashlib.sha256(body).hexdigest() == sha
                else:
                    checked[sha] = sha in files and shard.blobs.checksum(sha) == sha
                if not checked[sha]:
                    bad_blobs[sha] = "missing" if body is None and sha not in files else \
                        "damaged (checksum mismatch)"
            size = len(rec.prefix) + rec.blob_size
            if not checked[sha]:
                box = mailboxes[(user_id, mid)]["name"]
                consequences[sha].append(f"uid {uid} in {box!r} of {users.get(user_id, user_id)}")
                lost.append(key)
                lost_details.append((user_id, mid, size, SEEN not in rec.flags, rec.sha,
                                     codec.modseq_key(user_id, mid, rec.modseq), bytes(key)))
            # Counted as they stand, so that a lost body is one problem, not also a refcount,
            # the mailbox's counters and the user's usage; repair takes them out (below).
            refs[rec.sha] += 1
            c = counters[(user_id, mid)]
            c["messages"] += 1
            c["size"] += size
            c["maxuid"] = max(c["maxuid"], uid)
            c["maxmodseq"] = max(c["maxmodseq"], rec.modseq)
            usage[user_id][0] += size
            usage[user_id][1] += 1
            if SEEN not in rec.flags:
                c["unseen"] += 1
                expect_unseen.add(bytes(key))
            expect_modseq[codec.modseq_key(user_id, mid, rec.modseq)] = codec.u32(uid)
            if txn.get(key, db=dbs["env"]) is None:
                report.problems.append(f"{where}: message uid {uid} (mailbox {mid}) has no envelope")
        if progress and total:
            print(file=sys.stderr)
        for sha, state in bad_blobs.items():
            held = consequences[sha]
            listed = "; ".join(held[:5]) + (f"; and {len(held) - 5} more" if len(held) > 5 else "")
            report.problems.append(f"{where}: blob {sha} is {state}: {len(held)} message(s) lost "
                                   f"their body ({listed}); restore the file from a backup, or "
                                   "--repair drops those messages")
        report.blobs += len(files)
        stored_refs = {bytes(k): codec.read_u64(v) for k, v in txn.cursor(db=dbs["blobref"])}
        inline_names = {bytes(k) for k in txn.cursor(db=dbs["blobdata"]).iternext(values=False)}
        unseen = {bytes(k) for k in txn.cursor(db=dbs["unseen"]).iternext(values=False)}
        modseq = {bytes(k): bytes(v) for k, v in txn.cursor(db=dbs["modseq"])}
        uinfo = {int.from_bytes(k, "big"): jload(v) for k, v in txn.cursor(db=dbs["uinfo"])}

    index_problems = 0
    for digest, count in refs.items():
        if stored_refs.get(digest) != count:
            report.problems.append(f"{where}: blob {digest.hex()} refcount {stored_refs.get(digest)}, counted {count}")
            index_problems += 1
    for digest in set(stored_refs) - set(refs):
        report.problems.append(f"{where}: refcount for unreferenced blob {digest.hex()}")
        index_problems += 1
    stale_inline = inline_names - set(refs)
    if stale_inline:
        report.problems.append(f"{where}: {len(stale_inline)} inline bodies no message refers to")
        index_problems += 1
    if unseen != expect_unseen:
        report.problems.append(f"{where}: unseen index differs from flags in {len(unseen ^ expect_unseen)} entries")
        index_problems += 1
    if modseq != expect_modseq:
        differing = len(set(modseq.items()) ^ set(expect_modseq.items()))
        report.problems.append(f"{where}: modseq index differs in {differing} entries")
        index_problems += 1
    for box_key, record in mailboxes.items():
        c = counters[box_key]
        box = f"{where}: mailbox {record['name']!r} (user {users.get(box_key[0], box_key[0])})"
        for counter in ("messages", "unseen", "size"):
            if record[counter] != c[counter]:
                report.problems.append(f"{box} {counter} is {record[counter]}, counted {c[counter]}")
                index_problems += 1
        if c["maxuid"] >= record["uidnext"]:
            report.problems.append(f"{box} has uid {c['maxuid']} >= UIDNEXT {record['uidnext']}")
            index_problems += 1
        if c["maxmodseq"] > record["highestmodseq"]:
            report.problems.append(f"{box} has modseq {c['maxmodseq']} > HIGHESTMODSEQ {record['highestmodseq']}")
            index_problems += 1
    for user_id, info in uinfo.items():
        if [info.get("used_bytes"), info.get("messages")] != usage[user_id]:
            counted = usage[user_id]
            report.problems.append(f"{where}: user {users.get(user_id, user_id)} usage "
                                   f"{info.get('used_bytes')} bytes/{info.get('messages')} messages, "
                                   f"counted {counted[0]}/{counted[1]}")
            index_problems += 1
    live = {sha.hex() for sha in refs}
    orphans = files - live - {s for s, ok in checked.items() if not ok}
    if orphans:
        # A blob is linked before its metadata commits, so a crash leaves at worst an
        # unreferenced file: harmless, reported, removed by --repair (and by the daemon's
        # sweep once it is old enough, maild/store/sweep.py).
        report.notes.append(f"{where}: {len(orphans)} orphan blob file(s) left by interrupted "
                            "writes (--repair removes them)")
    damaged = {s for s, ok in checked.items() if not ok and s in files}

    if not repair:
        return
    if keep_files:  # see fsck(): some users' mail is elsewhere
        orphans, damaged = set(), set()
    for sha in orphans | damaged:
        shard.blobs.remove(sha)
    if orphans or damaged:
        report.repaired.append(f"{where}: removed {len(orphans | damaged)} unreferenced or damaged blob file(s)")
    for user_id, mid, size, unseen_, sha_key, modseq_k, key in lost_details:
        c = counters[(user_id, mid)]
        c["messages"] -= 1
        c["size"] -= size
        usage[user_id][0] -= size
        usage[user_id][1] -= 1
        if unseen_:
            c["unseen"] -= 1
            expect_unseen.discard(key)
        expect_modseq.pop(modseq_k, None)
        refs[sha_key] -= 1
        if refs[sha_key] <= 0:
            del refs[sha_key]
    if lost_details:
        index_problems += 1
        stale_inline = inline_names - set(refs)  # the lost ones' inline bodies go too
    # The dropped messages are expunged as far as every change-log consumer is concerned
    # (IMAP sessions, the search index, API push): one EXPUNGE record per mailbox.
    expunged: dict[tuple[int, int], list[int]] = defaultdict(list)
    for user_id, mid, *_rest, key in lost_details:
        if user_id in users:
            expunged[(user_id, mid)].append(codec.msg_uid(key))
    if index_problems or lost:
        shard.writer.run(lambda b: _rebuild(b, lost, mailboxes, counters, refs, expect_unseen,
                                            expect_modseq, usage, stale_inline, expunged, users))
        report.repaired.append(f"{where}: rebuilt indexes, counters and refcounts"
                               + (f"; dropped {len(lost)} message(s) whose body is lost" if lost else ""))


def _rebuild(b: Batch, lost: list[bytes], mailboxes: dict[tuple[int, int], dict[str, Any]],
             counters: dict[tuple[int, int], dict[str, int]], refs: Counter[bytes],
             unseen: set[bytes], modseq: dict[bytes, bytes], usage: dict[int, list[int]],
             stale_inline: set[bytes], expunged: dict[tuple[int, int], list[int]],
             users: dict[int, str]) -> None:
    txn: lmdb.Transaction[bytes] = b.txn
    for sha in stale_inline:
        txn.delete(sha, db=b.dbs["blobdata"])
    for key in lost:
        txn.delete(key, db=b.dbs["msg"])
        txn.delete(key, db=b.dbs["env"])
    for name in ("blobref", "unseen", "modseq"):
        txn.drop(b.dbs[name], delete=False)
    for sha, count in refs.items():
        txn.put(sha, codec.u64(count), db=b.dbs["blobref"])
    for key in unseen:
        txn.put(key, b"", db=b.dbs["unseen"])
    for key, value in modseq.items():
        txn.put(key, value, db=b.dbs["modseq"])
    for (user_id, mid), record in mailboxes.items():
        c = counters[(user_id, mid)]
        record.update(messages=c["messages"], unseen=c["unseen"], size=c["size"],
                      uidnext=max(record["uidnext"], c["maxuid"] + 1),
                      highestmodseq=max(record["highestmodseq"], c["maxmodseq"]))
        txn.put(codec.mbox_key(user_id, mid), jdump(record), db=b.dbs["mbox"])
        txn.put(codec.name_key(user_id, record["name"]), codec.u32(mid), db=b.dbs["mboxname"])
        if (user_id, mid) in expunged:
            b.changes.append({"kind": ChangeKind.EXPUNGE.value, "user": users[user_id], "mailbox_id": mid,
                              "uids": sorted(expunged[(user_id, mid)]), "modseq": record["highestmodseq"]})
    for key, value in list(txn.cursor(db=b.dbs["uinfo"])):
        user_id = int.from_bytes(key, "big")
        info = jload(value)
        info["used_bytes"], info["messages"] = usage[user_id]
        txn.put(key, jdump(info), db=b.dbs["uinfo"])
