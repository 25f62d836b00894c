"""Prometheus metrics: one registry, the metrics an administrator alerts on, and one-line
hooks for every layer (docs/operations.md lists them with example alert rules).

Any module may count (this is the base layer); the daemon serves ``REGISTRY`` at
``/metrics`` on ``[metrics] listen``. Label values come from small fixed sets (protocol,
command names the parser accepted, reasons from :func:`smtp_reason`, filter class names):
never an address, a user name or a client-supplied string, so the series stay bounded.
Counting costs a dictionary lookup and a lock: cheap enough for every command.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SLOW = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

SESSIONS = Counter("maild_sessions", "Sessions opened, by protocol", ["protocol"], registry=REGISTRY)
SMTP_ACCEPTED = Counter("maild_smtp_messages_accepted", "Messages accepted (250 after DATA/BDAT)",
                        ["service"], registry=REGISTRY)
SMTP_REJECTED = Counter("maild_smtp_rejections", "SMTP 4xx/5xx replies, by reason and class",
                        ["service", "reason", "kind"], registry=REGISTRY)
OUTBOUND = Counter("maild_outbound_deliveries", "Outbound delivery attempts per recipient, by result",
                   ["result"], registry=REGISTRY)
COMMANDS = Histogram("maild_command_duration_seconds", "IMAP and POP3 commands, by name: latency",
                     ["protocol", "command"], buckets=_FAST, registry=REGISTRY)
AUTH_FAILURES = Counter("maild_auth_failures", "Failed logins (wrong password or unknown user)",
                        registry=REGISTRY)
COMMIT_SECONDS = Histogram("maild_store_commit_duration_seconds",
                           "Store group commits (write transaction and fsync), by environment kind",
                           ["environment"], buckets=_FAST, registry=REGISTRY)
COMMIT_BATCH = Histogram("maild_store_commit_batch_size", "Operations per store group commit",
                         ["environment"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
                         registry=REGISTRY)
FILTER_SECONDS = Histogram("maild_filter_duration_seconds", "SMTP filter hooks, by filter and phase",
                           ["filter", "phase"], buckets=_SLOW, registry=REGISTRY)
# With several worker processes (PROMETHEUS_MULTIPROC_DIR set by the supervisor) every
# process writes its values to a file there and the scrape sums counters and histograms
# over them; a gauge says how its values combine (ignored in a single process): the queue
# gauges are set at scrape time by the process that serves /metrics, the start time by each.
QUEUE_ENTRIES = Gauge("maild_queue_entries", "Outbound queue entries", registry=REGISTRY,
                      multiprocess_mode="mostrecent")
QUEUE_OLDEST = Gauge("maild_queue_oldest_age_seconds", "Age of the oldest outbound queue entry",
                     registry=REGISTRY, multiprocess_mode="mostrecent")
UP_SINCE = Gauge("maild_start_time_seconds", "When this daemon started (Unix time)", registry=REGISTRY,
                 multiprocess_mode="min")

_REASONS = (  # (substring of the reply text, lower-case, or enhanced code prefix) -> reason
    ("virus", "virus"), ("spam", "spam"), ("dmarc", "dmarc"), ("spf", "spf"), ("rate limit", "rate"),
    ("too many connections", "connections"), ("relay", "relay"), ("attachment", "attachment"),
    ("mime part", "malformed"),
)
_CODES = (("5.3.4", "size"), ("5.2.3", "size"), ("5.7.0", "auth"), ("5.7.8", "auth"), ("5.1.1", "unknown_user"),
          ("5.2.2", "quota"), ("4.3.1", "storage"), ("5.6.", "malformed"), ("5.5.", "syntax"),
          ("4.7.24", "spf"), ("5.7.1", "policy"), ("4.7.", "policy"), ("4.4.2", "timeout"),
          ("4.3.2", "shutdown"))


def smtp_reason(code: int, enhanced: str, text: str) -> str:
    """A bounded reason for an SMTP refusal, from its enhanced code and text."""
    lowered = text.lower()
    for needle, reason in _REASONS:
        if needle in lowered:
            return reason
    for prefix, reason in _CODES:
        if enhanced.startswith(prefix):
            return reason
    return "other"


def smtp_reply(service: str, code: int, enhanced: str, text: str) -> None:
    """Count one SMTP reply if it refuses something (4xx, 5xx)."""
    if code >= 400:
        SMTP_REJECTED.labels(service, smtp_reason(code, enhanced, text),
                             "permanent" if code >= 500 else "temporary").inc()


_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])


_CHILDREN: dict[tuple[Any, tuple[str, ...]], Any] = {}


def child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, looked up once per process: ``labels()`` takes a lock
    and, with several worker processes, opens the series' shared file entry (~5 us a call,
    on the path of every command and filter hook)."""
    key = (metric, labels)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN[key] = metric.labels(*labels)
    return found


def timed_command(protocol: str) -> Callable[[_F], _F]:
    """Decorate a session's ``async def execute(self, cmd)``: its latency by command name."""

    series: dict[Any, Any] = {}  # the command's name (IMAP) or class (POP3) -> its series

    def wrap(execute: _F) -> _F:
        @functools.wraps(execute)
        async def timed(self: Any, cmd: Any, *args: Any) -> Any:
            started = time.monotonic()
            try:
                return await execute(self, cmd, *args)
            finally:
                key = getattr(cmd, "name", None) or type(cmd)
                found = series.get(key)
                if found is None:
                    name = str(getattr(cmd, "name", type(cmd).__name__)).upper()[:32]
                    found = series[key] = child(COMMANDS, protocol, name)
                found.observe(time.monotonic() - started)
        return timed  # type: ignore[return-value]
    return wrap


def timed_commit(commit: Callable[[Any, list[Any]], None]) -> Callable[[Any, list[Any]], None]:
    """Decorate a store writer's ``_commit(self, items)``: latency and batch size."""
    @functools.wraps(commit)
    def timed(self: Any, items: list[Any]) -> None:
        started = time.monotonic()
        commit(self, items)
        kind = "shard" if str(getattr(self, "name", "")).startswith("shard") else "directory"
        child(COMMIT_SECONDS, kind).observe(time.monotonic() - started)
        child(COMMIT_BATCH, kind).observe(len(items))
    return timed
