"""Per-user allow-list: a sender the recipient has written to is filed, never refused."""

from __future__ import annotations

from maild.filters.contacts import SentContacts
from maild.filters.rspamd import RspamdClient, RspamdFilter
from maild.filters.spam import SpamPolicy
from maild.util.transaction import Action
from tests.filters.conftest import auth_results, make_tx
from tests.filters.messages import message
from tests.fixtures.rspamd import GTUBE


def send_as_alice(reactor_thread, store, to):
    sent = store.mailbox("alice@example.test", "Sent")
    raw = message("see you", sender="alice@example.test", to=to, subject="hi")
    reactor_thread.call(store.append, "alice@example.test", sent.id, raw)


def test_contacts_are_read_from_sent_mail(reactor_thread, store):
    contacts = SentContacts(store, reactor_thread.reactor)

    def knows(user, sender):
        return reactor_thread.call(contacts.knows, user, sender)

    assert not knows("alice@example.test", "friend@remote.test")
    send_as_alice(reactor_thread, store, "Friend <Friend@Remote.test>, other@remote.test")
    assert knows("alice@example.test", "friend@remote.test")
    assert knows("alice@example.test", "OTHER@remote.test")
    assert not knows("bob@example.test", "friend@remote.test")
    send_as_alice(reactor_thread, store, "third@remote.test")  # only the new uid is read
    assert knows("alice@example.test", "third@remote.test")
    assert not knows("nobody@example.test", "friend@remote.test")


def test_allow_listed_sender_is_filed_not_rejected(reactor_thread, store, rspamd):
    send_as_alice(reactor_thread, store, "friend@remote.test")
    policy = SpamPolicy(store, SentContacts(store, reactor_thread.reactor))
    flt = RspamdFilter(RspamdClient(reactor_thread.reactor, rspamd.url), policy, "tempfail")
    spam = message(GTUBE["reject"] + "\n", sender="friend@remote.test")

    friend = reactor_thread.call(flt.on_data, make_tx(spam, mail_from="friend@remote.test"))
    assert friend.action is Action.ACCEPT
    assert friend.folder == "Junk"

    stranger = reactor_thread.call(flt.on_data, make_tx(spam, mail_from="stranger@remote.test"))
    assert stranger.reply.code == 550

    to_bob = reactor_thread.call(flt.on_data, make_tx(spam, mail_from="friend@remote.test",
                                                      rcpt_to=("bob@example.test",)))
    assert to_bob.reply.code == 550

    forged = reactor_thread.call(flt.on_data, make_tx(
        spam, mail_from="friend@remote.test", auth_results=auth_results("fail")))
    assert forged.reply.code == 550
