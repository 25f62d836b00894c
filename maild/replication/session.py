"""One replication connection, either side: TLS handshake, peer authentication, then the
leader streams records and the follower applies them (wire.py has the frames).

Implementation notes (invariants):
- Nothing but HELLO and AUTH is accepted before the peer is authenticated (pinned
  certificate and/or shared-secret proof bound to the TLS channel); anything else closes.
- Every wait has a deadline: the handshake and authentication (AUTH_TIMEOUT), and silence
  of the peer ([replication] peer_timeout, with a PING every quarter of it), so a stalled or cut
  connection is dropped and the follower reconnects by itself.
- Leader memory per follower is bounded: records, snapshot items and body files are read
  in slices of at most SLICE_BYTES / BLOB_CHUNK, only while the TLS transport has not asked
  us to pause (producer); at most MAX_FETCHES body-file requests are queued.
- Follower memory is bounded: reading pauses while more than MAX_PENDING records or
  MAX_PENDING_BYTES wait to be applied; blob files are written to disk chunk by chunk.
- The follower applies each environment's records in order, through the store (one
  transaction per batch, the position in the same transaction), and acknowledges a
  position only after the commit (fsync) that holds it.
- A snapshot replaces a follower environment that holds data only when the follower
  offered it (copy_if_behind: it never led, redo.never_led) and the leader found the
  follower's position before its log with the epoch of its oldest record (a prefix of
  its history); any other follower the log no longer reaches is refused ("resync").
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.internet import threads
from twisted.internet.interfaces import IHandshakeListener, IPushProducer
from zope.interface import implementer

from maild.replication import verify, wire
from maild.store import redo
from maild.store.blobs import StagedBlob
from maild.util.transport import ConnectionTransport

if TYPE_CHECKING:
    from maild.replication.service import ReplicationService

log = logging.getLogger(__name__)

AUTH_TIMEOUT = 15.0
SLICE_BYTES = 256 * 1024
MAX_PENDING = 2000
MAX_PENDING_BYTES = 32 * 1024 * 1024
MAX_INFLIGHT = 512  # records handed to the store's writers and not yet committed
MAX_FETCHES = 256  # body-file requests a leader queues for one follower


@implementer(IHandshakeListener)
class Session(wire.FrameProtocol):
    """What both sides share: handshake, authentication, liveness."""

    transport: ConnectionTransport

    side = ""  # "leader" or "follower"

    def __init__(self, service: ReplicationService) -> None:
        super().__init__()
        self.service = service
        self.reactor = service.reactor
        self.nonce = secrets.token_hex(16)
        # [replication] peer_timeout: silence this long drops the peer; PINGs keep it talking.
        self.idle_timeout = service.settings.peer_timeout
        self.peer_nonce = ""
        self.peer_epoch = 0
        self.authenticated = False
        self.closed = False
        self.peer = "?"
        self._deadline: Any = None
        self._idle: Any = None
        self._ping: Any = None
        self.binding = ""

    # -- connection --------------------------------------------------------------------

    def connectionMade(self) -> None:
        address = self.transport.getPeer()
        self.peer = f"{getattr(address, 'host', '?')}:{getattr(address, 'port', '?')}"
        self._deadline = self.reactor.callLater(AUTH_TIMEOUT, self.abort, "authentication timed out")
        self._idle = self.reactor.callLater(self.idle_timeout, self.abort, "peer silent")
        self.transport.write(b"")  # starts the TLS handshake from the client side

    def handshakeCompleted(self) -> None:
        problem = self.service.auth.check_certificate(self.transport)
        if problem:
            self.fail("auth", f"peer refused: {problem}")
            return
        self.binding = self.service.auth.binding(self.transport)
        self.send(wire.control(wire.HELLO, {"version": wire.VERSION, "epoch": self.service.epoch,
                                            "role": self.side, "nonce": self.nonce}))

    def dataReceived(self, data: bytes) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.reset(self.idle_timeout)
        super().dataReceived(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.closed = True
        for call in (self._deadline, self._idle, self._ping):
            if call is not None and call.active():
                call.cancel()
        self.lost()

    def lost(self) -> None:
        pass

    def abort(self, why: str) -> None:
        if self.closed:
            return
        log.warning("replication %s %s: %s; dropping the connection", self.side, self.peer, why)
        self.closed = True
        self.transport.abortConnection()

    def fail(self, code: str, text: str) -> None:
        """Tell the peer why, then close."""
        if self.closed:
            return
        log.warning("replication %s %s: %s", self.side, self.peer, text)
        self.send(wire.control(wire.ERROR, {"code": code, "text": text}))
        self.closed = True
        self.transport.loseConnection()

    def protocol_error(self, text: str) -> None:
        self.fail("protocol", text)

    # -- frames ------------------------------------------------------------------------

    def frame_received(self, kind: bytes, payload: bytes) -> None:
        if kind == wire.ERROR:
            body = wire.load_json(payload)
            self.peer_error(str(body.get("code")), str(body.get("text"))[:300])
            self.closed = True
            self.transport.loseConnection()
            return
        if kind == wire.HELLO and not self.peer_nonce:
            body = wire.load_json(payload)
            if body.get("version") != wire.VERSION:
                self.fail("version", f"protocol version {body.get('version')!r} is not {wire.VERSION}")
                return
            if body.get("role") == self.side:
                self.fail("role", f"both ends are {self.side}s")
                return
            self.peer_nonce = str(body["nonce"])
            self.peer_epoch = int(body["epoch"])
            if not self.check_epoch():
                return
            if self.service.auth.secret is None:
                self._authenticated()
            elif self.side == "follower":  # the follower proves first: the leader answers
                self._prove()                # nobody with a proof of its own before that
            return
        if kind == wire.AUTH and self.peer_nonce and not self.authenticated \
                and self.service.auth.secret is not None:
            body = wire.load_json(payload)
            peer_side = "follower" if self.side == "leader" else "leader"
            if not self.service.auth.verify(peer_side, self.peer_nonce, self.nonce, self.binding,
                                            str(body.get("mac", ""))):
                self.fail("auth", "peer refused: wrong shared-secret proof")
                return
            if self.side == "leader":
                self._prove()
            self._authenticated()
            return
        if not self.authenticated:
            self.fail("auth", "peer refused: not authenticated")
            return
        if kind == wire.PING:
            self.send(wire.frame(wire.PONG, b"{}"))
        elif kind == wire.PONG:
            pass
        else:
            self.frame(kind, payload)

    def _prove(self) -> None:
        self.send(wire.control(wire.AUTH, {"mac": self.service.auth.proof(
            self.side, self.nonce, self.peer_nonce, self.binding)}))

    def _authenticated(self) -> None:
        self.authenticated = True
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._ping = self.reactor.callLater(self.idle_timeout / 4, self._send_ping)
        log.info("replication %s: peer %s authenticated (epoch %d)", self.side, self.peer, self.peer_epoch)
        self.ready()

    def _send_ping(self) -> None:
        if not self.closed:
            self.send(wire.frame(wire.PING, b"{}"))
            self._ping = self.reactor.callLater(self.idle_timeout / 4, self._send_ping)

    def check_epoch(self) -> bool:
        return True

    def ready(self) -> None:
        raise NotImplementedError

    def frame(self, kind: bytes, payload: bytes) -> None:
        raise NotImplementedError

    def peer_error(self, code: str, text: str) -> None:
        log.warning("replication %s: peer %s refused: %s (%s)", self.side, self.peer, text, code)


@implementer(IPushProducer)
class LeaderSession(Session):
    """The leader's end of one follower's connection."""

    side = "leader"

    def __init__(self, service: ReplicationService) -> None:
        super().__init__(service)
        self.sent: dict[str, int] = {}
        self.acked: dict[str, int] = {}
        self.fetches: deque[tuple[str, str]] = deque()  # body files asked for, in order
        self._blob: Any = None  # the one being sent
        # environment -> [read transaction, its items, position, epoch] of a snapshot being
        # sent (None: not begun); its records follow once it is complete
        self.snapshots: dict[str, list[Any] | None] = {}
        self.paused = False
        self._pumping = False

    def check_epoch(self) -> bool:
        if self.peer_epoch > self.service.epoch:
            # A follower from a newer epoch: another node was promoted after us. We are a
            # stale leader: take no more writes (fencing), and say so.
            self.service.fence(f"met epoch {self.peer_epoch} (ours {self.service.epoch}) from {self.peer}")
            self.fail("fenced", f"this leader's epoch {self.service.epoch} is older than {self.peer_epoch}")
            return False
        return True

    def ready(self) -> None:
        self.transport.registerProducer(self, True)

    def peer_error(self, code: str, text: str) -> None:
        super().peer_error(code, text)
        if code == "fenced":
            self.service.fence(f"a follower says: {text}")

    def lost(self) -> None:
        if self._blob is not None:
            self._blob.close()
        for snap in self.snapshots.values():
            if snap is not None:
                snap[0].abort()
        self.snapshots.clear()
        self.service.session_gone(self)

    def frame(self, kind: bytes, payload: bytes) -> None:
        if kind == wire.SUBSCRIBE and not self.sent:
            body = wire.load_json(payload)
            logs = self.service.store.replication_logs()
            positions = {str(k): v for k, v in dict(body["positions"]).items()}
            for where, log_ in logs.items():
                pos, epoch = positions.get(where, [0, 0])
                pos, epoch = int(pos), int(epoch)
                problem = self.service.divergence(log_, pos, epoch)
                if problem is not None and problem[0] == "resync" and body.get("copy_if_behind") \
                        and self.service.behind_on_our_history(log_, pos, epoch):
                    # Further behind than our log reaches, its data a prefix of our
                    # history, and it never led: it takes a copy (automatic resync).
                    log.warning("replication leader: follower %s is at %s record %d, before "
                                "our log (retain exceeded): sending it a snapshot", self.peer, where, pos)
                    pos, problem = -1, None
                if problem is not None:
                    self.fail(problem[0], f"{where}: {problem[1]}")
                    return
                if pos < 0:  # the follower needs a copy first
                    self.snapshots[where] = None
                    pos = 0
                self.sent[where] = pos
                self.acked[where] = pos
            self.service.session_ready(self)
            self.pump()
        elif kind == wire.ACK:
            body = wire.load_json(payload)
            for where, pos in dict(body["positions"]).items():
                if where in self.acked:
                    self.acked[where] = max(self.acked[where], int(pos))
            self.service.acked(self)
        elif kind == wire.VERIFY and not self.sent:
            d = threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                          verify.digest, self.service.store)
            d.addCallbacks(self._send_digest, lambda f: self.fail("verify", "digest failed"))
        elif kind == wire.FETCH:
            body = wire.load_json(payload)
            if len(self.fetches) >= MAX_FETCHES:
                self.fail("protocol", "too many body files asked for at once")
                return
            self.fetches.append((str(body["env"]), str(body["sha"])))
            self.pump()
        else:
            self.fail("protocol", f"unexpected frame {kind!r}")

    def _send_digest(self, digest: dict[str, Any]) -> None:
        if self.closed:
            return
        for user, boxes in digest["users"].items():
            self.send(wire.control(wire.VERIFY, {"user": user, "boxes": boxes}))
        self.send(wire.control(wire.VERIFY, {"domains": digest["domains"], "aliases": digest["aliases"]}))
        self.transport.loseConnection()

    def _send_blobs(self, budget: int) -> int:
        """Body files the follower asked for, a chunk at a time while not paused (a copy's
        files may be many and large: they are never buffered whole)."""
        while self.fetches and not self.paused and not self.closed and budget > 0:
            where, sha = self.fetches[0]
            if self._blob is None:
                try:
                    self._blob = open(self.service.store.blob_dir(where).path(sha), "rb")
                except (OSError, KeyError, IndexError, ValueError):
                    self.send(wire.blob_frame(where, sha, 2, b""))  # gone meanwhile
                    self.fetches.popleft()
                    continue
            chunk = self._blob.read(wire.BLOB_CHUNK)
            last = len(chunk) < wire.BLOB_CHUNK
            self.send(wire.blob_frame(where, sha, 1 if last else 0, chunk))
            budget -= len(chunk) + 64
            if last:
                self._blob.close()
                self._blob = None
                self.fetches.popleft()
        return budget

    def pump(self) -> None:
        """Send what the follower has not seen, a slice at a time, while not paused."""
        if self._pumping or self.closed or not self.sent:
            return
        self._pumping = True
        try:
            budget = self._send_blobs(4 * SLICE_BYTES)
            for where, log_ in self.service.store.replication_logs().items():
                if where in self.snapshots:
                    budget = self._snapshot_slice(where, log_, budget)
                    if where in self.snapshots:
                        continue
                while not self.paused and not self.closed and budget > 0:
                    records = log_.records(self.sent[where], SLICE_BYTES, 256)
                    if not records:
                        break
                    if records[0][0] != self.sent[where] + 1:
                        self.fail("resync", f"{where}: the log no longer holds record "
                                            f"{self.sent[where] + 1} (retain exceeded)")
                        return
                    for seq, record in records:
                        self.send(wire.record_frame(where, seq, record))
                        budget -= len(record)
                    self.sent[where] = records[-1][0]
            if budget <= 0 and not self.paused and not self.closed:
                self.reactor.callLater(0, self.pump)  # more to send: let the reactor breathe
        finally:
            self._pumping = False

    def _snapshot_slice(self, where: str, log_: redo.RedoLog, budget: int) -> int:
        """Send the next chunks of ``where``'s snapshot: one read transaction (a consistent
        copy at one position, taken without stopping writes) read a slice at a time."""
        snap = self.snapshots[where]
        if snap is None:
            txn = log_.env.begin()
            position = log_.last(txn)
            epoch = log_.epoch_at(position) or self.service.epoch if position else self.service.epoch
            snap = self.snapshots[where] = [txn, log_.items(txn), position, epoch]
            log.info("replication leader: snapshot of %s at %d for %s", where, position, self.peer)
            self.send(wire.control(wire.SNAP_BEGIN, {"env": where, "position": position, "epoch": epoch}))
        txn, items, position, epoch = snap
        while not self.paused and not self.closed and budget > 0:
            ops: list[redo.Op] = []
            size = 0
            for name, key, value in items:
                ops.append((redo.PUT, name, key, value))
                size += len(key) + len(value) + 16
                if size >= SLICE_BYTES:
                    break
            if ops:
                self.send(wire.env_frame(wire.SNAP_DATA, where, redo.encode(epoch, ops)))
                budget -= size
            if size < SLICE_BYTES:  # the items are exhausted
                txn.abort()
                del self.snapshots[where]
                self.send(wire.control(wire.SNAP_END, {"env": where, "position": position, "epoch": epoch}))
                self.sent[where] = position
                break
        return budget

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.reactor.callLater(0, self.pump)

    def stopProducing(self) -> None:
        self.closed = True


class FollowerSession(Session):
    """The follower's connection to its leader."""

    side = "follower"

    def __init__(self, service: ReplicationService, probe: bool = False) -> None:
        super().__init__(service)
        # A promoted leader calls its old leader now and then only to show it the new
        # epoch (fencing); it never subscribes.
        self.probe = probe
        self.pending: deque[tuple[bytes, str, int, bytes]] = deque()  # (frame type, env, seq, payload)
        self._snap_after: bytes | None = b""  # where the scan for a snapshot's body files goes on
        self.pending_bytes = 0
        self.inflight = 0
        self.reading_paused = False
        self.waiting_blobs: dict[tuple[str, str], Any] = {}  # (env, sha) -> open file
        self.staged: list[StagedBlob] = []
        self.blocked = False  # the head record waits for blob files
        self.fetched = False  # the head record's blob files were fetched (or found gone)
        self.applied: dict[str, int] = {}
        self._ack_scheduled = False
        self.last_seq: dict[str, int] = {}
        self.copy_if_behind = False  # offered in SUBSCRIBE: a copy may replace our data

    def check_epoch(self) -> bool:
        if self.probe:
            self.closed = True
            self.transport.loseConnection()
            return False
        if self.peer_epoch < self.service.epoch:
            self.fail("fenced", f"leader epoch {self.peer_epoch} is older than ours ({self.service.epoch}): "
                                "a newer leader was promoted; this one must not take writes")
            return False
        return True

    def ready(self) -> None:
        self.service.adopt_epoch(self.peer_epoch)
        positions = {}
        self.copy_if_behind = redo.never_led(redo.read_state(self.service.store.data_dir))
        for where, log_ in self.service.store.replication_logs().items():
            pos = -1 if log_.needs_snapshot() else log_.position()
            positions[where] = [pos, log_.epoch_at(pos) or 0 if pos > 0 else 0]
            self.last_seq[where] = pos
            self.applied[where] = max(pos, 0)
        self.send(wire.control(wire.SUBSCRIBE, {"positions": positions,
                                                "copy_if_behind": self.copy_if_behind}))
        self.service.follower_connected(self)

    def lost(self) -> None:
        if self.probe:
            return
        for fh in self.waiting_blobs.values():
            fh.close()
            Path(fh.name).unlink(missing_ok=True)
        self.waiting_blobs.clear()
        for staged in self.staged:
            if staged.path is not None:
                staged.path.unlink(missing_ok=True)
        self.service.follower_gone(self)

    def peer_error(self, code: str, text: str) -> None:
        if self.probe:
            return
        super().peer_error(code, text)
        self.service.leader_refused(code, text)

    def frame(self, kind: bytes, payload: bytes) -> None:
        if kind == wire.RECORD:
            where, seq, record = wire.parse_record(payload)
            if self.last_seq.get(where, -1) < 0 or seq != self.last_seq[where] + 1:
                self.fail("protocol", f"{where}: record {seq} out of order")
                return
            self.last_seq[where] = seq
            self._queue(wire.RECORD, where, seq, record)
        elif kind == wire.SNAP_DATA:
            where, chunk = wire.parse_env(payload)
            self._queue(kind, where, 0, chunk)
        elif kind in (wire.SNAP_BEGIN, wire.SNAP_END):
            body = wire.load_json(payload)
            where, position = str(body["env"]), int(body["position"])
            if self.last_seq.get(where, 0) >= 0:  # a copy is sent only to one that asked
                if kind == wire.SNAP_BEGIN and self.copy_if_behind and where in self.last_seq:
                    # We offered it (never led: our data is only what leaders sent us) and
                    # the leader no longer holds the records after our position.
                    log.warning("replication follower: %s at record %d is behind the leader's "
                                "retained log (retain exceeded); this node never led, so it "
                                "replaces it with a snapshot copy automatically", where, self.last_seq[where])
                    self.service.auto_resync[where] = self.last_seq[where]
                    self.last_seq[where] = -1
                else:
                    self.fail("protocol", f"{where}: snapshot not asked for")
                    return
            if kind == wire.SNAP_END:
                self.last_seq[where] = position
            self._queue(kind, where, position, str(int(body["epoch"])).encode())
        elif kind == wire.BLOB:
            where, sha, last, data = wire.parse_blob(payload)
            fh = self.waiting_blobs.get((where, sha))
            if fh is None:
                self.fail("protocol", "blob not asked for")
                return
            if last == 2:  # the leader no longer has it: a later record drops the reference
                fh.close()
                Path(fh.name).unlink(missing_ok=True)
                del self.waiting_blobs[(where, sha)]
            else:
                fh.write(data)
                if last:
                    fh.flush()
                    os.fsync(fh.fileno())
                    fh.close()
                    del self.waiting_blobs[(where, sha)]
                    staged = self.service.store.stage_blob_file(Path(fh.name))
                    if staged.sha != sha:
                        Path(fh.name).unlink(missing_ok=True)
                        self.fail("protocol", f"blob {sha[:12]}... arrived damaged")
                        return
                    self.staged.append(staged)
            if not self.waiting_blobs:
                self.blocked = False
                self.fetched = True
                self.advance()
        else:
            self.fail("protocol", f"unexpected frame {kind!r}")

    def _queue(self, kind: bytes, where: str, seq: int, payload: bytes) -> None:
        self.pending.append((kind, where, seq, payload))
        self.pending_bytes += len(payload)
        if (len(self.pending) > MAX_PENDING or self.pending_bytes > MAX_PENDING_BYTES) \
                and not self.reading_paused:
            self.reading_paused = True
            self.transport.pauseProducing()
        self.advance()

    def _fetch(self, where: str, shas: list[str]) -> None:
        """Ask for body files; the head of the queue waits until they are here."""
        self.blocked = True
        for sha in shas:
            tmp = self.service.store.tmp_dir / f"repl-{sha}-{secrets.token_hex(4)}"
            self.waiting_blobs[(where, sha)] = open(tmp, "wb")
            self.send(wire.control(wire.FETCH, {"env": where, "sha": sha}))

    def advance(self) -> None:
        """Hand records and snapshot steps to the store in order; stop at one whose body
        files must come first."""
        store = self.service.store
        while self.pending and not self.blocked and not self.closed and self.inflight < MAX_INFLIGHT:
            kind, where, seq, payload = self.pending[0]
            if kind == wire.RECORD and not self.fetched:
                try:
                    ops = redo.decode(payload)
                except redo.RecordError as exc:
                    self.fail("protocol", str(exc))
                    return
                missing = [sha for sha in redo.blobs_referenced(ops) if not store.has_blob(where, sha)]
                if missing:
                    self._fetch(where, missing)
                    return
            if kind == wire.SNAP_END and not self._snapshot_blobs(where):
                return
            self.fetched = False
            self.pending.popleft()
            self.pending_bytes -= len(payload)
            staged, self.staged = tuple(self.staged), []
            self.inflight += 1
            if kind == wire.RECORD:
                d = store.apply_replicated(where, seq, payload, staged)
                d.addCallback(self._note_lag, where, redo.header(payload)[1])
            elif kind == wire.SNAP_BEGIN:
                log.info("replication follower: copying a snapshot of %s at %d", where, seq)
                d = store.apply_snapshot(where, "begin")
                seq = 0
            elif kind == wire.SNAP_DATA:
                d = store.apply_snapshot(where, "put", payload)
                d.addCallback(self.service.snapshot_progress, where, len(payload))
            else:
                d = store.apply_snapshot(where, "end", position=seq, epoch=int(payload), blobs=staged)
                d.addCallback(self.service.snapshot_progress, where, -1)
                self._snap_after = b""
            d.addCallbacks(self._applied, self._apply_failed, callbackArgs=(where, seq, staged),
                           errbackArgs=(where, seq, staged))
        if self.reading_paused and len(self.pending) < MAX_PENDING // 2 \
                and self.pending_bytes < MAX_PENDING_BYTES // 2 and not self.closed:
            self.reading_paused = False
            self.transport.resumeProducing()

    def _snapshot_blobs(self, where: str) -> bool:
        """At a snapshot's end: fetch the body files its references need, a batch at a
        time, linking each batch; True when none is missing any more."""
        if self.inflight:
            return False  # the copy so far must be committed before it is scanned
        store = self.service.store
        if self.fetched and self.staged:  # a batch arrived: link it, then look further
            staged, self.staged = tuple(self.staged), []
            self.fetched = False
            self.inflight += 1
            store.apply_snapshot(where, "link", blobs=staged).addCallbacks(
                self._applied, self._apply_failed, callbackArgs=(where, 0, staged),
                errbackArgs=(where, 0, staged))
            return False
        self.fetched = False
        log_ = store.replication_logs()[where]
        while self._snap_after is not None:
            shas, self._snap_after = log_.unbacked_blobs(self._snap_after)
            missing = [sha for sha in shas if not store.blob_dir(where).path(sha).exists()]
            if missing:
                self._fetch(where, missing)
                return False
        return True

    def _note_lag(self, count: int, where: str, committed: float) -> int:
        """Seconds from the leader's commit to ours (both clocks: NTP keeps them close)."""
        self.service.lags.append(max(0.0, time.time() - committed))
        return count

    def _applied(self, _count: int, where: str, seq: int, staged: tuple[StagedBlob, ...]) -> None:
        self.inflight -= 1
        for blob in staged:
            if blob.path is not None:
                blob.path.unlink(missing_ok=True)
        if seq:
            self.applied[where] = max(self.applied.get(where, 0), seq)
            self.service.applied(where, seq)
        if not self._ack_scheduled and not self.closed:
            self._ack_scheduled = True
            self.reactor.callLater(0, self._ack)
        self.advance()

    def _apply_failed(self, failure: Any, where: str, seq: int, staged: tuple[StagedBlob, ...]) -> None:
        self.inflight -= 1
        for blob in staged:
            if blob.path is not None:
                blob.path.unlink(missing_ok=True)
        log.error("replication: applying %s record %d failed: %s", where, seq, failure.getErrorMessage())
        self.abort("apply failed; reconnecting from the applied position")

    def _ack(self) -> None:
        self._ack_scheduled = False
        if not self.closed:
            self.send(wire.control(wire.ACK, {"positions": self.applied}))
