"""The few views of a raw message that mail authentication needs, parsed at the edge.

The message is bytes with CRLF line endings (as the SMTP server hands it over). The
header section ends at the first empty line (RFC 5322 §2.1); a field is its first line
plus every continuation line starting with WSP (RFC 5322 §2.2.3).
"""

from __future__ import annotations

import email.utils
import re

_FIELD_START = re.compile(rb"^[!-9;-~]+:")  # RFC 5322 §3.6.8 ftext, then ":"


def header_fields(raw: bytes) -> tuple[list[bytes], memoryview]:
    """(fields, rest): each field with its continuation lines and line ends; ``rest`` is
    everything from the empty line that ends the header section (or b""), a view of
    ``raw``: the body is not copied."""
    fields: list[bytes] = []
    pos = 0
    while pos < len(raw):
        end = raw.find(b"\n", pos)
        end = len(raw) if end < 0 else end + 1
        line = raw[pos:end]
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        elif _FIELD_START.match(line):
            fields.append(line)
        else:  # not a header line: the body starts here (no empty line)
            break
        pos = end
    return fields, memoryview(raw)[pos:]


def field_name(field: bytes) -> str:
    return field.split(b":", 1)[0].decode("ascii").strip().lower()


def field_value(field: bytes) -> str:
    """The unfolded value, without the leading space (RFC 5322 §2.2.3)."""
    value = field.split(b":", 1)[1]
    value = re.sub(rb"\r?\n(?=[ \t])", b"", value).rstrip(b"\r\n")
    return value.decode("utf-8", "replace").strip()


def from_domain(raw: bytes) -> str | None:
    """The RFC5322.From domain DMARC evaluates (RFC 7489 §6.6.1), or None when there is
    not exactly one From field naming addresses of exactly one domain."""
    fields, _ = header_fields(raw)
    values = [field_value(f) for f in fields if field_name(f) == "from"]
    if len(values) != 1:
        return None
    domains = {addr.rpartition("@")[2].lower().rstrip(".")
               for _name, addr in email.utils.getaddresses(values) if "@" in addr}
    if len(domains) != 1:
        return None
    domain = domains.pop()
    return domain or None


def _authserv_id(value: str) -> str:
    """The authserv-id that starts an Authentication-Results value (RFC 8601 §2.2)."""
    head = re.sub(r"\([^)]*\)", " ", value.split(";", 1)[0])  # drop CFWS comments
    words = head.split()
    return words[0].lower() if words else ""


def remove_auth_results(raw: bytes, authserv_id: str) -> bytes:
    """Drop every Authentication-Results field that claims our authserv-id: only we may
    write those (RFC 8601 §5)."""
    fields, rest = header_fields(raw)
    ours = authserv_id.lower()
    kept = [f for f in fields
            if not (field_name(f) == "authentication-results"
                    and _authserv_id(field_value(f)) == ours)]
    if len(kept) == len(fields):
        return raw
    return b"".join(kept) + rest
