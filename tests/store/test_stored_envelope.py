"""EnvelopeFilter: the filter SEARCH FROM/SUBJECT/... runs on stored envelope bytes before
decoding them must never rule out a message the full comparison would match."""

from __future__ import annotations

from dataclasses import asdict, fields

from hypothesis import given, settings
from hypothesis import strategies as st

from maild.imap.mime import header_text
from maild.store.codec import EnvelopeFilter, StoredEnvelope, jdump
from maild.store.types import Envelope

# Letters whose case folding changes length or leaves ASCII (ß -> ss, K KELVIN SIGN -> k,
# İ -> i̇), JSON's escaped characters, and pieces of RFC 2047 encoded words.
PIECES = ["a", "B", "k", "s", " ", "ß", "\u212a", "\u0130", '"', "\\", "\t", "\x01", "é",
          "=?utf-8?q?Gr=C3=BC=C3=9Fe?=", "=?iso-8859-1?b?S/Zsbg==?=", "Report", "bob@example.test"]
text = st.lists(st.sampled_from(PIECES), max_size=6).map("".join)
envelopes = st.builds(Envelope, **{f.name: st.none() | text for f in fields(Envelope)})
# The case the filter decides on: ASCII without encoded words, escaped characters included.
ASCII_PIECES = ["a", "B", " ", '"', "\\", "\t", "\x01", "Report", "bob@"]
ascii_text = st.lists(st.sampled_from(ASCII_PIECES), max_size=8).map("".join)
ascii_envelopes = st.builds(Envelope, **{f.name: st.none() | ascii_text for f in fields(Envelope)})


def may_contain(stored: StoredEnvelope, *needles: str) -> bool:
    """The filter of ``needles`` all required (an AND of FROM/SUBJECT/... keys)."""
    return EnvelopeFilter([[needle] for needle in needles]).admits_stored(stored)


def _matches(envelope: Envelope, needle: str) -> bool:
    folded = needle.casefold()
    return any(folded in header_text(value).casefold() for value in asdict(envelope).values() if value is not None)


@settings(max_examples=800, deadline=None)
@given(envelopes, text)
def test_never_rules_out_a_match(envelope: Envelope, needle: str) -> None:
    stored = StoredEnvelope(jdump({k: v for k, v in asdict(envelope).items() if v is not None}))
    if _matches(envelope, needle):
        assert may_contain(stored, needle)
    assert stored.envelope == envelope


@settings(max_examples=400, deadline=None)
@given(envelopes | ascii_envelopes, st.data())
def test_substrings_of_fields_are_kept(envelope: Envelope, data: st.DataObject) -> None:
    values = [v for v in asdict(envelope).values() if v]
    if not values:
        return
    value = header_text(data.draw(st.sampled_from(values)))
    start = data.draw(st.integers(0, len(value)))
    needle = value[start:data.draw(st.integers(start, len(value)))]
    stored = StoredEnvelope(jdump({k: v for k, v in asdict(envelope).items() if v is not None}))
    assert may_contain(stored, needle.upper())


def test_plain_ascii_envelope_rules_out_absent_text() -> None:
    stored = StoredEnvelope(jdump({"subject": "Quarterly report", "from_": "Carol <carol@example.org>"}))
    assert may_contain(stored, "REPORT") and may_contain(stored, "carol@")
    assert not may_contain(stored, "invoice")
    assert not may_contain(stored, "Grüße")  # no ASCII text folds to non-ASCII
    quoted = StoredEnvelope(jdump({"from_": '"Bob \\ Co" <bob@example.test>', "subject": "a\tb"}))
    assert may_contain(quoted, '"bob \\ co"') and may_contain(quoted, "A\tB")  # escaped in the JSON


@settings(max_examples=500, deadline=None)
@given(envelopes | ascii_envelopes, text, text)
def test_several_needles_rule_out_only_what_one_would(envelope: Envelope, first: str, second: str) -> None:
    """A filter of several clauses admits what each clause's filter admits (AND); a clause
    of several texts what any one text's filter admits (OR)."""
    stored = StoredEnvelope(jdump({k: v for k, v in asdict(envelope).items() if v is not None}))
    alone = may_contain(stored, first), may_contain(stored, second)
    assert may_contain(stored, first, second) == (alone[0] and alone[1])
    assert EnvelopeFilter([[first, second]]).admits_stored(stored) == (alone[0] or alone[1])
