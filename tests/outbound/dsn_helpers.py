"""Reading DSNs (RFC 3464) the way a mail client would: with the email package."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage


def parse_dsn(raw: bytes) -> tuple[EmailMessage, str, list[dict[str, str]]]:
    """(the report, its human-readable text, the per-recipient status field groups)."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    human, status, headers = msg.get_payload()
    assert headers.get_content_type() == "text/rfc822-headers"
    text = human.get_content()
    # message/delivery-status: one field group per message, then one per recipient
    # (RFC 3464 §2.1); the email package parses each group as a header block.
    groups = [dict(group.items()) for group in status.get_payload()]
    return msg, text, groups[1:]
