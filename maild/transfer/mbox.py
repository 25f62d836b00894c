"""mbox files: a streaming reader and a writer (mboxrd and mboxo, RFC 4155).

An mbox is messages one after another, each starting with a ``From_`` line
(``From sender asctime``) and followed by an empty line. A body line that would look like
a ``From_`` line is quoted with ``>`` by the writer:

- mboxo quotes ``From `` to ``>From `` and cannot tell a quoted line from one that began
  with ``>From `` already, so reading removes one ``>`` from ``>From `` only;
- mboxrd quotes every ``>*From `` with one more ``>`` and reading removes one ``>`` from
  every ``>+From ``: exact in both directions. maild writes mboxrd.

Reading is liberal (what mutt, Thunderbird, formail, Dovecot and Gmail's Takeout write):
a ``From `` line starts a message when it is the first line or follows an empty line;
text before the first ``From_`` line is kept as a message and reported; a file cut short
gives its last message as far as it goes. Lines end in CRLF in what the reader yields
(RFC 5322 §2.1), whatever the file used. The mbox client headers ``Status``, ``X-Status``
and ``X-Keywords`` carry the flags (mutt, Pine, Thunderbird, Dovecot's mbox driver) and
are removed from the message, as Dovecot does.

Memory: one message at a time (lines are read in bounded pieces: a long line costs its
length, never the file's).
"""

from __future__ import annotations

import calendar
import email.utils
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from maild.util.message import parse_header

MAX_READ = 1 << 20  # a line is read in pieces of at most this many octets
_FROM = re.compile(rb"From \S*")
_ASCTIME = re.compile(rb"(\w{3}) +(\w{3}) +(\d{1,2}) +(\d{1,2}):(\d{2})(?::(\d{2}))? +(?:[A-Z]{3,4} +)?(\d{4})")
_QUOTED_RD = re.compile(rb">+From ")
_MONTHS = {m: i for i, m in enumerate(
    (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"), 1)}
STATUS_HEADERS = (b"status", b"x-status", b"x-keywords")
# X-Status letters and the flags they stand for (mutt, Thunderbird, Dovecot's mbox).
X_STATUS = (("A", "\\Answered"), ("F", "\\Flagged"), ("T", "\\Draft"), ("D", "\\Deleted"))


@dataclass
class MboxMessage:
    offset: int  # of its From_ line (or of the stray text) in the file
    end: int  # the offset just past it: where the next message's From_ line is
    raw: bytes  # CRLF line endings, quoting removed, Status headers removed
    flags: frozenset[str]
    internal_date: float | None  # from the From_ line, else the Date header, else None
    problems: list[str] = field(default_factory=list)


def _from_line_date(line: bytes) -> float | None:
    match = _ASCTIME.search(line)
    if match is None or match[2] not in _MONTHS:
        return None
    try:
        return float(calendar.timegm((int(match[7]), _MONTHS[match[2]], int(match[3]), int(match[4]),
                                      int(match[5]), int(match[6] or 0))))
    except (ValueError, OverflowError):
        return None


def _header_end(raw: bytes) -> int:
    """Offset of the empty line ending the header (len(raw) when there is none)."""
    if raw.startswith(b"\r\n"):
        return 0
    at = raw.find(b"\r\n\r\n")
    return len(raw) if at < 0 else at + 2


def flags_from_status(raw: bytes) -> tuple[bytes, frozenset[str], float | None]:
    """Remove Status, X-Status and X-Keywords from the header; the flags they carry, and the
    Date header's time. The fields are read by the one header parser (maild.util.message)."""
    header = parse_header(raw)
    flags: set[str] = set()
    drop = []
    for f in header.fields:
        if f.lname.encode() not in STATUS_HEADERS:
            continue
        drop.append(f)
        text = f.value.strip()
        if f.lname == "status":
            if "R" in text:
                flags.add("\\Seen")
        elif f.lname == "x-status":
            flags.update(flag for c, flag in X_STATUS if c in text)
        else:
            flags.update(k for k in re.split(r"[\s,]+", text) if k)
    date: float | None = None
    value = header.first("date")
    if value is not None:
        try:
            date = email.utils.parsedate_to_datetime(value.strip()).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            pass
    return header.without(drop), frozenset(flags), date


def read(fh: BinaryIO, offset: int = 0, variant: str = "mboxrd") -> Iterator[MboxMessage]:
    """The messages of an mbox from ``offset`` (the start of a From_ line, or 0)."""
    fh.seek(offset)
    pos = offset
    current: list[bytes] = []
    start = offset
    from_line: bytes | None = None
    previous_blank = True
    problems: list[str] = []
    at_line_start = True
    quoted = _QUOTED_RD if variant == "mboxrd" else re.compile(rb">From ")

    def finish(end: int) -> MboxMessage | None:
        lines = current
        if lines and lines[-1] == b"":
            lines = lines[:-1]  # the empty line the mbox puts before the next From_ line
        if from_line is None and not any(lines):
            return None
        body = b"\r\n".join(lines) + (b"\r\n" if lines else b"")
        raw, flags, date = flags_from_status(body)
        if from_line is None:
            problems.append(f"offset {start}: text before the first 'From ' line, kept as a message")
        when = _from_line_date(from_line) if from_line is not None else None
        if _header_end(raw) == 0 or b":" not in raw[:_header_end(raw)]:
            problems.append(f"offset {start}: a message without a header, kept as it is")
        return MboxMessage(start, end, raw, flags, when if when is not None else date, list(problems))

    while True:
        piece = fh.readline(MAX_READ)
        if not piece:
            break
        line_start = pos
        pos += len(piece)
        complete = piece.endswith(b"\n")
        if not at_line_start:  # the rest of a long line
            current[-1] += piece.rstrip(b"\r\n") if complete else piece
            at_line_start = complete
            continue
        at_line_start = complete
        text = piece.rstrip(b"\n")
        if text.endswith(b"\r"):
            text = text[:-1]
        # A From_ line: after an empty line, "From ", an address and a date (as mutt's is_from).
        if previous_blank and _FROM.match(text) and _ASCTIME.search(text, 5):
            done = finish(line_start)
            if done is not None:
                yield done
            current, from_line, problems, start = [], text, [], line_start
            previous_blank = False
            continue
        if quoted.match(text):
            text = text[1:]
        current.append(text)
        previous_blank = text == b""
    if not at_line_start and current:
        problems.append(f"offset {pos}: the file ends inside a line (cut short?)")
    done = finish(pos)
    if done is not None:
        yield done


def from_line(sender: str, when: float) -> bytes:
    return b"From %s %s\n" % ((sender or "MAILER-DAEMON").encode("ascii", "replace"),
                              time.asctime(time.gmtime(when)).encode())


def write(out: BinaryIO, raw: bytes, flags: frozenset[str], when: float, sender: str = "") -> None:
    """Append one message in mboxrd form: LF line endings, Status and X-Status headers."""
    out.write(from_line(sender, when))
    end = _header_end(raw)
    header, body = raw[:end], raw[end:]
    status = b"RO" if "\\Seen" in flags else b"O"
    x_status = "".join(c for c, f in X_STATUS if f in flags)
    keywords = " ".join(sorted(f for f in flags if not f.startswith("\\")))
    extra = b"Status: " + status + b"\r\n"
    if x_status:
        extra += b"X-Status: " + x_status.encode() + b"\r\n"
    if keywords:
        extra += b"X-Keywords: " + keywords.encode("utf-8") + b"\r\n"
    if header and not header.endswith(b"\n"):  # a header without an end (nor a body)
        header += b"\r\n"
    text = header + extra + body
    for line in text.split(b"\n"):
        line = line.removesuffix(b"\r")
        if _QUOTED_RD.match(line) or line.startswith(b"From "):
            line = b">" + line
        out.write(line + b"\n")
    # `text` ends in "\n" (a last empty piece), so the loop wrote the separating empty line
    # unless the message ended without a line end: add one then.
    if not text.endswith(b"\n"):
        out.write(b"\n")
