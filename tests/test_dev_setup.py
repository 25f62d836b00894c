"""What a new user meets with `make run` (issue 19): the development CA and the server
certificate it signs, the demo domain's DKIM keys, the client table's host name, and how
to run the administration commands."""

from __future__ import annotations

import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from maild.config import load
from maild.store import Store
from tests.test_config import MINIMAL, NO_LISTENERS

ROOT = Path(__file__).resolve().parent.parent


def maild(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    head = ["-c", str(config)] if config else []
    return subprocess.run([sys.executable, "-m", "maild.cli", *head, *args],
                          capture_output=True, text=True, timeout=120, check=True)


def dev_cert(d: Path) -> tuple[Path, Path, Path]:
    cert, key = d / "cert.pem", d / "key.pem"
    maild("dev-cert", "--hostname", "localhost", "--cert", str(cert), "--key", str(key))
    return cert, key, d / "ca.pem"


def handshake(cert: Path, key: Path, cafile: Path, server_hostname: str) -> str:
    """A real TLS handshake on 127.0.0.1 checked as a client checks it; the peer's
    subject common name."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(str(cert), str(key))
    listener = socket.create_server(("127.0.0.1", 0))
    errors: list[BaseException] = []

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (OSError, ssl.SSLError) as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        client_ctx = ssl.create_default_context(cafile=str(cafile))  # hostname checked
        with socket.create_connection(listener.getsockname(), timeout=10) as raw, \
                client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
            peer = tls.getpeercert()
            tls.sendall(b"x")
    finally:
        thread.join(10)
        listener.close()
    subject = dict(item for rdn in peer["subject"] for item in rdn)
    return str(subject["commonName"])


def test_dev_cert_is_a_leaf_signed_by_a_local_ca(tmp_path: Path) -> None:
    cert_path, key_path, ca_path = dev_cert(tmp_path)
    leaf = x509.load_pem_x509_certificate(cert_path.read_bytes())
    ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
    # Thunderbird refuses a server certificate that is a CA (BasicConstraints CA:TRUE)
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert ExtendedKeyUsageOID.SERVER_AUTH in leaf.extensions.get_extension_for_class(
        x509.ExtendedKeyUsage).value
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    assert leaf.issuer == ca.subject != leaf.subject
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca is True
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert (tmp_path / "ca-key.pem").stat().st_mode & 0o077 == 0  # the CA key: owner only
    assert key_path.stat().st_mode & 0o077 == 0
    # Both names of the README's table verify against the CA file alone.
    assert handshake(cert_path, key_path, ca_path, "localhost") == "localhost"
    assert handshake(cert_path, key_path, ca_path, "127.0.0.1") == "localhost"
    if shutil.which("openssl"):
        verified = subprocess.run(["openssl", "verify", "-x509_strict", "-purpose", "sslserver",
                                   "-CAfile", str(ca_path), str(cert_path)],
                                  capture_output=True, text=True, timeout=30)
        assert verified.returncode == 0, verified.stdout + verified.stderr


def test_dev_cert_again_keeps_the_ca(tmp_path: Path) -> None:
    """A CA imported once stays valid: a new server certificate is signed by the same CA."""
    cert_path, key_path, ca_path = dev_cert(tmp_path)
    ca_before, leaf_before = ca_path.read_bytes(), cert_path.read_bytes()
    cert_path.unlink()
    dev_cert(tmp_path)
    assert ca_path.read_bytes() == ca_before and cert_path.read_bytes() != leaf_before
    assert handshake(cert_path, key_path, ca_path, "localhost") == "localhost"
    # and a certificate from another CA does not verify against it
    other = tmp_path / "other"
    other.mkdir()
    other_cert, other_key, _ = dev_cert(other)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(other_cert, other_key, ca_path, "localhost")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "maild.toml"
    path.write_text((MINIMAL + "[store]\nshards = 2\nmap_size_mb = 256\ndirectory_map_size_mb = 64\n"
                     + NO_LISTENERS).replace("{data}", str(tmp_path / "data")))
    return path


def dkim_records(config: Path, domain: str) -> list[str]:
    out = maild("domain", "dns", domain, config=config).stdout
    return [line for line in out.splitlines() if f"._domainkey.{domain}." in line]


def test_demo_init_gives_the_demo_domain_dkim_keys(config: Path) -> None:
    """`make run`'s demo-init takes the same path as `domain add`: example.test gets its
    rsa and ed25519 keys, and `maild domain dns` prints their records."""
    first = maild("demo-init", config=config)
    assert "demo user: demo@example.test  password: " in first.stdout
    records = dkim_records(config, "example.test")
    assert len(records) == 2
    assert any("k=rsa; p=" in r for r in records) and any("k=ed25519; p=" in r for r in records)
    assert "exists" in maild("demo-init", config=config).stdout
    assert dkim_records(config, "example.test") == records  # kept, not regenerated
    maild("domain", "add", "other.test", config=config)
    assert len(dkim_records(config, "other.test")) == 2


def test_demo_init_repairs_a_demo_domain_made_without_keys(config: Path) -> None:
    """A data directory from before: example.test and the demo user without DKIM keys."""
    cfg = load(config)
    store = Store(cfg.data_dir, cfg.store)
    try:
        store.domain_add("example.test")
    finally:
        store.close()
    assert dkim_records(config, "example.test") == []
    maild("demo-init", config=config)
    assert len(dkim_records(config, "example.test")) == 2


def test_readme_client_table_names_localhost() -> None:
    """mbsync, offlineimap and fetchmail check the certificate's name against the host
    they were given: the table says the name the certificate carries."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Client settings", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith("| ")]
    hosts = [cells[1].strip() for cells in rows[1:]]  # after the header row
    assert len(hosts) == 8 and set(hosts) == {"localhost"}  # IMAP, POP3, submission x2; MX; API
    assert "var/tls/ca.pem" in table


def test_admin_commands_through_make() -> None:
    """`maild` is not on the PATH after `make run`: the README's way works."""
    readme = (ROOT / "README.md").read_text()
    admin = readme.split("## Administration", 1)[1].split("\n## ", 1)[0]
    assert 'make maild ARGS="user list"' in admin
    assert shutil.which("make"), "make is missing (the README's first two commands need it)"
    dry = subprocess.run(["make", "-n", "-s", "-C", str(ROOT), "maild", "ARGS=user list"],
                         capture_output=True, text=True, timeout=60, check=True)
    assert dry.stdout.strip().splitlines()[-1] == ".venv/bin/maild -c etc/maild.toml user list"
    assert re.search(r"^maild: venv$", (ROOT / "Makefile").read_text(), re.M)
