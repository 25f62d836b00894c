"""Word shingles: a second way into the index for needles that span words.

The n-gram phrase (:mod:`maild.search.grams`) is exact for any needle, but it decodes the
positions of every gram in every message holding them all; for common words that is
every message. A needle of two or more words is answered here instead, from one token per
pair of neighbouring words, and as exactly.

A casefolded text ``t`` is a sequence of *runs*: maximal stretches of word characters
(Python's ``\\w``) and of the rest (``\\W``), alternating. With ``w0 s1 w1 s2 w2 ...`` its
word runs and the separator runs between them (a separator before the first word or
after the last is left out), the token at position i is the *shingle*
``reversed(w_i) D s_(i+1) D w_(i+1)`` (D: :data:`DELIM`). A needle ``n`` starting and
ending with a word character, with at least two word runs, is ``v0 r1 v1 ... r_m v_m``;
at an occurrence in ``t``:

- ``v0`` ends where a word of ``t`` ends (a separator follows), so it is a suffix of that
  word: the reversed word starts with ``reversed(v0)``;
- ``v_m`` starts where a word of ``t`` starts, so it is a prefix of it;
- every other run of the needle is bounded on both sides by characters of the other kind,
  so it is exactly a run of ``t``.

So ``n`` occurs in ``t`` exactly when the shingles at positions p .. p+m-1 match the
needle's m regular expressions (:func:`needle_regexes`): the first with ``reversed(v0)``
as a prefix of its first word, the last with ``v_m`` as a prefix of its second word, the
separators and the words between exact. A needle of one pair is one regular expression
over the term dictionary (no positions read); a longer one a phrase of them.

The token stream reaches tantivy as the shingles joined by spaces, cut apart by its
whitespace tokenizer (the grams' one: no regular expression to run): the shingles are
made from the text in the index's alphabet (:func:`maild.search.grams.prepare`, shared
with the grams), where ASCII whitespace is mapped to private-use characters, and a
needle's separators get the same mapping. The mapping takes separator characters to
separator characters (``\\W`` to ``\\W``), so the runs are the same before and after it,
and it is one-to-one except on the characters that make a document partial and a needle
verified (grams.AMBIGUOUS): an occurrence of the needle in the text is an occurrence of
the mapped needle in the mapped text, so the argument above holds. A text holding D, or
a run longer than :data:`MAX_RUN` (tantivy drops a token over 64 KB), has no shingles:
:func:`shingles` returns None and the index answers it by the grams (index.py).
"""

from __future__ import annotations

import operator
import re

from maild.search.grams import literal, prepare

DELIM = "\x01"  # inside a shingle: between a word and a separator
SPLIT = " "  # between shingles (tantivy's whitespace tokenizer)
MAX_RUN = 1000
_RUNS = re.compile(r"\w+|\W+")
_SEPARATORS = re.compile(r"(\W+)")
_REVERSED = operator.itemgetter(slice(None, None, -1))
_WORD = re.compile(r"\w")
_UNFIT = re.compile(f"[{DELIM}\ud800-\udfff]")


def shingles(prepared: str) -> str | None:
    """The shingle token string of a casefolded text in the index's alphabet
    (:func:`maild.search.grams.prepare`: no ASCII whitespace left in it), "" when it has
    fewer than two words; None when it cannot be shingled exactly (see the module's note)."""
    if DELIM in prepared:
        return None
    runs = _SEPARATORS.split(prepared)  # word, separator, word, ..., word ("" at either end)
    if not runs[0]:
        runs = runs[2:]  # a separator before the first word
    if runs and not runs[-1]:
        runs = runs[:-2]  # after the last
    if len(runs) < 3:
        return ""
    if max(map(len, runs)) > MAX_RUN:
        return None
    # Built by strided slice assignment (C speed, not a concatenation per pair): per pair,
    # reversed(w_i) D s_(i+1) D w_(i+1) SPLIT.
    pairs = len(runs) // 2
    out: list[str] = [DELIM] * (6 * pairs)
    out[0::6] = map(_REVERSED, runs[0:-1:2])
    out[2::6] = runs[1::2]
    out[4::6] = runs[2::2]
    out[5::6] = [SPLIT] * pairs
    return "".join(out[:-1])


def needle_regexes(folded: str) -> list[str] | None:
    """The regular expressions (tantivy's) of a casefolded needle's shingles, one per pair
    of neighbouring words in order; None when the needle is not one this path answers
    exactly (fewer than two words, a separator at either end, a character of the token
    format, an over-long run)."""
    if _UNFIT.search(folded):
        return None
    runs = _RUNS.findall(folded)
    if len(runs) < 3 or not _WORD.match(runs[0]) or not _WORD.match(runs[-1]):
        return None
    if max(map(len, runs)) > MAX_RUN:
        return None
    words, seps = runs[0::2], runs[1::2]
    last = len(words) - 1
    out = []
    for i in range(last):
        # The first word is a suffix of the text's (its reversal a prefix), the last a
        # prefix; the ones between are whole words, the separators whole separators.
        left = literal(words[i][::-1]) + ("[^\\x{1}]*" if i == 0 else "")
        right = literal(words[i + 1]) + (".*" if i + 1 == last else "")
        out.append(left + literal(DELIM + prepare(seps[i]) + DELIM) + right)
    return out
