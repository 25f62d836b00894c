"""Logging to journald with structured fields, when systemd runs us (systemd.exec(5)).

systemd connects a service's stderr to the journal and says so in ``JOURNAL_STREAM``
(``device:inode`` of that stream). When stderr is that stream, the daemon logs through
journald's native protocol instead (one datagram per record on
``/run/systemd/journal/socket``, the format of sd_journal_sendv(3)), so each line carries
fields an administrator filters on: ``PRIORITY``, ``SYSLOG_IDENTIFIER=maild``,
``LOGGER``, ``CODE_FILE``/``CODE_LINE``/``CODE_FUNC``, and every ``extra={"maild_...": v}``
of the log call as ``MAILD_...`` (``journalctl MAILD_QUEUE_ID=...`` follows one message).

What is logged is the caller's business, and the rule is: never a password, never a
message body (tests/test_logs.py checks a session that sends both).
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import sys
from typing import Any

SOCKET = "/run/systemd/journal/socket"
MAX_DATAGRAM = 200_000  # journald accepts larger ones through a memfd; we cut instead

_PRIORITY = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


def priority(level: int) -> int:
    """syslog(3) priority of a logging level."""
    for threshold, value in _PRIORITY:
        if level >= threshold:
            return value
    return 7


def under_journald() -> bool:
    """Whether stderr is the journal stream systemd gave us (JOURNAL_STREAM)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = stream.partition(":")
    if not device.isdigit() or not inode.isdigit():
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return st.st_dev == int(device) and st.st_ino == int(inode)


def _field(name: str, value: str) -> bytes:
    data = value.encode("utf-8", "replace")
    if b"\n" in data:  # the binary-safe form: name, newline, 64-bit little-endian length
        return name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    return name.encode() + b"=" + data + b"\n"


class JournalHandler(logging.Handler):
    def __init__(self, path: str | None = None, identifier: str = "maild") -> None:
        super().__init__()
        self.path = path or os.environ.get("MAILD_JOURNAL_SOCKET") or SOCKET
        self.identifier = identifier
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def fields(self, record: logging.LogRecord) -> dict[str, str]:
        fields = {"MESSAGE": self.format(record), "PRIORITY": str(priority(record.levelno)),
                  "SYSLOG_IDENTIFIER": self.identifier, "LOGGER": record.name,
                  "CODE_FILE": record.pathname, "CODE_LINE": str(record.lineno),
                  "CODE_FUNC": record.funcName or "", "THREAD_NAME": record.threadName or ""}
        extra: dict[str, Any] = record.__dict__
        for key, value in extra.items():
            if key.startswith("maild_") and value is not None:
                fields[key.upper()] = str(value)
        return fields

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = b"".join(_field(k, v) for k, v in self.fields(record).items())
            self.sock.sendto(data[:MAX_DATAGRAM], self.path)
        except Exception:  # logging must never take the daemon down
            self.handleError(record)

    def close(self) -> None:
        self.sock.close()
        super().close()


def parse(datagram: bytes) -> dict[str, str]:
    """The fields of one native-protocol datagram (for tests and tools)."""
    fields: dict[str, str] = {}
    i = 0
    while i < len(datagram):
        end = datagram.index(b"\n", i)
        line = datagram[i:end]
        if b"=" in line:
            name, _, value = line.partition(b"=")
            i = end + 1
        else:
            name = line
            (length,) = struct.unpack_from("<Q", datagram, end + 1)
            value = datagram[end + 9:end + 9 + length]
            i = end + 9 + length + 1
        fields[name.decode()] = value.decode("utf-8", "replace")
    return fields
