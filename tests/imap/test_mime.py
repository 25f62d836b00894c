"""Unit tests of the IMAP message view (maild.imap.mime): sections, BODYSTRUCTURE, ENVELOPE."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from maild.imap import mime
from maild.imap.commands import Section
from maild.store.types import Envelope
from maild.util import address

RAW = (b"From: =?utf-8?q?J=C3=B6rg?= <joerg@example.org>\r\n"
       b"To: a@example.test, \"B, Bee\" <b@example.test>\r\n"
       b"Subject: =?utf-8?b?R3LDvMOfZQ==?=\r\n"
       b"X-Folded: one\r\n two\r\n"
       b"Content-Type: multipart/mixed; boundary=\"XX\"\r\n"
       b"\r\n"
       b"preamble\r\n"
       b"--XX\r\n"
       b"Content-Type: text/plain; charset=iso-8859-1\r\n"
       b"Content-Transfer-Encoding: quoted-printable\r\n"
       b"\r\n"
       b"Gr=FC=DFe aus K=F6ln\r\n"
       b"--XX\r\n"
       b"Content-Type: message/rfc822\r\n"
       b"Content-Disposition: attachment; filename=\"fwd.eml\"\r\n"
       b"\r\n"
       b"Subject: inner\r\n"
       b"Content-Type: multipart/alternative; boundary=YY\r\n"
       b"\r\n"
       b"--YY\r\n"
       b"\r\n"
       b"plain inner\r\n"
       b"--YY\r\n"
       b"Content-Type: text/html\r\n"
       b"\r\n"
       b"<p>html</p>\r\n"
       b"--YY--\r\n"
       b"--XX--\r\n"
       b"epilogue\r\n")


def test_sections() -> None:
    root = mime.parse(RAW)
    assert mime.section(RAW, Section()) == RAW
    assert mime.section(RAW, Section(text="HEADER")).endswith(b"boundary=\"XX\"\r\n\r\n")  # type: ignore[union-attr]
    assert mime.section(RAW, Section(text="TEXT")).startswith(b"preamble")  # type: ignore[union-attr]
    assert mime.section(RAW, Section((1,)), root) == b"Gr=FC=DFe aus K=F6ln"
    assert mime.section(RAW, Section((1,), "MIME"), root).startswith(b"Content-Type: text/plain")  # type: ignore[union-attr]
    assert mime.section(RAW, Section((2,), "HEADER"), root) == (
        b"Subject: inner\r\nContent-Type: multipart/alternative; boundary=YY\r\n\r\n")
    assert mime.section(RAW, Section((2, 1)), root) == b"plain inner"
    assert mime.section(RAW, Section((2, 2)), root) == b"<p>html</p>"
    assert mime.section(RAW, Section((2, 2), "MIME"), root) == b"Content-Type: text/html\r\n\r\n"
    assert mime.section(RAW, Section((3,)), root) is None
    assert mime.section(RAW, Section((1, 1)), root) is None
    assert mime.section(RAW, Section((1,), "TEXT"), root) is None  # TEXT only on message parts
    assert mime.section(RAW, Section(text="HEADER.FIELDS", fields=("subject", "X-FOLDED"))) == (
        b"Subject: =?utf-8?b?R3LDvMOfZQ==?=\r\nX-Folded: one\r\n two\r\n\r\n")
    not_fields = mime.section(RAW, Section(text="HEADER.FIELDS.NOT", fields=("From", "To", "Subject", "X-Folded")))
    assert not_fields == b"Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n"


def test_single_part_numbering() -> None:
    raw = b"Subject: x\r\n\r\nbody\r\n"
    assert mime.section(raw, Section((1,))) == b"body\r\n"  # RFC 3501 §6.4.5: part 1 of a non-multipart
    assert mime.section(raw, Section((2,))) is None


def test_bodystructure() -> None:
    root = mime.parse(RAW)
    structure = mime.bodystructure(root)
    assert structure.startswith(b'(("TEXT" "PLAIN" ("CHARSET" "iso-8859-1") NIL NIL "QUOTED-PRINTABLE" 20 1'
                                b' NIL NIL NIL NIL)("MESSAGE" "RFC822" NIL NIL NIL "7BIT" ')
    assert b'("ATTACHMENT" ("FILENAME" "fwd.eml"))' in structure
    assert b'(NIL "inner" NIL NIL NIL NIL NIL NIL NIL NIL)' in structure  # nested ENVELOPE
    assert b'"ALTERNATIVE" ("BOUNDARY" "YY") NIL NIL NIL)' in structure
    assert structure.endswith(b' "MIXED" ("BOUNDARY" "XX") NIL NIL NIL)')
    body = mime.bodystructure(root, extended=False)
    assert b"BOUNDARY" not in body and body.endswith(b' "MIXED")')
    assert structure.count(b"(") == structure.count(b")")


def test_envelope_defaults_and_quoting() -> None:
    env = Envelope(date="Mon, 1 Jan 2024 10:00:00 +0000", subject='say "hi"',
                   from_='"B, Bee" <b@example.test>', to="undisclosed-recipients:;")
    out = mime.envelope(env)
    assert out.startswith(b'("Mon, 1 Jan 2024 10:00:00 +0000" "say \\"hi\\"" (("B, Bee" NIL "b" "example.test"))'
                          b' (("B, Bee" NIL "b" "example.test")) (("B, Bee" NIL "b" "example.test"))')
    # RFC 3501 §7.4.2: an empty group is its start and end markers, not NIL.
    assert out.endswith(b' ((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) NIL NIL NIL NIL)')
    assert mime.envelope(Envelope(subject="Grüße")) == (
        b'(NIL {7}\r\nGr\xc3\xbc\xc3\x9fe NIL NIL NIL NIL NIL NIL NIL NIL)')


_NAME = st.text(alphabet="ab xy.\t-_!#$%&*+/=?^`{|}~\"\\,;:()<>@[]ü", max_size=12)
_ATOM = st.text(alphabet="ab.-+_", min_size=1, max_size=5)


@given(name=_NAME, local=_ATOM, domain=_ATOM, form=st.sampled_from(['{n} <{a}>', '"{n}" <{a}>', ' {a} ', '{n}<{a}>']))
def test_address_fast_path_parses_as_the_tokenizer_does(name: str, local: str, domain: str, form: str) -> None:
    """ENVELOPE's fast path for a lone mailbox gives what the full RFC 5322 parse gives."""
    value = form.format(n=name, a=f"{local}@{domain}")
    assert address.parse(value) == address._parse_tokens(value)
    listed = f"{value}, {value},{value}"  # the fast path for a list of plain mailboxes
    assert address.parse(listed) == address._parse_tokens(listed)


def test_envelope_groups_routes_and_comments() -> None:
    """RFC 3501 §7.4.2: group start and end markers, the source route as adl, comments
    in no field, and a host for an address without one (a NIL host means a group)."""
    env = Envelope(from_="<@route:user@domain>", to="group: a@x, b@y;, other: c@z;",
                   cc="undisclosed-recipients:;", bcc="<user (c)@ (c) domain.org>, d",
                   reply_to="joe@x.org (Joe Q)")
    out = mime.envelope(env)
    assert out == (b'(NIL NIL ((NIL "@route" "user" "domain")) ((NIL "@route" "user" "domain"))'
                   b' (("Joe Q" NIL "joe" "x.org"))'
                   b' ((NIL NIL "group" NIL)(NIL NIL "a" "x")(NIL NIL "b" "y")(NIL NIL NIL NIL)'
                   b'(NIL NIL "other" NIL)(NIL NIL "c" "z")(NIL NIL NIL NIL))'
                   b' ((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL))'
                   b' ((NIL NIL "user" "domain.org")(NIL NIL "d" "MISSING_DOMAIN")) NIL NIL)')
    assert address.parse('"Smith, Bob" <bob@example.test>, a@b') == [
        address.Address("Smith, Bob", None, "bob", "example.test"), address.Address(None, None, "a", "b")]
    assert address.parse("<@r1,@r2:u@h>")[0].adl == "@r1,@r2"
    assert address.parse("open: a@b")[-1] == address.GROUP_END  # an unterminated group is closed


def test_search_text_decoding() -> None:
    assert mime.header_text("=?utf-8?b?R3LDvMOfZQ==?=") == "Grüße"
    assert mime.header_text("=?bogus?q?x?=") == "=?bogus?q?x?="
    assert "Grüße aus Köln" in mime.body_text(RAW)
    assert "plain inner" in mime.body_text(RAW)
    assert mime.header_values(RAW, "x-folded") == ["one two"]


# Pieces of Content-Type / Content-Disposition values: tokens, the separators, quoted strings
# plain and with what only the email package handles (escapes, RFC 2231 "*", comments).
_PARAM_PIECES = ["text", "plain", "Multipart", "mixed", "charset", "UTF-8", "x-y.z", "name*0", "*", "filename",
                 "/", ";", "=", " ", "\t", '"a b"', '"a;b=c"', '"a\\"b"', '""', '"open', "(c)", "<a>", "é",
                 ",", "@", "utf-8\'\'%41", "attachment"]


@settings(max_examples=3000, deadline=None)
@given(st.sampled_from(["content-type", "content-disposition"]),
       st.lists(st.sampled_from(_PARAM_PIECES), max_size=12).map("".join))
def test_parameters_parse_as_the_email_package_does(name: str, value: str) -> None:
    _assert_params_as_email_parses(name, value)


def _assert_params_as_email_parses(name: str, value: str) -> None:
    expected = mime._header(name, value).get_params(header=name, failobj=[]) or []
    assert mime._header_params(name, value) == expected


_SPACE = st.sampled_from(["", " ", "\t", "  "])
_TOKENS = st.sampled_from(["text", "plain", "Charset", "UTF-8", "x-y.z", "name", "a+b", "{}", "~|`^", "*", "n*"])
_VALUES = _TOKENS | st.sampled_from(['"a b"', '"a;b=c"', '""', '"x\\\\y"', '"é"', "<a>", "(c)"])
_SHAPED = st.builds(lambda s0, main, params, end: s0 + main + "".join(params) + end,
                    _SPACE, st.sampled_from(["text/plain", "multipart/mixed", "attachment", "inline", "a/b/c"]),
                    st.lists(st.builds(lambda a, k, b, c, v, d: f";{a}{k}{b}={c}{v}{d}",
                                       _SPACE, _TOKENS, _SPACE, _SPACE, _VALUES, _SPACE), max_size=4),
                    st.sampled_from(["", ";", " ", "; "]))


@settings(max_examples=3000, deadline=None)
@given(st.sampled_from(["content-type", "content-disposition"]), _SHAPED)
def test_shaped_parameters_parse_as_the_email_package_does(name: str, value: str) -> None:
    """Values shaped like real ones, so that most take the fast path."""
    _assert_params_as_email_parses(name, value)
