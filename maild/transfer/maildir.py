"""Maildir and Maildir++ folders: reading (import) and writing (export).

A Maildir is a directory with ``cur``, ``new`` and ``tmp``; a message is one file whose
name is ``<unique>[:2,<info>]`` (https://cr.yp.to/proto/maildir.html). The info letters
after ``:2,`` are flags: D draft, F flagged, P passed (forwarded), R replied, S seen,
T trashed; lower-case letters a-z are keywords, numbered by the folder's
``dovecot-keywords`` file (lines ``<n> <keyword>``; a is 0). Messages in ``new`` have no
info yet. The internal date is the file's modification time (what Dovecot and mbsync keep
there).

Maildir++ (Courier, Dovecot): the root is INBOX and each other folder is a sibling
directory ``.Sub.Folder`` with ``.`` as the hierarchy separator and names in modified
UTF-7 (RFC 3501 §5.1.3). A layout without dots, with folders as subdirectories
(``SubFolders Verbatim`` in mbsync), is read too: every directory holding ``cur`` is a
folder, named by its path.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from maild.util.mutf7 import decode_mailbox, encode_mailbox

INFO_FLAGS = {"D": "\\Draft", "F": "\\Flagged", "P": "$Forwarded", "R": "\\Answered", "S": "\\Seen",
              "T": "\\Deleted"}
FLAG_INFO = {v: k for k, v in INFO_FLAGS.items()}


def _folder_name(text: str) -> str:
    try:
        return decode_mailbox(text)
    except ValueError:
        return text  # not modified UTF-7 after all: the name as it is


@dataclass(frozen=True)
class MaildirFile:
    folder: str  # the mailbox name, "/" as the hierarchy separator
    path: Path
    unique: str  # the name before ":2," (stable when the flags change)
    flags: frozenset[str]
    internal_date: float
    size: int


def keywords_of(folder: Path) -> dict[str, str]:
    """dovecot-keywords: letter -> keyword."""
    names: dict[str, str] = {}
    try:
        text = (folder / "dovecot-keywords").read_text("utf-8", "replace")
    except OSError:
        return names
    for line in text.splitlines():
        number, _, word = line.strip().partition(" ")
        if number.isdigit() and word and int(number) < 26:
            names[chr(ord("a") + int(number))] = word.strip()
    return names


def _is_maildir(path: Path) -> bool:
    return (path / "cur").is_dir() or (path / "new").is_dir()


def folders(root: Path) -> list[tuple[str, Path]]:
    """(mailbox name, directory) of every folder under ``root``, INBOX first."""
    found: list[tuple[str, Path]] = []
    if _is_maildir(root):
        found.append(("INBOX", root))
    for entry in sorted(root.iterdir()):
        if not entry.is_dir() or entry.name in ("cur", "new", "tmp"):
            continue
        if entry.name.startswith(".") and entry.name not in (".", ".."):
            if _is_maildir(entry):  # Maildir++: .Sub.Folder
                parts = [_folder_name(p) for p in entry.name[1:].split(".") if p]
                if parts:
                    found.append(("/".join(parts), entry))
            continue
        for sub in sorted([entry, *entry.rglob("*")]):
            if sub.is_dir() and sub.name not in ("cur", "new", "tmp") and _is_maildir(sub):
                name = "/".join(sub.relative_to(root).parts)
                found.append(("INBOX" if name.upper() == "INBOX" else name, sub))
    return found


def messages(name: str, folder: Path) -> Iterator[MaildirFile]:
    """The messages of one folder, new before cur, each in name order."""
    keywords = keywords_of(folder)
    for sub in ("new", "cur"):
        directory = folder / sub
        if not directory.is_dir():
            continue
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            if entry.name.startswith(".") or not entry.is_file():
                continue
            unique, _, info = entry.name.partition(":2,")
            if not info and ":" in unique:  # other info kinds (":1,") carry no flags
                unique = unique.split(":", 1)[0]
            flags = {INFO_FLAGS[c] for c in info if c in INFO_FLAGS}
            flags |= {keywords[c] for c in info if c in keywords}
            st = entry.stat()
            yield MaildirFile(name, Path(entry.path), unique, frozenset(flags), st.st_mtime, st.st_size)


class Writer:
    """Writes one Maildir++ tree: INBOX at the root, other mailboxes as ``.A.B``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._keywords: dict[Path, dict[str, str]] = {}
        self._count = 0

    def folder(self, name: str) -> Path:
        if name == "INBOX":
            path = self.root
        else:
            path = self.root / ("." + ".".join(encode_mailbox(p) for p in name.split("/")))
        for sub in ("cur", "new", "tmp"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        return path

    def _letters(self, folder: Path, keywords: list[str]) -> str:
        known = self._keywords.setdefault(folder, {})
        letters = ""
        for word in keywords:
            if word not in known:
                if len(known) >= 26:
                    continue  # Dovecot's limit too: the keyword is dropped from the name
                known[word] = chr(ord("a") + len(known))
                with open(folder / "dovecot-keywords", "w", encoding="utf-8") as fh:
                    fh.writelines(f"{ord(c) - ord('a')} {w}\n" for w, c in known.items())
            letters += known[word]
        return letters

    def write(self, name: str, raw: bytes, flags: frozenset[str], when: float, uid: int) -> Path:
        folder = self.folder(name)
        self._count += 1
        letters = "".join(sorted(FLAG_INFO[f] for f in flags if f in FLAG_INFO))
        letters += "".join(sorted(self._letters(folder, sorted(f for f in flags if not f.startswith("\\")
                                                               and f not in FLAG_INFO))))
        unique = f"{int(when)}.M{uid}P{os.getpid()}Q{self._count}.maild"
        tmp = folder / "tmp" / unique
        with open(tmp, "wb") as fh:
            fh.write(raw.replace(b"\r\n", b"\n"))  # Maildir files use the local line end
            fh.flush()
            os.fsync(fh.fileno())
        os.utime(tmp, (time.time(), when))
        target = folder / "cur" / f"{unique}:2,{letters}"
        os.rename(tmp, target)
        return target
