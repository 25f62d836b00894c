"""The replication wire protocol, version 1: length-prefixed frames over TLS
(docs/replication.md has the full description).

Frame: ``u32 length | u8 type | payload`` (length counts the type and the payload, at most
:data:`MAX_FRAME`). Control frames carry a JSON object; record and blob frames are binary:

- ``H`` hello (both sides, first): {"version", "epoch", "role", "nonce"}
- ``A`` auth: {"mac"}: HMAC-SHA256 of the shared secret over both nonces and the sender's
  side, proving the secret without sending it
- ``S`` subscribe (follower): {"positions": {environment: [position, epoch at it]}}
- ``R`` record (leader): ``u8 n | environment (n octets) | u64 seq | record`` (store/redo.py)
- ``F`` fetch (follower): {"env", "sha"}: a body file it lacks
- ``B`` blob chunk (leader): ``u8 n | environment | 32 octets sha | u8 last | data``;
  a chunk with last=2 says the leader no longer has that file
- ``K`` ack (follower): {"positions": {environment: position applied and fsynced}}
- ``N`` snapshot begin (leader): {"env", "position", "epoch"}: for a follower that
  subscribed at -1 (empty, or an unfinished copy)
- ``D`` snapshot data (leader): ``u8 n | environment | chunk`` (a redo record of puts)
- ``Z`` snapshot end (leader): {"env", "position", "epoch"}; records after it follow
- ``V`` verify: {} (a client) asks for the leader's content digest; the leader answers
  one ``V`` {"user", "boxes"} per user, then ``V`` {"domains", "aliases"}
- ``P`` ping / ``Q`` pong: {} (liveness; either side drops a silent peer)
- ``E`` error: {"code", "text"}; the connection closes after it

Every frame is checked against its size limit before its payload is buffered, so a peer
cannot make the other side hold more than one frame.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from collections.abc import Callable
from typing import Any

from twisted.internet import protocol

VERSION = 1
MAX_FRAME = 64 * 1024 * 1024 + 4096  # a record of a batch of large inline bodies, at most
BLOB_CHUNK = 256 * 1024
_LEN = struct.Struct(">I")
_SEQ = struct.Struct(">Q")

HELLO, AUTH, SUBSCRIBE, RECORD, FETCH, BLOB, ACK, PING, PONG, ERROR = (
    b"H", b"A", b"S", b"R", b"F", b"B", b"K", b"P", b"Q", b"E")
SNAP_BEGIN, SNAP_DATA, SNAP_END = b"N", b"D", b"Z"
VERIFY = b"V"


class ProtocolError(Exception):
    """The peer broke the protocol; the text is safe to log."""


def frame(kind: bytes, payload: bytes) -> bytes:
    return _LEN.pack(len(payload) + 1) + kind + payload


def control(kind: bytes, body: dict[str, Any]) -> bytes:
    return frame(kind, json.dumps(body, separators=(",", ":")).encode())


def record_frame(where: str, seq: int, record: bytes) -> bytes:
    name = where.encode()
    return frame(RECORD, bytes((len(name),)) + name + _SEQ.pack(seq) + record)


def parse_record(payload: bytes) -> tuple[str, int, bytes]:
    n = payload[0]
    where = payload[1:1 + n].decode()
    (seq,) = _SEQ.unpack_from(payload, 1 + n)
    return where, seq, payload[9 + n:]


def env_frame(kind: bytes, where: str, data: bytes) -> bytes:
    name = where.encode()
    return frame(kind, bytes((len(name),)) + name + data)


def parse_env(payload: bytes) -> tuple[str, bytes]:
    n = payload[0]
    return payload[1:1 + n].decode(), payload[1 + n:]


def blob_frame(where: str, sha: str, last: int, data: bytes) -> bytes:
    name = where.encode()
    return frame(BLOB, bytes((len(name),)) + name + bytes.fromhex(sha) + bytes((last,)) + data)


def parse_blob(payload: bytes) -> tuple[str, str, int, bytes]:
    n = payload[0]
    where = payload[1:1 + n].decode()
    sha = payload[1 + n:33 + n].hex()
    return where, sha, payload[33 + n], payload[34 + n:]


def mac(secret: bytes, side: str, mine: str, theirs: str) -> str:
    """What ``side`` ("leader", "follower") sends to prove the secret."""
    return hmac.new(secret, f"maild-replication 1 {side} {mine} {theirs}".encode(),
                    hashlib.sha256).hexdigest()


class FrameProtocol(protocol.Protocol):
    """Splits the stream into frames and hands each to :meth:`frame_received`."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.on_frame: Callable[[bytes, bytes], None] | None = None

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= 4:
            (length,) = _LEN.unpack_from(self._buffer)
            if length < 1 or length > MAX_FRAME:
                self.protocol_error("frame size out of range")
                return
            if len(self._buffer) < 4 + length:
                return
            kind = bytes(self._buffer[4:5])
            payload = bytes(self._buffer[5:4 + length])
            del self._buffer[:4 + length]
            try:
                self.frame_received(kind, payload)
            except (ProtocolError, ValueError, KeyError, IndexError, struct.error) as exc:
                self.protocol_error(f"bad frame {kind!r}: {exc}")
                return
            if self.transport is None or getattr(self, "closed", False):
                return

    def frame_received(self, kind: bytes, payload: bytes) -> None:
        raise NotImplementedError

    def protocol_error(self, text: str) -> None:
        raise NotImplementedError

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


def load_json(payload: bytes) -> dict[str, Any]:
    body = json.loads(payload)
    if not isinstance(body, dict):
        raise ProtocolError("expected a JSON object")
    return body
