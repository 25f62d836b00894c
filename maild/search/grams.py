"""Character n-grams: how a casefolded text becomes index terms and a needle a query.

A text ``t`` (already casefolded, :mod:`maild.search.match`) is indexed as the token
sequence ``t[i:i+3]`` for every position i, the last two tokens shorter (the text's last
two characters and its last one), each at position i. So:

- a needle of 3 or more characters occurs in ``t`` at position p exactly when its grams
  occur at positions p, p+1, ...: a phrase query of its grams (every third one and the
  last suffice: together they cover each character) finds every message holding it;
- a needle of 1 or 2 characters occurs at position p exactly when the token at p starts
  with it: a prefix query (a regular expression over the term dictionary) finds them all.

Tokens reach tantivy as one string split by its whitespace tokenizer (ASCII space, tab,
CR, LF, form feed), so those five characters are mapped to private-use characters first,
and lone surrogates (from undecodable header octets) to U+FFFD; the needle gets the same
mapping. The mapping is one-to-one except on those private-use characters, U+FFFD and
surrogates (:data:`AMBIGUOUS`): a text holding one is marked for verification, a needle
holding one is verified everywhere. Elsewhere a phrase of grams at consecutive positions
is exactly a substring, so the index's answer is the scan's (docs/search.md).
"""

from __future__ import annotations

import re
from array import array

GRAM = 3
_SPACES = ((" ", "\ue000"), ("\t", "\ue001"), ("\n", "\ue002"), ("\r", "\ue003"), ("\x0c", "\ue004"))
_SURROGATE = re.compile("[\ud800-\udfff]")
_SPACE = ord(" ")


def prepare(folded: str) -> str:
    """A casefolded text in the index's alphabet (one character for one)."""
    maybe_surrogates = not folded.isascii()  # asked before the mapping makes it non-ASCII
    for char, private in _SPACES:
        if char in folded:
            folded = folded.replace(char, private)
    if maybe_surrogates:
        folded = _SURROGATE.sub("\ufffd", folded)
    return folded


# Characters that make the mapping ambiguous: in a text, the index cannot vouch for the
# text's matches (its document is verified); in a needle, for any document.
AMBIGUOUS = re.compile("[\ue000-\ue004\ufffd\ud800-\udfff]")


def ambiguous(folded: str) -> bool:
    return not folded.isascii() and AMBIGUOUS.search(folded) is not None


def tokens(folded: str) -> str:
    """The whitespace-separated token string of a casefolded text: ``t[i:i+3]`` for every
    i, built by strided copies of the code points (C speed, not a slice per position)."""
    return prepared_tokens(prepare(folded))


def prepared_tokens(t: str) -> str:
    """:func:`tokens` of a text already in the index's alphabet (:func:`prepare`)."""
    n = len(t)
    if n < 64:  # short texts (envelope fields): slicing costs less than the arrays' set-up
        return " ".join([t[i:i + GRAM] for i in range(n)])
    points = array("I", t.encode("utf-32-le"))
    full = n - GRAM + 1  # positions with a whole gram
    out = array("I", bytes(4 * (GRAM + 1) * full))
    for k in range(GRAM):
        out[k::GRAM + 1] = points[k:k + full]
    out[GRAM::GRAM + 1] = array("I", [_SPACE]) * full
    return out.tobytes().decode("utf-32-le") + " ".join(t[i:] for i in range(full, n))


def phrase(folded_needle: str) -> list[tuple[int, str]]:
    """(offset, gram) of a needle of at least GRAM characters: every third gram and the
    last, which together cover every character of it."""
    n = prepare(folded_needle)
    offsets = list(range(0, len(n) - GRAM + 1, GRAM))
    if offsets[-1] != len(n) - GRAM:
        offsets.append(len(n) - GRAM)
    return [(o, n[o:o + GRAM]) for o in offsets]


def prefix_regex(folded_needle: str) -> str:
    """A regular expression (tantivy's) matching every token that starts with a needle
    shorter than GRAM: each character written as a \\x{...} escape."""
    return literal(prepare(folded_needle)) + ".*"


def literal(text: str) -> str:
    """A regular expression (tantivy's) matching ``text`` itself: each character written
    as a \\x{...} escape, so none is an operator."""
    return "".join(f"\\x{{{ord(c):x}}}" for c in text)
