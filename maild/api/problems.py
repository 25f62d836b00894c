"""RFC 9457 problem details: every error the HTTP API answers, each with a stable ``type``.

A client branches on ``type`` (never on ``title`` or ``detail``, which are for people).
``detail`` is public text chosen here; exception texts never reach a client.
"""

from __future__ import annotations

import json

TYPE_BASE = "urn:maild:problem:"  # stable, not dereferenced (RFC 9457 §3.1.1 allows it)

# slug -> (HTTP status, title)
PROBLEMS: dict[str, tuple[int, str]] = {
    "bad-request": (400, "Bad request"),
    "bad-json": (400, "Request body is not valid JSON"),
    "invalid-field": (422, "A field of the request is invalid"),
    "unauthorized": (401, "Authentication required"),
    "bad-credentials": (401, "Credentials invalid"),
    "insecure-transport": (403, "Passwords are accepted only over TLS or from loopback"),
    "forbidden": (403, "Not allowed"),
    "sender-not-owned": (403, "The sender address is not the authenticated user's"),
    "not-found": (404, "No such resource"),
    "method-not-allowed": (405, "Method not allowed on this resource"),
    "conflict": (409, "The resource exists or is in the way"),
    "too-large": (413, "Request body too large"),
    "unsupported-media-type": (415, "Unsupported content type"),
    "message-refused": (422, "The message was refused"),
    "rate-limited": (429, "Too many requests"),
    "resync": (410, "Events since that position are no longer available: re-read, then poll from position"),
    "over-quota": (507, "Mailbox full"),
    "unavailable": (503, "Temporarily unavailable, try again later"),
    "internal": (500, "Internal error"),
}


class Problem(Exception):
    """Raised by a handler; answered as application/problem+json."""

    def __init__(self, slug: str, detail: str = "", *, retry_after: int | None = None,
                 status: int | None = None, extra: dict[str, object] | None = None) -> None:
        super().__init__(slug)
        self.extra = extra or {}  # extension members (RFC 9457 §3.2)
        self.slug = slug
        self.status = status or PROBLEMS[slug][0]
        self.detail = detail
        self.retry_after = retry_after

    def body(self, instance: str = "") -> bytes:
        doc: dict[str, object] = {"type": TYPE_BASE + self.slug, "title": PROBLEMS[self.slug][1],
                                  "status": self.status}
        if self.detail:
            doc["detail"] = self.detail
        if instance:
            doc["instance"] = instance
        doc.update(self.extra)
        return json.dumps(doc).encode()
