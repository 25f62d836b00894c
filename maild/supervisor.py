"""The process model (``[server] workers``, docs/architecture.md): one supervisor process and
N worker processes that share the listening sockets and the store.

Implementation notes (invariants):

- ``workers = 1`` is the single process of old: :func:`serve` runs maild/daemon.py's
  ``serve`` directly, no supervisor. So does a replicating node (leader or follower,
  configured or recorded in the data directory): its replication service, sync
  acknowledgements and fencing live in one process (docs/replication.md).
- The supervisor binds every listening socket once (privileged ports are bound in one
  place, before any worker exists) and starts the workers with the sockets inherited: a
  fresh ``maild serve`` (fork and exec) told its role in ``MAILD_WORKER`` (daemon.worker_role).
  Exec, not a bare fork: Twisted's reactor (its epoll set, its waker pipe) must never be
  shared between processes, and each worker opens the LMDB environments itself, never across
  a fork (DESIGN.md, "Processes"). The supervisor never accepts a connection, never opens
  the store and runs no reactor: a plain select loop over its signals and notify socket.
- One inherited socket per listener, accepted on by every worker (not SO_REUSEPORT): the
  port stays bound while a worker restarts, and a connection waiting in the backlog is
  taken by whichever worker is free, never lost with a dead worker's own queue.
- Every worker's ``NOTIFY_SOCKET`` is the supervisor's own datagram socket (sd_notify(3)
  messages, the sender known by SO_PASSCRED, others ignored). The supervisor logs
  "maild ready" and sends READY=1 to systemd once every worker has said READY=1; on SIGHUP
  it sends RELOADING=1, forwards the signal to every worker and sends READY=1 when each has
  answered READY=1 again (or RELOAD_WAIT passed).
- Watchdog: under systemd's WatchdogSec the supervisor pings systemd from its loop, and each
  worker pings the supervisor (WATCHDOG_USEC passed on); a worker silent for a whole period
  is killed (SIGKILL) and restarted, the others serve on.
- A worker that dies is restarted with its index after a back-off: RESTART_MIN seconds,
  doubled for each death within STABLE seconds of its start, at most RESTART_MAX. A worker
  that dies before the tree was first ready fails the start (exit 1): a configuration or
  store problem that a restart would only repeat.
- SIGTERM / SIGINT: STOPPING=1, no more restarts, SIGTERM to every worker (each stops as
  maild/shutdown.py says); workers still alive ``shutdown_grace`` + STOP_MARGIN seconds later
  are killed. The supervisor exits when all have: 0, or 1 when one had to be killed.
- Metrics: each worker writes its values to its own file in a directory the supervisor
  makes (``PROMETHEUS_MULTIPROC_DIR``) and removes at exit; worker 0 serves their sum.
  Connections, rates, POP3 locks and login failures are counted across the workers in the
  store's shared state (maild/store/shared.py), where a dead worker's share goes with it.
- The workers die with the supervisor (PR_SET_PDEATHSIG): kill -9 of the supervisor is a
  kill -9 of the tree, and nothing is left holding the ports or the store.
"""

from __future__ import annotations

import array
import json
import logging
import os
import secrets
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from maild import daemon
from maild.config import Address, Config, ConfigError
from maild.store import redo
from maild.store.shared import pid_alive

log = logging.getLogger("maild.supervisor")

BACKLOG = 511  # listen(2) backlog of each shared socket (nginx's default)
RESTART_MIN = 0.2  # seconds before restarting a worker that died
RESTART_MAX = 30.0
STABLE = 10.0  # a worker that ran this long before dying restarts after RESTART_MIN again
STOP_MARGIN = 10.0  # seconds beyond shutdown_grace before a stopping worker is killed
RELOAD_WAIT = 30.0  # seconds the supervisor waits for the workers' READY=1 after SIGHUP
START_WAIT = 120.0  # seconds every worker gets to become ready at start


def worker_count(config: Config) -> int:
    """How many worker processes ``config`` asks for, 1 for a replicating node."""
    if config.replication.role != "standalone" or redo.read_state(config.data_dir):
        return 1
    if config.server.workers:
        return config.server.workers
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def serve(config: Config) -> int:
    """``maild serve``: one worker of a tree, the single process, or the supervisor."""
    role = daemon.worker_role()
    if role is not None:
        return daemon.serve(config, role=role)
    count = worker_count(config)
    if count == 1:
        return daemon.serve(config)
    daemon.setup_logging(several=True)
    daemon.tls_options(config)  # a bad certificate fails here, not in N workers
    sockets = bind(config)
    # Each worker's metrics (the primary's /metrics sums them). Gone with the daemon, or
    # at the next start when the tree was killed (SIGKILL runs no clean-up).
    run_dir = supervisor_dir(Path(config.data_dir))
    try:
        (run_dir / "metrics").mkdir()
        return Supervisor(config, count, sockets, run_dir).run()
    finally:
        for sock in sockets.values():
            sock.close()
        shutil.rmtree(run_dir, ignore_errors=True)


def supervisor_dir(data_dir: Path) -> Path:
    """This supervisor's directory, ``<data_dir>/run/supervisor-<pid>`` (made empty); those
    of supervisors no longer running are removed first."""
    base = data_dir / "run"
    base.mkdir(parents=True, exist_ok=True)
    for stale in base.glob("supervisor-*"):
        try:
            pid = int(stale.name.partition("-")[2])
        except ValueError:
            continue
        if pid != os.getpid() and not pid_alive(pid):
            shutil.rmtree(stale, ignore_errors=True)
    mine = base / f"supervisor-{os.getpid()}"
    shutil.rmtree(mine, ignore_errors=True)
    mine.mkdir(mode=0o700)
    return mine


def bind(config: Config) -> dict[str, socket.socket]:
    """Every listener's socket, bound and listening, by key (daemon.listeners)."""
    sockets: dict[str, socket.socket] = {}
    try:
        for key, _section, address, _implicit in daemon.listeners(config):
            sockets[key] = _bind(key.split()[0], address)
    except BaseException:
        for sock in sockets.values():
            sock.close()
        raise
    return sockets


def _bind(key: str, address: Address) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in address.host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Twisted's listenTCP
        sock.bind((address.host, address.port))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"{key}: cannot listen on {address}: {exc}") from None
    sock.setblocking(False)  # each worker's reactor accepts until EAGAIN
    return sock


@dataclass
class Worker:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    ready: bool = False
    pinged: float = 0.0  # last WATCHDOG=1 (or start)
    deaths: int = 0  # deaths in a row, each within STABLE seconds of its start
    restart_at: float | None = None
    reloading: bool = False


@dataclass
class _Notify:
    sock: socket.socket
    address: str  # NOTIFY_SOCKET as the workers see it
    pending: list[tuple[int, str]] = field(default_factory=list)


class Supervisor:
    def __init__(self, config: Config, count: int, sockets: dict[str, socket.socket],
                 run_dir: Path | None = None) -> None:
        self.config = config
        self.run_dir = run_dir
        self.count = count
        self.sockets = sockets
        self.workers = [Worker(i) for i in range(count)]
        self.signals: list[int] = []
        self.stopping_since: float | None = None
        self.announced = False  # "maild ready" said and READY=1 sent
        self.reload_since: float | None = None
        self.killed = False  # a worker had to be killed while stopping
        self.watchdog = _watchdog_period()
        self.last_ping = 0.0
        self.notify = self._notify_socket()

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> int:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        os.set_blocking(wake_r, False)
        previous = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda signum, frame: self.signals.append(signum))
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # wakes select
        start = time.monotonic()
        try:
            for worker in self.workers:
                self._start(worker)
            while True:
                select.select([self.notify.sock.fileno(), wake_r], [], [], self._timeout())
                try:
                    while os.read(wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
                now = time.monotonic()
                self._read_notify(now)
                while self.signals:
                    self._signal(self.signals.pop(0), now)
                self._reap(now)
                if self.stopping_since is not None:
                    if all(w.process is None for w in self.workers):
                        log.info("maild stopped: every worker has exited")
                        return 1 if self.killed else 0
                    self._stop_overdue(now)
                    continue
                self._restart_due(now)
                self._announce(now)
                if not self.announced and now - start > START_WAIT:
                    log.error("maild: the workers did not become ready in %.0f s", START_WAIT)
                    self._begin_stop(now)
                    self.killed = True
                self._watch(now)
        finally:
            signal.set_wakeup_fd(previous)
            os.close(wake_r)
            os.close(wake_w)
            self.notify.sock.close()
            for worker in self.workers:  # only after an exception: kill what is left
                if worker.process is not None and worker.process.poll() is None:
                    worker.process.kill()
                    worker.process.wait()

    def _timeout(self) -> float:
        timeout = 1.0
        now = time.monotonic()
        for worker in self.workers:
            if worker.restart_at is not None:
                timeout = min(timeout, max(worker.restart_at - now, 0.0))
        if self.watchdog:
            timeout = min(timeout, self.watchdog / 4)
        return timeout

    # -- workers ------------------------------------------------------------------------

    def _start(self, worker: Worker) -> None:
        fds = {key: sock.fileno() for key, sock in self.sockets.items()}
        env = dict(os.environ)
        env[daemon.WORKER_ENV] = json.dumps({"index": worker.index, "count": self.count, "fds": fds,
                                             "supervisor": os.getpid()})
        env["NOTIFY_SOCKET"] = self.notify.address
        if self.run_dir is not None:
            env[daemon.MULTIPROC_ENV] = str(self.run_dir / "metrics")
        env.pop("WATCHDOG_PID", None)  # systemd's is ours; the worker pings us
        if self.watchdog:
            env["WATCHDOG_USEC"] = str(int(self.watchdog * 1e6))
        else:
            env.pop("WATCHDOG_USEC", None)
        worker.process = subprocess.Popen([sys.executable, "-m", "maild.cli", "-c", str(self.config.path), "serve"],
                                          env=env, pass_fds=sorted(fds.values()))
        worker.started = worker.pinged = time.monotonic()
        worker.ready = worker.reloading = False
        worker.restart_at = None
        log.info("worker %d started: pid %d", worker.index, worker.process.pid)

    def _reap(self, now: float) -> None:
        """Notice workers that exited; schedule their restart (or fail the start)."""
        for worker in self.workers:
            if worker.process is None:
                continue
            code = worker.process.poll()
            if code is None:
                continue
            pid = worker.process.pid
            worker.process = None
            worker.ready = False
            how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
            if self.stopping_since is not None:
                log.info("worker %d (pid %d) stopped: %s", worker.index, pid, how)
                continue
            if not self.announced:
                log.error("worker %d (pid %d) failed to start (%s): maild stops", worker.index, pid, how)
                self._begin_stop(now)
                self.killed = True
                continue
            ran = now - worker.started
            worker.deaths = worker.deaths + 1 if ran < STABLE else 1
            delay = min(RESTART_MIN * 2 ** (worker.deaths - 1), RESTART_MAX)
            worker.restart_at = now + delay
            log.error("worker %d (pid %d) died (%s) after %.1f s; restarting it in %.1f s",
                      worker.index, pid, how, ran, delay)

    def _restart_due(self, now: float) -> None:
        for worker in self.workers:
            if worker.restart_at is not None and worker.restart_at <= now:
                self._start(worker)

    def _worker_by_pid(self, pid: int) -> Worker | None:
        for worker in self.workers:
            if worker.process is not None and worker.process.pid == pid:
                return worker
        return None

    # -- signals ------------------------------------------------------------------------

    def _signal(self, signum: int, now: float) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            if self.stopping_since is None:
                log.info("maild stopping (%s): stopping %d worker(s)", signal.Signals(signum).name,
                         sum(w.process is not None for w in self.workers))
                self._begin_stop(now)
        elif signum == signal.SIGHUP and self.stopping_since is None:
            daemon.sd_notify("RELOADING=1")
            self.reload_since = now
            for worker in self.workers:
                # A worker still starting reads the file anyway, and has no SIGHUP handler
                # yet: the signal's default action would kill it.
                worker.reloading = worker.process is not None and worker.ready
                if worker.process is not None and worker.reloading:
                    worker.process.send_signal(signal.SIGHUP)
            log.info("reload: SIGHUP sent to %d worker(s)", sum(w.reloading for w in self.workers))

    def _begin_stop(self, now: float) -> None:
        self.stopping_since = now
        daemon.sd_notify("STOPPING=1")
        for worker in self.workers:
            worker.restart_at = None
            if worker.process is not None:
                worker.process.send_signal(signal.SIGTERM)

    def _stop_overdue(self, now: float) -> None:
        assert self.stopping_since is not None
        if now - self.stopping_since < self.config.server.shutdown_grace + STOP_MARGIN:
            return
        for worker in self.workers:
            if worker.process is not None and worker.process.poll() is None:
                log.warning("worker %d (pid %d) still running %.0f s after SIGTERM: killed",
                            worker.index, worker.process.pid, now - self.stopping_since)
                worker.process.kill()
                self.killed = True

    # -- sd_notify from the workers, to systemd -----------------------------------------

    def _notify_socket(self) -> _Notify:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        name = f"maild-supervisor-{os.getpid()}-{secrets.token_hex(6)}"
        sock.bind("\0" + name)  # abstract: no file to leave behind
        sock.setblocking(False)
        return _Notify(sock, "@" + name)

    def _read_notify(self, now: float) -> None:
        creds = struct.calcsize("3i")
        while True:
            try:
                data, ancillary, _flags, _addr = self.notify.sock.recvmsg(4096, socket.CMSG_SPACE(creds))
            except (BlockingIOError, InterruptedError):
                return
            pid = None
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = array.array("i", payload[:creds])[0]
            worker = None if pid is None else self._worker_by_pid(pid)
            if worker is None:
                continue  # not one of ours: ignored
            for line in data.decode(errors="replace").splitlines():
                if line == "READY=1":
                    worker.ready = True
                    worker.reloading = False
                elif line == "WATCHDOG=1":
                    worker.pinged = now

    def _announce(self, now: float) -> None:
        if not self.announced and all(w.ready for w in self.workers):
            self.announced = True
            ports = [key for key in self.sockets]
            log.info("maild ready: %s; %d workers (pids %s)", ", ".join(ports) or "no listeners", self.count,
                     " ".join(str(w.process.pid) for w in self.workers if w.process is not None))
            daemon.sd_notify("READY=1")
        if self.reload_since is not None and (
                not any(w.reloading and w.process is not None for w in self.workers)
                or now - self.reload_since > RELOAD_WAIT):
            late = [w.index for w in self.workers if w.reloading and w.process is not None]
            if late:
                log.warning("reload: worker(s) %s did not confirm in %.0f s", late, RELOAD_WAIT)
            self.reload_since = None
            daemon.sd_notify("READY=1")

    def _watch(self, now: float) -> None:
        """systemd's watchdog: ping it while we run; kill a worker that stopped pinging us."""
        if not self.watchdog:
            return
        if now - self.last_ping >= self.watchdog / 2:
            self.last_ping = now
            daemon.sd_notify("WATCHDOG=1")
        for worker in self.workers:
            if worker.process is not None and worker.ready and now - worker.pinged > self.watchdog:
                log.error("worker %d (pid %d) sent no watchdog ping in %.1f s: killed", worker.index,
                          worker.process.pid, now - worker.pinged)
                worker.process.kill()
                worker.pinged = now  # once; _reap restarts it


def _watchdog_period() -> float:
    """WatchdogSec in seconds when systemd asks this process for pings, else 0."""
    usec, pid = os.environ.get("WATCHDOG_USEC"), os.environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return 0.0
    return int(usec) / 1e6
