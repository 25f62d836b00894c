"""`maild import` and `maild export` (maild/transfer): mbox made by formail (Debian
procmail), a Maildir++ tree made by mbsync (Debian isync) from the daemon's own IMAP
server, hand-made malformed input, resuming an interrupted import without duplicates,
export round trips, and bounded resident memory of both."""

from __future__ import annotations

import imaplib
import json
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from maild.store import Store
from tests.conftest import USERS, MaildServer

ALICE, BOB = "alice@example.test", "bob@example.test"


def mail(n: int, extra: bytes = b"") -> bytes:
    return (b"From: sender%d@remote.example\nTo: alice@example.test\nSubject: message %d\n"
            b"Message-ID: <m%d@remote.example>\nDate: Thu, 04 Dec 2025 10:%02d:00 +0000\n\n"
            b"line one of %d\n%s" % (n, n, n, n % 60, n, extra))


def contents(store: Store, user: str) -> dict[str, list[tuple[bytes, frozenset[str], float]]]:
    """mailbox name -> [(raw, flags, internal date)] in uid order."""
    out = {}
    for box in store.mailboxes(user):
        out[box.name] = [(store.read(user, box.id, m.uid), m.flags, m.internal_date)
                         for m in store.messages(user, box.id)]
    return out


def read_store(server: MaildServer, user: str) -> dict[str, list[tuple[bytes, frozenset[str], float]]]:
    store = server.store()
    try:
        return contents(store, user)
    finally:
        store.close()


def imap(server: MaildServer, user: str) -> imaplib.IMAP4_SSL:
    context = ssl.create_default_context(cafile=str(server.cafile))
    client = imaplib.IMAP4_SSL(server.host, server.ports["imaps"], ssl_context=context, timeout=30)
    client.login(user, USERS[user])
    return client


def formail_mbox(path: Path, messages: list[bytes]) -> None:
    """An mbox as procmail's formail writes it (From_ line added, body 'From ' quoted)."""
    with open(path, "ab") as out:
        for raw in messages:
            result = subprocess.run(["formail"], input=raw, capture_output=True, check=True, timeout=30)
            out.write(result.stdout)


needs_formail = pytest.mark.skipif(shutil.which("formail") is None, reason="formail (Debian procmail) missing")


@needs_formail
def test_mbox_by_formail(maild_server: MaildServer, tmp_path: Path) -> None:
    source = tmp_path / "archive.mbox"
    messages = [mail(i, b"From the body, quoted by formail\n" if i % 2 else b"") for i in range(1, 21)]
    formail_mbox(source, messages)
    result = maild_server.cli("import", ALICE, str(source), "--mailbox", "Old/Archive")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "imported 20 messages" in result.stdout
    assert re.search(r"import: 20 messages, [\d.]+/[\d.]+ MB, \d+ msg/s", result.stderr)
    stored = read_store(maild_server, ALICE)["Old/Archive"]
    assert [raw for raw, _, _ in stored] == [m.replace(b"\n", b"\r\n") for m in messages]
    # Seen through IMAP, with the internal date of formail's From_ line (today, UTC).
    client = imap(maild_server, ALICE)
    try:
        client.select('"Old/Archive"', readonly=True)
        _, data = client.fetch("2", "(BODY.PEEK[] INTERNALDATE)")
        assert data[0][1] == messages[1].replace(b"\n", b"\r\n")
    finally:
        client.logout()


def test_mbox_status_headers_and_mboxrd(maild_server: MaildServer, tmp_path: Path) -> None:
    source = tmp_path / "flags.mbox"
    source.write_bytes(
        b"From a@example.org Tue Jan  2 03:04:05 2024\n"
        b"Subject: seen and flagged\nStatus: RO\nX-Status: AF\nX-Keywords: $Label1 Project\n\n"
        b">From quoted once\n>>From quoted twice\n\n"
        b"From b@example.org Wed Jan  3 03:04:05 2024\nSubject: new\n\nbody\n")
    assert maild_server.cli("import", ALICE, str(source)).returncode == 0
    inbox = read_store(maild_server, ALICE)["INBOX"]
    (raw1, flags1, date1), (raw2, flags2, _) = inbox
    assert raw1 == b"Subject: seen and flagged\r\n\r\nFrom quoted once\r\n>From quoted twice\r\n"
    assert flags1 == {"\\Seen", "\\Answered", "\\Flagged", "$Label1", "Project"}
    assert date1 == 1704164645.0  # 2024-01-02 03:04:05 UTC, from the From_ line
    assert raw2 == b"Subject: new\r\n\r\nbody\r\n" and flags2 == frozenset()


def test_malformed_mbox_is_imported_and_reported(maild_server: MaildServer, tmp_path: Path) -> None:
    source = tmp_path / "bad.mbox"
    source.write_bytes(
        b"stray text before any From_ line\n\n"
        b"From x@example.org Tue Jan  2 03:04:05 2024\n"
        b"no header here, just text\n\n"
        b"From y@example.org Tue Jan  2 03:04:06 2024\n"
        b"Subject: =?bogus?Q?x?= \xff\xfe latin1 \xe9\n\n\xe9t\xe9 \x00 body\n\n"
        b"From z@example.org Tue Jan  2 03:04:07 2024\n"
        b"Subject: cut short\n\nthe file ends in the middle of a li")
    result = maild_server.cli("import", ALICE, str(source))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "offset 0: text before the first 'From ' line" in result.stdout
    assert "without a header" in result.stdout
    assert "ends inside a line" in result.stdout
    inbox = read_store(maild_server, ALICE)["INBOX"]
    assert [raw for raw, _, _ in inbox] == [
        b"stray text before any From_ line\r\n",
        b"no header here, just text\r\n",
        b"Subject: =?bogus?Q?x?= \xff\xfe latin1 \xe9\r\n\r\n\xe9t\xe9 \x00 body\r\n",
        b"Subject: cut short\r\n\r\nthe file ends in the middle of a li\r\n"]


def test_maildir_by_mbsync(maild_server: MaildServer, tmp_path: Path) -> None:
    assert shutil.which("mbsync"), "mbsync missing: `make test` installs Debian's isync"
    client = imap(maild_server, ALICE)
    try:
        client.create('"Lists/Dev &- Ops"')
        when = imaplib.Time2Internaldate(1_700_000_000)
        for i in range(1, 6):
            flags = "(\\Seen \\Flagged)" if i == 2 else "(\\Answered)" if i == 3 else None
            assert client.append("INBOX", flags, when, mail(i).replace(b"\n", b"\r\n"))[0] == "OK"
        assert client.append('"Lists/Dev &- Ops"', "(\\Seen)", when,
                             mail(9).replace(b"\n", b"\r\n"))[0] == "OK"
    finally:
        client.logout()
    local = tmp_path / "Maildir"
    local.mkdir()
    config = tmp_path / "mbsyncrc"
    config.write_text(f"""
IMAPAccount maild
Host localhost
Port {maild_server.ports["imaps"]}
User {ALICE}
Pass {USERS[ALICE]}
SSLType IMAPS
CertificateFile {maild_server.cafile}

IMAPStore remote
Account maild

MaildirStore local
Inbox {local}
SubFolders Maildir++

Channel sync
Far :remote:
Near :local:
Patterns INBOX Lists*
Create Near
Sync Pull
SyncState *
""")
    run = subprocess.run(["mbsync", "-c", str(config), "-a"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert (local / ".Lists.Dev &- Ops" / "cur").is_dir()  # Maildir++ with a modified UTF-7 name
    result = maild_server.cli("import", BOB, str(local))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "imported 6 messages" in result.stdout
    original, imported = read_store(maild_server, ALICE), read_store(maild_server, BOB)

    def same(box: list[tuple[bytes, frozenset[str], float]]) -> list[tuple[bytes, frozenset[str]]]:
        # mbsync adds its X-TUID header to the files it writes; the rest is the message.
        return sorted((re.sub(rb"X-TUID: \S+\r\n", b"", raw), flags) for raw, flags, _ in box)
    assert same(imported["Lists/Dev & Ops"]) == same(original["Lists/Dev & Ops"])
    assert same(imported["INBOX"]) == same(original["INBOX"])
    # The internal dates are the files' modification times (mbsync sets them as it writes).
    mtimes = sorted(p.stat().st_mtime for p in local.glob("cur/*")) + \
        sorted(p.stat().st_mtime for p in local.glob("new/*"))
    assert sorted(d for _, _, d in imported["INBOX"]) == sorted(mtimes)
    # Run again: the journal says it is all there.
    again = maild_server.cli("import", BOB, str(local))
    assert "imported 0 messages" in again.stdout and "6 already there" in again.stdout


def test_maildir_keywords_and_flags(maild_server: MaildServer, tmp_path: Path) -> None:
    root = tmp_path / "md"
    for d in ("cur", "new", "tmp", ".Work/cur", ".Work/new", ".Work/tmp"):
        (root / d).mkdir(parents=True)
    (root / "dovecot-keywords").write_text("0 $Forwarded\n1 Important\n2 Later\n")
    (root / "cur" / "1000.A.host:2,FRSbc").write_bytes(mail(1))
    (root / "new" / "1001.B.host").write_bytes(mail(2))
    (root / ".Work" / "cur" / "1002.C.host:2,T").write_bytes(mail(3))
    (root / ".Work" / "cur" / "1003.D.host:2,").write_bytes(b"")  # an empty file: still a message
    import os
    os.utime(root / "cur" / "1000.A.host:2,FRSbc", (1_600_000_000, 1_600_000_000))
    result = maild_server.cli("import", BOB, str(root))
    assert result.returncode == 0, result.stdout + result.stderr
    stored = read_store(maild_server, BOB)
    (raw, flags, date), (raw2, flags2, _) = sorted(stored["INBOX"], key=lambda m: m[0])
    assert raw == mail(1).replace(b"\n", b"\r\n")
    assert flags == {"\\Flagged", "\\Answered", "\\Seen", "Important", "Later"}
    assert date == 1_600_000_000
    assert flags2 == frozenset()
    assert {f for _, f, _ in stored["Work"]} == {frozenset({"\\Deleted"}), frozenset()}


def test_interrupted_import_resumes_without_duplicates(maild_server: MaildServer, tmp_path: Path) -> None:
    source = tmp_path / "big.mbox"
    count = 3000
    with open(source, "wb") as out:
        for i in range(count):
            out.write(b"From s@example.org Tue Jan  2 03:04:05 2024\n" + mail(i, b"x" * 2000 + b"\n") + b"\n")
    # Kill -9 in the middle, as a power cut would.
    process = subprocess.Popen([sys.executable, "-m", "maild.cli", "-c", str(maild_server.config_path),
                                "import", ALICE, str(source)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    journal_dir = maild_server.data_dir / "imports"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        journals = list(journal_dir.glob("*.journal")) if journal_dir.exists() else []
        if journals and journals[0].read_text().count('"done"') >= 3:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = len(read_store(maild_server, ALICE)["INBOX"])
    assert 0 < partial < count
    # The worst case too: a batch handed to the store, committed, its "done" never written.
    # Only that line goes: the kill may have come after the next batch's "pending" line
    # (fsynced before its batch went to the store), which a crash never takes back.
    journal = next(journal_dir.glob("*.journal"))
    lines = journal.read_text().splitlines()
    last_done = max(i for i, line in enumerate(lines) if '"done"' in line)
    del lines[last_done]
    journal.write_text("\n".join(lines) + "\n")
    result = maild_server.cli("import", ALICE, str(source))
    assert result.returncode == 0, result.stdout + result.stderr
    inbox = read_store(maild_server, ALICE)["INBOX"]
    ids = [re.search(rb"Message-ID: <m(\d+)@", raw)[1] for raw, _, _ in inbox]  # type: ignore[index]
    assert len(ids) == count and len(set(ids)) == count
    assert int(re.search(r"(\d+) already there", result.stdout)[1]) > 0  # type: ignore[index]


def test_export_round_trips(maild_server: MaildServer, tmp_path: Path) -> None:
    source = tmp_path / "in.mbox"
    source.write_bytes(
        b"From a@example.org Tue Jan  2 03:04:05 2024\nSubject: one\nStatus: RO\nX-Status: F\n\n"
        b"From here on\n>From there\n\n"
        b"From b@example.org Tue Jan  2 04:04:05 2024\nSubject: two\nX-Keywords: Todo\n\nb\n")
    assert maild_server.cli("import", ALICE, str(source), "--mailbox", "Projects/2024").returncode == 0
    original = read_store(maild_server, ALICE)
    for fmt in ("maildir", "mbox"):
        out = tmp_path / fmt
        result = maild_server.cli("export", ALICE, str(out), "--format", fmt)
        assert result.returncode == 0, result.stderr
        assert "exported 2 messages" in result.stdout
        if fmt == "maildir":
            assert (out / ".Projects.2024" / "cur").is_dir()
            back = maild_server.cli("import", BOB, str(out))
        else:
            assert (out / "Projects" / "2024.mbox").is_file()
            back = maild_server.cli("import", BOB, str(out / "Projects" / "2024.mbox"),
                                    "--mailbox", f"{fmt}/Projects/2024")
        assert back.returncode == 0, back.stdout + back.stderr
    copies = read_store(maild_server, BOB)
    assert copies["Projects/2024"] == original["Projects/2024"]
    assert copies["mbox/Projects/2024"] == original["Projects/2024"]
    refused = maild_server.cli("export", ALICE, str(tmp_path / "mbox"))
    assert refused.returncode == 2 and "not empty" in refused.stderr
    journal = next((maild_server.data_dir / "imports").glob("*.journal"))
    json.loads(journal.read_text().splitlines()[0])  # the journal is JSON lines


def test_over_quota_is_reported_not_fatal(maild_server: MaildServer, tmp_path: Path) -> None:
    store = maild_server.store()
    try:
        store.user_set_quota(BOB, 6000)  # room for two of these messages, not five
    finally:
        store.close()
    source = tmp_path / "five.mbox"
    with open(source, "wb") as out:
        for i in range(5):
            out.write(b"From s@example.org Tue Jan  2 03:04:05 2024\n" + mail(i, b"y" * 2500 + b"\n") + b"\n")
    result = maild_server.cli("import", BOB, str(source))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "imported 2 messages" in result.stdout and "3 failed" in result.stdout
    assert result.stdout.count("not imported: ") == 3
    assert len(read_store(maild_server, BOB)["INBOX"]) == 2
    unknown = maild_server.cli("import", "nobody@example.test", str(source))
    assert unknown.returncode == 2 and "no user nobody@example.test" in unknown.stderr


def _peak_rss_kib(args: list[str]) -> tuple[subprocess.CompletedProcess[bytes], int, int]:
    """Run a command; its result and peak RssAnon and RssFile (KiB), sampled every 20 ms
    from /proc/PID/status."""
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = {"RssAnon": 0, "RssFile": 0}
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        try:
            with open(f"/proc/{process.pid}/status") as fh:
                for line in fh:
                    name, _, value = line.partition(":")
                    if name in peak:
                        peak[name] = max(peak[name], int(value.split()[0]))
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    out, err = process.communicate(timeout=60)
    return subprocess.CompletedProcess(args, process.returncode, out, err), peak["RssAnon"], peak["RssFile"]


def test_import_and_export_memory_stays_bounded(maild_server: MaildServer, tmp_path: Path) -> None:
    """The pages of LMDB's maps an import or export touches are given back as it goes
    (maild/store/mapped.py): resident file memory stays near --mapped-max-mb, not the
    size of the store."""
    store = maild_server.store()
    try:
        store.user_set_quota(ALICE, 0)
    finally:
        store.close()
    source = tmp_path / "many.mbox"
    # Fewer, larger messages (still inline in LMDB: under [store] inline_body_max) fill the
    # maps as well at a fraction of the per-message cost.
    count, body = 10_000, 9_000
    with open(source, "wb") as out:
        for i in range(count):
            out.write(b"From s@example.org Tue Jan  2 03:04:05 2024\n" + mail(i, b"z" * body + b"\n") + b"\n")
    maild = [sys.executable, "-m", "maild.cli", "-c", str(maild_server.config_path)]
    bound_kib = 40 * 1024
    result, anon, filed = _peak_rss_kib([*maild, "import", ALICE, str(source), "--mapped-max-mb", "8"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert b"imported %d messages" % count in result.stdout
    # The store holds far more than the bound: kept, its pages alone would exceed it.
    mapped = sum(f.stat().st_size for f in maild_server.data_dir.glob("shards/*/lmdb/data.mdb"))
    assert mapped > 2 * bound_kib * 1024
    assert filed < bound_kib, (anon, filed)
    result, anon, filed = _peak_rss_kib([*maild, "export", ALICE, str(tmp_path / "out"), "--format", "mbox",
                                        "--mapped-max-mb", "8"])
    assert result.returncode == 0, result.stderr
    assert filed < bound_kib, (anon, filed)
    assert (tmp_path / "out" / "INBOX.mbox").stat().st_size > count * body
