"""`maild replica verify`: compare this node's content with the leader's, over the
replication connection (the same TLS and peer authentication), or with another data
directory on this machine.

Content compared: domains, aliases, and per user and mailbox the uid list, flags, modseq
and the sha256 of each message as served. The leader computes its digest in a thread and
sends it one user per frame, so neither side holds more than one user's digest from the
wire (each side's own digest is built in memory: ~100 octets per message).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import socket
import struct
from typing import Any

from OpenSSL import SSL

from maild.config import Config, parse_address
from maild.replication import peer, wire
from maild.store import Store

TIMEOUT = 600.0  # seconds for each read: the leader hashes every message first


def user_digest(store: Store, address: str) -> dict[str, Any]:
    boxes: dict[str, Any] = {}
    for mailbox in store.mailboxes(address):
        boxes[mailbox.name] = [
            [meta.uid, sorted(meta.flags), meta.modseq,
             hashlib.sha256(store.read(address, mailbox.id, meta.uid)).hexdigest()]
            for meta in store.messages(address, mailbox.id)]
    return boxes


def digest(store: Store) -> dict[str, Any]:
    """Per user and mailbox: uid list, flags, modseq and body sha256 of every message; and
    the directory's domains and aliases."""
    return {"domains": sorted(d.name for d in store.domains()),
            "aliases": [[a, sorted(t)] for a, t in sorted(store.aliases())],
            "users": {user.address: user_digest(store, user.address) for user in store.users()}}


def differences(mine: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """One line per difference between two digests."""
    lines = []
    for key in ("domains", "aliases"):
        if mine[key] != theirs[key]:
            lines.append(f"{key}: here {mine[key]}, there {theirs[key]}")
    for user in sorted(set(mine["users"]) | set(theirs["users"])):
        a, b = mine["users"].get(user), theirs["users"].get(user)
        if a is None or b is None:
            lines.append(f"{user}: only {'there' if a is None else 'here'}")
            continue
        for box in sorted(set(a) | set(b)):
            x, y = a.get(box), b.get(box)
            if x is None or y is None:
                lines.append(f"{user} {box}: only {'there' if x is None else 'here'}")
                continue
            xs, ys = {m[0]: m for m in x}, {m[0]: m for m in y}
            for uid in sorted(set(xs) | set(ys)):
                if xs.get(uid) != ys.get(uid):
                    lines.append(f"{user} {box} uid {uid}: here {xs.get(uid)}, there {ys.get(uid)}")
    return lines


class _Client:
    """A blocking replication client for the CLI: TLS, the peer checks, one request."""

    def __init__(self, config: Config) -> None:
        self.auth = peer.load(config.replication)
        address = parse_address(config.replication.leader, "replication.leader")
        context = peer.ContextFactory(config.tls, server=False).getContext()
        sock = socket.create_connection((address.host, address.port), timeout=30)
        # pyOpenSSL needs a blocking socket; the kernel bounds every wait instead
        sock.setblocking(True)
        limit = struct.pack("ll", int(TIMEOUT), 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, limit)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, limit)
        self.conn = SSL.Connection(context, sock)
        self.conn.set_connect_state()
        self.conn.do_handshake()
        self.buffer = b""
        cert = self.conn.get_peer_certificate()
        if self.auth.fingerprints:
            got = "" if cert is None else cert.digest("sha256").decode().replace(":", "").lower()
            if got not in self.auth.fingerprints:
                raise wire.ProtocolError("the leader's certificate is not pinned")
        binding = bytes(self.conn.export_keying_material(peer.EXPORTER_LABEL, 32)).hex()
        nonce = secrets.token_hex(16)
        self.conn.sendall(wire.control(wire.HELLO, {"version": wire.VERSION, "epoch": 0,
                                                    "role": "follower", "nonce": nonce}))
        kind, payload = self.read()
        if kind != wire.HELLO:
            raise wire.ProtocolError(f"expected the leader's hello, got {kind!r}")
        theirs = str(wire.load_json(payload)["nonce"])
        if self.auth.secret is not None:
            self.conn.sendall(wire.control(wire.AUTH, {"mac": self.auth.proof("follower", nonce, theirs, binding)}))
            kind, payload = self.read()
            if kind != wire.AUTH or not self.auth.verify("leader", theirs, nonce, binding,
                                                         str(wire.load_json(payload).get("mac", ""))):
                raise wire.ProtocolError("the leader did not prove the shared secret")

    def read(self) -> tuple[bytes, bytes]:
        while True:
            if len(self.buffer) >= 4:
                length = int.from_bytes(self.buffer[:4], "big")
                if not 1 <= length <= wire.MAX_FRAME:
                    raise wire.ProtocolError("frame size out of range")
                if len(self.buffer) >= 4 + length:
                    kind, payload = self.buffer[4:5], self.buffer[5:4 + length]
                    self.buffer = self.buffer[4 + length:]
                    if kind == wire.ERROR:
                        raise wire.ProtocolError(str(wire.load_json(payload).get("text")))
                    if kind in (wire.PING, wire.PONG):
                        continue
                    return kind, payload
            try:
                data = self.conn.recv(65536)
            except SSL.ZeroReturnError:
                data = b""
            if not data:
                raise wire.ProtocolError("the leader closed the connection")
            self.buffer += data

    def close(self) -> None:
        try:
            self.conn.shutdown()
        except SSL.Error:
            pass
        self.conn.close()


def against_leader(config: Config, store: Store) -> list[str]:
    """Differences between this node's store and its leader's (replication.leader)."""
    client = _Client(config)
    try:
        client.conn.sendall(wire.control(wire.VERIFY, {}))
        theirs: dict[str, Any] = {"users": {}}
        while True:
            kind, payload = client.read()
            if kind != wire.VERIFY:
                raise wire.ProtocolError(f"unexpected frame {kind!r}")
            body = json.loads(payload)
            if "user" in body:
                theirs["users"][body["user"]] = body["boxes"]
            else:
                theirs["domains"], theirs["aliases"] = body["domains"], body["aliases"]
                break
    finally:
        client.close()
    return differences(digest(store), theirs)
