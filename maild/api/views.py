"""The JSON shapes of the HTTP API: folders, message summaries, whole messages, and the
opaque ids that name them; and the message a send request composes.

Ids: a folder is ``f<user id>.<mailbox id>``; a message is
``m<user id>.<mailbox id>.<uidvalidity>.<uid>``. An id whose user id is not the caller's
is not found, and the rest is resolved inside the caller's own partition only, so no id
can name another user's data; a message id from before a mailbox was recreated (another
UIDVALIDITY) is not found. Anything else is 404 (ids are validated by pattern first, so a
path segment like ``..`` never reaches the store).
"""

from __future__ import annotations

import datetime
import re
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formataddr, formatdate, make_msgid
from typing import Any

from maild.store.types import Mailbox, MessageMeta
from maild.util import address as addr
from maild.util.message import decoded_words, parse_header
from maild.util.mime import LEAF, MimePart, Structure, decoded_text, split_params, transfer_decoded, walk

FOLDER_ID = re.compile(r"f([0-9]{1,10})\.([0-9]{1,10})")
MESSAGE_ID = re.compile(r"m([0-9]{1,10})\.([0-9]{1,10})\.([0-9]{1,10})\.([0-9]{1,10})")
PART_ID = re.compile(r"[0-9]{1,5}")

ROLES = {"\\Sent": "sent", "\\Drafts": "drafts", "\\Trash": "trash", "\\Junk": "junk",
         "\\Archive": "archive", "\\Flagged": "flagged", "\\All": "all"}
SYSTEM_FLAGS = {"\\Seen": "seen", "\\Flagged": "flagged", "\\Answered": "answered", "\\Draft": "draft"}


def folder_id(owner: int, mailbox: Mailbox) -> str:
    return f"f{owner}.{mailbox.id}"


def message_id(owner: int, mailbox: Mailbox, uid: int) -> str:
    return f"m{owner}.{mailbox.id}.{mailbox.uidvalidity}.{uid}"


def iso(when: float) -> str:
    return datetime.datetime.fromtimestamp(when, datetime.UTC).isoformat().replace("+00:00", "Z")


def folder(owner: int, mailbox: Mailbox) -> dict[str, Any]:
    role = None
    if mailbox.name == "INBOX":
        role = "inbox"
    elif mailbox.special_use is not None:
        role = ROLES.get(str(mailbox.special_use.value))
    return {"id": folder_id(owner, mailbox), "name": mailbox.name, "role": role, "total": mailbox.messages,
            "unread": mailbox.unseen, "size": mailbox.size}


def addresses(value: str | None) -> list[dict[str, str | None]]:
    """An address-list header value as [{"name", "address"}], display names decoded."""
    if not value:
        return []
    text = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    out: list[dict[str, str | None]] = []
    for a in addr.parse(text):
        if a.is_group_start or a.is_group_end or not a.mailbox:
            continue
        email = a.mailbox if a.host in (None, addr.MISSING_DOMAIN) else f"{a.mailbox}@{a.host}"
        out.append({"name": decoded_words(a.name) if a.name else None, "address": email})
    return out


def summary(owner: int, mailbox: Mailbox, meta: MessageMeta, envelope: Any) -> dict[str, Any]:
    flags = meta.flags
    return {
        "id": message_id(owner, mailbox, meta.uid),
        "folder_id": folder_id(owner, mailbox),
        "subject": decoded_words(envelope.subject) if envelope.subject else "",
        "from": addresses(envelope.from_),
        "to": addresses(envelope.to),
        "cc": addresses(envelope.cc),
        "date": envelope.date,
        "received_at": iso(meta.internal_date),
        "size": meta.size,
        **{name: flag in flags for flag, name in SYSTEM_FLAGS.items()},
        "keywords": sorted(f for f in flags if not f.startswith("\\")),
    }


def _disposition(part: MimePart) -> tuple[str, str | None]:
    """(disposition type, file name) of a leaf."""
    value = part.header.first("content-disposition") or ""
    kind, params = split_params(value) if value else ("", [])
    name = dict(params).get("filename") or part.param("name")
    return kind.lower(), decoded_words(name) if name else None


def _is_attachment(part: MimePart) -> bool:
    kind, name = _disposition(part)
    if kind == "attachment" or (name and kind != "inline"):
        return True
    return part.type not in ("text", "multipart", "message")


def _leaves(structure: Structure) -> list[tuple[int, MimePart]]:
    return [(i, p) for i, p in enumerate(structure.parts) if p.kind == LEAF and not p.opaque]


def full(owner: int, mailbox: Mailbox, meta: MessageMeta, envelope: Any, raw: bytes) -> dict[str, Any]:
    """A whole message: its summary, every header field decoded, the first text/plain and
    text/html bodies that are not attachments, and the attachment list."""
    structure = walk(raw)
    header = parse_header(raw)
    text = html = None
    attachments = []
    for index, part in _leaves(structure):
        if index == 0 and part.type == "text" or not _is_attachment(part):
            if part.type == "text" and part.subtype in ("plain", "html"):
                body = decoded_text(part.body, part.header.first("content-transfer-encoding") or "",
                                    part.param("charset"))
                if part.subtype == "plain" and text is None:
                    text = body
                elif part.subtype == "html" and html is None:
                    html = body
                continue
        _kind, name = _disposition(part)
        attachments.append({"part": str(index), "filename": name,
                            "content_type": f"{part.type}/{part.subtype}",
                            "size": len(transfer_decoded(part.body, part.header.first(
                                "content-transfer-encoding") or ""))})
    out = summary(owner, mailbox, meta, envelope)
    out.update({"message_id": envelope.message_id, "in_reply_to": envelope.in_reply_to,
                "references": envelope.references,
                "headers": [{"name": f.name, "value": decoded_words(f.value)} for f in header.fields],
                "text": text, "html": html, "attachments": attachments})
    return out


def attachment(raw: bytes, part_id: str) -> tuple[str, str | None, bytes] | None:
    """(content type, file name, decoded content) of leaf ``part_id``, or None."""
    structure = walk(raw)
    index = int(part_id)
    if index >= len(structure.parts):
        return None
    part = structure.parts[index]
    if part.kind != LEAF or part.opaque:
        return None
    _kind, name = _disposition(part)
    data = transfer_decoded(part.body, part.header.first("content-transfer-encoding") or "")
    return f"{part.type}/{part.subtype}", name, data


def message_id_header(raw: bytes) -> str | None:
    return parse_header(raw).first("message-id")


# -- composing a message to send ------------------------------------------------------------

_ADDRESS = re.compile(r"[^\s@<>()\[\],;:\"\\]+@[A-Za-z0-9.-]+\.[A-Za-z0-9-]+|[^\s@<>()\[\],;:\"\\]+@\[[0-9.:a-fA-F]+\]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ComposeError(ValueError):
    """A send request that cannot make a message; the text is public."""


def _address(value: Any, where: str) -> tuple[str, str]:
    """(display name, address) from "a@b", "Name <a@b>" or {"name", "address"}."""
    if isinstance(value, dict):
        name, email = value.get("name") or "", value.get("address")
    elif isinstance(value, str):
        parsed = [a for a in addr.parse(value) if a.mailbox]
        if len(parsed) != 1:
            raise ComposeError(f"{where}: not one address")
        name, email = parsed[0].name or "", f"{parsed[0].mailbox}@{parsed[0].host}"
    else:
        raise ComposeError(f"{where}: expected an address string or object")
    if not isinstance(name, str) or not isinstance(email, str) or _CONTROL.search(name + email):
        raise ComposeError(f"{where}: invalid address")
    if not _ADDRESS.fullmatch(email) or len(email) > 254:
        raise ComposeError(f"{where}: invalid address {email[:100]!r}")
    return name, email


def _address_list(request: dict[str, Any], key: str) -> list[tuple[str, str]]:
    value = request.get(key, [])
    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, list) or len(value) > 1000:
        raise ComposeError(f"{key}: expected a list of addresses")
    return [_address(v, f"{key}[{i}]") for i, v in enumerate(value)]


def compose(request: dict[str, Any], owner: str, hostname: str,
            files: list[tuple[str, str, bytes]]) -> tuple[bytes, str, list[str]]:
    """(RFC 5322 message, envelope sender, envelope recipients) from a send request:
    from/to/cc/bcc/subject/text/html/in_reply_to/references, and ``files`` as
    attachments (file name, content type, data). Bcc is left out of the header section."""
    sender = _address(request.get("from", owner), "from")
    to, cc, bcc = (_address_list(request, k) for k in ("to", "cc", "bcc"))
    if not (to or cc or bcc):
        raise ComposeError("to: at least one recipient in to, cc or bcc")
    subject = request.get("subject", "")
    text, html = request.get("text"), request.get("html")
    for key, value in (("subject", subject), ("text", text), ("html", html),
                       ("in_reply_to", request.get("in_reply_to")), ("references", request.get("references"))):
        if value is not None and not isinstance(value, str):
            raise ComposeError(f"{key}: expected a string")
    if _CONTROL.search(subject) or len(subject) > 998:
        raise ComposeError("subject: control characters or too long")
    msg = EmailMessage(policy=SMTP)
    msg["From"] = formataddr(sender)
    if to:
        msg["To"] = ", ".join(formataddr(a) for a in to)
    if cc:
        msg["Cc"] = ", ".join(formataddr(a) for a in cc)
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain=hostname)
    for key, name in (("in_reply_to", "In-Reply-To"), ("references", "References")):
        value = request.get(key)
        if value:
            if _CONTROL.search(value) or len(value) > 8000:
                raise ComposeError(f"{key}: control characters or too long")
            msg[name] = value
    if text is None and html is None:
        text = ""
    if text is not None:
        msg.set_content(text)
        if html is not None:
            msg.add_alternative(html, subtype="html")
    else:
        msg.set_content(html, subtype="html")
    for name, content_type, data in files:
        maintype, _, subtype = content_type.partition("/")
        if not re.fullmatch(r"[A-Za-z0-9!#$&^_.+-]{1,64}", maintype) or \
                not re.fullmatch(r"[A-Za-z0-9!#$&^_.+-]{1,64}", subtype) or _CONTROL.search(name):
            raise ComposeError(f"attachment {name[:100]!r}: invalid file name or content type")
        if maintype == "text":
            msg.add_attachment(data.decode("utf-8", "replace"), subtype=subtype, filename=name)
        else:
            msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes(), sender[1], [a[1] for a in (*to, *cc, *bcc)]
