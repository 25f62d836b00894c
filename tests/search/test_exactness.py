"""Index-backed SEARCH answers exactly what the scan answers (RFC 3501 §6.4.4: a
case-insensitive substring match), whatever the message and the query: the property the
index's design rests on (docs/search.md, "Exactness")."""

from __future__ import annotations

import base64
import binascii
import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import maild.search
from maild.imap import search as searching
from maild.imap.commands import SearchKey, SearchOp
from maild.search import SearchService, shingles
from maild.search.index import BODY, Needle
from maild.store import Store
from tests.search.conftest import USER, catch_up

# Letters that fold in interesting ways: ß -> ss, İ -> i̇, ﬁ -> fi, final sigma, Kelvin sign.
ALPHABET = "abcXYZ019 ._-@\n\tßİﬁΣσςKÅåéÉüÜ€🙂<>&;中文" + "\u0301\ue000\ufffd"
word = st.text(alphabet=ALPHABET.replace("\n", "").replace("\t", ""), min_size=1, max_size=12)
# Prose: words (of letters, digits, non-ASCII, marks) between separators (spaces,
# punctuation, line ends), so that needles span words: the shingle path (shingles.py).
prose = st.lists(st.tuples(st.text(alphabet="abcXYZ019_ßİﬁΣσςKÅéü中\u0301", min_size=1, max_size=7),
                           st.sampled_from([" ", "  ", ", ", ".\n", "-", "@", " \x01", "\t", "🙂"])),
                 max_size=8).map(lambda pairs: "".join(w + s for w, s in pairs))
text = st.one_of(st.text(alphabet=ALPHABET, min_size=0, max_size=60), prose)
_counter = itertools.count()


def _encode_body(body: str, encoding: str, charset: str) -> tuple[bytes, str]:
    data = body.encode(charset, "replace")
    if encoding == "base64":
        return base64.encodebytes(data).replace(b"\n", b"\r\n"), "base64"
    if encoding == "quoted-printable":
        return binascii.b2a_qp(data).replace(b"\n", b"\r\n"), "quoted-printable"
    return data.replace(b"\n", b"\r\n"), "8bit"


@st.composite
def messages(draw: Any) -> tuple[bytes, list[str]]:
    """A message and the texts a query may be cut from."""
    subject, name, body = draw(word), draw(word), draw(text)
    encoding = draw(st.sampled_from(["8bit", "base64", "quoted-printable"]))
    charset = draw(st.sampled_from(["utf-8", "iso-8859-1"]))
    html = draw(st.booleans())
    payload, cte = _encode_body(f"<p>{body}</p>" if html else body, encoding, charset)
    subject_h = "=?utf-8?b?" + base64.b64encode(subject.encode()).decode() + "?=" \
        if draw(st.booleans()) else subject.encode("ascii", "replace").decode()
    head = (f"From: \"{name}\" <{draw(st.sampled_from(['bob', 'Carol.X']))}@example.org>\r\n"
            f"To: alice@example.test\r\nSubject: {subject_h}\r\nX-Custom: {name}\r\n")
    part = (f"Content-Type: text/{'html' if html else 'plain'}; charset={charset}\r\n"
            f"Content-Transfer-Encoding: {cte}\r\n\r\n").encode() + payload
    if draw(st.booleans()):
        raw = (head + "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=BB\r\n\r\n--BB\r\n").encode() \
            + part + (f"\r\n--BB\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; "
                      f"filename=\"{name.encode('ascii', 'replace').decode()}.pdf\"\r\n\r\nAAAA\r\n--BB--\r\n").encode()
    else:
        raw = head.encode() + part
    return raw, [subject, name, body, "example.org", "Carol.X"]


@st.composite
def needles(draw: Any, sources: list[str]) -> str:
    """A substring of some text (inside words, shorter than the grams, across words,
    case-changed), or any text at all."""
    source = draw(st.sampled_from(sources))
    if source and draw(st.integers(0, 3)):
        start = draw(st.integers(0, len(source) - 1))
        cut = source[start:start + draw(st.sampled_from([1, 2, 3, 5, 8, 12, 20]))]
        return draw(st.sampled_from([cut, cut.upper(), cut.lower(), cut.casefold()]))
    return draw(st.text(alphabet=ALPHABET, min_size=1, max_size=5))


def _keys(needle: str) -> list[SearchKey]:
    body = SearchKey(SearchOp.BODY, needle)
    return [body, SearchKey(SearchOp.TEXT, needle),
            SearchKey(SearchOp.HEADER, ("subject", needle)), SearchKey(SearchOp.HEADER, ("from", needle)),
            SearchKey(SearchOp.HEADER, ("x-custom", needle)),
            SearchKey(SearchOp.OR, children=(body, SearchKey(SearchOp.HEADER, ("to", needle)))),
            SearchKey(SearchOp.AND, children=(body, SearchKey(SearchOp.NOT, children=(
                SearchKey(SearchOp.HEADER, ("subject", needle)),))))]


def _answer(store: Store, mailbox_id: int, key: SearchKey, index: bool,
            monkeypatch: pytest.MonkeyPatch, service: SearchService) -> list[int]:
    with monkeypatch.context() as m:
        m.setattr(maild.search, "of", lambda s: service if index else None)
        uids = store.uids(USER, mailbox_id)
        return [uid for _, uid, _ in searching.search(store, USER, mailbox_id, uids, key)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(data=st.data())
def test_index_answers_what_the_scan_answers(indexed: tuple[Store, SearchService], data: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    store, service = indexed
    mailbox = store.mailbox(USER, f"Box{next(_counter)}") or _create(store, f"Box{next(_counter)}")
    batch = data.draw(st.lists(messages(), min_size=1, max_size=4))
    for raw, _ in batch:
        store.append(USER, mailbox.id, raw)
    catch_up(service)
    # Some mail the index has not seen yet: above the watermark, found by reading it.
    late = data.draw(st.lists(messages(), max_size=2))
    for raw, _ in late:
        store.append(USER, mailbox.id, raw)
    sources = [t for _, texts in batch + late for t in texts]
    for _ in range(4):
        needle = data.draw(needles(sources))
        for key in _keys(needle):
            scan = _answer(store, mailbox.id, key, False, monkeypatch, service)
            assert _answer(store, mailbox.id, key, True, monkeypatch, service) == scan, (needle, key)
    catch_up(service)


def _create(store: Store, name: str) -> Any:
    store.create_mailbox(USER, name)
    return store.mailbox(USER, name)


def test_index_rules_out_and_short_needles_stay_complete(indexed: tuple[Store, SearchService]) -> None:
    """The index does the work (candidates are few) and a needle shorter than the grams
    still finds every message holding it, at the end of a text too."""
    store, service = indexed
    inbox = store.mailbox(USER, "INBOX")
    assert inbox is not None
    for i in range(30):
        store.append(USER, inbox.id, f"Subject: s{i}\r\n\r\nplain words {i} zq".encode())
    catch_up(service)
    reader = service.reader(USER, inbox.id, inbox.uidvalidity, 100)
    assert reader.watermark == 30
    assert reader.matching(Needle(BODY, "WORDS 17")) == {18}
    assert reader.matching(Needle(BODY, "q")) == set(range(1, 31))  # the text's last character
    assert reader.matching(Needle(BODY, "zq")) == set(range(1, 31))
    assert reader.matching(Needle(BODY, "29")) == {30}
    assert reader.matching(Needle(BODY, "absent")) == set()


def test_phrases_by_shingles_and_without(indexed: tuple[Store, SearchService],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A needle of several words is answered from the word shingles, exactly: a word cut
    at either end, not across other separators; a text that cannot be shingled (a control
    character of the token format, an over-long word) is still found, by its grams; and so
    is every needle when the shingle query fails (too many expansions)."""
    store, service = indexed
    inbox = store.mailbox(USER, "INBOX")
    assert inbox is not None
    bodies = ["the deadline forecast, today", "deadline  forecast", "deadlines forecasting",
              "a deadline\r\nforecast", "nodeadline forecastx", "deadline \x01 forecast deadline forecast",
              "x" * 1200 + " deadline forecast", "deadline-forecast"]
    for body in bodies:
        store.append(USER, inbox.id, f"Subject: s\r\n\r\n{body}".encode())
    catch_up(service)
    reader = service.reader(USER, inbox.id, inbox.uidvalidity, 100)

    def found(needle: str) -> set[int]:
        answer = reader.matching(Needle(BODY, needle))
        assert answer is not None
        return answer
    assert found("DEADLINE FORECAST") == {1, 5, 6, 7}
    assert found("e forecast") == {1, 5, 6, 7}
    assert found("deadline forecast,") == {1}
    assert found("dline forec") == {1, 5, 6, 7}
    assert found("deadlines forecasting") == {3}
    assert found("deadline-forecast") == {8}
    assert found("deadline\r\nforecast") == {4}
    monkeypatch.setattr(shingles, "needle_regexes", lambda folded: ["("])  # an invalid query
    assert found("dline forec") == {1, 5, 6, 7}
