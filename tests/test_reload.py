"""SIGHUP (`systemctl reload maild`, maild/reload.py): a renewed certificate is served to new
TLS connections while a connection made before keeps working; a bad new configuration is
refused with a log line and the running one is kept."""

from __future__ import annotations

import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509

from tests.conftest import MaildServer


def serial_seen(server: MaildServer, port: str = "imaps") -> tuple[int, ssl.SSLSocket]:
    context = ssl.create_default_context(cafile=str(server.cafile))
    sock = context.wrap_socket(socket.create_connection((server.host, server.ports[port]), timeout=10),
                               server_hostname="localhost")
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number, sock


def new_leaf(cert: Path, key: Path, ca: Path) -> int:
    """A new certificate for localhost signed by the same development CA (a renewal)."""
    subprocess.run([sys.executable, "-m", "maild.cli", "dev-cert", "--hostname", "localhost",
                    "--cert", str(cert), "--key", str(key), "--ca", str(ca)],
                   check=True, capture_output=True, timeout=60)
    return x509.load_pem_x509_certificate(cert.read_bytes()).serial_number


def wait_for_log(server: MaildServer, text: str, count: int = 1) -> None:
    deadline = time.monotonic() + 10
    while server.log().count(text) < count:
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{server.log()[-3000:]}"
        time.sleep(0.05)


def own_certificate(maild_factory: Callable[..., MaildServer], tmp_path: Path,
                    tls_files: tuple[Path, Path, Path]) -> tuple[MaildServer, Path, Path]:
    """A daemon serving a copy of the suite's certificate, which the test may replace."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(tls_files[0], cert)
    shutil.copy(tls_files[1], key)
    return maild_factory(tls={"cert_file": str(cert), "key_file": str(key)}), cert, key


def test_sighup_swaps_certificate(maild_factory: Callable[..., MaildServer], tmp_path: Path,
                                  tls_files: tuple[Path, Path, Path]) -> None:
    server, cert, key = own_certificate(maild_factory, tmp_path, tls_files)
    old_serial, old_conn = serial_seen(server)
    assert old_conn.recv(4096).startswith(b"* OK")
    staged_cert, staged_key = tmp_path / "new-cert.pem", tmp_path / "new-key.pem"
    new_serial = new_leaf(staged_cert, staged_key, tls_files[2])
    assert new_serial != old_serial
    staged_cert.replace(cert)  # as a certbot deploy hook installs a renewal
    staged_key.replace(key)
    assert server.process is not None
    server.process.send_signal(signal.SIGHUP)
    wait_for_log(server, "reload 1: configuration")
    # New connections, implicit TLS and STARTTLS alike, get the renewed certificate.
    assert serial_seen(server)[0] == new_serial
    assert serial_seen(server, "submissions")[0] == new_serial
    context = ssl.create_default_context(cafile=str(server.cafile))
    with smtplib.SMTP(server.host, server.ports["submission"], timeout=10) as client:
        client.starttls(context=context)
        der = client.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
        assert x509.load_der_x509_certificate(der).serial_number == new_serial
    # The connection made before the reload was not dropped and still answers.
    old_conn.sendall(b"a1 NOOP\r\n")
    assert b"a1 OK" in old_conn.recv(4096)
    old_conn.close()


def test_bad_config_refused(maild_factory: Callable[..., MaildServer], tmp_path: Path,
                            tls_files: tuple[Path, Path, Path]) -> None:
    server, cert, key = own_certificate(maild_factory, tmp_path, tls_files)
    serial, conn = serial_seen(server)
    conn.close()
    assert server.process is not None
    good = server.config_path.read_text()
    # 1. A configuration that does not validate.
    server.config_path.write_text(good.replace("shards = 2", "shards = -3"))
    server.process.send_signal(signal.SIGHUP)
    wait_for_log(server, "reload refused, running configuration kept: ")
    assert "store.shards" in server.log()
    # 2. A certificate that does not match its key (a half-finished renewal).
    server.config_path.write_text(good)
    new_leaf(tmp_path / "other.pem", tmp_path / "other-key.pem", tls_files[2])
    shutil.copy(tmp_path / "other.pem", cert)
    server.process.send_signal(signal.SIGHUP)
    wait_for_log(server, "reload refused, running configuration kept: tls", 1)
    assert serial_seen(server)[0] == serial  # still the running certificate
    # 3. A change that needs a restart is named and not applied; the rest is.
    shutil.copy(tmp_path / "other-key.pem", key)
    server.config_path.write_text(good.replace('hostname = "mx.example.test"', 'hostname = "mx2.example.test"'))
    server.process.send_signal(signal.SIGHUP)
    wait_for_log(server, "reload 1: configuration")
    assert "changes to hostname need a restart" in server.log()
    assert serial_seen(server)[0] != serial
    assert server.process.poll() is None
