"""The POP3 command grammar (maild.pop3.parser): every command, every argument error."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maild.pop3.parser import (
    MAX_COMMAND_LINE,
    Auth,
    Capa,
    CommandError,
    Dele,
    List,
    Noop,
    Pass,
    Quit,
    Retr,
    Rset,
    Stat,
    Stls,
    Top,
    Uidl,
    UserCommand,
    Verb,
    parse_command,
)


@pytest.mark.parametrize(("line", "expected"), [
    (b"USER alice@example.test", UserCommand("alice@example.test")),
    (b"user alice", UserCommand("alice")),
    (b"PASS secret", Pass("secret")),
    (b"PASS with spaces  inside", Pass("with spaces  inside")),
    (b"STAT", Stat()),
    (b"LIST", List()),
    (b"LIST 7", List(7)),
    (b"RETR 1", Retr(1)),
    (b"DELE 12", Dele(12)),
    (b"NOOP", Noop()),
    (b"RSET", Rset()),
    (b"QUIT", Quit()),
    (b"TOP 1 0", Top(1, 0)),
    (b"TOP 3 25", Top(3, 25)),
    (b"UIDL", Uidl()),
    (b"UIDL 2", Uidl(2)),
    (b"CAPA", Capa()),
    (b"STLS", Stls()),
    (b"AUTH", Auth()),
    (b"AUTH plain", Auth("PLAIN")),
    (b"AUTH PLAIN AGFsaWNlAHNlY3JldA==", Auth("PLAIN", "AGFsaWNlAHNlY3JldA==")),
    (b"AUTH PLAIN =", Auth("PLAIN", "=")),
    (b"retr 5", Retr(5)),  # RFC 1939 §3: keywords are case-insensitive
])
def test_valid_commands(line: bytes, expected: object) -> None:
    assert parse_command(line) == expected


@pytest.mark.parametrize(("line", "message"), [
    (b"", "Unknown command"),
    (b"APOP alice 0123456789abcdef", "Unknown command"),
    (b"XYZZY", "Unknown command"),
    (b"USER", "USER takes 1 argument"),
    (b"USER a b", "USER takes 1 argument"),
    (b"USER  alice", "single space"),
    (b"PASS", "PASS takes 1 argument"),
    (b"PASS ", "PASS takes 1 argument"),
    (b"STAT 1", "STAT takes 0 arguments"),
    (b"QUIT now", "QUIT takes 0 arguments"),
    (b"LIST 1 2", "LIST takes 0 or 1 arguments"),
    (b"LIST 0", "Invalid message number: 0"),
    (b"LIST -1", "Invalid message number"),
    (b"LIST +1", "Invalid message number"),
    (b"LIST x", "Invalid message number"),
    (b"LIST 99999999999", "Invalid message number"),
    (b"LIST \xd9\xa3", "Invalid message number"),  # ARABIC-INDIC DIGIT THREE is not a digit here
    (b"RETR", "RETR takes 1 argument"),
    (b"DELE 1 2", "DELE takes 1 argument"),
    (b"TOP 1", "TOP takes 2 arguments"),
    (b"TOP 1 -1", "Invalid line count"),
    (b"TOP 0 1", "Invalid message number: 0"),
    (b"USER " + b"a" * 41, "longer than 40"),
    (b"AUTH PLAIN a b c", "AUTH takes a mechanism"),
    (b"AUTH PL@IN", "Invalid SASL mechanism name"),
    (b"AUTH PLAIN not*base64", "not base64"),
    (b"AUTH PLAIN abc", "not base64"),
    (b"USER al\xffice", "not valid UTF-8"),
    (b"USER al\x00ice", "Control characters"),
    (b"NOOP\r", "Control characters"),
    (b"NOOP " + b"x" * MAX_COMMAND_LINE, "Line too long"),
])
def test_invalid_commands(line: bytes, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        parse_command(line)


def test_line_limit_is_255_octets_with_crlf() -> None:
    """RFC 2449 §4: 255 octets including CRLF."""
    assert parse_command(b"PASS " + b"p" * (MAX_COMMAND_LINE - 2 - 5)) == Pass("p" * 248)
    with pytest.raises(CommandError, match="Line too long"):
        parse_command(b"PASS " + b"p" * (MAX_COMMAND_LINE - 1 - 5))


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_command_error(line: bytes) -> None:
    try:
        cmd = parse_command(line)
    except CommandError as exc:
        assert str(exc)
    else:
        assert type(cmd).__name__.upper() in {v.value for v in Verb}


@given(st.sampled_from(["LIST", "RETR", "DELE", "UIDL"]), st.integers(min_value=1, max_value=10**9),
       st.sampled_from([str.upper, str.lower, str.title]))
def test_message_numbers_round_trip(verb: str, n: int, case: object) -> None:
    cmd = parse_command(f"{case(verb)} {n}".encode())  # type: ignore[operator]
    assert cmd.msg == n  # type: ignore[union-attr]


@given(st.integers(min_value=1, max_value=10**9), st.integers(min_value=0, max_value=10**9))
def test_top_round_trip(n: int, lines: int) -> None:
    assert parse_command(f"TOP {n} {lines}".encode()) == Top(n, lines)


@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40))
def test_user_names_round_trip(name: str) -> None:
    assert parse_command(f"USER {name}".encode()) == UserCommand(name)
