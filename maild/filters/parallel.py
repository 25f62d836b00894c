"""Run content scanners concurrently at end of DATA, so filter time is the slowest
scanner's (each bounded by its own timeout), not their sum.

The combined answer, by precedence: the first REJECT (in the configured order; answered
as soon as it arrives, without waiting for the others), else the first TEMPFAIL, else an
accept carrying every scanner's headers in order and the last folder named. A scanner
that raises is logged and counts as a TEMPFAIL: nothing is accepted unscanned by accident.
"""

from __future__ import annotations

import logging
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from maild.util.transaction import Action, Filter, Transaction, Verdict

log = logging.getLogger(__name__)


def combine(verdicts: list[Verdict | None]) -> Verdict:
    for action in (Action.REJECT, Action.TEMPFAIL):
        for verdict in verdicts:
            if verdict is not None and verdict.action is action:
                return verdict
    combined = Verdict()
    for verdict in verdicts:
        if verdict is None:
            continue
        combined.add_headers.extend(verdict.add_headers)
        if verdict.folder is not None:
            combined.folder = verdict.folder
    return combined


class ParallelFilters(Filter):
    name = "content"

    def __init__(self, filters: list[Filter]) -> None:
        self.filters = list(filters)

    def on_data(self, tx: Transaction) -> defer.Deferred[Verdict]:
        answer: defer.Deferred[Verdict] = defer.Deferred()
        verdicts: list[Verdict | None] = [None] * len(self.filters)
        pending = [len(self.filters)]

        def settle(verdict: Verdict | None, index: int) -> None:
            verdicts[index] = verdict
            pending[0] -= 1
            if answer.called:
                return
            if verdict is not None and verdict.action is Action.REJECT:
                answer.callback(verdict)
            elif pending[0] == 0:
                answer.callback(combine(verdicts))

        def crashed(failure: Failure, flt: Filter) -> Verdict:
            log.error("filter %s failed: %s", flt.name, failure.getTraceback())
            return Verdict.tempfail(451, "4.3.0", "Temporary local problem, try again later")

        if not self.filters:
            return defer.succeed(Verdict())
        for index, flt in enumerate(self.filters):
            d: defer.Deferred[Any] = defer.maybeDeferred(flt.on_data, tx)
            d.addErrback(crashed, flt)
            d.addCallback(settle, index)
        return answer
