"""ESORT (RFC 5267 §3.2): SORT and UID SORT with RETURN options answer ESEARCH, in sort order."""

from __future__ import annotations

import re

from tests.imap.conftest import Transcript
from tests.imap.test_sort import fill, sort


def esearch(imap: Transcript, command: str) -> tuple[bytes, bytes]:
    """(the command's tag as the response names it, the data after it) of the one ESEARCH line."""
    (line,) = [line for line in imap.ok(command) if line.startswith(b"* ESEARCH")]
    match = re.fullmatch(rb'\* ESEARCH \(TAG "([^"]+)"\)(.*)', line)
    assert match is not None, line
    return match[1], match[2]


def test_capability_is_advertised(imap: Transcript) -> None:
    assert b"ESORT" in imap.ok("CAPABILITY")[0].split()


def test_return_options_follow_the_sort_order(imap: Transcript) -> None:
    fill(imap)
    assert sort(imap, "SORT (DATE) UTF-8 ALL") == [2, 3, 1, 4]
    # MIN and MAX are the first and last in sort order, not the lowest and highest numbers.
    _, data = esearch(imap, "SORT RETURN (MIN MAX COUNT) (DATE) UTF-8 ALL")
    assert data == b" MIN 2 MAX 4 COUNT 4"
    # ALL keeps the order: 2,3 is a rising run (2:3), 1 and 4 stand alone.
    _, data = esearch(imap, "SORT RETURN (ALL) (DATE) UTF-8 ALL")
    assert data == b" ALL 2:3,1,4"
    # REVERSE ARRIVAL is 4,3,2,1: no range, since 4:1 would mean 1,2,3,4.
    _, data = esearch(imap, "SORT RETURN () (REVERSE ARRIVAL) UTF-8 ALL")
    assert data == b" ALL 4,3,2,1"


def test_uid_sort_and_the_tag(imap: Transcript) -> None:
    uids = fill(imap)
    expected_tag = f"t{imap.counter + 1}".encode()  # the tag the next command gets
    tag, data = esearch(imap, "UID SORT RETURN (ALL COUNT) (SUBJECT) UTF-8 ALL")
    assert tag == expected_tag  # RFC 4731 §3.1: the ESEARCH names the command it answers
    order = [uids[i - 1] for i in (2, 1, 4, 3)]  # apple, Re: Banana, banana, cherry
    # Rising uids in this order never rise by one from one to the next: no ranges.
    assert data == b" UID ALL %d,%d,%d,%d COUNT 4" % tuple(order)


def test_nothing_found(imap: Transcript) -> None:
    fill(imap)
    _, data = esearch(imap, "SORT RETURN (MIN MAX ALL COUNT) (ARRIVAL) UTF-8 KEYWORD nothing")
    assert data == b" COUNT 0"  # RFC 4731 §3.1: no MIN, MAX or ALL for an empty result
    _, data = esearch(imap, "UID SORT RETURN (MIN) (ARRIVAL) UTF-8 KEYWORD nothing")
    assert data == b" UID"


def test_bad_return_options(imap: Transcript) -> None:
    fill(imap)
    imap.bad("SORT RETURN (FIRST) (ARRIVAL) UTF-8 ALL")  # SAVE is valid: tests/imap/test_searchres.py
    imap.bad("SORT RETURN (ALL (ARRIVAL) UTF-8 ALL")
    imap.bad("SORT RETURN (ALL) UTF-8 ALL")  # no sort criteria
    imap.no("SORT RETURN (ALL) (ARRIVAL) KOI8-R ALL", code="BADCHARSET")
