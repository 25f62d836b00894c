"""Throwaway servers for `make bench-compare`: maild, Dovecot, and Postfix relaying to Dovecot.

Every server runs in its own temp directory on free 127.0.0.1 ports, with its durability
defaults (maild: group commit with fsync; Dovecot: mail_fsync = optimized; Postfix: fsync
of every queue file), the same users and the very same argon2id password hashes (Dovecot
verifies maild's `$argon2id$...` strings with its ARGON2ID scheme), and plaintext LOGIN /
USER allowed on loopback only (maild: allow_plaintext_auth_on_loopback; Dovecot: its
default, which treats connections from 127.0.0.1 as secured).

Each class is a context manager; leaving it stops the processes and removes the temp
directory, on errors too. A watchdog per server does the same if this Python process dies
(even by SIGKILL), so a killed benchmark leaves nothing listening and no temp dir.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from maild.auth import hash_password
from tests.fixtures import postfix, processes

HOST = "127.0.0.1"
DOMAIN = "example.test"
MAIL_UID_USER = "nobody"  # Dovecot's mail processes drop to this user (its mail dir is chowned)
# Dovecot's fastest format for many messages (its docs); maildir and sdbox via BENCH_DOVECOT_MAIL.
# Measured here, APPEND 4 KB from 10 clients into one INBOX: maildir ~105/s (clients queue on
# the uidlist dotlock), sdbox ~550/s, mdbox ~360/s; into 10 INBOXes: 340, 770, 1,500/s.
DOVECOT_MAIL_FORMAT = os.environ.get("BENCH_DOVECOT_MAIL", "mdbox")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_listening(ports: list[int], process: subprocess.Popen[bytes] | None, log: Path, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    pending = set(ports)
    while pending:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not listen on {sorted(pending)}:\n{_tail(log)}")
        for port in list(pending):
            with socket.socket() as sock:
                if sock.connect_ex((HOST, port)) == 0:
                    pending.discard(port)
        time.sleep(0.05)


def _tail(path: Path, size: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return "(no log)"


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    processes.stop(process, STOP_TIMEOUT)


class _Server:
    """Shared lifetime: a temp dir, processes to stop, and the endpoints the load drivers use."""

    name = "server"

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users  # address -> password
        self.host = HOST
        self.ports: dict[str, int] = {}  # "smtp", "lmtp", "imap", "pop3" as available
        self.root = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        self.log_path = self.root / f"{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.watchdog: subprocess.Popen[bytes] | None = None

    def spawn(self, args: list[str], log: Path) -> None:
        """Start the server process, and a watchdog shell that reads a pipe from this process:
        when the benchmark ends in any way (SIGKILL included) the pipe closes, and the
        watchdog SIGTERMs the server and removes the temp dir. (PR_SET_PDEATHSIG would not
        do: it is cleared when a daemon changes credentials, as Postfix's master does.)"""
        with open(log, "ab") as out:
            self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=self.root)
        pid, root = self.process.pid, shlex.quote(str(self.root))
        script = (f"read _; kill -TERM {pid} 2>/dev/null; n=0; "
                  f"while kill -0 {pid} 2>/dev/null && [ $n -lt 300 ]; do sleep 0.1; n=$((n+1)); done; rm -rf {root}")
        self.watchdog = subprocess.Popen(["sh", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)

    @property
    def pid(self) -> int | None:
        """The server's main process (its children are found from /proc for CPU accounting)."""
        return self.process.pid if self.process and self.process.poll() is None else None

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        try:
            self.stop()
        finally:
            if self.watchdog is not None:  # the server is stopped: the watchdog has nothing to do
                self.watchdog.kill()
                self.watchdog.wait()
                if self.watchdog.stdin:
                    self.watchdog.stdin.close()
            shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        return _tail(self.log_path)


class Maild(_Server):
    """`maild serve` with a temp config and data dir; SMTP (MX), IMAP and POP3 on loopback.

    [mailauth] verify is off (SPF/DKIM/DMARC need DNS and Postfix does none of it by
    default); the built-in content filter (fallback scorer, attachment policy) stays on as
    shipped. Rate limits per IP are lifted: every load comes from 127.0.0.1.

    ``submission``: also listen for submission (STARTTLS + AUTH, port "submission").
    ``overrides``: config keys by section, laid over the above, e.g.
    ``{"imap": {"max_connections_per_ip": 1100}}``.
    """

    name = "maild"

    def __init__(self, users: dict[str, str], hashes: dict[str, str], *, submission: bool = False,
                 overrides: dict[str, dict[str, Any]] | None = None) -> None:
        super().__init__(users)
        self.hashes = hashes
        self.submission = submission
        self.overrides = overrides or {}

    def start(self) -> None:
        from maild import config as configmod
        from maild.store import Store
        from tests.conftest import to_toml

        data_dir = self.root / "data"
        cert, key = self.root / "cert.pem", self.root / "key.pem"
        subprocess.run([sys.executable, "-m", "maild.cli", "dev-cert", "--hostname", "localhost",
                        "--cert", str(cert), "--key", str(key)], check=True, capture_output=True, timeout=60)
        data: dict[str, Any] = {
            "hostname": "mx.example.test", "data_dir": str(data_dir),
            "tls": {"cert_file": str(cert), "key_file": str(key)},
            "mailauth": {"verify": False, "sign": False},
            "api": {"listen": [], "tls_listen": []},
            "submission": {"listen": [], "tls_listen": []},
        }
        sections = {"smtp": {"messages_per_minute_per_ip": 1_000_000, "messages_per_minute_per_user": 1_000_000,
                             "max_connections_per_ip": 200},
                    "imap": {"max_connections_per_ip": 200, "allow_plaintext_auth_on_loopback": True},
                    "pop3": {"max_connections_per_ip": 200, "allow_plaintext_auth_on_loopback": True}}
        for section, table in sections.items():
            self.ports[section] = free_port()
            data[section] = {"listen": [f"{HOST}:{self.ports[section]}"], "tls_listen": [], **table}
        if self.submission:
            self.ports["submission"] = free_port()
            data["submission"] = {"listen": [f"{HOST}:{self.ports['submission']}"], "tls_listen": [],
                                  **sections["smtp"]}
        for section, table in self.overrides.items():
            data[section] = {**data.get(section, {}), **table}
        config_path = self.root / "maild.toml"
        config_path.write_text(to_toml(data))
        self.config_path = config_path
        store = Store(data_dir, configmod.load(config_path).store)
        try:
            store.domain_add(DOMAIN)
            for address, password_hash in self.hashes.items():
                store.user_add(address, password_hash)
        finally:
            store.close()
        self.spawn([sys.executable, "-m", "maild.cli", "-c", str(config_path), "serve"], self.log_path)
        wait_listening(list(self.ports.values()), self.process, self.log_path, "maild")

    def stop(self) -> None:
        _stop(self.process)


DOVECOT_CONF = """\
# Throwaway Dovecot for maild's bench-compare: Debian defaults except paths and ports.
base_dir = {root}/run
state_dir = {root}/state
instance_name = {instance}
listen = 127.0.0.1
protocols = imap pop3 lmtp
ssl = no
log_path = {root}/dovecot.log
auth_mechanisms = plain login
# disable_plaintext_auth stays at its default (yes): Dovecot counts loopback as secured.
mail_location = {mail_format}:{root}/mail/%d/%n/mail
first_valid_uid = 1
first_valid_gid = 1
passdb {{
  driver = passwd-file
  args = {root}/passwd
}}
userdb {{
  driver = passwd-file
  args = {root}/passwd
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp}
  }}
}}
protocol lmtp {{
  postmaster_address = postmaster@example.test
}}
"""


class Dovecot(_Server):
    """A throwaway Dovecot (`dovecot -F -c FILE`): IMAP, POP3 and LMTP on loopback ports.

    Mail is stored as DOVECOT_MAIL_FORMAT (mdbox unless BENCH_DOVECOT_MAIL says) under the
    temp dir, owned by the unprivileged user the mail processes drop to; fsync stays at its
    default (optimized).
    """

    name = "dovecot"

    def __init__(self, users: dict[str, str], hashes: dict[str, str]) -> None:
        super().__init__(users)
        self.hashes = hashes

    def start(self) -> None:
        dovecot = shutil.which("dovecot") or "/usr/sbin/dovecot"
        if not os.path.exists(dovecot):
            raise RuntimeError("dovecot is not installed: run `make deps-bench` "
                               "(dovecot-imapd dovecot-pop3d dovecot-lmtpd)")
        self.ports = {"imap": free_port(), "pop3": free_port(), "lmtp": free_port()}
        mail_user = pwd.getpwnam(MAIL_UID_USER)
        self.root.chmod(0o755)  # the mail processes run as MAIL_UID_USER and need to traverse it
        mail = self.root / "mail"
        mail.mkdir()
        os.chown(mail, mail_user.pw_uid, mail_user.pw_gid)
        lines = [f"{address}:{{ARGON2ID}}{self.hashes[address]}:{mail_user.pw_uid}:{mail_user.pw_gid}::"
                 f"{mail}/{address.split('@')[1]}/{address.split('@')[0]}::" for address in self.users]
        passwd = self.root / "passwd"
        passwd.write_text("\n".join(lines) + "\n")
        conf = self.root / "dovecot.conf"
        conf.write_text(DOVECOT_CONF.format(root=self.root, instance=f"bench-{self.root.name}",
                                            mail_format=DOVECOT_MAIL_FORMAT, **self.ports))
        self.spawn([dovecot, "-F", "-c", str(conf)], self.log_path)
        wait_listening(list(self.ports.values()), self.process, self.log_path, "dovecot")

    def stop(self) -> None:
        _stop(self.process)


# main.cf lines over tests/fixtures/postfix.py's MAIN_CF: example.test goes to Dovecot over LMTP.
POSTFIX_SETTINGS = """\
relay_domains =
virtual_mailbox_domains = example.test
virtual_mailbox_maps = inline:{{ {recipients} }}
virtual_transport = lmtp:inet:127.0.0.1:{lmtp}
"""


class Postfix(_Server):
    """A real Postfix instance (`postfix -c DIR check`, then its master in the foreground) in a
    temp dir, relaying to Dovecot LMTP.

    Its own config_directory, queue_directory and data_directory; smtpd on a loopback port;
    no chroot; Debian's defaults otherwise (queue files fsynced before 250).
    """

    name = "postfix"

    def __init__(self, users: dict[str, str], lmtp_port: int) -> None:
        super().__init__(users)
        self.lmtp_port = lmtp_port

    def start(self) -> None:
        self.ports = {"smtp": free_port()}
        self.root.chmod(0o755)  # postfix's daemons run as 'postfix' and need to traverse it
        recipients = ", ".join(f"{address}=ok" for address in self.users)
        command = postfix.prepare(self.root, self.ports["smtp"],
                                  POSTFIX_SETTINGS.format(recipients=recipients, lmtp=self.lmtp_port))
        self.log_path = self.root / "postfix.log"
        self.spawn(command, self.root / "master.out")
        wait_listening(list(self.ports.values()), self.process, self.log_path, "postfix")

    def stop(self) -> None:
        _stop(self.process)  # SIGTERM: master stops its children and exits


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


@contextlib.contextmanager
def one_core(roots: list[int]) -> Iterator[int]:
    """Run this process and every thread of ``roots``' process trees on one core until the
    block ends, then give each its old affinity back. A round trip of ~0.1 ms on a 2-core VM
    is bimodal by where the scheduler puts the client and the server: ~60 us on one core,
    ~100 us across two, the same command and mailbox moving between the two from one run
    to the next; on one core only the work is left to differ. Yields the core."""
    core = min(os.sched_getaffinity(0))
    tasks = [0] + [int(t) for pid in roots for p in process_tree(pid) for t in _tasks(p)]
    before: dict[int, set[int]] = {}
    try:
        for task in tasks:
            try:
                before[task] = os.sched_getaffinity(task)
                os.sched_setaffinity(task, {core})
            except ProcessLookupError:
                continue
        yield core
    finally:
        for task, cpus in before.items():
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(task, cpus)


def _tasks(pid: int) -> list[str]:
    try:
        return os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes and their reaped children, in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / tick


def make_users(count: int, prefix: str = "bench") -> tuple[dict[str, str], dict[str, str]]:
    """(address -> password, address -> argon2id hash): the same hash for every server."""
    users = {f"{prefix}{n}@{DOMAIN}": f"{prefix}{n}-secret" for n in range(count)}
    return users, {address: hash_password(password) for address, password in users.items()}


def overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """``section.key=value`` items as config overrides (true/false and integers parsed)."""
    overrides: dict[str, dict[str, Any]] = {}
    for item in items:
        key, _, raw = item.partition("=")
        section, _, name = key.partition(".")
        value: Any = {"true": True, "false": False}.get(raw, raw)
        if isinstance(value, str) and value.lstrip("-").isdigit():
            value = int(value)
        overrides.setdefault(section, {})[name] = value
    return overrides
