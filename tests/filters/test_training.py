"""Junk training: moving or copying into Junk teaches rspamd spam, out of Junk ham; the
real rspamd's learn counter shows it."""

from __future__ import annotations

import time

import pytest

from maild.filters.rspamd import RspamdClient
from maild.filters.training import JunkTrainer
from tests.filters.messages import message
from tests.fixtures.rspamd import RspamdProcess

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


def learned_after(rspamd, expected):
    """rspamd's learn counter once it reaches ``expected`` (its /stat is updated a moment
    after the learn request is answered), or what it is after 5 seconds."""
    deadline = time.monotonic() + 5
    while rspamd.learned() < expected and time.monotonic() < deadline:
        time.sleep(0.02)
    return rspamd.learned()


def deliver(reactor_thread, store, raw, mailbox="INBOX"):
    box = store.mailbox(USER, mailbox)
    return reactor_thread.call(store.append, USER, box.id, raw).uid


def transfer(reactor_thread, store, op, uid, src, dst):
    result = reactor_thread.call(getattr(store, op), USER, store.mailbox(USER, src).id, [uid],
                                 store.mailbox(USER, dst).id)
    return result.pairs[0][1]


def test_move_into_junk_learns_spam_and_out_learns_ham(reactor_thread, store, rspamd, trainer):
    uid = deliver(reactor_thread, store, spammy(1))
    before, ham_before = rspamd.learned(), rspamd.class_learns(spam=False)
    junk_uid = transfer(reactor_thread, store, "move", uid, "INBOX", "Junk")
    assert learned_after(rspamd, before + 1) == before + 1
    assert rspamd.class_learns(spam=False) == ham_before

    transfer(reactor_thread, store, "move", junk_uid, "Junk", "Archive")
    assert learned_after(rspamd, before + 2) == before + 2
    assert rspamd.class_learns(spam=False) == ham_before + 1


def test_copy_into_junk_learns_spam(reactor_thread, store, rspamd, trainer):
    uid = deliver(reactor_thread, store, spammy(2))
    before = rspamd.learned()
    transfer(reactor_thread, store, "copy", uid, "INBOX", "Junk")
    assert learned_after(rspamd, before + 1) == before + 1


def test_what_teaches_nothing(reactor_thread, store, rspamd, trainer):
    before = rspamd.learned()
    junk_uid = deliver(reactor_thread, store, spammy(3), "Junk")  # filed there by the filters
    transfer(reactor_thread, store, "move", junk_uid, "Junk", "Trash")  # deleting spam
    uid = deliver(reactor_thread, store, spammy(4))
    transfer(reactor_thread, store, "move", uid, "INBOX", "Archive")
    # A move that does teach, as a barrier: learns are answered in order.
    transfer(reactor_thread, store, "move", deliver(reactor_thread, store, spammy(6)),
             "INBOX", "Junk")
    assert learned_after(rspamd, before + 1) == before + 1


def prose(topic: str) -> str:
    """English text on a topic no other test teaches, so Bayes has no opinion on it at first.
    English, because rspamd tokenizes by the language it detects: random strings are taken
    for a different language on each request, and the learn cache then misses."""
    sentences = {
        "garden": "The garden committee meets on Thursday evening to plan the spring planting "
                  "of tulips and daffodils along the river path near the old library.",
        "sailing": "Our sailing club repaints the wooden dinghies every autumn and stores the "
                   "canvas sails in the boathouse until the harbour reopens in April.",
        "choir": "The village choir rehearses hymns and madrigals in the chapel on Tuesdays, "
                 "and the organist brings biscuits for everyone after the last verse.",
    }
    return " ".join([sentences[topic]] * 4)


def test_learning_twice_is_not_an_error(reactor_thread, rspamd):
    client = RspamdClient(reactor_thread.reactor, rspamd.url, rspamd.controller_url)
    raw = message(prose("garden") + "\n", subject="Garden", sender="promo@remote.test")
    assert reactor_thread.call(client.learn, raw, True) is True
    assert reactor_thread.call(client.learn, raw, True) is False


def test_learning_what_bayes_already_classifies_is_not_an_error(reactor_thread, _dns_server, tmp_path):
    """Once Bayes puts a message in the class at 95% or more, rspamd skips the learn (HTTP 204
    in rspamd 3.4): a user moving such a message into Junk must not see an error logged.
    Its own rspamd, whose Bayes classifies after one learn of each class."""
    own = RspamdProcess(tmp_path / "rspamd", _dns_server.nameserver, min_learns=1)
    own.start()
    try:
        client = RspamdClient(reactor_thread.reactor, own.url, own.controller_url)
        reactor_thread.call(client.learn, message(prose("choir") + "\n", subject="Choir"), False)
        words = prose("sailing")
        answers = []
        # Each variant is a new message, so the learn cache cannot answer; once Bayes has
        # learned the words as spam, it classifies the next variant and skips its learn.
        for variant in range(6):
            raw = message(f"{words}\nvariant {variant}\n", subject=f"Offer {variant}",
                          sender="promo@remote.test")
            answers.append(reactor_thread.call(client.learn, raw, True))
            if answers[-1] is False:
                break
        learned_spam = own.class_learns(spam=True)
    finally:
        own.stop()
    assert answers[0] is True
    assert answers[-1] is False
    assert learned_spam == answers.count(True)
