"""Crash safety under load: SIGKILL at random moments while SMTP deliveries, IMAP
APPEND/STORE/EXPUNGE and POP3 DELE+QUIT run concurrently, with real clients (smtplib,
imaplib, poplib) on real sockets.

Every operation is recorded in a :class:`Ledger` when it is *attempted* and again when the
server *acknowledges* it (SMTP 250, APPEND OK [APPENDUID], STORE OK, EXPUNGE OK, QUIT +OK
after DELE). After each restart the store must hold:

* every acknowledged message, exactly once, byte-identical (SMTP copies end with the
  submitted bytes below the trace headers delivery adds; IMAP appends are equal);
* every acknowledged flag change;
* no message whose deletion was acknowledged, and every message never asked to be deleted
  (a deletion requested but not acknowledged may have happened or not);
* nothing that was never attempted;
* per mailbox the same UIDVALIDITY, UIDNEXT above every UID ever seen (as the store
  reports it and as IMAP STATUS tells a client), and no UID ever naming a second message.

At the end a real IMAP client re-reads every message and ``maild fsck`` must be clean.
"""

from __future__ import annotations

import imaplib
import itertools
import os
import poplib
import random
import re
import signal
import smtplib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from maild.store import Store
from tests.conftest import MaildServer
from tests.workers.conftest import wait_replaced

KILLS = 12
SEED = 20240909
USERS = {"alice@example.test": "alice-secret", "bob@example.test": "bob-secret"}
CRASH_BOX = "Crash"
CHECKED_FLAG = "$Checked"
CLIENT_ERRORS = (OSError, EOFError, smtplib.SMTPException, imaplib.IMAP4.abort, poplib.error_proto)

Box = tuple[str, str]  # (user, mailbox name)


@dataclass
class Ledger:
    """What the clients asked for and what the server acknowledged (thread-safe)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    attempted: set[str] = field(default_factory=set)  # Message-IDs ever sent
    raw: dict[str, bytes] = field(default_factory=dict)  # Message-ID -> bytes sent
    present: dict[Box, set[str]] = field(default_factory=dict)  # acknowledged arrivals
    flagged: dict[Box, set[str]] = field(default_factory=dict)  # acknowledged STORE +FLAGS
    delete_requested: dict[Box, set[str]] = field(default_factory=dict)
    delete_acked: dict[Box, set[str]] = field(default_factory=dict)
    appended_uid: dict[str, int] = field(default_factory=dict)  # Message-ID -> APPENDUID uid
    uidvalidity: dict[Box, int] = field(default_factory=dict)
    max_uid: dict[Box, int] = field(default_factory=dict)
    uid_owner: dict[tuple[Box, int], str] = field(default_factory=dict)  # a UID is never reused
    refusals: list[str] = field(default_factory=list)  # negative answers from a live server
    acks: int = 0

    def attempt(self, message_id: str, raw: bytes) -> None:
        with self.lock:
            self.attempted.add(message_id)
            self.raw[message_id] = raw

    def arrived(self, boxes: list[Box], message_id: str) -> None:
        with self.lock:
            for box in boxes:
                self.present.setdefault(box, set()).add(message_id)
            self.acks += 1

    def appended(self, box: Box, message_id: str, uidvalidity: int, uid: int) -> None:
        with self.lock:
            self.present.setdefault(box, set()).add(message_id)
            self.appended_uid[message_id] = uid
            self.saw_uid(box, uidvalidity, uid, message_id)
            self.acks += 1

    def saw_uid(self, box: Box, uidvalidity: int, uid: int = 0, message_id: str = "") -> None:
        """Called with the lock held; without a uid it just records the mailbox's UIDVALIDITY."""
        known = self.uidvalidity.setdefault(box, uidvalidity)
        assert known == uidvalidity, f"{box}: UIDVALIDITY changed from {known} to {uidvalidity}"
        if uid:
            self.max_uid[box] = max(self.max_uid.get(box, 0), uid)
            owner = self.uid_owner.setdefault((box, uid), message_id)
            assert owner == message_id, f"{box}: UID {uid} of {owner} reused for {message_id}"

    def flag(self, box: Box, message_ids: list[str]) -> None:
        with self.lock:
            self.flagged.setdefault(box, set()).update(message_ids)
            self.acks += 1

    def request_delete(self, box: Box, message_ids: list[str]) -> None:
        with self.lock:
            self.delete_requested.setdefault(box, set()).update(message_ids)

    def delete(self, box: Box, message_ids: list[str]) -> None:
        with self.lock:
            self.delete_acked.setdefault(box, set()).update(message_ids)
            self.acks += 1

    def refused(self, what: str) -> None:
        with self.lock:
            self.refusals.append(what)

    def live(self, box: Box) -> list[str]:
        """Acknowledged messages of ``box`` nobody asked to delete."""
        with self.lock:
            return sorted(self.present.get(box, set()) - self.delete_requested.get(box, set()))

    def snapshot(self) -> Ledger:
        with self.lock:
            return Ledger(attempted=set(self.attempted), raw=dict(self.raw),
                          present={b: set(s) for b, s in self.present.items()},
                          flagged={b: set(s) for b, s in self.flagged.items()},
                          delete_requested={b: set(s) for b, s in self.delete_requested.items()},
                          delete_acked={b: set(s) for b, s in self.delete_acked.items()},
                          appended_uid=dict(self.appended_uid), acks=self.acks)


_ids = itertools.count()


def make_message(rng: random.Random, kind: str, to: str) -> tuple[str, bytes]:
    """A unique message: mostly small (inline in LMDB), one in ten above
    store.inline_body_max (a blob file)."""
    message_id = f"{kind}-{next(_ids)}@crash.example"
    lines = rng.randint(40, 1100) if rng.random() < 0.1 else rng.randint(1, 40)
    body = b"".join(rng.randbytes(30).hex().encode() + b"\r\n" for _ in range(lines))
    header = (f"From: Load <load@remote.example>\r\nTo: {to}\r\nSubject: {message_id}\r\n"
              f"Message-ID: <{message_id}>\r\n\r\n").encode()
    return message_id, header + body


class Load:
    """The client threads; they run while ``up`` is set and wait for it otherwise."""

    def __init__(self, server: MaildServer, ledger: Ledger) -> None:
        self.server = server
        self.ledger = ledger
        self.up = threading.Event()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(work, SEED + n), daemon=True)
                        for n, work in enumerate([self._smtp, self._smtp, self._imap_alice,
                                                  self._imap_bob, self._pop3])]

    def start(self) -> None:
        self.up.set()
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        self.up.set()
        for thread in self.threads:
            thread.join(30)
            assert not thread.is_alive(), "a client thread hung"

    def _run(self, work: Callable[[random.Random], None], seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop.is_set():
            self.up.wait()
            try:
                work(rng)
            except CLIENT_ERRORS:
                time.sleep(0.01)  # the daemon is down: wait for `up` again
            except BaseException as exc:  # an IMAP BAD, a broken invariant: fail the test
                self.ledger.refused(f"{work.__name__}: {exc!r}")
                return

    # -- SMTP: deliveries to alice, bob or both on the MX port ----------------------------

    def _smtp(self, rng: random.Random) -> None:
        with smtplib.SMTP(self.server.host, self.server.ports["smtp"], timeout=10) as client:
            while not self.stop.is_set():
                rcpts = rng.choice([["alice@example.test"], ["bob@example.test"],
                                    ["alice@example.test", "bob@example.test"]])
                message_id, raw = make_message(rng, "smtp", ", ".join(rcpts))
                self.ledger.attempt(message_id, raw)
                try:
                    client.sendmail("load@remote.example", rcpts, raw)
                except smtplib.SMTPResponseException as exc:
                    self.ledger.refused(f"SMTP {exc.smtp_code} {exc.smtp_error!r}")
                    raise
                self.ledger.arrived([(r, "INBOX") for r in rcpts], message_id)

    # -- IMAP: APPEND, STORE +FLAGS, STORE \Deleted + EXPUNGE in the user's Crash box -----

    def _imap_alice(self, rng: random.Random) -> None:
        self._imap(rng, "alice@example.test")

    def _imap_bob(self, rng: random.Random) -> None:
        self._imap(rng, "bob@example.test")

    def _imap(self, rng: random.Random, user: str) -> None:
        box = (user, CRASH_BOX)
        with imap_session(self.server, user) as client:
            self._ok(client.select(CRASH_BOX), "SELECT")
            while not self.stop.is_set():
                roll = rng.random()
                live = self.ledger.live(box)
                if roll < 0.6 or len(live) < 5:
                    message_id, raw = make_message(rng, "imap", user)
                    self.ledger.attempt(message_id, raw)
                    answer = self._ok(client.append(CRASH_BOX, None, None, raw), "APPEND")
                    match = re.search(rb"\[APPENDUID (\d+) (\d+)\]", answer)
                    assert match, answer
                    self.ledger.appended(box, message_id, int(match[1]), int(match[2]))
                elif roll < 0.8:
                    chosen = rng.sample(live, min(3, len(live)))
                    uids = ",".join(str(self.ledger.appended_uid[m]) for m in chosen)
                    self._ok(client.uid("STORE", uids, "+FLAGS", f"(\\Flagged {CHECKED_FLAG})"), "STORE")
                    self.ledger.flag(box, chosen)
                else:
                    chosen = rng.sample(live, min(rng.randint(1, 4), len(live)))
                    uids = ",".join(str(self.ledger.appended_uid[m]) for m in chosen)
                    self.ledger.request_delete(box, chosen)
                    self._ok(client.uid("STORE", uids, "+FLAGS.SILENT", "(\\Deleted)"), "STORE")
                    self._ok(client.expunge(), "EXPUNGE")
                    self.ledger.delete(box, chosen)

    def _ok(self, answer: tuple[str, list[bytes | None]], what: str) -> bytes:
        status, data = answer
        if status != "OK":
            self.ledger.refused(f"IMAP {what}: {status} {data!r}")
            raise imaplib.IMAP4.abort(f"{what} refused")
        return (data[-1] or b"") if data else b""

    # -- POP3: DELE some of bob's delivered mail, QUIT -----------------------------------

    def _pop3(self, rng: random.Random) -> None:
        box = ("bob@example.test", "INBOX")
        client = poplib.POP3(self.server.host, self.server.ports["pop3"], timeout=10)
        try:
            client.user("bob@example.test")
            client.pass_(USERS["bob@example.test"])
            count = client.stat()[0]
            candidates = rng.sample(range(1, count + 1), min(count, 8))
            chosen: list[tuple[int, str]] = []
            live = set(self.ledger.live(box))
            for n in candidates:
                header = b"\r\n".join(client.top(n, 0)[1])
                match = re.search(rb"^Message-ID: <([^>]+)>", header, re.MULTILINE | re.IGNORECASE)
                if match and match[1].decode() in live:
                    chosen.append((n, match[1].decode()))
            chosen = chosen[: rng.randint(0, len(chosen))]
            self.ledger.request_delete(box, [m for _, m in chosen])
            for n, _ in chosen:
                client.dele(n)
            client.quit()  # RFC 1939 §6: the deletions happen in the UPDATE state
            self.ledger.delete(box, [m for _, m in chosen])
        except poplib.error_proto as exc:
            # "-ERR EOF" is poplib's word for a closed connection; [IN-USE] a lock the
            # daemon has not yet seen this worker's previous, broken session give up.
            if exc.args != ("-ERR EOF",) and b"[IN-USE]" not in exc.args[0]:
                self.ledger.refused(f"POP3 {exc}")
            raise
        finally:
            client.close()
        time.sleep(0.02)  # let bob's INBOX fill up again between sessions


class imap_session:
    """A logged-in imaplib client without TLS ([imap] allow_plaintext_auth_on_loopback)."""

    def __init__(self, server: MaildServer, user: str) -> None:
        self.client = imaplib.IMAP4(server.host, server.ports["imap"], timeout=10)
        self.client.login(user, USERS[user])

    def __enter__(self) -> imaplib.IMAP4:
        return self.client

    def __exit__(self, *exc: object) -> None:
        try:
            self.client.logout()
        except CLIENT_ERRORS + (imaplib.IMAP4.error,):
            self.client.shutdown()


@dataclass
class Stored:
    uidvalidity: int
    uidnext: int
    by_id: dict[str, list[tuple[int, frozenset[str], bytes]]]  # Message-ID -> copies


def read_store(server: MaildServer) -> dict[Box, Stored]:
    """Every message of the four mailboxes, through the store in this process (LMDB allows
    readers beside the daemon), keyed by Message-ID."""
    store = Store(server.data_dir, server.config.store)
    try:
        out = {}
        for user in USERS:
            for name in ("INBOX", CRASH_BOX):
                box = store.require_mailbox(user, name)
                by_id: dict[str, list[tuple[int, frozenset[str], bytes]]] = {}
                for meta in store.messages(user, box.id):
                    raw = store.read(user, box.id, meta.uid)
                    match = re.search(rb"^Message-ID: <([^>]+)>", raw, re.MULTILINE)
                    assert match, f"{user}/{name} uid {meta.uid} has no Message-ID:\n{raw[:500]!r}"
                    by_id.setdefault(match[1].decode(), []).append((meta.uid, meta.flags, raw))
                out[(user, name)] = Stored(box.uidvalidity, box.uidnext, by_id)
        return out
    finally:
        store.close()


def same_message(box: Box, stored: bytes, sent: bytes) -> bool:
    if box[1] == CRASH_BOX:
        return stored == sent  # APPEND stores the literal as given
    # Delivery prepends trace fields (Return-Path, Delivered-To, Received, ...) only.
    added = stored[: len(stored) - len(sent)]
    return stored.endswith(sent) and b"\r\n\r\n" not in added and added.endswith(b"\r\n")


def check(server: MaildServer, ledger: Ledger) -> int:
    """The invariants of the module docstring; returns how many messages were compared."""
    before = ledger.snapshot()  # what was acknowledged before we look
    state = read_store(server)
    after = ledger.snapshot()  # deletions requested while we looked may have happened
    compared = 0
    for box, stored in state.items():
        for message_id, copies in stored.by_id.items():
            assert message_id in after.attempted, f"{box}: {message_id} was never sent"
            assert len(copies) == 1, f"{box}: {message_id} stored {len(copies)} times"
        for message_id in before.present.get(box, set()):
            if message_id in after.delete_requested.get(box, set()):
                continue
            assert message_id in stored.by_id, f"{box}: acknowledged {message_id} is missing"
            uid, flags, raw = stored.by_id[message_id][0]
            assert same_message(box, raw, before.raw[message_id]), f"{box}: {message_id} differs"
            if box[1] == CRASH_BOX:
                assert uid == before.appended_uid[message_id], f"{box}: {message_id} changed UID"
            if message_id in before.flagged.get(box, set()):
                assert {"\\Flagged", CHECKED_FLAG} <= flags, f"{box}: {message_id} lost flags {flags}"
            compared += 1
        for message_id in before.delete_acked.get(box, set()):
            assert message_id not in stored.by_id, f"{box}: deleted {message_id} came back"
        with ledger.lock:
            ledger.saw_uid(box, stored.uidvalidity)
            for message_id, copies in stored.by_id.items():
                ledger.saw_uid(box, stored.uidvalidity, copies[0][0], message_id)
            assert stored.uidnext > ledger.max_uid.get(box, 0), f"{box}: UIDNEXT went back"
    check_status(server, ledger)
    return compared


def check_status(server: MaildServer, ledger: Ledger) -> None:
    """What a client is told: UIDVALIDITY unchanged, UIDNEXT above every UID seen."""
    for user in USERS:
        with imap_session(server, user) as client:
            for name in ("INBOX", CRASH_BOX):
                status, data = client.status(name, "(UIDNEXT UIDVALIDITY)")
                assert status == "OK", data
                text = (data[0] or b"").decode()
                uidnext = int(re.search(r"UIDNEXT (\d+)", text)[1])  # type: ignore[index]
                uidvalidity = int(re.search(r"UIDVALIDITY (\d+)", text)[1])  # type: ignore[index]
                with ledger.lock:
                    assert uidvalidity == ledger.uidvalidity[(user, name)], (user, name, text)
                    assert uidnext > ledger.max_uid.get((user, name), 0), (user, name, text)


def fetch_all(server: MaildServer, user: str, name: str) -> Iterator[bytes]:
    """Every message of a mailbox as a real client sees it (BODY.PEEK[])."""
    with imap_session(server, user) as client:
        status, data = client.select(name, readonly=True)
        assert status == "OK", data
        status, data = client.uid("FETCH", "1:*", "(BODY.PEEK[])")
        assert status == "OK", data
        for item in data:
            if isinstance(item, tuple):
                yield item[1]


def _kill_one_worker(server: MaildServer, rng: random.Random) -> None:
    """SIGKILL one worker (the other goes on serving and writing); return once the
    supervisor's replacement said it is ready."""
    victim = rng.choice(server.worker_pids())
    os.kill(victim, signal.SIGKILL)
    wait_replaced(server, victim, timeout=60)


# With two worker processes (issue 21) SIGKILL hits the supervisor, which takes both workers
# with it: kill -9 of the whole tree, fewer times (each restart starts three processes).
# "one worker": SIGKILL of one worker at a time while the other goes on committing to the
# same shards (LMDB's write lock and the shared meta sync's lock die with their holder);
# the clients of the dead worker reconnect to the survivor or the replacement, and the
# store is compared at the end.
@pytest.mark.parametrize("workers, kills, one_worker", [(1, KILLS, False), (2, KILLS // 3, False),
                                                        (2, KILLS // 2, True)],
                         ids=["1 process", "2 workers", "one of 2 workers"])
def test_sigkill_under_load_loses_nothing_acknowledged(maild_factory: Callable[..., MaildServer],
                                                       workers: int, kills: int, one_worker: bool) -> None:
    server = maild_factory(smtp={"messages_per_minute_per_ip": 0},
                           imap={"allow_plaintext_auth_on_loopback": True},
                           pop3={"allow_plaintext_auth_on_loopback": True},
                           server={"workers": workers})
    for user in USERS:
        with imap_session(server, user) as client:
            assert client.create(CRASH_BOX)[0] == "OK"
    ledger = Ledger()
    check(server, ledger)  # records each mailbox's UIDVALIDITY
    load = Load(server, ledger)
    rng = random.Random(SEED)
    started = time.monotonic()
    load.start()
    compared = 0
    try:
        for _ in range(kills):
            acks = ledger.acks
            deadline = time.monotonic() + 30
            while ledger.acks == acks:  # the load is running again: then a random moment
                assert time.monotonic() < deadline, "no operation was acknowledged for 30 s"
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.75))
            assert not ledger.refusals, ledger.refusals[:10]
            if one_worker:
                _kill_one_worker(server, rng)
                continue
            load.up.clear()
            server.kill()
            server.start()
            compared += check(server, ledger)
            load.up.set()
    finally:
        load.finish()
    final = ledger.snapshot()
    assert not final.refusals, final.refusals[:10]
    compared += check(server, ledger)
    # A real client reads back every acknowledged message that must still be there.
    for user in USERS:
        for name in ("INBOX", CRASH_BOX):
            box = (user, name)
            seen = {}
            for raw in fetch_all(server, user, name):
                message_id = re.search(rb"^Message-ID: <([^>]+)>", raw, re.MULTILINE)[1].decode()  # type: ignore[index]
                seen[message_id] = raw
            for message_id in final.present.get(box, set()) - final.delete_requested.get(box, set()):
                assert same_message(box, seen[message_id], final.raw[message_id]), (box, message_id)
    server.stop()
    fsck = server.fsck()
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    deletions = sum(len(s) for s in final.delete_acked.values())
    how = f"{workers} worker(s){', one killed at a time' if one_worker else ''}"
    print(f"\ncrash ({how}): {kills} SIGKILLs in {time.monotonic() - started:.1f} s; "
          f"{final.acks} acknowledged operations ({len(final.attempted)} messages sent, "
          f"{deletions} acknowledged deletions); "
          f"{compared} message comparisons")
