"""SMTP ingest into the store: messages/s and latency from end of data to 250.

20 concurrent sessions send 2000 messages of 5 KB, then 1000 of 100 KB, to one local user
over the MX port of a throwaway `maild serve` (bench.peers.Maild), once with a new
connection per message and once over reused connections. The latency client is asyncio (it times each final dot to
its 250); when Postfix's `smtp-source` is installed its throughput for the same workloads
is reported too (C, so the load generator is never the limit).

    python -m bench --only smtp        # through `make bench`
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import time
from typing import Any

from bench import load
from bench.peers import Maild, make_users

SMTP_SOURCE = shutil.which("smtp-source") or shutil.which("/usr/sbin/smtp-source")
SESSIONS = 20
# (message size, messages in the full run, in the quick run)
WORKLOADS = ((5 * 1024, 2000, 400), (100 * 1024, 1000, 100))
DISTINCT = 100  # message bodies made before the clock starts; each copy gets its own header


class _Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, host: str, port: int) -> _Client:
        reader, writer = await asyncio.open_connection(host, port)
        client = cls(reader, writer)
        await client.expect(220)
        client.writer.write(b"EHLO load.example.org\r\n")
        await client.expect(250)
        return client

    async def expect(self, code: int) -> None:
        while True:
            line = await self.reader.readline()
            if not line:
                raise load.LoadError("server closed the connection")
            if line[3:4] != b"-":
                break
        if int(line[:3]) != code:
            raise load.LoadError(f"expected {code}, got {line!r}")

    async def send(self, sender: str, rcpt: str, body: bytes) -> float:
        """One pipelined transaction; returns seconds from the final dot to the 250."""
        self.writer.write(f"MAIL FROM:<{sender}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode())
        for code in (250, 250, 354):
            await self.expect(code)
        self.writer.write(body + b".\r\n")
        sent = time.perf_counter()
        await self.expect(250)
        return time.perf_counter() - sent

    async def quit(self) -> None:
        self.writer.write(b"QUIT\r\n")
        await self.expect(221)
        self.writer.close()
        await self.writer.wait_closed()


async def _drive(host: str, port: int, rcpt: str, messages: int, size: int,
                 reuse: bool) -> tuple[float, list[float]]:
    """(elapsed seconds, per-message latencies) for SESSIONS workers sharing `messages`."""
    counter = iter(range(messages))
    latencies: list[float] = []
    bodies = [load.message(i, size, rcpt).replace(b"\r\n.", b"\r\n..") for i in range(DISTINCT)]

    async def worker() -> None:
        client = await _Client.connect(host, port) if reuse else None
        for i in counter:
            body = f"X-Bench-Seq: {i}\r\n".encode() + bodies[i % DISTINCT]
            if client is None:
                one = await _Client.connect(host, port)
                latencies.append(await one.send("sender@example.org", rcpt, body))
                await one.quit()
            else:
                latencies.append(await client.send("sender@example.org", rcpt, body))
        if client is not None:
            await client.quit()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(SESSIONS)))
    return time.perf_counter() - start, latencies


def _row(workload: str, messages: int, elapsed: float, latencies: list[float] | None) -> dict[str, Any]:
    row: dict[str, Any] = {"workload": workload, "msgs/s": messages / elapsed}
    if latencies:
        cuts = statistics.quantiles(latencies, n=100)
        row["p50 ms"] = cuts[49] * 1000
        row["p99 ms"] = cuts[98] * 1000
    return row


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Rows: workload, msgs/s, p50 ms, p99 ms (end of data to 250)."""
    users, hashes = make_users(1, prefix="ingest")
    rcpt = next(iter(users))
    rows: list[dict[str, Any]] = []
    with Maild(users, hashes) as server:
        port = server.ports["smtp"]
        for size, full, small in WORKLOADS:
            messages = small if quick else full
            what = f"{SESSIONS} sessions, {messages} x {size // 1024} KB"
            for reuse in (False, True):
                mode = "reused connections" if reuse else "new connection per message"
                elapsed, latencies = asyncio.run(_drive(server.host, port, rcpt, messages, size, reuse))
                rows.append(_row(f"SMTP ingest (asyncio client), {what}, {mode}", messages, elapsed,
                                 latencies))
            if SMTP_SOURCE:
                for reuse in (False, True):
                    mode = "reused connections" if reuse else "new connection per message"
                    elapsed = _smtp_source(server.host, port, rcpt, messages, size, reuse)
                    rows.append(_row(f"SMTP ingest (smtp-source), {what}, {mode}", messages, elapsed,
                                     None))
    return rows


def _smtp_source(host: str, port: int, rcpt: str, messages: int, size: int, reuse: bool) -> float:
    """smtp-source; -d keeps each session's connection for its next message."""
    args = [SMTP_SOURCE, "-s", str(SESSIONS), "-m", str(messages), "-l", str(size),
            "-f", "sender@example.org", "-t", rcpt, "-M", "load.example.org"]
    if reuse:
        args.append("-d")
    start = time.perf_counter()
    result = subprocess.run([*args, f"{host}:{port}"], capture_output=True, text=True,
                            timeout=load.TIMEOUT)
    if result.returncode != 0:
        raise load.LoadError(f"smtp-source exited {result.returncode}: {result.stdout}{result.stderr}")
    return time.perf_counter() - start
