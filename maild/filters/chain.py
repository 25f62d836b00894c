"""The SMTP filter chain: policy hooks per phase, in the spirit of aiosmtpd's handler.

The SMTP protocol core knows nothing of policy. At each phase (connect, HELO/EHLO,
MAIL FROM, RCPT TO, end of DATA) it asks the chain, which calls every filter's hook in
order. A hook returns ``None`` (no opinion) or a :class:`Verdict`, directly or through a
Deferred. The first REJECT or TEMPFAIL ends the phase; headers and the target folder
accumulate. Filters share results through ``Transaction.notes`` (mail authentication
writes ``notes["auth_results"]`` before the spam scorer reads it), so order matters and
is fixed at wiring time.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import defer

from maild.util import metrics
from maild.util.transaction import Action, Filter, Reply, Transaction, Verdict

__all__ = ["Action", "Filter", "FilterChain", "Reply", "Transaction", "Verdict"]


class FilterChain:
    def __init__(self, filters: list[Filter]) -> None:
        self.filters = list(filters)

    @defer.inlineCallbacks
    def run(self, phase: str, tx: Transaction, *args: Any):  # type: ignore[no-untyped-def]
        """Run hook ``on_<phase>`` of every filter; return the combined Verdict. A hook
        that answers at once (most do) is not wrapped in a Deferred; one that raises fails
        the chain's Deferred, as a failed Deferred of its own would."""
        combined = Verdict()
        for flt in self.filters:
            started = time.monotonic()
            result = getattr(flt, f"on_{phase}")(tx, *args)
            if isinstance(result, defer.Deferred):
                result = yield result
            metrics.child(metrics.FILTER_SECONDS, flt.name, phase).observe(time.monotonic() - started)
            if result is None:
                continue
            if result.action is not Action.ACCEPT:
                return result
            combined.add_headers.extend(result.add_headers)
            if result.folder is not None:
                combined.folder = result.folder
        return combined
