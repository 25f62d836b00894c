"""Hostile clients against the session core (issue 15 items 1, 7, 8, 12; issue 19 items 1,
2), each attack performed on a real daemon:

- connections that never send a ClientHello: counted from accept, extra ones closed at
  once, idle ones closed after [tls] handshake_timeout, the other ports serving meanwhile;
- the TLS profile: RSA key exchange, CBC-SHA1 suites and TLS 1.0/1.1 are refused;
- 20 clients that QUIT and reconnect at once over STARTTLS never get 421;
- the guessing loop that hangs up after 0.6 s gets only a handful of passwords verified;
- every failed login, whatever the protocol, is one line fail2ban's filter matches.
"""

from __future__ import annotations

import base64
import datetime
import poplib
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, USERS, MaildServer
from tests.imap.conftest import tls_context
from tests.reliability.conftest import assert_serving, imap_session, pop3_session, smtp_session
from tests.smtp.conftest import Transcript as SmtpTranscript

ALICE, BOB = "alice@example.test", "bob@example.test"


def _raw(server: MaildServer, port: str, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection((server.host, server.ports[port]), 5, source_address=(source, 0))
    sock.settimeout(5)
    return sock


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes (EOF or reset) within ``seconds``, sending nothing."""
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


# -- connections held open before TLS (issue 15 item 1) -----------------------------------------

def test_silent_tls_connections_are_limited_and_timed_out(maild_factory: Callable[..., MaildServer]) -> None:
    server = maild_factory(imap={"max_connections_per_ip": 10, "max_connections": 200},
                           tls={"handshake_timeout": 2.0})
    silent = [_raw(server, "imaps") for _ in range(10)]  # never a ClientHello
    time.sleep(0.3)
    started = time.monotonic()
    extra = [_raw(server, "imaps") for _ in range(20)]
    assert all(_closed_within(sock, 1.0) for sock in extra)  # closed at accept, no handshake
    assert time.monotonic() - started < 3
    # The section's count is shared: the plain IMAP port is full for this IP too, and says so.
    plain = _raw(server, "imap")
    assert plain.recv(200).startswith(b"* BYE [UNAVAILABLE] Too many connections")
    # Another IP (127.0.0.2) and the other protocols are served meanwhile.
    other_ip = _raw(server, "imap", source="127.0.0.2")
    assert other_ip.recv(200).startswith(b"* OK")
    smtp_session(server).cmd("QUIT", 221)
    pop3_session(server).cmd("QUIT", ok=True)
    # STARTTLS answered, then no ClientHello: the same deadline.
    starttls = SmtpTranscript(server.host, server.ports["smtp"], cafile=server.cafile)
    starttls.greeting()
    starttls.cmd("STARTTLS", 220)
    # After handshake_timeout the silent ones are closed and their slots are free again.
    assert all(_closed_within(sock, 4.0) for sock in silent)
    assert _closed_within(starttls.sock, 2.0)
    s = imap_session(server)
    s.ok("NOOP")
    assert "too many connections" in server.log() and "TLS handshake from 127.0.0.1 not finished" in server.log()
    for sock in silent + extra + [plain, other_ip]:
        sock.close()


def test_silent_connections_do_not_exhaust_the_process(maild_factory: Callable[..., MaildServer]) -> None:
    """1,000 silent connections over three TLS ports from five loopback addresses: the
    defaults (per-IP limits) refuse most at once, the rest go at the handshake timeout."""
    server = maild_factory(tls={"handshake_timeout": 3.0})
    socks = []
    for n in range(1000):
        port = ("imaps", "pop3s", "submissions")[n % 3]
        try:
            socks.append(_raw(server, port, source=f"127.0.1.{n % 5 + 1}"))
        except OSError:
            pass
    fds = len(list(Path(f"/proc/{server.process.pid}/fd").iterdir()))  # type: ignore[union-attr]
    assert fds < 600, fds  # 5 IPs x (50 imap + 20 pop3 + 20 submission) at most, not 1,000
    assert_serving(server)
    time.sleep(3.5)
    fds_after = len(list(Path(f"/proc/{server.process.pid}/fd").iterdir()))  # type: ignore[union-attr]
    assert fds_after < 100, fds_after
    for sock in socks:
        sock.close()


# -- the TLS profile (issue 15 item 12) ------------------------------------------------------------

@pytest.fixture(scope="module")
def rsa_server(tmp_path_factory: pytest.TempPathFactory, password_hashes: dict[str, str]) -> Iterator[MaildServer]:
    """A daemon with an RSA certificate: only with RSA can a client ask for RSA key exchange
    or ECDHE-RSA CBC suites (the development certificate is ECDSA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    root = tmp_path_factory.mktemp("rsa")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = root / "cert.pem", root / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    (root / "srv").mkdir()
    server = MaildServer(root / "srv", (cert_path, key_path, cert_path), password_hashes, {})
    yield server
    server.stop()


def _client(cafile: Path, ciphers: str | None = None, version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = tls_context(cafile)
    if version is not None:
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        context.maximum_version = version
        context.set_ciphers("ALL:@SECLEVEL=0")
    if ciphers is not None:
        context.set_ciphers(ciphers + ":@SECLEVEL=0")
        context.maximum_version = ssl.TLSVersion.TLSv1_2  # TLS 1.3 suites ignore set_ciphers
    return context


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("ciphers,version", [
    ("AES128-SHA", None),  # RSA key exchange, CBC, SHA-1
    ("AES256-GCM-SHA384", None),  # RSA key exchange: no forward secrecy
    ("ECDHE-RSA-AES128-SHA", None),  # forward secret but CBC-SHA1
    ("ECDHE-RSA-AES256-SHA384", None),  # CBC
    (None, ssl.TLSVersion.TLSv1),
    (None, ssl.TLSVersion.TLSv1_1),
])
def test_weak_tls_clients_are_refused(rsa_server: MaildServer, ciphers: str | None,
                                      version: ssl.TLSVersion | None) -> None:
    for port in ("imaps", "submissions", "pop3s"):
        context = _client(rsa_server.cafile, ciphers, version)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            context.wrap_socket(_raw(rsa_server, port), server_hostname="localhost").recv(100)
    # STARTTLS uses the same profile.
    t = SmtpTranscript(rsa_server.host, rsa_server.ports["smtp"], cafile=rsa_server.cafile)
    t.greeting()
    t.cmd("STARTTLS", 220)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _client(rsa_server.cafile, ciphers, version).wrap_socket(t.sock, server_hostname="localhost")


def test_modern_tls_clients_are_served(rsa_server: MaildServer, maild_server: MaildServer) -> None:
    sock = _client(rsa_server.cafile).wrap_socket(_raw(rsa_server, "imaps"), server_hostname="localhost")
    assert sock.version() == "TLSv1.3" and sock.recv(100).startswith(b"* OK")
    sock.close()
    context = _client(rsa_server.cafile, "ECDHE-RSA-AES128-GCM-SHA256")
    sock = context.wrap_socket(_raw(rsa_server, "pop3s"), server_hostname="localhost")
    assert sock.version() == "TLSv1.2" and sock.cipher()[0] == "ECDHE-RSA-AES128-GCM-SHA256"
    sock.close()
    # ECDSA (the development certificate): its CBC-SHA1 suite is refused, GCM served.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _client(maild_server.cafile, "ECDHE-ECDSA-AES128-SHA").wrap_socket(
            _raw(maild_server, "imaps"), server_hostname="localhost")
    sock = _client(maild_server.cafile, "ECDHE-ECDSA-AES128-GCM-SHA256").wrap_socket(
        _raw(maild_server, "imaps"), server_hostname="localhost")
    assert sock.recv(100).startswith(b"* OK")
    sock.close()


# -- QUIT and reconnect at once over STARTTLS (issue 19 item 1) ------------------------------------

def test_twenty_clients_reconnecting_over_starttls_never_get_421(maild_server: MaildServer) -> None:
    server = maild_server  # [smtp] max_connections_per_ip = 20 (the default)
    context = tls_context(server.cafile)
    refusals: list[str] = []

    def client() -> None:
        for _ in range(8):
            try:
                smtp = smtplib.SMTP(server.host, server.ports["smtp"], timeout=10)
                smtp.starttls(context=context)
                smtp.ehlo("relay.example")
                smtp.quit()  # 221, then the client reconnects at once
            except smtplib.SMTPConnectError as exc:
                refusals.append(str(exc))
            except (smtplib.SMTPServerDisconnected, OSError) as exc:
                refusals.append(repr(exc))

    threads = [threading.Thread(target=client) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert refusals == []
    assert "too many connections" not in server.log()


# -- refusals leave one line each (issue 19 item 2) -----------------------------------------------

def test_refusals_are_logged_like_postfix(maild_factory: Callable[..., MaildServer]) -> None:
    server = maild_factory(smtp={"max_connections_per_ip": 1, "messages_per_minute_per_ip": 1})
    t = SmtpTranscript(server.host, server.ports["smtp"], cafile=server.cafile)
    t.greeting()
    extra = SmtpTranscript(server.host, server.ports["smtp"], cafile=server.cafile)
    assert extra.reply().code == 421
    t.cmd("EHLO client.example", 250)
    t.cmd("MAIL FROM:<a@remote.example>", 250)
    t.cmd("RCPT TO:<someone@elsewhere.example>", 554)
    t.cmd("RSET", 250)
    t.cmd("MAIL FROM:<b@remote.example>", 451)
    t.close()
    log = server.log()
    assert re.search(r"NOQUEUE: reject: CONNECT from \[127\.0\.0\.1\]: too many connections; proto=smtp", log)
    assert re.search(r"NOQUEUE: reject: RCPT from \[127\.0\.0\.1\]: 554 5\.7\.1 Relay access denied; "
                     r"queue_id=\S+ from=<a@remote\.example> to=<someone@elsewhere\.example> proto=ESMTP "
                     r"helo=<client\.example>", log)
    assert re.search(r"NOQUEUE: reject: MAIL from \[127\.0\.0\.1\]: 451 4\.7\.1 Message rate limit exceeded, "
                     r"try again later; to= proto=ESMTP helo=<client\.example>", log), log[-3000:]


# -- the guessing loop (issue 15 item 7) ----------------------------------------------------------

def _guess(server: MaildServer, password: str, source: str, wait: float) -> bytes:
    """One LOGIN over IMAPS, hanging up after ``wait`` seconds without an answer."""
    sock = tls_context(server.cafile).wrap_socket(_raw(server, "imaps", source), server_hostname="localhost")
    try:
        sock.recv(1000)  # greeting
        sock.sendall(f'a LOGIN {BOB} "{password}"\r\n'.encode())
        sock.settimeout(wait)
        try:
            return sock.recv(1000)
        except TimeoutError:
            return b""
    finally:
        sock.close()


def _failures(server: MaildServer, ip: str) -> int:
    return len(re.findall(rf"authentication failed: proto=\w+ rip={re.escape(ip)} ", server.log()))


def test_guessing_that_hangs_up_early_is_not_verified(maild_factory: Callable[..., MaildServer]) -> None:
    # The fixture's [auth]: failure_delay 0.2 s doubling to 1 s (production: 1 s to 30 s).
    server = maild_factory(auth={"failure_delay": 0.2, "max_failure_delay": 1.0})
    guesses = [f"wrong-{n}" for n in range(10)]
    guesses[6] = USERS[BOB]
    answers = []
    started = time.monotonic()
    for password in guesses:
        answers.append(_guess(server, password, "127.0.0.2", wait=0.6))
    elapsed = time.monotonic() - started
    assert not any(b"a OK" in answer for answer in answers), answers  # the right one was never tried
    verified = _failures(server, "127.0.0.2")
    assert verified <= 4, (verified, elapsed)  # not 10: the rest hung up while waiting
    # A success does not clear the failures of other names: logging into one's own account
    # from the attacking IP is not a reset (the attacker has an account: alice).
    sock = tls_context(server.cafile).wrap_socket(_raw(server, "imaps", "127.0.0.2"), server_hostname="localhost")
    sock.recv(1000)
    sock.sendall(f'a LOGIN {ALICE} "{USERS[ALICE]}"\r\n'.encode())
    sock.settimeout(10)
    assert b"a OK" in sock.recv(1000)
    sock.close()
    assert _guess(server, USERS[BOB], "127.0.0.2", wait=0.6) == b""  # still penalised: no answer in time
    # The real user from another address is not locked out: answered at once.
    started = time.monotonic()
    assert b"a OK" in _guess(server, USERS[BOB], "127.0.0.1", wait=5)
    assert time.monotonic() - started < 0.5


def test_parallel_guesses_from_one_ip_are_serialised(maild_factory: Callable[..., MaildServer]) -> None:
    server = maild_factory(auth={"failure_delay": 0.2, "max_failure_delay": 0.4, "max_pending_per_ip": 4})
    _guess(server, "first-wrong", "127.0.0.3", wait=5)  # penalised from now on
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(_guess(server, "x", "127.0.0.3", wait=30)))
               for _ in range(12)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # Twelve at once: four queued (each waiting its turn, then 0.4 s before verifying and 0.4 s
    # before its answer), the rest refused at once.
    assert sum(b"a NO" in r for r in results) == 12
    assert 4 <= server.log().count("reason=busy") <= 8  # 8 when all twelve arrive together
    assert time.monotonic() - started >= 3 * 0.8


# -- one failure line for fail2ban (issue 15 item 8) ----------------------------------------------

FILTER = ROOT / "etc" / "fail2ban" / "filter.d" / "maild.conf"


def _fail_every_protocol(server: MaildServer) -> None:
    bad = "not-the-password"
    sock = tls_context(server.cafile).wrap_socket(_raw(server, "imaps"), server_hostname="localhost")
    sock.recv(1000)
    sock.sendall(b'a LOGIN "we\\"ird user" "x"\r\n')
    sock.settimeout(10)
    assert b"a NO" in sock.recv(1000)
    sock.close()
    pop = poplib.POP3_SSL(server.host, server.ports["pop3s"], context=tls_context(server.cafile))
    pop.user(BOB)
    with pytest.raises(poplib.error_proto):
        pop.pass_(bad)
    pop.close()
    smtp = smtplib.SMTP_SSL(server.host, server.ports["submissions"], context=tls_context(server.cafile))
    smtp.ehlo()
    plain = base64.b64encode(f"\0{BOB}\0{bad}".encode()).decode()
    assert smtp.docmd("AUTH", f"PLAIN {plain}")[0] == 535
    assert smtp.docmd("AUTH", "LOGIN")[0] == 334
    smtp.docmd(base64.b64encode(b"mallory@example.test").decode())
    assert smtp.docmd(base64.b64encode(bad.encode()).decode())[0] == 535
    smtp.close()


def test_every_failed_login_is_one_line_in_one_format(maild_server: MaildServer) -> None:
    _fail_every_protocol(maild_server)
    lines = [line for line in maild_server.log().splitlines() if "authentication failed" in line]
    assert [re.search(r"proto=(\w+) rip=127\.0\.0\.1 mech=(\S+) reason=password user=(.*)$", line).groups()
            for line in lines] == [  # type: ignore[union-attr]
        ("imap", "LOGIN", '"we\\"ird user"'), ("pop3", "USER", f'"{BOB}"'),
        ("smtp", "PLAIN", f'"{BOB}"'), ("smtp", "LOGIN", '"mallory@example.test"')]


@pytest.mark.skipif(shutil.which("fail2ban-regex") is None, reason="Debian's fail2ban is not installed")
def test_fail2ban_filter_matches_every_failure(maild_server: MaildServer) -> None:
    _fail_every_protocol(maild_server)
    assert_serving(maild_server)  # successful logins and deliveries must not match
    result = subprocess.run(["fail2ban-regex", "--print-all-matched", str(maild_server.log_path), str(FILTER)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    matched = re.search(r"Failregex: (\d+) total", result.stdout)
    assert matched and int(matched.group(1)) == 4, result.stdout
    assert "127.0.0.1" in result.stdout
