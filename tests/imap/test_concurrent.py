"""Two sessions on one mailbox (RFC 3501 §5.2, §7.4.1): updates arrive at allowed moments."""

from __future__ import annotations

import collections
import os
import random
import threading
import time
from collections.abc import Callable

from tests.conftest import MaildServer
from tests.imap.conftest import Transcript, append, message


def test_no_expunge_during_fetch_store_search(connect: Callable[..., Transcript]) -> None:
    reader, writer = connect(), connect()
    for i in range(3):
        append(writer, "INBOX", message(f"n{i}"))
    reader.ok("SELECT INBOX")
    writer.ok("SELECT INBOX")
    writer.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
    writer.ok("EXPUNGE")
    # The reader keeps its numbering during FETCH, STORE and SEARCH: no EXPUNGE yet. The
    # message expunged meanwhile is left out, and a NO says so (RFC 2180 §4.1.3).
    lines, result = reader.command("FETCH 1:3 (UID)")
    assert result.startswith(b"NO [EXPUNGEISSUED] ")
    assert lines == [b"* 1 FETCH (UID 1)", b"* 3 FETCH (UID 3)"]
    assert not any(b"EXPUNGE" in line for line in lines)
    assert not any(b"EXPUNGE" in line for line in reader.ok("STORE 3 +FLAGS (\\Seen)"))
    assert not any(b"EXPUNGE" in line for line in reader.ok("SEARCH ALL"))
    # the flag change from the other session arrives as FETCH FLAGS
    assert reader.ok("NOOP") == [b"* 2 EXPUNGE"]
    assert reader.ok("FETCH 2 UID") == [b"* 2 FETCH (UID 3)"]
    writer.ok("STORE 1 +FLAGS.SILENT (\\Flagged)")
    append(writer, "INBOX", message("new"))
    lines = reader.ok("UID FETCH 1 FLAGS")  # UID FETCH may carry untagged updates
    assert b"* 3 EXISTS" in lines
    # Selected first, the reader holds \Recent of 1 to 3; the writer, selected when it
    # appended, holds the new one's (RFC 3501 §2.3.2).
    assert lines[0] == b"* 1 FETCH (FLAGS (\\Flagged \\Recent) UID 1)"
    assert b"* 2 RECENT" in lines


def test_other_session_deletes_selected_mailbox(connect: Callable[..., Transcript]) -> None:
    a, b = connect(), connect()
    a.ok("CREATE Temp")
    a.ok("SELECT Temp")
    b.ok("DELETE Temp")
    a.send("x NOOP")
    assert a.line().startswith(b"* BYE")


def test_fetch_racing_another_sessions_expunge(connect: Callable[..., Transcript]) -> None:
    """RFC 2180 §4.1.3: a message expunged by another session and not yet announced here is
    left out of the FETCH (bodies, envelopes, streamed ones too), the rest is answered,
    and the tagged NO [EXPUNGEISSUED] says so; never SERVERBUG."""
    reader, writer = connect(), connect()
    big = message("big", "y" * 400_000)  # streamed from the blob file
    for raw in (message("a"), big, message("c"), big):
        append(writer, "INBOX", raw)
    reader.ok("SELECT INBOX")
    writer.ok("SELECT INBOX")
    writer.ok("STORE 1,2 +FLAGS.SILENT (\\Deleted)")
    writer.ok("EXPUNGE")
    lines, result = reader.command("FETCH 1:4 (ENVELOPE BODY.PEEK[] BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert result.startswith(b"NO [EXPUNGEISSUED] "), result
    assert [line.split()[1] for line in lines] == [b"3", b"4"]
    # A large message's body sections are streamed in their order after its other items.
    assert lines[1].endswith(b"BODY[] {%d}\r\n" % len(big) + big
                             + b" BODY[HEADER.FIELDS (SUBJECT)] {16}\r\nSubject: big\r\n\r\n)")
    assert reader.ok("NOOP") == [b"* 2 EXPUNGE", b"* 1 EXPUNGE"]
    assert reader.ok("FETCH 1:2 (UID)") == [b"* 1 FETCH (UID 3)", b"* 2 FETCH (UID 4)"]
    # SEARCH reading bodies skips what is gone instead of failing.
    writer.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    writer.ok("EXPUNGE")
    assert reader.ok("SEARCH BODY yyyy") == [b"* SEARCH 2"]


LOAD_SECONDS = float(os.environ.get("MAILD_IMAP_LOAD_SECONDS", "12"))


def test_concurrent_load_has_no_serverbug(imap_server: MaildServer, connect: Callable[..., Transcript]) -> None:
    """Issue 17 item 8: sessions appending, storing, expunging and fetching on one mailbox
    for LOAD_SECONDS: every answer is OK, or NO [EXPUNGEISSUED] for a FETCH that lost a
    message to another session; no SERVERBUG, no BYE, no traceback in the log."""
    log_start = len(imap_server.log())
    sessions = [connect() for _ in range(4)]
    for s in sessions:
        s.ok("SELECT INBOX")
    deadline = time.monotonic() + LOAD_SECONDS
    answers: collections.Counter[str] = collections.Counter()
    problems: list[str] = []
    lock = threading.Lock()

    def work(s: Transcript, seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            op = rng.choice(["append", "append", "store", "expunge", "fetch", "fetch", "uidfetch", "search",
                             "noop"])
            if op == "append":
                raw = message(f"load {rng.random()}", "z" * rng.choice([10, 2000, 300_000]))
                command = f"APPEND INBOX {{{len(raw)}+}}\r\n".encode() + raw
            elif op == "store":
                lo = rng.randint(1, 400)
                flag = rng.choice(["\\Deleted", "\\Seen", "Kw"])
                command = f"UID STORE {lo}:{lo + rng.randint(0, 5)} +FLAGS ({flag})"
            elif op == "expunge":
                command = "EXPUNGE"
            elif op == "fetch":
                command = "FETCH 1:* (FLAGS ENVELOPE BODY.PEEK[] BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODYSTRUCTURE)"
            elif op == "uidfetch":
                command = "UID FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[TEXT]<0.100>)"
            elif op == "search":
                command = "SEARCH BODY zzzz"
            else:
                command = "NOOP"
            try:
                untagged, result = s.command(command)
            except (OSError, EOFError) as exc:
                with lock:
                    problems.append(f"{op}: connection failed: {exc}")
                return
            status = result.split(b" ")[0].decode()
            with lock:
                answers[f"{op} {status}"] += 1
                if any(line.startswith(b"* BYE") for line in untagged) or b"SERVERBUG" in result \
                        or (status != "OK" and not result.startswith(b"NO [EXPUNGEISSUED]")):
                    problems.append(f"{op}: {result[:200]!r}")

    threads = [threading.Thread(target=work, args=(s, n)) for n, s in enumerate(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(LOAD_SECONDS + 60)
    assert not any(t.is_alive() for t in threads)
    assert not problems, (problems[:10], answers)
    assert answers["fetch OK"] + answers["fetch NO"] > 10 and answers["expunge OK"] > 5, answers
    log = imap_server.log()[log_start:]
    assert "Traceback" not in log and "SERVERBUG" not in log, log[-4000:]
