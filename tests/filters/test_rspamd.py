"""rspamd through a real rspamd: /checkv2 actions mapped to SMTP answers and folders, and
what happens when rspamd cannot be asked."""

from __future__ import annotations

import pytest

from maild.filters.fallback import FallbackSpamFilter
from maild.filters.rspamd import RspamdClient, RspamdFilter, envelope_headers
from maild.filters.spam import SpamAction, SpamPolicy
from maild.util.transaction import Action
from tests.filters.conftest import ReactorThread, auth_results, make_tx
from tests.filters.messages import message
from tests.fixtures.clamd import free_port
from tests.fixtures.rspamd import GTUBE

DMARC_FAIL = auth_results(spf="fail", dmarc="fail")


def rspamd_filter(reactor_thread: ReactorThread, url: str, on_error: str = "fallback",
                  timeout: float = 5.0) -> RspamdFilter:
    policy = SpamPolicy()
    fallback = FallbackSpamFilter(policy, None, [], 4.0, junk_score=5.0, reject_score=15.0)
    client = RspamdClient(reactor_thread.reactor, url, timeout=timeout)
    return RspamdFilter(client, policy, on_error, fallback)


def test_gtube_is_rejected(reactor_thread, rspamd):
    tx = make_tx(message(GTUBE["reject"] + "\n"))
    verdict = reactor_thread.call(rspamd_filter(reactor_thread, rspamd.url).on_data, tx)
    assert verdict.action is Action.REJECT
    assert (verdict.reply.code, verdict.reply.enhanced) == (550, "5.7.1")
    assert tx.notes["spam"].action is SpamAction.REJECT
    assert tx.notes["spam"].symbols == ("GTUBE",)


def test_large_message_is_sent_whole_in_pieces(reactor_thread, rspamd):
    """A 1 MB body goes out 64 KB at a time as the socket drains, after the prepended
    Authentication-Results piece: rspamd (which waits for Content-Length octets) answers."""
    lines = "".join(f"line {i} of a long report, nothing to see here\n" for i in range(20000))
    tx = make_tx(message(lines))
    tx.notes["auth_results"] = DMARC_FAIL
    reactor_thread.call(rspamd_filter(reactor_thread, rspamd.url).on_data, tx)
    assert tx.notes["spam"].scorer == "rspamd"
    assert "RCPT_COUNT_ONE" in tx.notes["spam"].symbols


@pytest.mark.parametrize("action", ["add header", "rewrite subject"])
def test_spam_action_files_into_junk_with_headers(reactor_thread, rspamd, action):
    tx = make_tx(message(GTUBE[action] + "\n"))
    verdict = reactor_thread.call(rspamd_filter(reactor_thread, rspamd.url).on_data, tx)
    assert verdict.action is Action.ACCEPT
    assert verdict.folder == "Junk"
    headers = dict(verdict.add_headers)
    assert headers["X-Spam-Flag"] == "YES"
    assert headers["X-Spam-Status"].startswith("Yes, score=")
    assert "scorer=rspamd" in headers["X-Spam-Status"]
    # /checkv2 names only the reject score: it is not passed off as the Junk threshold
    assert "required=" not in headers["X-Spam-Status"]


def test_clean_message_goes_to_inbox(reactor_thread, rspamd):
    tx = make_tx(message())
    verdict = reactor_thread.call(rspamd_filter(reactor_thread, rspamd.url).on_data, tx)
    assert verdict.action is Action.ACCEPT
    assert verdict.folder is None
    assert dict(verdict.add_headers)["X-Spam-Status"].startswith("No, score=")
    assert tx.notes["spam"].action is SpamAction.NONE


def test_greylist_action_is_delivered_not_deferred(reactor_thread, rspamd):
    """rspamd answers "greylist" when a score passes the greylist threshold but its greylist
    module is off (here: no redis) or passed; actual greylisting comes as "soft reject"."""
    tx = make_tx(message(subject="greylist-score"))
    verdict = reactor_thread.call(rspamd_filter(reactor_thread, rspamd.url).on_data, tx)
    assert "MAILD_TEST_GREYLIST" in tx.notes["spam"].symbols
    assert 4.0 <= tx.notes["spam"].score < 6.0  # rspamd's greylist .. add header thresholds
    assert verdict.action is Action.ACCEPT and verdict.folder is None


def test_envelope_and_auth_results_are_passed(reactor_thread, rspamd):
    """The fixture's MAILD_TEST_* symbols fire on what rspamd was told: HELO, client IP,
    authenticated user, and the Authentication-Results of mail authentication."""
    tx = make_tx(message(), auth_results=DMARC_FAIL, authenticated_user="alice@example.test")
    score = reactor_thread.call(RspamdClient(reactor_thread.reactor, rspamd.url).check,
                                tx.raw, tx)
    assert {"MAILD_TEST_HELO", "MAILD_TEST_IP", "MAILD_TEST_USER",
            "MAILD_TEST_AR", "FROM_EQ_ENVFROM"} <= set(score.symbols)
    assert envelope_headers(tx)["Rcpt"] == ["alice@example.test"]


def test_submission_is_only_ever_rejected(reactor_thread, rspamd):
    flt = rspamd_filter(reactor_thread, rspamd.url)
    junk = make_tx(message(GTUBE["add header"] + "\n"), authenticated_user="alice@example.test")
    verdict = reactor_thread.call(flt.on_data, junk)
    assert verdict.action is Action.ACCEPT and verdict.folder is None
    spam = make_tx(message(GTUBE["reject"] + "\n"), authenticated_user="alice@example.test")
    assert reactor_thread.call(flt.on_data, spam).reply.code == 550


def test_rspamd_down_uses_the_fallback_scorer(reactor_thread):
    flt = rspamd_filter(reactor_thread, f"http://127.0.0.1:{free_port()}")
    tx = make_tx(message(GTUBE["reject"] + "\n"), auth_results=DMARC_FAIL)
    verdict = reactor_thread.call(flt.on_data, tx)
    assert verdict.folder == "Junk"  # spf fail 3 + dmarc fail 5 = 8: junk, not reject
    assert "scorer=fallback" in dict(verdict.add_headers)["X-Spam-Status"]
    assert tx.notes["spam"].scorer == "fallback"


def test_rspamd_down_tempfails_when_configured(reactor_thread):
    flt = rspamd_filter(reactor_thread, f"http://127.0.0.1:{free_port()}", on_error="tempfail")
    verdict = reactor_thread.call(flt.on_data, make_tx(message()))
    assert verdict.action is Action.TEMPFAIL
    assert (verdict.reply.code, verdict.reply.enhanced) == (451, "4.7.1")


def test_rspamd_down_accepts_when_configured(reactor_thread):
    flt = rspamd_filter(reactor_thread, f"http://127.0.0.1:{free_port()}", on_error="accept")
    verdict = reactor_thread.call(flt.on_data, make_tx(message()))
    assert verdict.action is Action.ACCEPT and verdict.folder is None


def test_rspamd_not_answering_times_out(reactor_thread, silent_server):
    flt = rspamd_filter(reactor_thread, f"http://{silent_server}", on_error="tempfail",
                        timeout=0.3)
    verdict = reactor_thread.call(flt.on_data, make_tx(message()))
    assert verdict.reply.code == 451


def test_junk_threshold_from_the_controller(reactor_thread, rspamd):
    """/checkv2 says only the reject score; with the controller configured, maild asks its
    /actions for the score that files to Junk (this rspamd: add header at 6)."""
    client = RspamdClient(reactor_thread.reactor, rspamd.url, controller_url=rspamd.controller_url,
                          timeout=5.0)
    scorer = RspamdFilter(client, SpamPolicy(), "accept", None)
    verdict = reactor_thread.call(scorer.on_data, make_tx(message(GTUBE["add header"] + "\n")))
    status = dict(verdict.add_headers)["X-Spam-Status"]
    assert status.startswith("Yes, score=") and " required=6.00 scorer=rspamd" in status
    verdict = reactor_thread.call(scorer.on_data, make_tx(message()))
    assert " required=6.00 " in dict(verdict.add_headers)["X-Spam-Status"]


def test_thresholds_table_gives_the_junk_score() -> None:
    """Where rspamd's answer carries its action thresholds, ``required=`` is the lowest
    score that files to Junk (SpamAssassin's meaning), not the reject score."""
    from maild.filters.rspamd import parse_check
    from maild.filters.spam import _status

    score = parse_check(b'{"action": "add header", "score": 8.0, "required_score": 15.0,'
                        b' "thresholds": {"reject": 15.0, "add header": 6.0,'
                        b' "rewrite subject": 7.0, "greylist": 4.0}}')
    assert score.junk == 6.0
    assert _status(score, True).startswith("Yes, score=8.00 required=6.00 scorer=rspamd")
