"""Unit tests of the RFC 5321 command grammar (maild.smtp.parser)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maild.smtp.parser import (
    Auth,
    Bdat,
    Body,
    CommandError,
    Data,
    Hello,
    Help,
    MailFrom,
    MailPath,
    Noop,
    Quit,
    RcptTo,
    Rset,
    StartTls,
    Verb,
    Vrfy,
    parse_command,
    parse_domain,
    quote_local_part,
)


def error_of(line: bytes) -> CommandError:
    with pytest.raises(CommandError) as info:
        parse_command(line)
    return info.value


def test_ehlo_and_helo() -> None:
    assert parse_command(b"EHLO mx.example.org") == Hello(Verb.EHLO, "mx.example.org", True)
    assert parse_command(b"helo [192.0.2.1]") == Hello(Verb.HELO, "[192.0.2.1]", True)
    assert parse_command(b"EHLO [IPv6:2001:db8::1]").valid
    # Broken client names are accepted but marked, for policy filters to judge.
    assert parse_command(b"EHLO my_laptop") == Hello(Verb.EHLO, "my_laptop", False)
    assert error_of(b"EHLO").code == 501
    assert error_of(b"EHLO a b").code == 501


def test_simple_commands() -> None:
    assert parse_command(b"DATA") == Data()
    assert parse_command(b"rset") == Rset()
    assert parse_command(b"QUIT") == Quit()
    assert parse_command(b"STARTTLS") == StartTls()
    assert parse_command(b"NOOP anything at all") == Noop()
    assert parse_command(b"HELP") == Help(None)
    assert parse_command(b"HELP MAIL") == Help("MAIL")
    assert parse_command(b"VRFY alice") == Vrfy("alice")
    assert error_of(b"DATA now").code == 501
    assert error_of(b"STARTTLS x").code == 501


def test_unknown_and_malformed() -> None:
    err = error_of(b"EXPN staff")
    assert (err.code, err.enhanced) == (500, "5.5.2")
    assert error_of(b"GET / HTTP/1.1").code == 500
    assert error_of(b"\xff\xfe").code == 500
    assert error_of(b"NOOP \x00").code == 500
    assert error_of(b"").code == 500


def test_mail_from() -> None:
    cmd = parse_command(b"MAIL FROM:<alice@example.test>")
    assert cmd == MailFrom(MailPath("alice", "example.test"))
    assert cmd.address == "alice@example.test"
    # A space after the colon is common in the wild and tolerated.
    assert parse_command(b"MAIL FROM: <a@b.example>").sender == MailPath("a", "b.example")
    null = parse_command(b"MAIL FROM:<>")
    assert null.sender is None and null.address == ""


def test_mail_parameters() -> None:
    cmd = parse_command(b"MAIL FROM:<a@b.example> SIZE=12345 BODY=8bitmime SMTPUTF8 AUTH=<>")
    assert isinstance(cmd, MailFrom)
    assert cmd.size == 12345
    assert cmd.body is Body.EIGHT_BIT_MIME
    assert cmd.smtputf8
    assert cmd.auth == "<>"
    assert cmd.params == {"SIZE": "12345", "BODY": "8bitmime", "SMTPUTF8": None, "AUTH": "<>"}


@pytest.mark.parametrize("line,code", [
    (b"MAIL FROM:<a@b.example> SIZE=big", 501),
    (b"MAIL FROM:<a@b.example> SIZE", 501),
    (b"MAIL FROM:<a@b.example> BODY=BINARYMIME", 501),
    (b"MAIL FROM:<a@b.example> SMTPUTF8=yes", 501),
    (b"MAIL FROM:<a@b.example> RET=FULL", 555),
    (b"MAIL FROM:<a@b.example> SIZE=1 SIZE=2", 501),
    (b"MAIL FROM:<a@b.example>SIZE=1", 501),
    (b"MAIL FROM:a@b.example", 501),
    (b"MAIL TO:<a@b.example>", 501),
    (b"MAIL FROM:<a@b.example", 501),
    (b"RCPT TO:<a@b.example> NOTIFY=NEVER", 555),
    (b"RCPT TO:<>", 501),
])
def test_bad_mail_and_rcpt(line: bytes, code: int) -> None:
    assert error_of(line).code == code


def test_rcpt_to() -> None:
    assert parse_command(b"RCPT TO:<bob@example.test>") == RcptTo(MailPath("bob", "example.test"))
    assert parse_command(b"RCPT TO:<Postmaster>") == RcptTo(None)
    assert parse_command(b"rcpt to:<postmaster>").recipient is None


def test_relay_tricks_keep_their_local_part() -> None:
    """The tricks parse to a mailbox whose domain is what the relay check must see."""
    percent = parse_command(b"RCPT TO:<user%other.example@example.test>").recipient
    assert percent == MailPath("user%other.example", "example.test") and percent.has_routing
    quoted = parse_command(b'RCPT TO:<"user@other.example"@example.test>').recipient
    assert quoted == MailPath("user@other.example", "example.test") and quoted.has_routing
    assert quoted.address == '"user@other.example"@example.test'
    bang = parse_command(b"RCPT TO:<other.example!user@example.test>").recipient
    assert bang.domain == "example.test" and bang.has_routing
    # RFC 5321 §3.6.1: the source route is ignored, the mailbox is the real destination.
    routed = parse_command(b"RCPT TO:<@example.test:user@other.example>").recipient
    assert routed == MailPath("user", "other.example") and not routed.has_routing
    routed2 = parse_command(b"RCPT TO:<@a.example,@example.test:user@other.example>")
    assert routed2.recipient.domain == "other.example"
    literal = parse_command(b"RCPT TO:<user@[127.0.0.1]>").recipient
    assert literal.is_literal and literal.domain == "[127.0.0.1]"
    assert parse_command(b"RCPT TO:<user@[IPv6:::1]>").recipient.is_literal
    assert not parse_command(b"RCPT TO:<bob@example.test>").recipient.has_routing


@pytest.mark.parametrize("address", [
    b"user@other.example@example.test",
    b"user@",
    b"@example.test",
    b"user",
    b"user@[300.1.1.1]",
    b"user@[x:y]",
    b"user@-bad.example",
    b"user@bad-.example",
    b"user@a..example",
    b".user@example.test",
    b"us..er@example.test",
    b"user.@example.test",
    b"us er@example.test",
    b'"unterminated@example.test',
    b"@example.test,user@other.example",
    b"@bad_domain:user@other.example",
    b"user@" + b"a" * 64 + b".example",
    b"x" * 65 + b"@example.test",
])
def test_strict_address_grammar(address: bytes) -> None:
    assert error_of(b"RCPT TO:<" + address + b">").code == 501


def test_path_length_limit() -> None:
    long_domain = ".".join(["a" * 60] * 4)
    assert parse_domain(long_domain) == long_domain
    assert error_of(f"RCPT TO:<{'u' * 64}@{long_domain}>".encode()).code == 501


def test_quoted_local_part() -> None:
    box = parse_command(b'RCPT TO:<"john \\"jd\\" doe"@example.test>').recipient
    assert box.local_part == 'john "jd" doe'
    assert str(box) == '"john \\"jd\\" doe"@example.test'
    assert quote_local_part("plain.name") == "plain.name"
    assert parse_command(b'RCPT TO:<"a>b"@example.test>').recipient.local_part == "a>b"


def test_domain_is_lowercased_for_lookup() -> None:
    box = parse_command(b"RCPT TO:<Alice@Example.TEST>").recipient
    assert box.address == "Alice@example.test"
    assert box.domain_key == "example.test"


def test_smtputf8_addresses() -> None:
    line = "MAIL FROM:<jörg@bücher.example> SMTPUTF8".encode()
    cmd = parse_command(line)
    assert cmd.sender == MailPath("jörg", "bücher.example") and not cmd.sender.is_ascii
    err = error_of("MAIL FROM:<jörg@bücher.example>".encode())
    assert (err.code, err.enhanced) == (553, "5.6.7")
    assert parse_command("RCPT TO:<пользователь@example.test>".encode()).recipient.local_part


def test_bdat() -> None:
    assert parse_command(b"BDAT 1000") == Bdat(1000, False)
    assert parse_command(b"BDAT 0 LAST") == Bdat(0, True)
    assert parse_command(b"bdat 5 last") == Bdat(5, True)
    assert error_of(b"BDAT").code == 501
    assert error_of(b"BDAT -1").code == 501
    assert error_of(b"BDAT 5 FIRST").code == 501


def test_auth() -> None:
    assert parse_command(b"AUTH PLAIN") == Auth("PLAIN", None)
    assert parse_command(b"AUTH plain AGFsaWNlAHNlY3JldA==") == Auth("PLAIN", "AGFsaWNlAHNlY3JldA==")
    assert parse_command(b"AUTH LOGIN =") == Auth("LOGIN", "=")
    assert error_of(b"AUTH").code == 501
    assert error_of(b"AUTH PLAIN not*base64").code == 501


@given(st.binary(max_size=300))
def test_parser_never_raises_anything_else(line: bytes) -> None:
    try:
        parse_command(line)
    except CommandError as exc:
        assert 500 <= exc.code < 600


@given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=80))
def test_any_accepted_recipient_round_trips(text: str) -> None:
    try:
        cmd = parse_command(f"RCPT TO:<{text}>".encode())
    except CommandError:
        return
    if cmd.recipient is None:
        return
    again = parse_command(f"RCPT TO:<{cmd.recipient}>".encode())
    assert again.recipient == cmd.recipient
