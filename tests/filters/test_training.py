"""Junk training: moving or copying into Junk teaches rspamd spam, out of Junk ham; the
real rspamd's learn counter shows it."""

from __future__ import annotations

import time

import pytest

from maild.filters.rspamd import RspamdClient
from maild.filters.training import JunkTrainer
from tests.filters.messages import message

USER = "alice@example.test"


def spammy(n):
    words = " ".join(f"unbeatable casino bonus crypto prize offer{n} winner{i}" for i in range(40))
    return message(words + "\n", subject=f"You won {n}", sender="promo@remote.test")


@pytest.fixture
def trainer(reactor_thread, store, rspamd):
    client = RspamdClient(reactor_thread.reactor, rspamd.url, rspamd.controller_url)
    trainer = JunkTrainer(store, client)
    reactor_thread.call(trainer.start)
    yield trainer
    reactor_thread.call(trainer.stop)


def settle(reactor_thread, trainer):
    """Wait until every learn request the trainer started has been answered."""
    deadline = time.monotonic() + 10
    while reactor_thread.call(lambda: bool(trainer.pending)):
        assert time.monotonic() < deadline, "learn requests still pending"
        time.sleep(0.01)


def deliver(reactor_thread, store, raw, mailbox="INBOX"):
    box = store.mailbox(USER, mailbox)
    return reactor_thread.call(store.append, USER, box.id, raw).uid


def transfer(reactor_thread, store, op, uid, src, dst):
    result = reactor_thread.call(getattr(store, op), USER, store.mailbox(USER, src).id, [uid],
                                 store.mailbox(USER, dst).id)
    return result.pairs[0][1]


def test_move_into_junk_learns_spam_and_out_learns_ham(reactor_thread, store, rspamd, trainer):
    uid = deliver(reactor_thread, store, spammy(1))
    before = rspamd.learned()
    junk_uid = transfer(reactor_thread, store, "move", uid, "INBOX", "Junk")
    settle(reactor_thread, trainer)
    assert rspamd.learned() == before + 1
    spam_learns = {s["symbol"]: s["total"] for s in rspamd.stat()["statfiles"]}

    transfer(reactor_thread, store, "move", junk_uid, "Junk", "Archive")
    settle(reactor_thread, trainer)
    assert rspamd.learned() == before + 2
    after = {s["symbol"]: s["total"] for s in rspamd.stat()["statfiles"]}
    assert after["BAYES_HAM"] > spam_learns["BAYES_HAM"]


def test_copy_into_junk_learns_spam(reactor_thread, store, rspamd, trainer):
    uid = deliver(reactor_thread, store, spammy(2))
    before = rspamd.learned()
    transfer(reactor_thread, store, "copy", uid, "INBOX", "Junk")
    settle(reactor_thread, trainer)
    assert rspamd.learned() == before + 1


def test_what_teaches_nothing(reactor_thread, store, rspamd, trainer):
    before = rspamd.learned()
    junk_uid = deliver(reactor_thread, store, spammy(3), "Junk")  # filed there by the filters
    transfer(reactor_thread, store, "move", junk_uid, "Junk", "Trash")  # deleting spam
    uid = deliver(reactor_thread, store, spammy(4))
    transfer(reactor_thread, store, "move", uid, "INBOX", "Archive")
    settle(reactor_thread, trainer)
    assert rspamd.learned() == before


def test_learning_twice_is_not_an_error(reactor_thread, rspamd):
    client = RspamdClient(reactor_thread.reactor, rspamd.url, rspamd.controller_url)
    assert reactor_thread.call(client.learn, spammy(5), True) is True
    assert reactor_thread.call(client.learn, spammy(5), True) is False
