"""The systemd unit and the production configuration it runs (docs/operations.md): the
unit parses (`systemd-analyze verify`), its sandbox is tight (`systemd-analyze security`),
the production example only writes where the sandbox lets it, and the one hardening option
left out (MemoryDenyWriteExecute) is out because TLS fails under it."""

from __future__ import annotations

import ctypes
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from maild import config as configmod
from tests.conftest import MaildServer

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "maild.service"
PRODUCTION = ROOT / "etc" / "maild.production.toml"
ANALYZE = shutil.which("systemd-analyze")


def unit_options(path: Path = UNIT) -> dict[str, list[str]]:
    """[Service] and [Unit] keys -> values in order (systemd keys may repeat)."""
    options: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        options.setdefault(key.strip(), []).append(value.strip())
    return options


HARDENING = {
    "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
    "NoNewPrivileges": "yes", "RestrictSUIDSGID": "yes", "LockPersonality": "yes",
    "RestrictRealtime": "yes", "RestrictNamespaces": "yes", "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes",
    "ProtectClock": "yes", "UMask": "0077", "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
    "AmbientCapabilities": "CAP_NET_BIND_SERVICE", "SystemCallArchitectures": "native",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "WorkingDirectory": "/var/lib/maild",
    "ReadWritePaths": "/var/lib/maild", "StateDirectory": "maild", "User": "maild",
}


def test_unit_options() -> None:
    options = unit_options()
    for key, value in HARDENING.items():
        assert options.get(key) == [value], key
    assert "@system-service" in options["SystemCallFilter"]
    assert "HTTP" not in options["Description"][0] and "IMAP" in options["Description"][0]
    # Left out on purpose (see the unit's comments and test_tls_needs_write_execute_memory).
    assert "MemoryDenyWriteExecute" not in options and "PrivateUsers" not in options
    for command in options["ExecStart"] + options["ExecStartPre"]:
        assert command.startswith("/usr/local/bin/maild -c /etc/maild/maild.toml ")


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """Every key is known and every value parses: systemd-analyze prints nothing. The
    binary is not installed here, so the copy checked runs /bin/true instead."""
    unit = tmp_path / "maild.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/maild", "/bin/true"))
    done = subprocess.run([str(ANALYZE), "verify", str(unit)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_security_exposure() -> None:
    """5.0 MEDIUM before the hardening of issue 19; 1.4 OK with it (systemd 252)."""
    done = subprocess.run([str(ANALYZE), "security", "--offline=yes", "--no-pager", str(UNIT)],
                          capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for maild\.service: (\d+\.\d+) (\w+)", done.stdout)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= 2.0 and match.group(2) == "OK", match.group(0)


def test_production_config_writes_only_under_the_state_directory() -> None:
    cfg = configmod.load(PRODUCTION)
    writable = Path(unit_options()["ReadWritePaths"][0])
    assert cfg.data_dir.is_absolute() and writable in cfg.data_dir.parents
    assert cfg.tls is not None
    for path in (cfg.tls.cert_file, cfg.tls.key_file):
        assert path.is_absolute() and Path("/etc/maild") in path.parents
    assert not re.search(r'^\s*\w+\s*=\s*"(?!/|\[|mail\.|http)', PRODUCTION.read_text(), re.M), \
        "a relative path in the production example"


PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1  # Linux 6.3+: what MemoryDenyWriteExecute does

_UNDER_MDWE = f"""
import ctypes, sys
if ctypes.CDLL(None, use_errno=True).prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0):
    sys.exit(97)
from maild.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _mdwe_supported() -> bool:
    return sys.platform == "linux" and ctypes.CDLL(None).prctl(PR_SET_MDWE + 1, 0, 0, 0, 0) >= 0


def _tls_works(server: MaildServer) -> bool:
    context = ssl.create_default_context(cafile=str(server.cafile))
    try:
        with socket.create_connection((server.host, server.ports["imaps"]), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname="localhost") as tls:
            return tls.recv(100).startswith(b"* OK")
    except (OSError, ssl.SSLError):
        return False


@pytest.mark.skipif(not _mdwe_supported(), reason="no PR_SET_MDWE (Linux < 6.3)")
def test_tls_needs_write_execute_memory(maild_factory: Callable[..., MaildServer]) -> None:
    """Why the unit has no MemoryDenyWriteExecute=yes: with the same kernel restriction
    (PR_SET_MDWE, which systemd uses for it where it can) maild's TLS handshakes fail,
    because pyOpenSSL's cffi callbacks need writable, executable memory. When this test
    fails, the libraries no longer need it: add MemoryDenyWriteExecute=yes to the unit."""
    server = maild_factory()
    assert _tls_works(server)
    server.stop()
    log = server.root / "mdwe.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-c", _UNDER_MDWE, "-c", str(server.config_path),
                                    "serve"], stdout=out, stderr=subprocess.STDOUT, cwd=server.root)
    try:
        deadline = time.monotonic() + 30
        while b"maild ready" not in log.read_bytes():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert not _tls_works(server)
        time.sleep(0.2)
        assert "Cannot allocate write+execute memory for ffi.callback()" in log.read_text()
    finally:
        process.terminate()
        process.wait(30)
    server.start()  # for the fixture's final checks
