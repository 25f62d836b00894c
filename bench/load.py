"""Load drivers for `make bench-compare`, usable against any server (maild, Dovecot, Postfix).

- SMTP/LMTP ingest: Postfix's `smtp-source` (C, so the load generator is not the limit).
- IMAP and POP3: small raw-socket clients, one thread per connection. They send the exact
  command and read the whole response up to its tagged line without parsing it, so the
  figures measure the server, not imaplib's Python parsing (a FETCH 1:* of 100k messages
  costs imaplib more than the server). Every response is checked for OK; any other answer
  aborts the workload with the server's text.

All connections go to 127.0.0.1; every call is bounded by TIMEOUT.
"""

from __future__ import annotations

import email.utils
import itertools
import multiprocessing
import random
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

TIMEOUT = 600.0  # seconds: any single workload on any server


class LoadError(RuntimeError):
    """The server answered something other than OK, or the load did not complete."""


# --- messages ---------------------------------------------------------------------------

_WORDS = ("invoice meeting agenda quarterly budget shipment review draft contract schedule "
          "report minutes travel expense project release roadmap customer support ticket "
          "deadline forecast inventory payroll holiday update summary analysis").split()
FROM_SENDERS = 97  # message i comes from sender{i % 97}
SUBJECTS = 50  # message i is about "Report {i % 50} week {i % 7}"


def message(i: int, size: int = 4096, to: str = "bench0@example.test") -> bytes:
    """A plain-text message of about `size` bytes with varied From, Subject and Date."""
    rng = random.Random(i)
    k = i % FROM_SENDERS
    head = (f'From: "Sender {k}" <sender{k}@host{k % 13}.example.org>\r\n'
            f"To: <{to}>\r\n"
            f"Subject: Report {i % SUBJECTS} week {i % 7}\r\n"
            f"Date: {email.utils.formatdate(1_700_000_000 + 60 * i)}\r\n"
            f"Message-ID: <bench.{i}@host{k % 13}.example.org>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n").encode()
    lines, length = [], len(head)
    while length < size:
        line = " ".join(rng.choice(_WORDS) for _ in range(9)).encode() + b"\r\n"
        lines.append(line)
        length += len(line)
    return head + b"".join(lines)


def search_from(n: int = 7) -> str:
    return f"sender{n}@"


def search_subject(n: int = 13) -> str:
    return f"Report {n} week"


def quick_search(text: str) -> str:
    """Thunderbird's quick filter bar over sender, recipients and subject: an OR of header
    keys, answered by the server when the folder is not in its offline store."""
    return f'SEARCH OR OR FROM "{text}" SUBJECT "{text}" OR TO "{text}" CC "{text}"'


def search_body() -> str:
    """Three body words in a row: found in a few per cent of messages, so every body is read."""
    return "budget shipment review"


# --- SMTP / LMTP ingest with smtp-source ------------------------------------------------

def smtp_source(host: str, port: int, recipient: str, *, sessions: int = 20, messages: int = 2000,
                size: int = 5120, lmtp: bool = False) -> float:
    """Run smtp-source; seconds until the last message got its final 250."""
    exe = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    args = [exe, "-s", str(sessions), "-m", str(messages), "-l", str(size), "-S", "bench ingest",
            "-f", "sender@example.org", "-t", recipient, "-M", "load.example.org"]
    if lmtp:
        args.append("-L")
    start = time.perf_counter()
    try:
        result = subprocess.run([*args, f"{host}:{port}"], capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise LoadError(f"smtp-source did not finish in {TIMEOUT:.0f} s") from None
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise LoadError(f"smtp-source exited {result.returncode}: {result.stdout}{result.stderr}".strip())
    return elapsed


# --- IMAP -------------------------------------------------------------------------------

def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Imap:
    """A minimal synchronous IMAP client: one command at a time, raw responses."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.tags = itertools.count(1)
        self.literal_plus = False
        greeting = self._line()
        if not greeting.startswith(b"* OK"):
            raise LoadError(f"IMAP greeting: {greeting[:200]!r}")

    def _recv(self) -> None:
        data = self.sock.recv(1 << 18)
        if not data:
            raise LoadError("IMAP server closed the connection")
        self.buf += data

    def _line(self) -> bytes:
        while (end := self.buf.find(b"\r\n")) < 0:
            self._recv()
        line = bytes(self.buf[:end])
        del self.buf[:end + 2]
        return line

    def _complete(self, tag: bytes, accept: tuple[bytes, ...] = (b"OK",)) -> bytes:
        """Read up to and including the tagged completion; the whole response as bytes.
        A tagged status not in ``accept`` raises LoadError."""
        marker = b"\r\n" + tag + b" "
        self.buf[:0] = b"\r\n"  # so a tagged line at the very start matches the marker too
        scanned = 0
        while True:
            at = self.buf.find(marker, scanned)
            if at >= 0:
                end = self.buf.find(b"\r\n", at + len(marker))
                if end >= 0:
                    response = bytes(self.buf[2:end + 2])
                    status = bytes(self.buf[at + len(marker):end])
                    del self.buf[:end + 2]
                    if not status.startswith(accept):
                        raise LoadError(f"IMAP {tag.decode()}: {status[:300]!r}")
                    return response
                scanned = at  # the tagged line has begun: look here again once its end came
            else:
                scanned = max(0, len(self.buf) - len(marker))
            self._recv()

    def command(self, text: str, accept: tuple[bytes, ...] = (b"OK",)) -> bytes:
        tag = f"A{next(self.tags)}".encode()
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        return self._complete(tag, accept)

    def login(self, user: str, password: str) -> None:
        response = self.command(f"LOGIN {_quote(user)} {_quote(password)}")
        if b"LITERAL+" in response:
            self.literal_plus = True
        else:
            self.literal_plus = b"LITERAL+" in self.command("CAPABILITY")

    def append(self, mailbox: str, data: bytes) -> None:
        tag = f"A{next(self.tags)}".encode()
        if self.literal_plus:  # RFC 7888: no round trip for the continuation
            self.sock.sendall(tag + f" APPEND {_quote(mailbox)} {{{len(data)}+}}\r\n".encode() + data + b"\r\n")
        else:
            self.sock.sendall(tag + f" APPEND {_quote(mailbox)} {{{len(data)}}}\r\n".encode())
            line = self._line()
            if not line.startswith(b"+"):
                raise LoadError(f"IMAP APPEND: {line[:300]!r}")
            self.sock.sendall(data + b"\r\n")
        self._complete(tag)

    def idle(self) -> bytes:
        """Start IDLE (RFC 2177) and wait for its continuation; the tag for :meth:`done`."""
        tag = f"A{next(self.tags)}".encode()
        self.sock.sendall(tag + b" IDLE\r\n")
        while not (line := self._line()).startswith(b"+"):
            if line.startswith(tag + b" "):
                raise LoadError(f"IMAP IDLE: {line[:300]!r}")
        return tag

    def done(self, tag: bytes) -> None:
        """End IDLE begun with :meth:`idle`."""
        self.sock.sendall(b"DONE\r\n")
        self._complete(tag)

    def count(self, mailbox: str = "INBOX") -> int:
        response = self.command(f"STATUS {_quote(mailbox)} (MESSAGES)")
        at = response.find(b"MESSAGES ")
        if at < 0:
            raise LoadError(f"IMAP STATUS: {response[:300]!r}")
        digits = response[at + 9:].split(b")", 1)[0]
        return int(digits)

    def close(self) -> None:
        try:
            self.command("LOGOUT")
        except (LoadError, OSError):
            pass
        self.sock.close()


@dataclass(frozen=True)
class Account:
    address: str
    password: str


def _threads(workers: int, target: Callable[[int], None]) -> float:
    """Run target(n) in `workers` threads started together; seconds until all are done."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(workers + 1)

    def run(n: int) -> None:
        try:
            barrier.wait(timeout=TIMEOUT)
            target(n)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(workers)]
    for t in threads:
        t.start()
    barrier.wait(timeout=TIMEOUT)
    start = time.perf_counter()
    for t in threads:
        t.join(TIMEOUT)
    elapsed = time.perf_counter() - start
    if any(t.is_alive() for t in threads):
        raise LoadError(f"load threads did not finish in {TIMEOUT:.0f} s")
    if errors:
        raise LoadError(f"{len(errors)} of {workers} clients failed: {errors[0]}") from errors[0]
    return elapsed


def imap_logins(host: str, port: int, accounts: list[Account], *, clients: int = 10, total: int = 300) -> float:
    """Connect, LOGIN, LOGOUT `total` times from `clients` threads; logins/s."""
    jobs = iter(range(total))
    lock = threading.Lock()

    def client(n: int) -> None:
        account = accounts[n % len(accounts)]
        while True:
            with lock:
                if next(jobs, None) is None:
                    return
            conn = Imap(host, port)
            conn.login(account.address, account.password)
            conn.close()

    return total / _threads(clients, client)


def imap_append(host: str, port: int, accounts: list[Account], messages: list[bytes], *, clients: int = 10,
                total: int = 2000, mailbox: str = "INBOX") -> float:
    """`clients` logged-in connections (client n as accounts[n % len]) APPEND `total` messages; appends/s."""
    conns = [Imap(host, port) for _ in range(clients)]
    try:
        for n, conn in enumerate(conns):
            conn.login(accounts[n % len(accounts)].address, accounts[n % len(accounts)].password)
        jobs = iter(range(total))
        lock = threading.Lock()

        def client(n: int) -> None:
            while True:
                with lock:
                    i = next(jobs, None)
                if i is None:
                    return
                conns[n].append(mailbox, messages[i % len(messages)])

        return total / _threads(clients, client)
    finally:
        for conn in conns:
            conn.close()


# The concurrent mixed workload: clients of one user that stay logged in and work on the
# same few mailboxes, as the phones, laptops and webmail of a small office do.
MIXED_BOXES = ("INBOX", "Shared 1", "Shared 2", "Shared 3")
MIXED_PER_BOX = 200  # messages in each mailbox before the run
# Each step: (cumulative probability, command); see _mixed_client for what each does.
MIXED_STEPS = ((0.05, "list"), (0.15, "status"), (0.20, "select"), (0.45, "fetch"), (0.60, "body"),
               (0.75, "store"), (0.90, "append"), (1.00, "expunge"))


def imap_mixed_setup(host: str, port: int, account: Account, *, size: int = 4096, clients: int = 10) -> None:
    """Create the mixed workload's mailboxes and put MIXED_PER_BOX messages in each."""
    conn = Imap(host, port)
    try:
        conn.login(account.address, account.password)
        # Dovecot creates a user's INBOX on first use: ten clients appending to it at once
        # can race ("NO [ALREADYEXISTS]"), so it is opened once here first.
        conn.command("SELECT INBOX")
        for box in MIXED_BOXES[1:]:
            conn.command(f"CREATE {_quote(box)}", accept=(b"OK", b"NO"))  # NO: it exists
    finally:
        conn.close()
    corpus = [message(i, size, account.address) for i in range(MIXED_PER_BOX)]
    for box in MIXED_BOXES:
        imap_append(host, port, [account], corpus, clients=clients, total=MIXED_PER_BOX, mailbox=box)


def _mixed_client(job: tuple[str, int, str, str, float, float, int]) -> int:
    """One client process of :func:`imap_mixed`: commands completed until the deadline.
    NO is an answer too (a message another client expunged), BAD or BYE are not."""
    host, port, address, password, start_at, seconds, seed = job
    rng = random.Random(seed)
    corpus = [message(seed * 1000 + i, 4096, address) for i in range(20)]
    conn = Imap(host, port)
    either = (b"OK", b"NO")
    try:
        conn.login(address, password)
        box = rng.choice(MIXED_BOXES)
        conn.command(f"SELECT {_quote(box)}")
        uids: list[str] = []
        done = 0
        time.sleep(max(0.0, start_at - time.time()))
        while time.time() < start_at + seconds:
            roll = rng.random()
            step = next(name for limit, name in MIXED_STEPS if roll < limit)
            if step in ("body", "store", "expunge") and not uids:
                step = "fetch"
            if step == "list":
                conn.command('LIST "" "*"')
            elif step == "status":
                conn.command(f"STATUS {_quote(rng.choice(MIXED_BOXES))} (MESSAGES UIDNEXT UNSEEN)")
            elif step == "select":
                box = rng.choice(MIXED_BOXES)
                conn.command(f"SELECT {_quote(box)}")
                uids = []
            elif step == "fetch":  # a client's message list: the first screenful
                response = conn.command("FETCH 1:20 (UID FLAGS RFC822.SIZE ENVELOPE)", accept=either)
                uids = [m.decode() for m in re.findall(rb"\bUID (\d+)", response)]
            elif step == "body":
                conn.command(f"UID FETCH {rng.choice(uids)} (BODY.PEEK[])", accept=either)
            elif step == "store":
                sign = rng.choice("+-")
                conn.command(f"UID STORE {rng.choice(uids)} {sign}FLAGS (\\Seen)", accept=either)
            elif step == "append":
                conn.append(box, rng.choice(corpus))
            else:  # RFC 4315 UID EXPUNGE: only the message this client deleted
                uid = uids.pop(rng.randrange(len(uids)))
                conn.command(f"UID STORE {uid} +FLAGS.SILENT (\\Deleted)", accept=either)
                conn.command(f"UID EXPUNGE {uid}", accept=either)
                done += 1
            done += 1
        return done
    finally:
        conn.close()


def imap_mixed(host: str, port: int, account: Account, *, clients: int = 10, seconds: float = 20.0) -> float:
    """``clients`` client processes (not threads: the load generator must not share one
    GIL), all logged in as ``account``, run the mixed steps on the MIXED_BOXES for
    ``seconds``; commands/s over all of them. imap_mixed_setup must have run."""
    start_at = time.time() + 2.0  # every client connected and logged in by then
    jobs = [(host, port, account.address, account.password, start_at, seconds, n) for n in range(clients)]
    pool = multiprocessing.get_context("fork").Pool(clients)
    try:
        result = pool.map_async(_mixed_client, jobs)
        counts = result.get(timeout=seconds + TIMEOUT)
        # close + join, not the context manager's terminate: a worker terminated while
        # another waits on the task queue's lock can leave that one blocked for ever.
        pool.close()
        pool.join()
    finally:
        pool.terminate()
    return sum(counts) / seconds


def timed(conn: Imap, command: str) -> tuple[float, bytes]:
    start = time.perf_counter()
    response = conn.command(command)
    return time.perf_counter() - start, response


def wait_for_count(host: str, port: int, account: Account, expected: int, *, mailbox: str = "INBOX",
                   timeout: float = TIMEOUT) -> float:
    """Poll STATUS (20 times a second) until `mailbox` holds `expected` messages; the time that happened."""
    conn = Imap(host, port)
    try:
        conn.login(account.address, account.password)
        deadline = time.monotonic() + timeout
        while (count := conn.count(mailbox)) < expected:
            if time.monotonic() > deadline:
                raise LoadError(f"{mailbox} of {account.address} holds {count} of {expected} after {timeout:.0f} s")
            time.sleep(0.05)
        return time.perf_counter()
    finally:
        conn.close()


# --- POP3 -------------------------------------------------------------------------------

class Pop3:
    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self._ok(self._until(b"\r\n"))

    def _until(self, terminator: bytes) -> bytes:
        scanned = 0
        while (at := self.buf.find(terminator, scanned)) < 0:
            scanned = max(0, len(self.buf) - len(terminator))
            data = self.sock.recv(1 << 18)
            if not data:
                raise LoadError("POP3 server closed the connection")
            self.buf += data
        out = bytes(self.buf[:at + len(terminator)])
        del self.buf[:at + len(terminator)]
        return out

    @staticmethod
    def _ok(line: bytes) -> bytes:
        if not line.startswith(b"+OK"):
            raise LoadError(f"POP3: {line[:300]!r}")
        return line

    def command(self, text: str) -> bytes:
        self.sock.sendall(text.encode() + b"\r\n")
        return self._ok(self._until(b"\r\n"))

    def multiline(self, text: str) -> bytes:
        """A command answered by +OK and a dot-terminated body; the whole response."""
        self.sock.sendall(text.encode() + b"\r\n")
        first = self._ok(self._until(b"\r\n"))
        return first + self._until(b"\r\n.\r\n")

    def close(self) -> None:
        try:
            self.command("QUIT")
        finally:
            self.sock.close()


def pop3_retr(host: str, port: int, account: Account) -> tuple[float, int, int]:
    """Log in, then STAT, RETR every message in turn, QUIT: (seconds after login, bytes, messages)."""
    conn = Pop3(host, port)
    conn.command(f"USER {account.address}")
    conn.command(f"PASS {account.password}")
    start = time.perf_counter()
    count = int(conn.command("STAT").split()[1])
    received = 0
    for n in range(1, count + 1):
        received += len(conn.multiline(f"RETR {n}"))
    conn.close()
    return time.perf_counter() - start, received, count
