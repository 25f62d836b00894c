"""Only an authenticated follower is streamed to: the replication port over TLS refuses a
peer that skips or fails the shared-secret proof, or whose certificate is not pinned."""

from __future__ import annotations

import json
import socket
import ssl
import struct
import time
from collections.abc import Callable

from maild.replication import wire
from tests.replication.conftest import Pair, send


def _connect(port: int) -> ssl.SSLSocket:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return context.wrap_socket(sock)


def _frames(sock: ssl.SSLSocket) -> list[tuple[bytes, bytes]]:
    """Frames until the leader closes (or 10 s of silence)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionError, ssl.SSLError):
        pass
    out = []
    while len(data) >= 4:
        (length,) = struct.unpack(">I", data[:4])
        out.append((data[4:5], data[5:4 + length]))
        data = data[4 + length:]
    return out


def _hello() -> bytes:
    return wire.control(wire.HELLO, {"version": 1, "epoch": 1, "role": "follower", "nonce": "00" * 16})


def test_unauthenticated_peers_get_nothing(pair_factory: Callable[..., Pair]) -> None:
    pair = pair_factory()
    send(pair.leader, 2, "secret")
    subscribe = wire.control(wire.SUBSCRIBE, {"positions": {"directory": [0, 0]}})
    # no proof at all: straight to SUBSCRIBE
    with _connect(pair.port) as sock:
        sock.sendall(_hello() + subscribe)
        frames = _frames(sock)
    kinds = [k for k, _ in frames]
    assert kinds == [wire.HELLO, wire.ERROR], kinds
    assert json.loads(frames[-1][1])["code"] == "auth"
    # a wrong proof
    with _connect(pair.port) as sock:
        sock.sendall(_hello() + wire.control(wire.AUTH, {"mac": "0" * 64}) + subscribe)
        frames = _frames(sock)
    assert [k for k, _ in frames] == [wire.HELLO, wire.ERROR]
    assert b"secret body" not in b"".join(p for _, p in frames)
    # not TLS at all: the handshake fails, nothing is read
    with socket.create_connection(("127.0.0.1", pair.port), timeout=10) as plain:
        plain.sendall(_hello())
        try:
            assert wire.HELLO not in plain.recv(65536)
        except ConnectionError:
            pass


def test_follower_with_the_wrong_secret_is_refused(pair_factory: Callable[..., Pair], tmp_path) -> None:  # type: ignore[no-untyped-def]
    wrong = tmp_path / "wrong.secret"
    wrong.write_text("not the shared secret at all\n")
    pair = pair_factory(follower={"secret_file": str(wrong)})
    send(pair.leader, 1, "x")
    time.sleep(3)
    assert all(p == 0 for p in pair.positions(pair.follower).values())
    assert "wrong shared-secret proof" in pair.leader.log()


def test_pinned_certificate_required(pair_factory: Callable[..., Pair], tls_files) -> None:  # type: ignore[no-untyped-def]
    cert = ssl.PEM_cert_to_DER_cert(tls_files[0].read_text().split("-----END CERTIFICATE-----")[0]
                                    + "-----END CERTIFICATE-----\n")
    import hashlib
    fingerprint = hashlib.sha256(cert).hexdigest()
    pair = pair_factory(leader={"peer_fingerprints": [fingerprint]},
                        follower={"peer_fingerprints": [fingerprint]})
    sent = send(pair.leader, 3, "pinned")
    pair.wait_caught_up()  # both present the pinned certificate
    assert len(sent) == 3
    with _connect(pair.port) as sock:  # no client certificate: refused before any HELLO
        sock.sendall(_hello())
        frames = _frames(sock)
    assert [k for k, _ in frames] == [wire.ERROR]
    assert "not pinned" in json.loads(frames[0][1])["text"] or \
        "no certificate" in json.loads(frames[0][1])["text"]
