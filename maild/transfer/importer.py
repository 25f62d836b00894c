"""``maild import ADDRESS PATH`` and ``maild export ADDRESS DIR`` (see the package notes)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from twisted.internet import defer
from twisted.python.failure import Failure

from maild.store.bulk import BulkItem, append_batch
from maild.store.mapped import resident_file_kib
from maild.store.types import StoreError
from maild.transfer import maildir, mbox

if TYPE_CHECKING:
    from maild.store import Store

BATCH_MESSAGES = 200
BATCH_BYTES = 16 * 1024 * 1024
# Resident pages of LMDB's maps (RssFile) above which an import or export gives them back
# (Store.release_mapped, maild/store/mapped.py): its memory stays bounded whatever the
# size of the store or the mbox. Checked after each batch (import) or 200 messages (export).
MAPPED_MAX_KIB = 64 * 1024  # `maild import|export --mapped-max-mb` (its default in cli.py)


class TransferError(StoreError):
    """An import or export that cannot start; the text says why and what to do."""


@dataclass
class Item:
    key: str  # mbox: the offset of its From_ line; Maildir: folder/unique name
    folder: str
    raw: bytes
    flags: frozenset[str]
    internal_date: float
    end: int = 0  # mbox: where the next message starts


@dataclass
class Report:
    imported: int = 0
    skipped: int = 0  # already imported by an interrupted run
    failed: int = 0
    octets: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        rate = self.imported / self.seconds if self.seconds else 0.0
        return (f"imported {self.imported} messages ({self.octets / 1e6:.1f} MB) in {self.seconds:.1f} s "
                f"({rate:.0f} msg/s), {self.skipped} already there, {self.failed} failed, "
                f"{len(self.problems)} problem(s) reported")


def _result(d: defer.Deferred[Any]) -> Any:
    """The result of an already-fired Deferred (the store without a reactor)."""
    out: list[Any] = []
    d.addBoth(out.append)
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


class Progress:
    """One line on a stream (stderr): messages, MB, rate, ETA; redrawn in place on a
    terminal, a new line every few seconds otherwise."""

    def __init__(self, out: TextIO | None, total_bytes: int, verb: str = "import") -> None:
        self.out = out
        self.total = total_bytes
        self.verb = verb
        self.started = time.monotonic()
        self._last = 0.0
        self.tty = bool(out is not None and out.isatty())

    def update(self, messages: int, octets: int, final: bool = False) -> None:
        if self.out is None:
            return
        now = time.monotonic()
        if not final and now - self._last < (0.2 if self.tty else 5.0):
            return
        self._last = now
        elapsed = max(now - self.started, 1e-6)
        rate, mbs = messages / elapsed, octets / elapsed / 1e6
        if self.total and octets and not final:
            left = max(self.total - octets, 0) / (octets / elapsed)
            eta = f", ETA {int(left) // 3600}:{int(left) % 3600 // 60:02d}:{int(left) % 60:02d}"
        else:
            eta = ""
        total = f"/{self.total / 1e6:.1f}" if self.total else ""
        line = (f"{self.verb}: {messages} messages, {octets / 1e6:.1f}{total} MB, "
                f"{rate:.0f} msg/s, {mbs:.1f} MB/s{eta}")
        if self.tty:
            self.out.write("\r" + line + ("\n" if final else ""))
        else:
            self.out.write(line + "\n")
        self.out.flush()


class Journal:
    """The per-import record that makes an import resumable (package notes)."""

    def __init__(self, path: Path, keep_done: bool) -> None:
        self.path = path
        self.done: set[str] = set()
        self.pending: dict[str, str] = {}
        self.offset = 0
        if path.exists():
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        break  # a line cut short by the interruption: the rest is unwritten
                    if "pending" in record:
                        self.pending.update((k, sha) for k, sha in record["pending"])
                    else:
                        for k in record["done"]:
                            self.pending.pop(k, None)
                            if keep_done:
                                self.done.add(k)
                        self.offset = max(self.offset, record.get("offset", 0))
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "a", encoding="utf-8")

    def _write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def begin(self, entries: list[tuple[str, str]]) -> None:
        self._write({"pending": entries})

    def commit(self, keys: list[str], offset: int) -> None:
        self._write({"done": keys, "offset": offset})

    def close(self) -> None:
        self._fh.close()


def journal_path(data_dir: Path, address: str, source: Path) -> Path:
    digest = hashlib.sha256(f"{address}\0{source.resolve()}".encode()).hexdigest()[:24]
    return data_dir / "imports" / f"{digest}.journal"


def _mbox_items(path: Path, folder: str, offset: int, variant: str, report: Report) -> Iterator[Item]:
    with open(path, "rb") as fh:
        for m in mbox.read(fh, offset, variant):
            report.problems.extend(f"{path}: {p}" for p in m.problems)
            yield Item(str(m.offset), folder, m.raw, m.flags,
                       m.internal_date if m.internal_date is not None else time.time(), m.end)


def _maildir_items(root: Path, done: set[str], report: Report) -> Iterator[Item]:
    for name, directory in maildir.folders(root):
        for f in maildir.messages(name, directory):
            key = f"{name}/{f.unique}"
            if key in done:
                report.skipped += 1
                continue
            try:
                data = f.path.read_bytes()
            except FileNotFoundError:  # moved by a client meanwhile (its flags changed)
                report.problems.append(f"{f.path}: gone while importing; run the import again")
                continue
            except OSError as exc:
                report.problems.append(f"{f.path}: unreadable ({exc.strerror})")
                continue
            # Maildir files use LF line ends (some writers CRLF): CRLF for the store.
            raw = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            yield Item(key, name, raw, f.flags, f.internal_date)


def _mbox_files(root: Path) -> list[tuple[str, Path]]:
    """A directory of mbox files (Thunderbird's Mail folder: ``Inbox``, ``Sub.sbd/Folder``)."""
    found = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix in (".msf", ".dat", ".json", ".html"):
            continue
        with open(path, "rb") as fh:
            if not fh.read(5) == b"From ":
                continue
        parts = [p.removesuffix(".sbd").removesuffix(".mbox") for p in path.relative_to(root).parts]
        name = "/".join(parts)
        found.append(("INBOX" if name.upper() == "INBOX" else name, path))
    return found


def _mailbox_id(store: Store, address: str, name: str, cache: dict[str, int]) -> int:
    if name not in cache:
        box = store.mailbox(address, name)
        if box is None:
            box = _result(store.create_mailbox(address, name))
        cache[name] = box.id
    return cache[name]


def _bound_mapped(store: Store, limit_kib: int) -> None:
    if resident_file_kib() > limit_kib:
        store.release_mapped()


def import_mail(store: Store, address: str, source: Path, *, data_dir: Path, mailbox: str | None = None,
                variant: str = "mboxrd", restart: bool = False, out: TextIO | None = None,
                mapped_max_kib: int = MAPPED_MAX_KIB) -> Report:
    """Import an mbox file, a directory of mbox files or a Maildir(++) into ``address``."""
    if store.user(address) is None:
        raise TransferError(f"no user {address}: create it first ('maild user add {address}')")
    if not source.exists():
        raise TransferError(f"{source} does not exist")
    is_maildir = source.is_dir() and (maildir.folders(source) != [])
    jpath = journal_path(data_dir, address, source)
    if restart:
        jpath.unlink(missing_ok=True)
    journal = Journal(jpath, keep_done=source.is_dir())
    report = Report()
    started = time.monotonic()
    items: Iterator[Item]
    if source.is_file():
        if journal.offset:
            with open(source, "rb") as fh:
                fh.seek(journal.offset)
                if fh.read(5) not in (b"From ", b""):
                    raise TransferError(f"{source} changed since the interrupted import (offset "
                                        f"{journal.offset} is no longer a message): run again with --restart")
        total = source.stat().st_size
        items = _mbox_items(source, mailbox or "INBOX", journal.offset, variant, report)
        octets_done = journal.offset
    elif is_maildir:
        total = sum(f.stat().st_size for f in source.rglob("*") if f.is_file()
                    and f.parent.name in ("cur", "new"))
        items = _maildir_items(source, journal.done, report)
        octets_done = 0
    else:
        files = _mbox_files(source)
        if not files:
            raise TransferError(f"{source} holds neither a Maildir nor mbox files")
        total = sum(p.stat().st_size for _, p in files)

        def each() -> Iterator[Item]:
            for name, path in files:
                for item in _mbox_items(path, name, 0, variant, report):
                    item.key = f"{name}\0{item.key}"
                    if item.key in journal.done:
                        report.skipped += 1
                        continue
                    yield item
        items = each()
        octets_done = 0
    progress = Progress(out, total)
    ids: dict[str, int] = {}
    present: dict[int, set[str]] = {}
    batch: list[Item] = []
    size = 0
    offset = journal.offset

    def flush() -> None:
        nonlocal size, offset
        if not batch:
            return
        shas = [hashlib.sha256(i.raw).hexdigest() for i in batch]
        todo: list[tuple[Item, str]] = []
        for item, sha in zip(batch, shas, strict=True):
            box = _mailbox_id(store, address, item.folder, ids)
            if item.key in journal.pending and journal.pending[item.key] == sha:
                # Handed to the store by an interrupted run: there already if committed.
                if box not in present:
                    present[box] = {m.blob for m in store.messages(address, box)}
                if sha in present[box]:
                    report.skipped += 1
                    continue
            todo.append((item, sha))
        journal.begin([(i.key, sha) for i, sha in todo])
        results = append_batch(store, address, [
            BulkItem(_mailbox_id(store, address, i.folder, ids), i.raw, i.flags, i.internal_date)
            for i, _ in todo])
        committed = []
        for (item, _), (_, outcome) in zip(todo, results, strict=True):
            if isinstance(outcome, Exception):
                report.failed += 1
                report.problems.append(f"{item.folder} {item.key}: not imported: {outcome}")
            else:
                report.imported += 1
                report.octets += len(item.raw)
                committed.append(item.key)
        offset = max(offset, batch[-1].end)
        journal.commit([i.key for i in batch], offset)
        batch.clear()
        size = 0
        _bound_mapped(store, mapped_max_kib)

    try:
        for item in items:
            batch.append(item)
            size += len(item.raw)
            if len(batch) >= BATCH_MESSAGES or size >= BATCH_BYTES:
                flush()
                progress.update(report.imported + report.skipped,
                                (offset if source.is_file() else octets_done + report.octets))
        flush()
    finally:
        journal.close()
    report.seconds = time.monotonic() - started
    progress.update(report.imported + report.skipped,
                    offset if source.is_file() else octets_done + report.octets, final=True)
    return report


def _safe_path(name: str) -> Path:
    """A mailbox name as a relative path that stays inside the export directory."""
    parts = [p if p not in ("", ".", "..") else f"_{len(p)}" for p in name.split("/")]
    return Path(*parts)


def export_mail(store: Store, address: str, dest: Path, fmt: str, out: TextIO | None = None,
                mapped_max_kib: int = MAPPED_MAX_KIB) -> int:
    """Write every mailbox of ``address`` to ``dest`` (Maildir++ or one mbox file per
    mailbox); the number of messages written."""
    if store.user(address) is None:
        raise TransferError(f"no user {address}")
    if dest.exists() and any(dest.iterdir()):
        raise TransferError(f"{dest} is not empty: export into a new or empty directory")
    dest.mkdir(parents=True, exist_ok=True)
    boxes = store.mailboxes(address)
    total = store.quota(address).used_bytes
    progress = Progress(out, total, "export")
    count = octets = 0
    writer = maildir.Writer(dest) if fmt == "maildir" else None
    for box in boxes:
        fh = None
        if writer is not None:
            writer.folder(box.name)
        else:
            path = dest / _safe_path(box.name + ".mbox")
            path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(path, "wb")
        try:
            for meta in store.messages(address, box.id):
                raw = store.read(address, box.id, meta.uid)
                if writer is not None:
                    writer.write(box.name, raw, meta.flags, meta.internal_date, meta.uid)
                else:
                    assert fh is not None
                    mbox.write(fh, raw, meta.flags, meta.internal_date)
                count += 1
                octets += len(raw)
                progress.update(count, octets)
                if count % BATCH_MESSAGES == 0:
                    _bound_mapped(store, mapped_max_kib)
        finally:
            if fh is not None:
                fh.flush()
                os.fsync(fh.fileno())
                fh.close()
    progress.update(count, octets, final=True)
    return count
