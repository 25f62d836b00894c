"""End to end: a real `maild serve` with clamd and rspamd configured, real SMTP and IMAP
clients. What a sender sees, and what ends up stored (the store is opened after the
daemon has stopped)."""

from __future__ import annotations

import smtplib
import ssl
import time

import imapclient
import pytest

from tests.filters.messages import EICAR_ATTACHED, EICAR_BODY, EICAR_ZIPPED, message
from tests.fixtures.clamd import EICAR_SIGNATURE, ClamdProcess, free_port
from tests.fixtures.rspamd import GTUBE

ALICE = "alice@example.test"


@pytest.fixture
def filtered(maild_factory, clamd, rspamd, dns_zone):
    """maild with the session's clamd and rspamd, DNS from the test server."""

    def make(**filters):
        settings = {"clamd": clamd.address, "rspamd_url": rspamd.url,
                    "rspamd_controller_url": rspamd.controller_url, "clamd_timeout": 5.0,
                    "rspamd_timeout": 5.0, **filters}
        return maild_factory(filters=settings,
                             dns={"nameservers": [dns_zone.nameserver], "timeout": 1.0})

    return make


def send(server, raw, mail_from="sender@remote.test", rcpt=ALICE):
    """(code, text) of the answer to the message at end of DATA."""
    with smtplib.SMTP(server.host, server.ports["smtp"], local_hostname="mail.remote.test",
                      timeout=30) as client:
        client.ehlo()
        client.mail(mail_from)
        code, text = client.rcpt(rcpt)
        assert code == 250, text
        code, text = client.data(raw)
        return code, text.decode()


def stored(server, user=ALICE):
    """{mailbox name: [raw message, ...]} of every non-empty mailbox, the daemon stopped."""
    server.stop()
    store = server.store()
    try:
        return {box.name: [store.read(user, box.id, uid) for uid in store.uids(user, box.id)]
                for box in store.mailboxes(user) if box.messages}
    finally:
        store.close()


def test_viruses_are_refused_and_nothing_is_stored(filtered):
    server = filtered()
    for raw in (EICAR_BODY, EICAR_ATTACHED, EICAR_ZIPPED):
        code, text = send(server, raw)
        assert (code, text) == (554, f"5.7.1 Message rejected: virus found: {EICAR_SIGNATURE}")
    assert stored(server) == {}


def test_blocked_attachment_is_refused(filtered):
    server = filtered()
    raw = message(attachments=(("setup.exe", b"MZ" + b"\0" * 100, "application/octet-stream"),))
    assert send(server, raw) == (554, "5.7.1 Message refused: .exe attachments are not accepted")
    assert stored(server) == {}


def test_spam_verdicts(filtered):
    server = filtered()
    assert send(server, message(GTUBE["reject"] + "\n"))[0] == 550
    assert send(server, message(GTUBE["add header"] + "\n", subject="junk"))[0] == 250
    assert send(server, message())[0] == 250
    boxes = stored(server)
    assert sorted(boxes) == ["INBOX", "Junk"]
    (junk,) = boxes["Junk"]
    assert b"Subject: junk" in junk
    assert b"X-Spam-Flag: YES" in junk
    (clean,) = boxes["INBOX"]
    assert b"X-Spam-Status: No, score=" in clean
    assert b"scorer=rspamd" in clean


def test_clamd_stopped_tempfails_and_stores_nothing(filtered, tmp_path):
    own = ClamdProcess(tmp_path / "clamd")
    own.start()
    server = filtered(clamd=own.address)
    assert send(server, message("before\n"))[0] == 250
    own.stop()
    code, text = send(server, message("after\n"))
    assert (code, text) == (451, "4.7.1 Virus scanner unavailable, try again later")
    assert [b"before" in raw for raw in stored(server)["INBOX"]] == [True]


def test_rspamd_stopped_uses_the_fallback(filtered):
    server = filtered(rspamd_url=f"http://127.0.0.1:{free_port()}")
    assert send(server, message())[0] == 250
    (raw,) = stored(server)["INBOX"]
    assert b"scorer=fallback" in raw


def test_moving_to_junk_over_imap_trains_rspamd(filtered, rspamd):
    server = filtered()
    body = " ".join(f"limited offer {i} claim your reward now" for i in range(60)) + "\n"
    assert send(server, message(body, subject="reward"))[0] == 250
    before = rspamd.learned()
    context = ssl.create_default_context(cafile=str(server.cafile))
    context.check_hostname = False
    with imapclient.IMAPClient(server.host, port=server.ports["imaps"], ssl=True,
                               ssl_context=context, timeout=30) as imap:
        imap.login(ALICE, "alice-secret")
        imap.select_folder("INBOX")
        (uid,) = imap.search(["SUBJECT", "reward"])
        imap.move([uid], "Junk")
    deadline = time.monotonic() + 10
    while rspamd.learned() == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rspamd.learned() == before + 1


def submit(server, raw, rcpt):
    """Send as alice on the submission port (STARTTLS, AUTH PLAIN)."""
    context = ssl.create_default_context(cafile=str(server.cafile))
    context.check_hostname = False
    with smtplib.SMTP(server.host, server.ports["submission"], timeout=30) as client:
        client.starttls(context=context)
        client.login(ALICE, "alice-secret")
        return client.sendmail(ALICE, [rcpt], raw)


def test_a_correspondent_is_filed_not_refused(filtered):
    """Once alice has written to friend@ (submission files a copy in Sent), rspamd's reject
    of mail from friend@ becomes a delivery to Junk; a stranger is still refused."""
    server = filtered()
    spam = message(GTUBE["reject"] + "\n", sender="friend@remote.test", subject="from friend")
    assert send(server, spam, mail_from="friend@remote.test")[0] == 550
    submit(server, message("hi", sender=ALICE, to="friend@remote.test"), "friend@remote.test")
    assert send(server, spam, mail_from="friend@remote.test")[0] == 250
    assert send(server, spam, mail_from="stranger@remote.test")[0] == 550
    (junk,) = stored(server)["Junk"]
    assert b"Subject: from friend" in junk


def test_submitted_viruses_are_refused(filtered):
    server = filtered()
    with pytest.raises(smtplib.SMTPDataError) as info:
        submit(server, message(EICAR_BODY.decode(), sender=ALICE, to="bob@example.test"),
               "bob@example.test")
    assert info.value.smtp_code == 554
