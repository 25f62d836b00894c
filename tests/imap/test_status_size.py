"""STATUS=SIZE (RFC 8438): STATUS (SIZE) is the mailbox's total size in octets, the sum of
its messages' RFC822.SIZE, kept through APPEND, COPY, MOVE and EXPUNGE; also in LIST-STATUS."""

from __future__ import annotations

from tests.imap.conftest import Transcript, append, message


def _size(imap: Transcript, mailbox: str) -> int:
    line = imap.ok(f"STATUS {mailbox} (SIZE MESSAGES)")[0]
    assert line.startswith(f"* STATUS {mailbox} (SIZE ".encode()), line
    return int(line.split(b"SIZE ")[1].split()[0])


def test_status_size(imap: Transcript) -> None:
    assert b"STATUS=SIZE" in imap.ok("CAPABILITY")[0].split()
    assert _size(imap, "INBOX") == 0
    raws = [message("small"), message("larger", body="x" * 5000), message("big", body="y" * 100_000)]
    for raw in raws:
        append(imap, "INBOX", raw)
    assert _size(imap, "INBOX") == sum(len(r) for r in raws)
    imap.ok("SELECT INBOX")
    sizes = [int(line.split(b"RFC822.SIZE ")[1].rstrip(b")")) for line in imap.ok("FETCH 1:* (RFC822.SIZE)")]
    assert sizes == [len(r) for r in raws]
    imap.ok("COPY 1 Archive")
    imap.ok("MOVE 3 Trash")
    assert _size(imap, "Archive") == len(raws[0])
    assert _size(imap, "Trash") == len(raws[2])
    assert _size(imap, "INBOX") == len(raws[0]) + len(raws[1])
    imap.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    imap.ok("EXPUNGE")
    assert _size(imap, "INBOX") == len(raws[1])
    listed = imap.ok('LIST "" Trash RETURN (STATUS (SIZE))')
    assert listed[-1] == b"* STATUS Trash (SIZE %d)" % len(raws[2])
    imap.bad("STATUS INBOX (SIZE64)")
