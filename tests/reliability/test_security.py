"""Security checks of issue 9 that the protocol areas do not already make.

Already covered elsewhere (not repeated here): the open-relay battery
(tests/smtp/test_relay.py), SMTP smuggling (tests/smtp/test_smuggling.py), commands
pipelined behind STARTTLS in the same packet on the MX port, IMAP and POP3
(tests/smtp/test_starttls.py, tests/imap/test_auth.py, tests/pop3/test_stls.py), and POP3
isolation between users (tests/test_isolation_pop3.py).

Added here: STARTTLS injection on the submission port and injection sent as a separate
packet before the handshake; every plaintext authentication path on all three protocols
refused with the right password; cross-user access through IMAP mailbox names and
namespaces; sender spoofing variants on submission.
"""

from __future__ import annotations

import base64
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import USERS, MaildServer
from tests.imap.conftest import Transcript as ImapTranscript
from tests.imap.conftest import tls_context
from tests.reliability.conftest import imap_session
from tests.smtp.conftest import Transcript as SmtpTranscript

ALICE, BOB = "alice@example.test", "bob@example.test"
SECRET = "bob-only-secret-7f3a"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tls_files: tuple[Path, Path, Path],
           password_hashes: dict[str, str]) -> Iterator[MaildServer]:
    """One daemon with default (strict) settings for the module: no plaintext exception."""
    srv = MaildServer(tmp_path_factory.mktemp("security"), tls_files, password_hashes, {})
    bob = imap_session(srv, BOB)
    for name in ("Private", "Private/Sub"):
        bob.ok(f"CREATE {name}")
    for name in ("INBOX", "Private", "Private/Sub"):
        raw = f"From: bob@example.test\r\nSubject: {SECRET} in {name}\r\n\r\n{SECRET}\r\n".encode()
        bob.ok(f"APPEND {name} {{{len(raw)}+}}\r\n".encode() + raw)
    bob.ok("SUBSCRIBE Private")
    bob.close()
    yield srv
    code = srv.stop()
    fsck = srv.fsck()
    assert code == 0 and fsck.returncode == 0, srv.log()[-4000:] + fsck.stdout


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


PLAIN_ALICE = _b64(f"\0{ALICE}\0{USERS[ALICE]}")


# -- STARTTLS injection: the variants not covered by the protocol areas ---------------------------

def _read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data


INJECTIONS = {
    # port: (greeting lines, pre-STARTTLS lines, STARTTLS, injected, proof-of-injection command in TLS)
    "submission": (b"EHLO c.example\r\n", b"STARTTLS\r\n", f"AUTH PLAIN {PLAIN_ALICE}\r\n".encode(),
                   b"EHLO c.example\r\n"),
    "imap": (b"", b"a STARTTLS\r\n", f'b LOGIN {ALICE} "{USERS[ALICE]}"\r\n'.encode(), b"c NOOP\r\n"),
    "pop3": (b"", b"STLS\r\n", f"USER {ALICE}\r\nPASS {USERS[ALICE]}\r\n".encode(), b"STAT\r\n"),
}


@pytest.mark.parametrize(("port", "packets"), [("submission", "same packet"), ("submission", "separate packet"),
                                               ("imap", "separate packet"), ("pop3", "separate packet")])
def test_starttls_injection_never_runs_inside_tls(server: MaildServer, port: str, packets: str) -> None:
    """CVE-2011-0411 class. A login injected behind STARTTLS — in its packet, or sent right
    after it before the handshake — must not authenticate the TLS session."""
    hello, starttls, injected, probe = INJECTIONS[port]
    sock = socket.create_connection((server.host, server.ports[port]), 10)
    _read_line(sock)  # greeting
    if hello:
        sock.sendall(hello)
        while _read_line(sock)[3:4] == b"-":
            pass
    if packets == "same packet":
        sock.sendall(starttls + injected)
    else:
        sock.sendall(starttls)
        sock.sendall(injected)
    go_ahead = _read_line(sock)
    assert go_ahead.startswith((b"220 ", b"a OK", b"+OK")), go_ahead
    try:
        tls = tls_context(server.cafile).wrap_socket(sock, server_hostname="localhost")
    except (ssl.SSLError, ConnectionError):
        return  # the injected plaintext broke the handshake: nothing ran
    tls.sendall(probe)
    try:
        answer = _read_line(tls)
    except (ssl.SSLError, ConnectionError):
        return
    # The first answer inside TLS is to our probe, and the session is not logged in.
    if port == "submission":
        assert answer.startswith(b"250-"), answer
        while _read_line(tls)[3:4] == b"-":
            pass
        tls.sendall(b"MAIL FROM:<alice@example.test>\r\n")
        assert _read_line(tls).startswith(b"530 "), "the injected AUTH authenticated the session"
    elif port == "imap":
        assert answer.startswith(b"c OK"), answer
        tls.sendall(b"d SELECT INBOX\r\n")
        assert _read_line(tls).startswith(b"d BAD"), "the injected LOGIN authenticated the session"
    else:
        assert answer.startswith(b"-ERR"), answer
    tls.close()


# -- no authentication in plaintext, whatever the mechanism -----------------------------------------

PLAINTEXT_ATTEMPTS = {
    "smtp-auth-plain": ("submission", [f"AUTH PLAIN {PLAIN_ALICE}"]),
    "smtp-auth-plain-continued": ("submission", ["AUTH PLAIN", PLAIN_ALICE]),
    "smtp-auth-login": ("submission", ["AUTH LOGIN", _b64(ALICE), _b64(USERS[ALICE])]),
    "smtp-auth-login-initial": ("submission", [f"AUTH LOGIN {_b64(ALICE)}", _b64(USERS[ALICE])]),
    "smtp-mx-auth": ("smtp", [f"AUTH PLAIN {PLAIN_ALICE}"]),
    "imap-login": ("imap", [f'a LOGIN {ALICE} "{USERS[ALICE]}"']),
    "imap-login-literal": ("imap", [f'a LOGIN {{{len(ALICE)}+}}\r\n{ALICE} "{USERS[ALICE]}"']),
    "imap-authenticate-plain": ("imap", [f"a AUTHENTICATE PLAIN {PLAIN_ALICE}"]),
    "imap-authenticate-plain-continued": ("imap", ["a AUTHENTICATE PLAIN", PLAIN_ALICE]),
    "imap-authenticate-login": ("imap", ["a AUTHENTICATE LOGIN", _b64(ALICE), _b64(USERS[ALICE])]),
    "pop3-user-pass": ("pop3", [f"USER {ALICE}", f"PASS {USERS[ALICE]}"]),
    "pop3-auth-plain": ("pop3", [f"AUTH PLAIN {PLAIN_ALICE}"]),
    "pop3-auth-plain-continued": ("pop3", ["AUTH PLAIN", PLAIN_ALICE]),
    "pop3-auth-login": ("pop3", ["AUTH LOGIN", _b64(ALICE), _b64(USERS[ALICE])]),
    "pop3-apop": ("pop3", [f"APOP {ALICE} 0123456789abcdef0123456789abcdef"]),
}
AUTHENTICATED = {  # a command that works only once logged in, and its success prefix
    "submission": ("MAIL FROM:<alice@example.test>", b"250"),
    "imap": ("z SELECT INBOX", b"z OK"),
    "pop3": ("STAT", b"+OK"),
}


@pytest.mark.parametrize("attempt", PLAINTEXT_ATTEMPTS)
def test_no_authentication_without_tls(server: MaildServer, attempt: str) -> None:
    """The right password, sent in the clear on 587, 25, 143 and 110, never logs in (no
    [*] allow_plaintext_auth_on_loopback here), and the password is never asked for."""
    port, lines = PLAINTEXT_ATTEMPTS[attempt]
    sock = socket.create_connection((server.host, server.ports[port]), 10)
    answers = [_read_line(sock)]
    if port in ("smtp", "submission"):
        sock.sendall(b"EHLO c.example\r\n")
        while (line := _read_line(sock))[3:4] == b"-":
            assert not line.startswith(b"250-AUTH"), "AUTH offered before TLS"
    for line in lines:
        sock.sendall(line.encode() + b"\r\n")
        answer = _read_line(sock)
        answers.append(answer)
        if not answer.startswith((b"334", b"+ ", b"+OK")):
            break  # refused: the rest (the password) is never asked for
    assert not any(a.startswith((b"235", b"a OK")) for a in answers), answers
    password_prompts = [a for a in answers if a.startswith((b"334 UGFzc3dvcmQ6", b"+ UGFzc3dvcmQ6"))]
    assert not password_prompts, answers
    if port == "smtp":
        return  # the MX port has no authenticated state to probe
    command, success = AUTHENTICATED[port]
    sock.sendall(command.encode() + b"\r\n")
    reply = _read_line(sock)
    while reply.startswith(b"* "):
        reply = _read_line(sock)
    assert reply == b"" or not reply.startswith(success), (attempt, answers, reply)
    sock.close()


# -- one user never reaches another's mail through IMAP ----------------------------------------------

FOREIGN_NAMES = [
    "bob@example.test/INBOX", "bob@example.test", "bob@example.test/Private", "#user/bob/INBOX",
    "#user/bob@example.test/INBOX", "#user.bob.INBOX", "#shared/INBOX", "#public/INBOX", "#news.x",
    "../bob@example.test/INBOX", "../bob/INBOX", "INBOX/../../bob@example.test/INBOX", "~bob/INBOX",
    "~bob@example.test/Private", "/bob@example.test/INBOX", "Other Users/bob/INBOX", "Shared/bob/INBOX",
    "Private", "Private/Sub", "private", "&AC4ALg-/bob@example.test/INBOX", "bob@example.test\\INBOX",
    "INBOX\x00bob@example.test", "user.bob", "user/bob/INBOX",
]


@pytest.fixture
def alice(server: MaildServer) -> Iterator[ImapTranscript]:
    s = imap_session(server, ALICE)
    yield s
    s.close()


def _quoted(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _command(s: ImapTranscript, text: str) -> tuple[list[bytes], bytes]:
    if "\x00" in text:
        raw = text.encode()
        s.send(b"x " + raw)
        return s.collect("x")
    return s.command(text)


def test_other_users_mailboxes_are_unreachable(server: MaildServer, alice: ImapTranscript) -> None:
    own = {line.rsplit(b" ", 1)[-1].strip(b'"') for line in alice.ok('LIST "" "*"')}
    alice.ok("SELECT INBOX")
    message = b"From: alice@example.test\r\nSubject: mine\r\n\r\nmine\r\n"
    alice.ok(b"APPEND INBOX {%d+}\r\n" % len(message) + message)
    alice.ok("SELECT INBOX")
    for name in FOREIGN_NAMES:
        q = _quoted(name)
        for text in (f"SELECT {q}", f"EXAMINE {q}", f"STATUS {q} (MESSAGES UIDNEXT UNSEEN)",
                     f"UID COPY 1:* {q}", f"UID MOVE 99999 {q}", f"DELETE {q}", f"RENAME {q} Stolen",
                     f"GETQUOTAROOT {q}", f"APPEND {q} {{4+}}\r\nabcd"):
            untagged, result = _command(alice, text)
            transcript = b"\n".join(untagged + [result])
            assert SECRET.encode() not in transcript, (text, transcript)
            verb = text.split()[0]
            if verb in ("SELECT", "EXAMINE", "STATUS", "DELETE", "RENAME", "GETQUOTAROOT"):
                assert not result.startswith(b"OK"), (text, transcript)
            if verb in ("SELECT", "EXAMINE"):
                alice.ok("SELECT INBOX")  # a failed SELECT leaves no mailbox selected
    # LIST and LSUB with every reference and pattern show alice's own mailboxes only.
    for reference in ("", "#user/", "bob@example.test/", "../", "~bob/", "/", "#shared/", "Other Users/"):
        for pattern in ("*", "%", "bob*", "*/*", "../*", "#user/*"):
            for verb in ("LIST", "LSUB"):
                lines = alice.ok(f"{verb} {_quoted(reference)} {_quoted(pattern)}")
                names = {line.rsplit(b" ", 1)[-1].strip(b'"') for line in lines if line.startswith(b"* L")}
                assert names <= own, (verb, reference, pattern, names)
    namespace = alice.ok("NAMESPACE")
    assert namespace == [b'* NAMESPACE (("" "/")) NIL NIL'], namespace  # no other users, no shared
    # Nothing alice can search or fetch holds bob's mail.
    for line in alice.ok('LIST "" "*"'):
        name = line.rsplit(b" ", 1)[-1].decode()
        alice.ok(f"EXAMINE {name}")
        assert alice.ok(f'UID SEARCH TEXT "{SECRET}"') == [b"* SEARCH"], name
        fetched = b"\n".join(alice.ok("UID FETCH 1:* (BODY.PEEK[] ENVELOPE)"))
        assert SECRET.encode() not in fetched, name
    # Bob's mailboxes are as he left them: one message each, nothing copied in or renamed.
    bob = imap_session(server, BOB)
    try:
        for name in ("INBOX", "Private", "Private/Sub"):
            status = bob.ok(f"STATUS {name} (MESSAGES)")
            assert status[0].endswith(b"(MESSAGES 1)"), (name, status)
        assert {line.rsplit(b" ", 1)[-1] for line in bob.ok('LIST "" "*"')} >= {b"Private", b"Private/Sub"}
    finally:
        bob.close()


# -- submission: the envelope and the From: header must be one's own ----------------------------------

@pytest.fixture
def submission(server: MaildServer) -> Iterator[SmtpTranscript]:
    t = SmtpTranscript(server.host, server.ports["submission"], cafile=server.cafile)
    t.greeting()
    t.cmd("EHLO c.example", 250)
    t.starttls()
    t.cmd("EHLO c.example", 250)
    t.cmd(f"AUTH PLAIN {PLAIN_ALICE}", 235)
    yield t
    t.close()


@pytest.mark.parametrize("sender", [
    "BOB@EXAMPLE.TEST", "bob+tag@example.test", '"bob"@example.test', "@relay.example:bob@example.test",
    "bob@example.test.", "bob@[127.0.0.1]", "postmaster@example.test", "bob@EXAMPLE.test",
])
def test_submission_envelope_sender_of_another_user_is_553(submission: SmtpTranscript, sender: str) -> None:
    reply = submission.cmd(f"MAIL FROM:<{sender}>")
    assert reply.code in (553, 501), reply  # 501: a syntax the grammar already refuses
    submission.cmd("MAIL FROM:<alice@example.test>", 250)


@pytest.mark.parametrize("from_header", [
    '"alice@example.test" <bob@example.test>', "alice@example.test, bob@example.test",
    "Bob <bob@example.test> (alice@example.test)", "=?utf-8?q?alice=40example=2Etest?= <bob@example.test>",
    "bob@example.test <alice@example.test>", "BOB@example.test",
    "=?utf-8?q?bob=40example=2Etest?= <alice@example.test>",
])
def test_submission_from_header_of_another_user_is_553(submission: SmtpTranscript, server: MaildServer,
                                                        from_header: str) -> None:
    body = f"From: {from_header}\r\nSubject: spoof\r\n\r\nx\r\n".encode()
    reply = submission.message("alice@example.test", ["bob@example.test"], body)
    assert (reply.code, reply.text[:5]) == (553, "5.7.1"), (from_header, reply)
    bob = imap_session(server, BOB)
    try:
        bob.ok("EXAMINE INBOX")
        assert bob.ok('UID SEARCH SUBJECT "spoof"') == [b"* SEARCH"]
    finally:
        bob.close()
