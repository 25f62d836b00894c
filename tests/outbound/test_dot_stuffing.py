"""Transparency (RFC 5321 §4.5.2): lines starting with "." at every 4 KiB offset up to
64 KiB, a lone "." line and lines that look like commands arrive byte for byte, and the
remote runs nothing of the message as a command."""

from __future__ import annotations

from tests.fixtures.dns import DnsZone
from tests.outbound.conftest import REMOTE, Outbound, Remotes, message, mx_zone

SPECIAL = [b".", b"..", b".MAIL FROM:<evil@example.net>", b".\r\nRSET", b". ", b"...QUIT"]


def dotted_message(limit: int = 64 * 1024, step: int = 4096) -> bytes:
    """A message whose lines start with '.' exactly at every ``step`` offset."""
    out = bytearray(message(subject="dots", body=""))
    k = 0
    while len(out) < limit:
        boundary = (len(out) // step + 1) * step
        gap = boundary - len(out)
        if gap == 0 or len(out) % step == 0:
            line = SPECIAL[k % len(SPECIAL)].split(b"\r\n")[0]
            out += line + b"\r\n"
            k += 1
            continue
        filler = min(gap, 78) - 2
        if 0 < gap - (filler + 2) < 2:  # leave room for at least a bare CRLF line
            filler -= 2
        out += b"x" * max(filler, 0) + b"\r\n"
    return bytes(out)


def test_dotted_lines_at_every_4k_offset(outbound: Outbound, remotes: Remotes,
                                         dns_zone: DnsZone) -> None:
    raw = dotted_message()
    starts = {i + 2 for i in range(len(raw) - 2) if raw[i:i + 3] == b"\r\n."}
    assert all(offset in starts for offset in range(4096, 64 * 1024, 4096))
    assert b"\r\n.\r\n" in raw and b"\r\n.MAIL FROM:" in raw
    mx = remotes.start("127.0.0.2", starttls=True)  # TLS records split the stream too
    mx_zone(dns_zone, (10, "mx1.remote.test", "127.0.0.2"))
    outbound.enqueue(raw, "alice@example.test", [f"carol@{REMOTE}"])
    outbound.run()
    (got,) = mx.messages
    assert got.content == raw
    assert got.mail_from == "alice@example.test" and got.rcpt_tos == [f"carol@{REMOTE}"]
    assert mx.handler.sessions == 2  # nothing more happened on that connection
