"""Scanners run concurrently; the combined verdict follows REJECT > TEMPFAIL > ACCEPT."""

from __future__ import annotations

import time

from twisted.internet import task

from maild.filters.parallel import ParallelFilters, combine
from maild.util.transaction import Action, Filter, Verdict
from tests.filters.conftest import make_tx
from tests.filters.messages import message


class Slow(Filter):
    """A scanner answering ``verdict`` after ``delay`` seconds of reactor time."""

    def __init__(self, reactor, delay, verdict):
        self.reactor, self.delay, self.verdict = reactor, delay, verdict

    def on_data(self, tx):
        return task.deferLater(self.reactor, self.delay, lambda: self.verdict)


class Broken(Filter):
    name = "broken"

    def on_data(self, tx):
        raise RuntimeError("bug")


def test_scanners_run_concurrently(reactor_thread):
    r = reactor_thread.reactor
    flt = ParallelFilters([Slow(r, 0.3, Verdict(add_headers=[("A", "1")])),
                           Slow(r, 0.3, Verdict(add_headers=[("B", "2")], folder="Junk")),
                           Slow(r, 0.3, None)])
    started = time.monotonic()
    verdict = reactor_thread.call(flt.on_data, make_tx(message()))
    assert time.monotonic() - started < 0.6
    assert verdict.add_headers == [("A", "1"), ("B", "2")]
    assert verdict.folder == "Junk"


def test_reject_answers_without_waiting_for_slower_scanners(reactor_thread):
    r = reactor_thread.reactor
    flt = ParallelFilters([Slow(r, 2.0, None),
                           Slow(r, 0.05, Verdict.reject(554, "5.7.1", "virus"))])
    started = time.monotonic()
    verdict = reactor_thread.call(flt.on_data, make_tx(message()))
    assert time.monotonic() - started < 1.0
    assert verdict.reply.text == "virus"


def test_a_crashing_scanner_tempfails(reactor_thread):
    flt = ParallelFilters([Broken(), Slow(reactor_thread.reactor, 0, None)])
    verdict = reactor_thread.call(flt.on_data, make_tx(message()))
    assert verdict.action is Action.TEMPFAIL
    assert verdict.reply.code == 451


def test_combine_precedence():
    temp = Verdict.tempfail(451, "4.7.1", "later")
    reject = Verdict.reject(550, "5.7.1", "spam")
    assert combine([temp, None, reject]) is reject
    assert combine([Verdict(folder="Junk"), temp]) is temp
    assert combine([None, None]).action is Action.ACCEPT
