"""Dates as mail header fields write them."""

from __future__ import annotations

import datetime
import email.utils


def header_date(when: float) -> str:
    """``when`` (a Unix time) as an RFC 5322 §3.3 date-time in UTC with the zone
    ``+0000``: ``-0000`` would say the time is UTC but the sender's zone unknown, which
    is not the case for a time maild itself took."""
    return email.utils.format_datetime(datetime.datetime.fromtimestamp(when, datetime.UTC))
