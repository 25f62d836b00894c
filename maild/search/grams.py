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
mapping. The mapping is not one-to-one (a text holding U+E000 looks like one holding a
space), which can only add candidates: the matcher verifies each one.
"""

from __future__ import annotations

GRAM = 3
_MAP = {ord(" "): "\ue000", ord("\t"): "\ue001", ord("\n"): "\ue002", ord("\r"): "\ue003",
        ord("\x0c"): "\ue004"}
_MAP.update({c: "\ufffd" for c in range(0xD800, 0xE000)})
_TABLE = str.maketrans(_MAP)


def prepare(folded: str) -> str:
    """A casefolded text in the index's alphabet (one character for one)."""
    return folded.translate(_TABLE)


def tokens(folded: str) -> str:
    """The whitespace-separated token string of a casefolded text."""
    t = prepare(folded)
    return " ".join([t[i:i + GRAM] for i in range(len(t))])


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
    n = prepare(folded_needle)
    return "".join(f"\\x{{{ord(c):x}}}" for c in n) + ".*"
