"""A connection that is cut or stalls mid-stream (a TCP proxy between the nodes) recovers by
itself: the follower drops a silent leader, reconnects and resumes from its position."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

from tests.fixtures.ports import free_port
from tests.replication.conftest import Pair, send


class Proxy:
    """127.0.0.1:port -> 127.0.0.1:upstream, with cut() and stall() of the connections so far."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.links: list[tuple[socket.socket, socket.socket, threading.Event]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
            except OSError:
                client.close()
                continue
            flowing = threading.Event()
            flowing.set()
            with self.lock:
                self.links.append((client, server, flowing))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b, flowing), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, flowing: threading.Event) -> None:
        try:
            while data := src.recv(65536):
                flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        with self.lock:
            links, self.links = self.links, []
        for client, server, _ in links:
            for s in (client, server):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def stall(self) -> None:
        """The connections so far stop carrying data, without closing (a dead path)."""
        with self.lock:
            links, self.links = self.links, []
        for _, _, flowing in links:
            flowing.clear()

    def close(self) -> None:
        self.listener.close()
        self.cut()


def test_cut_and_stalled_connections_recover(pair_factory: Callable[..., Pair]) -> None:
    leader_port = free_port()
    proxy = Proxy(leader_port)
    try:
        # A short [replication] peer_timeout on both sides: the stall is noticed in seconds.
        pair = pair_factory(leader={"peer_timeout": 3.0}, follower={"peer_timeout": 3.0},
                            leader_port=leader_port, listen_port=proxy.port)
        send(pair.leader, 5, "before")
        pair.wait_caught_up()
        proxy.cut()
        send(pair.leader, 5, "after cut")
        pair.wait_caught_up()
        proxy.stall()
        send(pair.leader, 5, "after stall")
        pair.wait_caught_up(timeout=60)  # the silent peer is dropped after peer_timeout
        assert "peer silent" in pair.follower.log() or "peer silent" in pair.leader.log()
        result = pair.follower.cli("replica", "verify", str(pair.leader.config_path))
        assert result.returncode == 0, result.stdout
    finally:
        proxy.close()
