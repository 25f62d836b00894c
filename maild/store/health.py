"""Conditions the serving daemon's store is in, for the operator (``maild status``).

Each serving process keeps them in memory and mirrors them into its own file,
``data_dir/health/<pid>.json`` (worker processes each have one: a process never rewrites
what another found), of fixed size allocated at start-up and then rewritten in place:
rewriting blocks a file already owns needs no free space, so the file still tells the truth
while the disk is full, which is when it matters. ``maild status`` (another process) merges
the files of the processes alive (:func:`read_all`); files of dead ones are removed when a
serving process starts.

Conditions:
- ``full``: per environment ("shard 00", "directory"), since when writes fail for lack of
  space (ENOSPC or EDQUOT, or the short-write EIO ext4 gives) and the last error. Cleared by
  the next commit that succeeds: service resumes by itself when space returns.
- ``damaged_blobs``: bodies whose sha256 did not match when read (newest last, bounded).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from maild.store.shared import pid_alive

log = logging.getLogger(__name__)

FILE_SIZE = 64 * 1024
MAX_DAMAGED = 100
REPEAT_SECONDS = 60.0  # a persisting full disk is logged again at most this often


class Health:
    def __init__(self, path: Path | None) -> None:
        """``path``: the file to mirror into (the daemon), or None (command-line use)."""
        self.path = path
        self._lock = threading.Lock()
        self.full: dict[str, dict[str, Any]] = {}
        self.damaged: list[dict[str, Any]] = []
        self._logged: dict[str, float] = {}  # when "no space" was last logged, per environment
        self._recovered: dict[str, float] = {}  # when "succeed again" was
        self._fd: int | None = None
        if path is not None:
            try:
                self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                if os.fstat(self._fd).st_size < FILE_SIZE:
                    os.posix_fallocate(self._fd, 0, FILE_SIZE)
            except OSError as exc:
                log.warning("cannot keep %s (%s): maild status will not show store conditions",
                            path, exc.strerror)
                if self._fd is not None:
                    os.close(self._fd)
                self._fd = None
            self._save()

    def close(self) -> None:
        if self._fd is not None:
            fd: int = self._fd
            self._fd = None
            try:
                os.pwrite(fd, b" " * FILE_SIZE, 0)  # nobody answers for it any more
            except OSError:
                pass
            os.close(fd)
            if self.path is not None and self.path.parent.name == "health":
                self.path.unlink(missing_ok=True)  # a process's own file (path_for)

    # -- reported by the store --------------------------------------------------------------

    def write_failed(self, where: str, error: str) -> None:
        """A commit of ``where`` failed for lack of space (any thread)."""
        now = time.time()
        with self._lock:
            found = self.full.get(where)
            first = found is None
            entry: dict[str, Any] = {"since": now, "failures": 0} if found is None else found
            if first:
                self.full[where] = entry
            entry["failures"] += 1
            entry["error"] = error
            # Logged once per REPEAT_SECONDS per environment, even when small writes that
            # still fit clear the condition in between (they do on a nearly full disk).
            repeat = now - self._logged.get(where, 0.0) >= REPEAT_SECONDS
            if repeat:
                self._logged[where] = now
        if repeat:
            log.error("%s: no space left for writes (%s): refusing new mail with 452 4.3.1 until "
                      "space is freed; %d write(s) refused so far", where, error, entry["failures"])
        if first or now - entry.get("saved", 0.0) >= 1.0:
            entry["saved"] = now
            self._save()

    def write_succeeded(self, where: str) -> None:
        """A commit of ``where`` succeeded (any thread; costs a dict lookup)."""
        if where not in self.full:
            return
        with self._lock:
            entry = self.full.pop(where, None)
            quiet = time.time() - self._recovered.get(where, 0.0) < REPEAT_SECONDS
            if not quiet:
                self._recovered[where] = time.time()
        if entry is not None:
            if not quiet:
                log.warning("%s: writes succeed again after %.0f s without space (%d refused)",
                            where, time.time() - entry["since"], entry["failures"])
            self._save()

    def blob_damaged(self, where: str, sha: str, what: str) -> None:
        """A body failed its sha256 check: logged once per blob, kept for `maild status`."""
        with self._lock:
            if any(d["blob"] == sha for d in self.damaged):
                return
            self.damaged.append({"where": where, "blob": sha, "message": what, "seen": time.time()})
            del self.damaged[:-MAX_DAMAGED]
        log.error("%s: blob %s is damaged (sha256 mismatch), %s cannot be read: restore the "
                  "file from a backup or run 'maild fsck'", where, sha, what)
        self._save()

    # -- the file -------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"pid": os.getpid(),
                    "full": {w: {"since": e["since"], "failures": e["failures"], "error": e["error"]}
                             for w, e in self.full.items()},
                    "damaged_blobs": list(self.damaged)}

    def _save(self) -> None:
        if self._fd is None:
            return
        data = json.dumps(self.snapshot()).encode()
        while len(data) > FILE_SIZE and self.damaged:
            with self._lock:
                del self.damaged[0]
            data = json.dumps(self.snapshot()).encode()
        try:
            os.pwrite(self._fd, data.ljust(FILE_SIZE), 0)
        except OSError as exc:
            log.warning("cannot update %s: %s", self.path, exc.strerror)


def path_for(data_dir: Path) -> Path:
    """This process's health file; the files of processes no longer alive are removed."""
    where = data_dir / "health"
    where.mkdir(parents=True, exist_ok=True)
    for old in where.glob("*.json"):
        if old.stem.isdigit() and not pid_alive(int(old.stem)):
            old.unlink(missing_ok=True)
    return where / f"{os.getpid()}.json"


def read_all(data_dir: Path, own: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The conditions of every serving process alive (with ``own``: this process's
    snapshot instead of its file), merged: a condition of any of them counts. None when
    none is alive. ``pid``: the lowest, ``pids``: all."""
    states = [] if own is None else [own]
    for path in sorted((data_dir / "health").glob("*.json")):
        if own is not None and path.stem == str(own["pid"]):
            continue
        state = read(path)
        if state is not None:
            states.append(state)
    if not states:
        return None
    full: dict[str, dict[str, Any]] = {}
    damaged: dict[str, dict[str, Any]] = {}
    for state in states:
        for where, entry in state["full"].items():
            known = full.get(where)
            if known is None:
                full[where] = dict(entry)
            else:
                known["failures"] += entry["failures"]
                known["since"] = min(known["since"], entry["since"])
        for entry in state["damaged_blobs"]:
            damaged.setdefault(entry["blob"], entry)
    pids = sorted(int(state["pid"]) for state in states)
    return {"pid": pids[0], "pids": pids, "full": full,
            "damaged_blobs": sorted(damaged.values(), key=lambda d: d["seen"])[-MAX_DAMAGED:]}


def read(path: Path) -> dict[str, Any] | None:
    """What the daemon that owns ``path`` reported, or None when no daemon is running."""
    try:
        text = path.read_bytes().strip()
    except OSError:
        return None
    if not text:
        return None
    try:
        state = json.loads(text)
        os.kill(int(state["pid"]), 0)
    except (ValueError, KeyError, TypeError, ProcessLookupError):
        return None
    except PermissionError:
        pass
    return dict(state)
