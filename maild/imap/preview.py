"""PREVIEW (RFC 8970): FETCH PREVIEW, a short plain-text abstract of a message.

Implementation notes — invariants a contributor must keep:

1. The preview is made from the message's first text/plain part that is not an
   attachment, else its first text/html part with the markup removed (RFC 8970 §3.1),
   found depth-first without entering attached messages; transfer encoding and charset
   undone (``mime.leaf_text``).
2. Quoted lines (starting with ">") are left out, whitespace runs become one space, and the
   result is at most ``MAX_CHARS`` characters (§3.1: no more than 256), never NIL: a message
   without text has the empty preview. ``PREVIEW (LAZY)`` (§3.2) is answered in full too,
   since the preview is cheap and kept in the FETCH cache (a message never changes).
3. PREVIEW never sets \\Seen (§3).
"""

from __future__ import annotations

import re

from maild.imap import mime, wire
from maild.util.text import html_text

MAX_CHARS = 256
_SPACE = re.compile(r"\s+")


def _first(part: mime.Part, subtype: str) -> mime.Part | None:
    if part.children:
        for child in part.children:
            found = _first(child, subtype)
            if found is not None:
                return found
        return None
    disposition = part.fields.get("content-disposition", "").split(";")[0].strip().lower()
    if part.type == "text" and part.subtype == subtype and disposition != "attachment":
        return part
    return None


def text(root: mime.Part) -> str:
    plain = _first(root, "plain")
    if plain is not None:
        body = mime.leaf_text(plain)
    else:
        rich = _first(root, "html")
        if rich is None:
            return ""
        body = html_text(mime.leaf_text(rich))
    lines = (line for line in body.splitlines() if not line.lstrip().startswith(">"))
    return _SPACE.sub(" ", " ".join(lines)).strip()[:MAX_CHARS]


def fetch_item(root: mime.Part) -> bytes:
    """``PREVIEW "..."`` (RFC 8970 §3)."""
    return b"PREVIEW " + wire.string(text(root))
