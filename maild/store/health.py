"""Conditions the serving daemon's store is in, for the operator (``maild status``).

The daemon keeps them in memory and mirrors them into ``data_dir/health.json``, a file of
fixed size allocated at start-up and then rewritten in place: rewriting blocks a file
already owns needs no free space, so the file still tells the truth while the disk is full,
which is when it matters. ``maild status`` (another process) reads it while the daemon that
wrote it is alive.

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
            self._fd, fd = None, self._fd
            try:
                os.pwrite(fd, b" " * FILE_SIZE, 0)  # nobody answers for it any more
            except OSError:
                pass
            os.close(fd)

    # -- reported by the store --------------------------------------------------------------

    def write_failed(self, where: str, error: str) -> None:
        """A commit of ``where`` failed for lack of space (any thread)."""
        now = time.time()
        with self._lock:
            entry = self.full.get(where)
            first = entry is None
            if first:
                entry = self.full[where] = {"since": now, "failures": 0}
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
