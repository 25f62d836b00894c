"""The replication service of a serving daemon: a leader's listener, or a follower's
connection to its leader; epochs, fencing, sync-mode waits and the status file.

Implementation notes (invariants):
- The node's role and epoch live in data_dir/replication.json (store/redo.py), written
  durably before they take effect; `maild replica promote` edits it and the running
  daemon picks the change up within STATE_POLL seconds.
- A follower's store is fenced (ordinary writes fail with ReadOnlyStore) until promotion.
  A leader that meets a follower from a newer epoch fences itself, persistently: a stale
  leader takes no more writes.
- Sync mode: a commit's answers wait (sync_timeout at most) until a follower acknowledged
  the record holding it; then on_timeout decides (degrade: answer and say so in the log and
  status; tempfail: answer with ReplicaTimeout, a 4xx/NO to the client).
- The follower reconnects by itself (RECONNECT_MIN..RECONNECT_MAX seconds between tries;
  longer after the leader refused because the logs diverged or the follower needs a resync).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, protocol, task
from twisted.internet.error import CannotListenError

from maild.config import Config, ConfigError, parse_address
from maild.replication import peer
from maild.replication.session import FollowerSession, LeaderSession
from maild.store import Store, redo
from maild.store.types import ReplicaTimeout

log = logging.getLogger(__name__)

STATE_POLL = 1.0
PUMP_INTERVAL = 0.05
RECONNECT_MIN, RECONNECT_MAX, REFUSED_RETRY = 0.5, 10.0, 30.0
CONNECT_TIMEOUT = 10.0
PROBE_INTERVAL = 5.0  # a promoted leader shows its epoch to the old one this often
STATUS_FILE = "replication-status.json"
LAG_SAMPLES = 10_000


class _LeaderFactory(protocol.Factory):
    def __init__(self, service: ReplicationService) -> None:
        self.service = service

    def buildProtocol(self, addr: Any) -> LeaderSession:
        session = LeaderSession(self.service)
        self.service.sessions.append(session)
        return session


class _FollowerFactory(protocol.ClientFactory):
    def __init__(self, service: ReplicationService, probe: bool = False) -> None:
        self.service = service
        self.probe = probe

    def buildProtocol(self, addr: Any) -> FollowerSession:
        return FollowerSession(self.service, self.probe)

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        if not self.probe:
            self.service.connection_ended(f"cannot connect: {reason.getErrorMessage()}")

    def clientConnectionLost(self, connector: Any, reason: Any) -> None:
        if not self.probe:
            self.service.connection_ended(f"connection lost: {reason.getErrorMessage()}")


class ReplicationService:
    def __init__(self, config: Config, store: Store, reactor: Any) -> None:
        self.config = config
        self.settings = config.replication
        self.store = store
        self.reactor = reactor
        self.auth = peer.load(self.settings)
        self.sessions: list[LeaderSession] = []
        self.follower: FollowerSession | None = None
        self.ports: list[Any] = []
        self.loops: list[task.LoopingCall] = []
        self.waiters: dict[str, list[tuple[int, defer.Deferred[Any], Any]]] = {}
        self.degraded: str | None = None
        self.problem: str | None = None  # why the leader refused us, shown in status
        self.retry_delay = RECONNECT_MIN
        self.stopping = False
        self.connected_since: float | None = None
        self.applied_at: dict[str, float] = {}  # follower: when it last applied a record, per environment
        # follower: seconds from the leader's commit to ours, for the last LAG_SAMPLES records
        self.lags: deque[float] = deque(maxlen=LAG_SAMPLES)
        self.copying: dict[str, int] = {}  # follower: snapshot bytes committed so far, per environment
        # follower: environments being copied anew because they fell behind the leader's
        # log (automatic resync), with the position they were at
        self.auto_resync: dict[str, int] = {}
        self.on_leader: list[Callable[[], None]] = []  # run once this node takes writes
        self._reconnect: Any = None
        self._wake_pending = False

    @property
    def role(self) -> str:
        return self.store.repl_role

    @property
    def epoch(self) -> int:
        return self.store.repl_epoch

    # -- start and stop ----------------------------------------------------------------

    def start(self) -> list[str]:
        """Listen (leader) or connect (follower); return what to log as listeners."""
        described = []
        if self.role == "leader":
            described = self._listen()
        for call, interval in ((self._poll_state, STATE_POLL), (self._write_status, STATE_POLL),
                               (self._pump_all, PUMP_INTERVAL)):
            loop = task.LoopingCall(call)
            loop.clock = self.reactor
            loop.start(interval, now=False)
            self.loops.append(loop)
        if self.role == "follower":
            self._connect()
        else:
            self._became_leader()
        self.store.subscribe(lambda _change: self.wake())
        self._write_status()
        return described

    def _listen(self) -> list[str]:
        factory = _LeaderFactory(self)
        context = peer.ContextFactory(self.config.tls, server=True)
        described = []
        for address in self.settings.listen:
            try:
                self.ports.append(self.reactor.listenSSL(address.port, factory, context,
                                                         interface=address.host))
            except CannotListenError as exc:
                raise ConfigError(f"replication.listen: cannot listen on {address}: {exc.socketError}") from None
            described.append(f"replication {address}")
        return described

    def _became_leader(self) -> None:
        if self.settings.leader:  # we were promoted: show the old leader our epoch (fencing)
            loop = task.LoopingCall(self._probe_old_leader)
            loop.clock = self.reactor
            loop.start(PROBE_INTERVAL, now=True)
            self.loops.append(loop)
        for call in self.on_leader:
            call()
        self.on_leader = []
        if self.settings.mode == "sync":
            self._gate_writers(True)

    def _gate_writers(self, on: bool) -> None:
        writers = [self.store.directory.writer, *(s.writer for s in self.store.shards)]
        for writer in writers:
            writer.gate = self.gate if on else None

    def stop(self) -> None:
        self.stopping = True
        for loop in self.loops:
            if loop.running:
                loop.stop()
        if self._reconnect is not None and self._reconnect.active():
            self._reconnect.cancel()
        for port in self.ports:
            port.stopListening()
        for session in list(self.sessions):
            session.transport.loseConnection()
        if self.follower is not None:
            self.follower.transport.loseConnection()
        for entries in self.waiters.values():
            for _, d, timer in entries:
                if timer.active():
                    timer.cancel()
                d.callback(None)
        self.waiters.clear()
        self._write_status()

    # -- the follower's connection ------------------------------------------------------

    def _connect(self) -> None:
        self._reconnect = None
        if self.stopping or self.role != "follower":
            return
        address = parse_address(self.settings.leader, "replication.leader")
        self.reactor.connectSSL(address.host, address.port, _FollowerFactory(self),
                                peer.ContextFactory(self.config.tls, server=False),
                                timeout=CONNECT_TIMEOUT)

    def _probe_old_leader(self) -> None:
        address = parse_address(self.settings.leader, "replication.leader")
        self.reactor.connectSSL(address.host, address.port, _FollowerFactory(self, probe=True),
                                peer.ContextFactory(self.config.tls, server=False),
                                timeout=CONNECT_TIMEOUT)

    def connection_ended(self, why: str) -> None:
        if self.follower is not None:
            log.warning("replication follower: %s; reconnecting in %.1f s", why, self.retry_delay)
        self.follower = None
        self.connected_since = None
        if self.stopping or self.role != "follower" or self._reconnect is not None:
            return
        delay = self.retry_delay
        self.retry_delay = min(RECONNECT_MAX, self.retry_delay * 2)
        self._reconnect = self.reactor.callLater(delay, self._connect)

    def follower_connected(self, session: FollowerSession) -> None:
        self.follower = session
        self.connected_since = time.time()
        self.problem = None
        self.retry_delay = RECONNECT_MIN

    def follower_gone(self, session: FollowerSession) -> None:
        if self.follower is session:
            self.follower = None
            self.connected_since = None

    def leader_refused(self, code: str, text: str) -> None:
        self.problem = f"{code}: {text}"
        if code in ("diverged", "resync", "fenced"):
            self.retry_delay = REFUSED_RETRY
            log.error("replication follower: the leader refused us (%s); `maild replica resync` "
                      "(or promote/rejoin, docs/replication.md) is needed", text)

    def applied(self, where: str, seq: int) -> None:
        self.applied_at[where] = time.time()

    def snapshot_progress(self, result: Any, where: str, size: int) -> Any:
        """A snapshot chunk of ``size`` bytes was committed (-1: the copy is complete)."""
        if size < 0:
            copied = self.copying.pop(where, 0)
            self.auto_resync.pop(where, None)
            log.info("replication follower: snapshot of %s complete (%.1f MB)", where, copied / 1e6)
        else:
            self.copying[where] = self.copying.get(where, 0) + size
        return result

    def adopt_epoch(self, epoch: int) -> None:
        """A follower takes its leader's epoch (records carry it; promotion goes past it)."""
        if epoch <= self.store.repl_epoch:
            return
        state = redo.read_state(self.store.data_dir)
        state["epoch"] = epoch
        state.setdefault("history", []).append([epoch, self._positions()])
        redo.write_state(self.store.data_dir, state)
        self.store.repl_epoch = epoch

    # -- the leader's side --------------------------------------------------------------

    def divergence(self, log_: redo.RedoLog, pos: int, epoch: int) -> tuple[str, str] | None:
        """Why a follower at (pos, epoch) cannot be streamed to from our log; None: it can."""
        if pos < 0:
            return None  # the follower is empty, or its copy unfinished: it gets a snapshot
        mine = log_.position()
        if pos > mine:
            return "diverged", f"the follower is at {pos}, past our {mine}: it has records we never had"
        if pos == 0:
            first = log_.first()
            if first > 1:
                return "resync", "the follower is empty and our log starts at record " \
                                 f"{first}: it needs a snapshot (maild replica resync)"
            return None
        held = log_.epoch_at(pos)
        if held is None:
            return "resync", f"record {pos} is no longer held (retain exceeded): maild replica resync"
        if held != epoch:
            return "diverged", f"record {pos} has epoch {held} here and {epoch} there"
        return None

    def behind_on_our_history(self, log_: redo.RedoLog, pos: int, epoch: int) -> bool:
        """Whether a follower at (pos, epoch), before the oldest record we hold, provably
        holds a prefix of our history: its record there has the epoch of our oldest one.
        Epochs only grow along a log and one leader writes each epoch, so both came from
        that epoch's leader, in one sequence."""
        first = log_.first()
        return 0 < pos < first and epoch > 0 and log_.epoch_at(first) == epoch

    def session_ready(self, session: LeaderSession) -> None:
        log.info("replication leader: follower %s subscribed at %s", session.peer, session.sent)
        if self.degraded:
            log.warning("replication: follower back, sync mode resumes")
            self.degraded = None

    def session_gone(self, session: LeaderSession) -> None:
        if session in self.sessions:
            self.sessions.remove(session)
            if session.sent:
                log.warning("replication leader: follower %s disconnected", session.peer)

    def wake(self) -> None:
        if not self._wake_pending and self.sessions:
            self._wake_pending = True
            self.reactor.callLater(0, self._pump_all)

    def _pump_all(self) -> None:
        self._wake_pending = False
        for session in list(self.sessions):
            session.pump()

    def fence(self, reason: str) -> None:
        """Take no more writes, for good (until an admin rejoins this node as a follower)."""
        if self.store.repl_fence is not None:
            return
        log.error("replication: FENCED, this node takes no more writes: %s", reason)
        state = redo.read_state(self.store.data_dir)
        state["fenced"] = reason
        redo.write_state(self.store.data_dir, state)
        self.store.set_fence(reason)

    # -- sync mode ----------------------------------------------------------------------

    def _acked_position(self, where: str) -> int:
        return max((s.acked.get(where, 0) for s in self.sessions if s.sent), default=0)

    def gate(self, where: str, seq: int) -> defer.Deferred[Any] | None:
        """The writers' hook: a Deferred firing when a follower holds record ``seq``."""
        if self.role != "leader" or self.settings.mode != "sync" or self.stopping:
            return None
        if self._acked_position(where) >= seq:
            return None
        if not any(s.sent for s in self.sessions):
            return self._no_follower("no follower is connected")
        d: defer.Deferred[Any] = defer.Deferred()
        timer = self.reactor.callLater(self.settings.sync_timeout, self._timed_out, where, seq, d)
        self.waiters.setdefault(where, []).append((seq, d, timer))
        self.wake()
        return d

    def _no_follower(self, why: str) -> defer.Deferred[Any] | None:
        if self.settings.on_timeout == "tempfail":
            return defer.fail(ReplicaTimeout(f"sync replication: {why}"))
        if self.degraded is None:
            log.error("replication: sync mode DEGRADED to async (%s)", why)
            self.degraded = why
        return None

    def _timed_out(self, where: str, seq: int, d: defer.Deferred[Any]) -> None:
        entries = self.waiters.get(where, [])
        self.waiters[where] = [e for e in entries if e[1] is not d]
        if self.settings.on_timeout == "tempfail":
            d.errback(ReplicaTimeout(f"sync replication: the follower did not confirm {where} "
                                     f"record {seq} within {self.settings.sync_timeout:g} s"))
            return
        if self.degraded is None:
            log.error("replication: sync mode DEGRADED to async (follower did not confirm in "
                      "%g s)", self.settings.sync_timeout)
            self.degraded = "the follower did not confirm in time"
        d.callback(None)

    def acked(self, session: LeaderSession) -> None:
        for where, entries in list(self.waiters.items()):
            pos = self._acked_position(where)
            ready = [e for e in entries if e[0] <= pos]
            if not ready:
                continue
            self.waiters[where] = [e for e in entries if e[0] > pos]
            for _, d, timer in ready:
                if timer.active():
                    timer.cancel()
                d.callback(None)

    # -- state and status ---------------------------------------------------------------

    def _positions(self) -> dict[str, int]:
        return {where: log_.position() for where, log_ in self.store.replication_logs().items()}

    def _poll_state(self) -> None:
        """Promotion by `maild replica promote` (another process) takes effect here."""
        state = redo.read_state(self.store.data_dir)
        if self.role == "follower" and state.get("role") == "leader":
            log.warning("replication: PROMOTED to leader, epoch %s", state.get("epoch"))
            self.store.repl_role = "leader"
            self.store.repl_epoch = int(state["epoch"])
            if self.follower is not None:
                self.follower.transport.loseConnection()
            if self._reconnect is not None and self._reconnect.active():
                self._reconnect.cancel()
            self.store.set_fence(state.get("fenced"))
            if not self.ports and self.settings.listen:
                self._listen()
            self._became_leader()

    def status(self) -> dict[str, Any]:
        now = time.time()
        envs: dict[str, dict[str, Any]] = {}
        for where, log_ in self.store.replication_logs().items():
            pos = log_.position()
            row: dict[str, Any] = {"position": pos}
            if self.role == "leader":
                followers = [s.acked.get(where, 0) for s in self.sessions if s.sent]
                row["follower"] = max(followers, default=None)
                row["lag_records"] = None if not followers else pos - max(followers)
                if followers:
                    row["lag_bytes"], row["lag_seconds"] = log_.lag(max(followers))
            else:
                row["applied_at"] = self.applied_at.get(where)
                if where in self.copying:
                    row["snapshot_bytes"] = self.copying[where]
                if where in self.auto_resync:
                    row["auto_resync_from"] = self.auto_resync[where]
            envs[where] = row
        lag: dict[str, float] = {}
        if len(self.lags) >= 2:
            cuts = statistics.quantiles(self.lags, n=100)
            lag = {"apply_lag_p50_ms": cuts[49] * 1000, "apply_lag_p99_ms": cuts[98] * 1000}
        return {**lag, "pid": os.getpid(), "time": now, "role": self.role, "epoch": self.epoch,
                "mode": self.settings.mode, "fenced": self.store.repl_fence,
                "degraded": self.degraded, "problem": self.problem,
                "peers": [s.peer for s in self.sessions if s.sent] if self.role == "leader" else
                ([self.follower.peer] if self.follower is not None else []),
                "environments": envs}

    def _write_status(self) -> None:
        path = self.store.data_dir / STATUS_FILE
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(self.status(), sort_keys=True))
            os.replace(tmp, path)
        except OSError as exc:  # status is best effort; the disk may be full
            log.debug("replication status not written: %s", exc)
