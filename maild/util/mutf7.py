"""Modified UTF-7 for mailbox names (RFC 3501 §5.1.3)."""

from __future__ import annotations

import base64
import binascii


def encode_mailbox(name: str) -> str:
    """Unicode name -> modified UTF-7 (``&`` -> ``&-``, non-ASCII in ``&...-`` runs)."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def decode_mailbox(text: str) -> str:
    """Modified UTF-7 -> Unicode; raises ValueError on malformed input. Names that are
    already UTF-8 with non-ASCII characters (clients that ignore RFC 3501) pass through."""
    if "&" not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        end = text.find("-", i + 1)
        if end < 0:
            raise ValueError("unterminated &-sequence")
        chunk = text[i + 1:end]
        i = end + 1
        if not chunk:
            out.append("&")
            continue
        b64 = chunk.replace(",", "/")
        b64 += "=" * (-len(b64) % 4)
        try:
            raw = base64.b64decode(b64, validate=True)
            decoded = raw.decode("utf-16-be")
        except (binascii.Error, UnicodeDecodeError):
            raise ValueError("bad modified UTF-7") from None
        if not decoded or any(0x20 <= ord(c) <= 0x7E for c in decoded):
            raise ValueError("bad modified UTF-7: ASCII inside a base64 run")
        out.append(decoded)
    return "".join(out)
