"""The one TOML configuration file, parsed into typed, validated values.

This module is the single source of truth for every configuration key: its type (the
annotation), default, bounds and one-line documentation are declared once, in the
dataclasses below. From that declaration:

- :func:`load` / :func:`from_dict` validate a file and report *every* mistake at once, one
  line each naming the file and the dotted key, e.g.
  ``etc/maild.toml: imap.listen[0]: port 99999 out of range 1-65535``;
- :func:`render_example` writes etc/maild.toml (``maild config-example > etc/maild.toml``),
  and tests/test_config.py fails when the file and the declaration disagree.

Validation happens before anything touches the data directory.

Adding a key
------------
1. Add one line to the section's dataclass::

       max_foo: int = key(10, "what it limits, in which unit; 0: what zero means", positive=True)

   ``key(default, doc, ...)`` takes the bounds: ``positive=True`` (> 0), ``low=``/``high=``
   (an inclusive range), ``choices=(...)`` for strings, ``check=`` a function returning an
   error text or None; ``example=`` a value (as written in TOML) that etc/maild.toml shows
   instead of the default, ``commented=True`` to show the line commented out. Integers and
   numbers are never negative. The doc is one line: the file shows it as the key's comment.
2. Run ``maild config-example > etc/maild.toml`` and commit both.

A new section is a dataclass of keys plus a field of :class:`Config` made with
``section(doc)``; sections appear in etc/maild.toml in the order of Config's fields.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import tomllib
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(Exception):
    """One or more configuration problems; str() is one line per problem, for the operator."""

    def __init__(self, *errors: str) -> None:
        super().__init__("\n".join(errors))
        self.errors = list(errors)


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


# -- the declaration helpers -----------------------------------------------------------------

_UNSET: Any = object()


@dataclass(frozen=True)
class KeySpec:
    """What :func:`key` records in a dataclass field's metadata."""

    doc: str
    positive: bool = False
    low: float | None = None  # low and high together: an inclusive range
    high: float | None = None
    choices: tuple[str, ...] = ()
    check: Callable[[Any], str | None] | None = None
    example: object = _UNSET  # in TOML form: str, int, float, bool, or lists of those
    commented: bool = False


def key(default: T, doc: str, *, positive: bool = False, low: float | None = None,
        high: float | None = None, choices: Sequence[str] = (),
        check: Callable[[Any], str | None] | None = None, example: object = _UNSET,
        commented: bool = False) -> T:
    """One configuration key: its default and everything the file and the checks need."""
    spec = KeySpec(doc, positive, low, high, tuple(choices), check, example, commented)
    if isinstance(default, list):
        items = list(default)
        made: Any = field(default_factory=lambda: list(items), metadata={"key": spec})
    else:
        made = field(default=default, metadata={"key": spec})
    return typing.cast(T, made)


def required(doc: str, example: object) -> dict[str, KeySpec]:
    """The field metadata of a top-level key without a default (the file must set it)."""
    return {"key": KeySpec(doc, example=example)}


@dataclass(frozen=True)
class SectionSpec:
    doc: str
    examples: dict[str, object]  # key -> value etc/maild.toml shows instead of the default
    only: tuple[str, ...] | None = None  # keys etc/maild.toml lists (the rest: see ``note``)
    note: str = ""  # a comment line after the section's keys


def section(cls: type[T], doc: str, *, only: Sequence[str] | None = None, note: str = "",
            **examples: object) -> T:
    spec = SectionSpec(doc, examples, tuple(only) if only is not None else None, note)
    return field(default_factory=cls, metadata={"section": spec})


def _http_url(value: str) -> str | None:
    return None if value.startswith(("http://", "https://")) else f"expected an http:// URL, got {value!r}"


def _clamd_address(value: str) -> str | None:
    if value.startswith("/"):
        return None
    try:
        parse_address(value, "")
    except ConfigError as exc:
        return str(exc).removeprefix(": ")
    return None


# -- the declaration -------------------------------------------------------------------------

@dataclass(frozen=True)
class Listeners:
    listen: list[Address] = key([], '"host:port" list: plain listeners (STARTTLS offered where the protocol has it)')
    tls_listen: list[Address] = key([], '"host:port" list: implicit-TLS listeners')

    @property
    def enabled(self) -> bool:
        return bool(self.listen or self.tls_listen)


@dataclass(frozen=True)
class SmtpConfig(Listeners):
    max_message_size: int = key(25 * 1024 * 1024, "bytes, advertised as SIZE (RFC 1870); 552 5.3.4 above",
                                positive=True)
    max_recipients: int = key(100, "per message; 452 4.5.3 above", positive=True)
    # RFC 5321 §4.5.3.1.6, including CRLF
    max_line_length: int = key(1000, "octets with CRLF (RFC 5321 §4.5.3.1.6); 550 5.6.0 above", positive=True)
    max_connections: int = key(500, "in total", positive=True)
    max_connections_per_ip: int = key(20, "from one client address", positive=True)
    messages_per_minute_per_ip: int = key(
        120, "token bucket taken at MAIL FROM; 451 4.7.1 when empty; 0: unlimited")
    messages_per_minute_per_user: int = key(
        120, "the same per authenticated user (submission); 0: unlimited")
    command_timeout: float = key(300.0, "seconds (RFC 5321 §4.5.3.2.7)")
    data_timeout: float = key(600.0, "seconds without data inside DATA (RFC 5321 §4.5.3.2.6)")
    max_bad_commands: int = key(20, "then 421 and disconnect")
    allow_plaintext_auth_on_loopback: bool = key(
        False, "submission: offer AUTH without TLS to 127.0.0.0/8 and ::1 (tests, dev)")
    reject_unauthenticated_local_sender: bool = key(
        True, "MX: MAIL FROM in one of our domains from an unauthenticated client needs SPF pass (550 5.7.1)")


@dataclass(frozen=True)
class ImapConfig(Listeners):
    append_limit: int = key(50 * 1024 * 1024, "bytes (RFC 7889 APPENDLIMIT); larger literals refused unread",
                            positive=True)
    max_line_length: int = key(64 * 1024, "octets of a command line outside literals", positive=True)
    max_command_size: int = key(1024 * 1024, "octets of a whole non-APPEND command, literals included",
                                positive=True)
    max_connections: int = key(2000, "in total", positive=True)
    max_connections_per_ip: int = key(50, "from one client address", positive=True)
    autologout_authenticated: float = key(30 * 60.0, "seconds (RFC 3501 §5.4: at least 30 minutes)")
    autologout_unauthenticated: float = key(60.0, "seconds before LOGIN/AUTHENTICATE")
    max_bad_commands: int = key(20, "in a row; then * BYE and close", positive=True)
    allow_plaintext_auth_on_loopback: bool = key(False, "LOGIN without TLS from 127.0.0.0/8 and ::1 (tests, dev)")
    fetch_cache_mb: int = key(96, "MB of ENVELOPE, BODYSTRUCTURE and header fields kept for repeat FETCHes "
                                  "(another device, a resync; Thunderbird's header fields of a 100,000-message "
                                  "folder take ~55 MB); 0: none (docs/imap.md)")
    response_cache_mb: int = key(32, "MB of formatted FETCH lines of whole mailboxes (the flag resync every client "
                                     "runs: ~40 octets a message) reused until a mailbox changes, then brought "
                                     "forward; 0: none (docs/imap.md)", low=0)
    sort_cache_mb: int = key(16, "MB of SORT keys, sorted orders (~35 octets a message) and THREAD facts "
                                 "kept for a webmail's every page; 0: none (docs/imap.md)")
    sent_copy_window: float = key(600.0, "seconds: an APPEND to Sent of what submission filed this recently is "
                                         "answered with that copy, not stored again (docs/imap.md)")


@dataclass(frozen=True)
class Pop3Config(Listeners):
    max_connections: int = key(500, "both listeners together; more get -ERR [SYS/TEMP] and are closed",
                               positive=True)
    max_connections_per_ip: int = key(20, "from one client address", positive=True)
    idle_timeout: float = key(600.0, "seconds (RFC 1939 §3: at least 10 minutes); closes without deleting")
    max_bad_commands: int = key(20, "in a row; then -ERR and close", positive=True)
    mark_seen_on_retr: bool = key(True, "RETR sets \\Seen, as Dovecot does (TOP never does)")
    allow_plaintext_auth_on_loopback: bool = key(
        False, "USER/PASS/AUTH without TLS from 127.0.0.0/8 and ::1 (tests, dev)")


@dataclass(frozen=True)
class ApiConfig(Listeners):
    max_body_size: int = key(1024 * 1024, "bytes of a JSON request body; 413 above", positive=True)
    max_send_size: int = key(25 * 1024 * 1024, "bytes of a message sent with POST /v1/messages (JSON or "
                                                "multipart, attachments included); 413 above", positive=True)
    request_timeout: float = key(60.0, "seconds a connection may stay idle or a request take to arrive",
                                 positive=True)
    requests_per_minute_per_token: int = key(600, "token bucket per token; 429 with Retry-After when empty; "
                                                  "0: unlimited")
    requests_per_minute_per_ip: int = key(1200, "token bucket per client address; 0: unlimited")
    page_size_max: int = key(200, "most messages one page of a listing or search returns", positive=True)
    max_connections: int = key(10_000, "HTTP and WebSocket connections in total; more are closed at accept",
                               positive=True)
    max_connections_per_ip: int = key(500, "from one client address", positive=True)
    cors_origins: list[str] = key([], 'origins allowed by CORS, e.g. ["https://mail.example.org"]; '
                                      'empty: no CORS headers (browsers refuse cross-origin calls)')
    events_max_wait: float = key(60.0, "seconds a long-poll GET /v1/events may wait for a change",
                                 positive=True)
    token_max_days: float = key(365.0, "days a token from POST /v1/tokens may live at most; 0: no limit")
    webhooks_per_user: int = key(10, "webhooks a user may register (POST /v1/webhooks); 0: no webhooks")
    webhook_timeout: float = key(10.0, "seconds a webhook receiver has to answer; then the event is retried",
                                 positive=True)
    webhook_allow_private: bool = key(False, "let webhooks reach loopback, private and reserved addresses "
                                             "(tests; a trusted internal receiver)")


# Mozilla's "intermediate" profile (v5.7): forward secrecy and AEAD ciphers only, for TLS
# 1.2; TLS 1.3's suites are all of that kind and always on.
INTERMEDIATE_CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                        "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                        "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
                        "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305")
TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")


@dataclass(frozen=True)
class TlsConfig:
    cert_file: Path | None = key(None, "PEM; intermediates may follow the leaf certificate",
                                 example="var/tls/cert.pem")
    key_file: Path | None = key(None, "PEM private key of cert_file", example="var/tls/key.pem")
    min_version: str = key("TLSv1.2", "the oldest TLS version accepted", choices=TLS_VERSIONS)
    ciphers: str = key(INTERMEDIATE_CIPHERS, "OpenSSL cipher string for TLS 1.2 (Mozilla 'intermediate': "
                                             "forward secrecy, AEAD); TLS 1.3 suites are always on")
    handshake_timeout: float = key(20.0, "seconds from accept (or STARTTLS) to a finished handshake; "
                                         "then the connection is closed", positive=True)


@dataclass(frozen=True)
class DnsConfig:
    nameservers: list[Address] = key([], '"host:port" list; empty: the system resolver (/etc/resolv.conf)')
    timeout: float = key(5.0, "seconds per query; a timeout is a temporary error (4xx), never pass/fail")


@dataclass(frozen=True)
class StoreConfig:
    shards: int = key(4, "LMDB environments for user partitions; fixed once data exists (docs/performance.md)",
                      positive=True)
    map_size_mb: int = key(64 * 1024, "per shard; sparse, but fixed up front (growing a map in use is "
                                      "unsafe, docs/storage.md)", positive=True)
    directory_map_size_mb: int = key(4 * 1024, "the directory environment (users, domains, queue)",
                                     positive=True)
    group_commit: bool = key(True, "many writes share one fsync; false: one fsync per write")
    max_batch: int = key(256, "writes per group commit at most", positive=True)
    shared_meta_sync: bool = key(True, "commit holding LMDB's write lock for one fsync, and fsync the "
                                       "meta page after it, one fsync shared by the commits of every "
                                       "worker, before acknowledging (MDB_NOMETASYNC); false: both "
                                       "inside the lock (docs/storage.md)")
    default_quota_mb: int = key(0, "for new users; 0: unlimited")
    inline_body_max: int = key(32 * 1024, "bytes: smaller bodies live in the shard's LMDB (one fsync per "
                                          "batch); larger ones are content-addressed files shared by hard links")
    orphan_sweep_age: float = key(3600.0, "seconds: unreferenced blob files older than this are removed at "
                                          "start-up and every 6 hours (docs/reliability.md)", positive=True)
    changes_kept: int = key(200_000, "change-log records kept per shard for any consumer (docs/storage.md)",
                            positive=True)
    changes_retained: int = key(2_000_000, "change-log records per shard kept at most for a named cursor "
                                           "behind; further behind it resyncs (docs/storage.md)", positive=True)
    mailbox_index_mb: int = key(64, "MB per shard of packed per-mailbox columns (uid, modseq, flags, size: "
                                    "32 octets a message) kept for SELECT, FETCH and STATUS of large "
                                    "mailboxes; 0: none (docs/performance.md)", low=0)


def _host_port(text: str) -> str | None:
    try:
        parse_address(text, "")
    except ConfigError:
        return f'expected "host:port", got {text!r}'
    return None


@dataclass(frozen=True)
class ReplicationConfig:
    role: str = key("standalone", "standalone (no replication), leader (takes writes, streams them) or "
                                  "follower (applies them, serves reads)",
                    choices=("standalone", "leader", "follower"))
    listen: list[Address] = key([], '"host:port" list: where a leader takes followers (TLS only)',
                                example=["192.0.2.1:7025"], commented=True)
    leader: str = key("", '"host:port" a follower connects to', check=_host_port,
                      example="192.0.2.1:7025", commented=True)
    mode: str = key("async", "async: acknowledge after the local fsync; sync: after the follower's too",
                    choices=("async", "sync"))
    sync_timeout: float = key(5.0, "seconds a sync-mode acknowledgement waits for the follower",
                              positive=True)
    on_timeout: str = key("degrade", "sync mode, follower too slow or away: degrade (go on "
                                     "asynchronously, logged and shown in status) or tempfail (4xx/NO)",
                          choices=("degrade", "tempfail"))
    peer_timeout: float = key(20.0, "seconds without a byte from the peer before the connection is "
                                    "dropped and reopened (a PING goes every quarter of it)",
                              low=1.0, high=3600.0)
    retain: int = key(100_000, "log records (one per group commit, small bodies inline) kept per "
                               "environment for a follower that is away; further behind: `maild replica resync`",
                      positive=True)
    secret_file: Path | None = key(None, "file holding a shared secret both nodes prove (HMAC) over TLS",
                                   example="/etc/maild/replication.secret", commented=True)
    peer_fingerprints: list[str] = key([], "SHA-256 fingerprints of the peer's [tls] certificate "
                                           "(mutual TLS, pinned); with secret_file both are required",
                                       example=["ab:cd:..."], commented=True)


@dataclass(frozen=True)
class ServerConfig:
    shutdown_grace: float = key(10.0, "seconds in-flight commands get on SIGTERM to finish and be answered",
                                positive=True)
    workers: int = key(0, "worker processes sharing the listeners and the store (docs/architecture.md); "
                          "0: one per CPU core, 1: a single process, no supervisor", low=0, high=256)


@dataclass(frozen=True)
class MetricsConfig:
    listen: list[Address] = key([], '"host:port" list: plain HTTP serving Prometheus /metrics, no '
                                "authentication (loopback or a firewalled address)",
                                example=["127.0.0.1:9153"], commented=True)


@dataclass(frozen=True)
class AuthConfig:
    """The auth penalty (docs/security.md): a delay before verifying, never a lockout."""

    failure_delay: float = key(1.0, "seconds of penalty after a failed login; doubles per failure from one IP")
    max_failure_delay: float = key(30.0, "seconds: the longest such delay")
    account_free_failures: int = key(10, "failures of one account (from any IP) before it gets its own delay")
    max_pending_per_ip: int = key(8, "login attempts from one IP queued at once; more fail at once", positive=True)


# Windows executables, scripts, installers, shortcuts and disk images a double-click runs
# or mounts (the lists of Microsoft 365's common attachment filter and Gmail, in short).
BLOCKED_EXTENSIONS = (
    "exe", "scr", "com", "pif", "cpl", "msi", "msp", "msc", "hta", "lnk", "reg", "inf",
    "bat", "cmd", "ps1", "psm1", "vb", "vbs", "vbe", "js", "jse", "ws", "wsf", "wsc", "wsh",
    "jar", "appx", "appxbundle", "msix", "application", "gadget", "iso", "img", "vhd", "vhdx",
)


@dataclass(frozen=True)
class FiltersConfig:
    """Content filters (docs/filters.md). An empty address disables that engine."""

    clamd: str = key("", 'ClamAV clamd: a unix socket (Debian\'s) or "127.0.0.1:3310"; unset: no virus scan',
                     check=_clamd_address, example="/run/clamav/clamd.ctl", commented=True)
    clamd_timeout: float = key(30.0, "seconds for one scan, connecting included", positive=True)
    clamd_max_size: int = key(25 * 1024 * 1024, "bytes; larger messages are not scanned (tagged X-Virus-Scan); "
                                                "keep <= clamd's StreamMaxLength", positive=True)
    clamd_on_error: str = key("tempfail", 'clamd down or timing out: "tempfail" (451 4.7.1) or "accept" '
                                          "(tagged X-Virus-Scan: failed)", choices=("tempfail", "accept"))
    rspamd_url: str = key("", "rspamd normal worker; unset: the built-in fallback scorer", check=_http_url,
                          example="http://127.0.0.1:11333", commented=True)
    rspamd_controller_url: str = key("", "rspamd controller: moves into/out of Junk train spam/ham; "
                                         "unset: no training", check=_http_url,
                                     example="http://127.0.0.1:11334", commented=True)
    rspamd_password: str = key("", "controller password, if it asks for one (not needed from its secure_ip)",
                               example="...", commented=True)
    rspamd_timeout: float = key(15.0, "seconds for one check", positive=True)
    rspamd_on_error: str = key("fallback", 'rspamd down or timing out: "fallback" (built-in scorer), '
                                           '"tempfail" (451 4.7.1) or "accept"',
                               choices=("fallback", "tempfail", "accept"))
    fallback_junk_score: float = key(5.0, "built-in scorer: at this score deliver to Junk")
    fallback_reject_score: float = key(15.0, "built-in scorer: at this score refuse with 550 5.7.1")
    dnsbl_zones: list[str] = key([], 'built-in scorer: DNS blocklists to query for the client IP, '
                                     'e.g. ["zen.spamhaus.org"]')
    dnsbl_score: float = key(4.0, "built-in scorer: added per zone listing the client IP")
    blocked_extensions: list[str] = key(list(BLOCKED_EXTENSIONS),
                                        "attachments refused with 554 5.7.1")
    scan_zip: bool = key(True, "check the names inside zip attachments (nested too) against blocked_extensions")


@dataclass(frozen=True)
class MailauthConfig:
    """Mail authentication (docs/dns.md): SPF, DKIM, DMARC, ARC inbound; DKIM signing."""

    verify: bool = key(True, "check SPF/DKIM/DMARC/ARC on inbound [smtp] mail; add one Authentication-Results")
    sign: bool = key(True, "DKIM-sign [submission] mail with the From domain's keys (rsa + ed25519)")
    enforce_dmarc: bool = key(True, "p=reject: 550 5.7.1 at end of DATA; p=quarantine: deliver to Junk; "
                                    "false: only record")
    dmarc_reports: bool = key(True, "keep aggregate-report rows in data_dir/dmarc/YYYY-MM-DD.jsonl")
    dmarc_policy: str = key("quarantine", "the p= that `maild domain dns` prints for our domains: "
                                          "none, quarantine, reject",
                            choices=("none", "quarantine", "reject"))


TLS_POLICIES = ("none", "opportunistic", "required")


@dataclass(frozen=True)
class OutboundConfig:
    """The outbound queue (docs/outbound.md): MX delivery, retries, bounces, TLS policy."""

    port: int = key(25, "destination port of every MX (change only for tests)", low=1, high=65535)
    poll_interval: float = key(1.0, "seconds between scans of the queue for due entries", positive=True)
    retry_min: float = key(300.0, "seconds before the first retry; doubles after every failed attempt",
                           positive=True)
    retry_max: float = key(4 * 3600.0, "seconds: the longest wait between two attempts (4 h)", positive=True)
    max_age: float = key(5 * 86400.0, "seconds (5 days): the first failure after this age bounces "
                                      "(DSN to the sender)")
    delay_warning: float = key(4 * 3600.0, 'seconds: one "delayed" DSN to the sender after this age (4 h); '
                                           "0: never")
    max_connections: int = key(20, "deliveries in flight at once", positive=True)
    max_per_domain: int = key(4, "deliveries in flight to one destination domain", positive=True)
    connect_timeout: float = key(30.0, "seconds to connect to one MX address")
    command_timeout: float = key(300.0, "seconds to wait for each reply (RFC 5321 §4.5.3.2)")
    data_timeout: float = key(600.0, 'seconds to wait for the reply to the final "." (RFC 5321 §4.5.3.2.6)')
    tls_policy: str = key("opportunistic", 'STARTTLS: "opportunistic" (whenever offered), "required" '
                                           '(defer if not offered), "none"', choices=TLS_POLICIES)
    tls_required_domains: list[str] = key([], 'destination domains that get tls_policy "required", '
                                              'e.g. ["bank.example"]')
    tls_disabled_domains: list[str] = key([], 'destination domains that get tls_policy "none" '
                                              "(broken TLS at their end)")

    def tls_policy_for(self, domain: str) -> str:
        domain = domain.lower()
        if domain in (d.lower() for d in self.tls_required_domains):
            return "required"
        if domain in (d.lower() for d in self.tls_disabled_domains):
            return "none"
        return self.tls_policy


@dataclass(frozen=True)
class SearchConfig:
    enabled: bool = key(True, "keep a full-text index per shard in data_dir/search (docs/search.md); "
                              "false: SEARCH BODY/TEXT/HEADER read every message")
    writer_memory_mb: int = key(64, "tantivy's indexing memory per shard writer, in MB", low=16, high=4096)
    batch: int = key(1000, "change records (and, rebuilding, messages) per index commit", positive=True)
    poll_interval: float = key(0.5, "seconds between looks at the change logs when nothing woke the "
                                    "indexer (another process's commits)", positive=True)
    verify_all: bool = key(False, "read every candidate the index proposes, even where its answer is exact "
                                  "by construction (slower; docs/search.md)")
    max_text_chars: int = key(1_000_000, "characters of one text (body, header) indexed; a longer one "
                                         "is cut and its message admitted by every search", positive=True)


@dataclass(frozen=True)
class Config:
    hostname: str = field(metadata=required(
        "required: our name in greetings, Received: and Authentication-Results:", example="localhost"))
    data_dir: Path = field(metadata=required(
        "required: the store (LMDB shards and blob files); created on first start", example="var/data"))
    path: Path = field(metadata={"internal": True})  # the file this was read from
    server: ServerConfig = section(ServerConfig, "the daemon as a whole")
    smtp: SmtpConfig = section(SmtpConfig, "MX: other servers deliver to us (port 25 in production)",
                               listen=["127.0.0.1:2525"])
    submission: SmtpConfig = section(SmtpConfig, "people send here: 587 STARTTLS and 465 implicit TLS (RFC 8314)",
                                     only=("listen", "tls_listen"), note="Takes every key of [smtp] too.",
                                     listen=["127.0.0.1:2587"], tls_listen=["127.0.0.1:2465"])
    imap: ImapConfig = section(ImapConfig, "143 STARTTLS, 993 implicit TLS in production (docs/imap.md)",
                               listen=["127.0.0.1:2143"], tls_listen=["127.0.0.1:2993"])
    pop3: Pop3Config = section(Pop3Config, "110 STLS, 995 implicit TLS in production (docs/pop3.md)",
                               listen=["127.0.0.1:2110"], tls_listen=["127.0.0.1:2995"])
    api: ApiConfig = section(ApiConfig, "HTTP JSON API (docs/api.md): listen is plain HTTP, loopback "
                                        "addresses only; tls_listen uses [tls]",
                             listen=["127.0.0.1:2080"], tls_listen=["127.0.0.1:2443"])
    tls: TlsConfig = section(TlsConfig, "required when any of smtp, submission, imap, pop3 is enabled, "
                                        "or api.tls_listen")
    dns: DnsConfig = section(DnsConfig, "the resolver for MX, SPF, DKIM, DMARC and DNSBL lookups (docs/dns.md)")
    store: StoreConfig = section(StoreConfig, "the mail store (docs/storage.md)")
    auth: AuthConfig = section(AuthConfig, "login failures")
    filters: FiltersConfig = section(FiltersConfig, "content filtering at end of DATA (docs/filters.md)")
    mailauth: MailauthConfig = section(MailauthConfig, "SPF, DKIM, DMARC, ARC (docs/dns.md)")
    outbound: OutboundConfig = section(OutboundConfig, "the outbound queue: mail for other domains "
                                                       "(docs/outbound.md)")
    metrics: MetricsConfig = section(MetricsConfig, "Prometheus metrics (docs/operations.md)")
    replication: ReplicationConfig = section(ReplicationConfig, "a follower node with every "
                                             "acknowledged message (docs/replication.md)")
    search: SearchConfig = section(SearchConfig, "the full-text index behind IMAP SEARCH (docs/search.md)")


EXAMPLE_HEADER = """\
# maild configuration. Generated from maild/config.py by `maild config-example`: change the
# declaration there, not this file. Every key is shown with its default, or with an example
# value and its default in the comment; a line starting with "#key =" is an unset option.
# Relative paths are relative to the directory maild is started from (the project root
# for `make run`). Validate with `maild -c FILE check`.
"""
LISTENERS_NOTE = "A protocol section whose listen and tls_listen lists are both empty is not started."


def _keys(cls: type) -> list[tuple[dataclasses.Field[Any], KeySpec]]:
    return [(f, f.metadata["key"]) for f in dataclasses.fields(cls) if "key" in f.metadata]


def _sections() -> list[tuple[str, type, SectionSpec]]:
    hints = typing.get_type_hints(Config)
    return [(f.name, hints[f.name], f.metadata["section"])
            for f in dataclasses.fields(Config) if "section" in f.metadata]


_SECTIONS: dict[str, type] = {name: cls for name, cls, _ in _sections()}


# -- validation ------------------------------------------------------------------------------

def parse_address(text: str, key: str) -> Address:
    if not isinstance(text, str) or ":" not in text:
        raise ConfigError(f"{key}: expected \"host:port\", got {text!r}")
    host, _, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not host:
        raise ConfigError(f"{key}: missing host in {text!r}")
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{key}: port {port_text!r} is not a number") from None
    if not 1 <= port <= 65535:
        raise ConfigError(f"{key}: port {port} out of range 1-65535")
    return Address(host, port)


def _convert(value: object, hint: object, key: str, base: Path, spec: KeySpec | None) -> object:
    """``value`` as the declared type, or ConfigError naming ``key``."""
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        _bounds(value, key, spec, "must not be negative")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"{key}: expected a non-negative number, got {value!r}")
        _bounds(float(value), key, spec, "")
        return float(value)
    if hint is str:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key}: expected a non-empty string, got {value!r}")
        if spec is not None and spec.choices and value not in spec.choices:
            raise ConfigError(f"{key}: expected one of {', '.join(spec.choices)}, got {value!r}")
        problem = spec.check(value) if spec is not None and spec.check is not None else None
        if problem:
            raise ConfigError(f"{key}: {problem}")
        return value
    if hint is Path or hint == (Path | None):
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key}: expected a path string, got {value!r}")
        path = Path(value)
        return path if path.is_absolute() else base / path
    if typing.get_origin(hint) is list:
        (item_hint,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if item_hint is Address:
            return [parse_address(v, f"{key}[{i}]") for i, v in enumerate(value)]
        return [_convert(v, item_hint, f"{key}[{i}]", base, None) for i, v in enumerate(value)]
    raise ConfigError(f"{key}: unsupported type")  # pragma: no cover - declaration bug


def _bounds(value: float, key: str, spec: KeySpec | None, negative: str) -> None:
    if spec is None:
        return
    if spec.low is not None and spec.high is not None and not spec.low <= value <= spec.high:
        raise ConfigError(f"{key}: {value} out of range {spec.low:g}-{spec.high:g}")
    if spec.positive and value <= 0:
        raise ConfigError(f"{key}: must be greater than 0, got {value}")
    if negative and value < 0:
        raise ConfigError(f"{key}: {negative}, got {value}")


def _build(cls: type[T], table: object, prefix: str, base: Path, errors: list[str]) -> T:
    """The section from its TOML table; every problem appended to ``errors``, each bad key
    left at its default so the checks after this one still see a whole configuration."""
    if not isinstance(table, dict):
        errors.append(f"{prefix}: expected a table")
        return cls()
    hints = typing.get_type_hints(cls)
    specs = {f.name: spec for f, spec in _keys(cls)}
    errors.extend(f"{prefix}.{name}: unknown key" for name in table if name not in specs)
    values = {}
    for name in specs:
        if name in table:
            try:
                values[name] = _convert(table[name], hints[name], f"{prefix}.{name}", base, specs[name])
            except ConfigError as exc:
                errors.extend(exc.errors)
    return cls(**values)


def load(path: str | Path) -> Config:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (pass -c FILE)") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return from_dict(raw, path)
    except ConfigError as exc:
        raise ConfigError(*(f"{path}: {error}" for error in exc.errors)) from None


def from_dict(raw: dict[str, object], path: Path) -> Config:
    """The configuration in ``raw`` (a parsed TOML document), or one ConfigError listing every
    problem, each "dotted.key: what is wrong"."""
    # Relative paths are relative to the directory the daemon is started from, as with
    # Postfix's and Dovecot's command-line tools; the README runs everything from the
    # project root.
    base = Path.cwd()
    errors: list[str] = []
    top = {f.name: spec for f, spec in _keys(Config)}
    errors.extend(f"{name}: unknown key" for name in raw if name not in top and name not in _SECTIONS)
    hints = typing.get_type_hints(Config)
    values: dict[str, Any] = {}
    for name, spec in top.items():
        if name not in raw:
            errors.append(f"{name}: missing required key")
            continue
        try:
            values[name] = _convert(raw[name], hints[name], name, base, spec)
        except ConfigError as exc:
            errors.extend(exc.errors)
    sections: dict[str, Any] = {name: _build(cls, raw.get(name, {}), name, base, errors)
                                for name, cls in _SECTIONS.items()}
    values.setdefault("hostname", "")
    values.setdefault("data_dir", base)
    config = Config(path=path, **values, **sections)
    for i, address in enumerate(config.api.listen):
        # Bearer tokens and passwords travel in the clear over plain HTTP: loopback only (a
        # reverse proxy on the same host terminates TLS), tls_listen everywhere else.
        if not _loopback(address.host):
            errors.append(f"api.listen[{i}]: plain HTTP only on a loopback address (127.0.0.0/8, ::1); "
                          f"use api.tls_listen for {address}")
    tls_needed = [name for name in ("smtp", "submission", "imap", "pop3") if getattr(config, name).enabled]
    if config.api.tls_listen:
        tls_needed.append("api")
    if tls_needed and (config.tls.cert_file is None or config.tls.key_file is None):
        errors.append(f"tls.cert_file: required when {tls_needed[0]} is enabled")
    if errors:
        raise ConfigError(*errors)
    return config


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


# -- etc/maild.toml --------------------------------------------------------------------------

def toml_value(value: object) -> str:
    """``value`` (a default or an example) written as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, Path, Address)):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")  # pragma: no cover - declaration bug


def _line(name: str, value: object, default: object, spec: KeySpec) -> str:
    text = f"{'#' if spec.commented else ''}{name} = {toml_value(value)}"
    doc = spec.doc
    if not spec.commented and value != default:
        doc += f" (default: {'unset' if default is None else toml_value(default)})"
    return f"{text:<29} # {doc}" if len(text) < 29 else f"{text}  # {doc}"


def example_entries() -> list[tuple[str, str, object, KeySpec]]:
    """(section or "", key, value shown, declaration) for every line etc/maild.toml has."""
    entries: list[tuple[str, str, object, KeySpec]] = []
    for f, spec in _keys(Config):
        entries.append(("", f.name, spec.example, spec))
    for name, cls, section_spec in _sections():
        for f, spec in _keys(cls):
            if section_spec.only is not None and f.name not in section_spec.only:
                continue
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            value = section_spec.examples.get(
                f.name, spec.example if spec.example is not _UNSET else _toml_form(default))
            entries.append((name, f.name, value, spec))
    return entries


def _toml_form(value: object) -> object:
    """A default as TOML has it: addresses and paths as strings."""
    if isinstance(value, list):
        return [_toml_form(v) for v in value]
    if isinstance(value, (Path, Address)):
        return str(value)
    return value


def default_of(section_name: str, name: str) -> object:
    cls = _SECTIONS[section_name]
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return _toml_form(default)


def render_example() -> str:
    """etc/maild.toml, from the declaration."""
    out = [EXAMPLE_HEADER, "\n"]
    entries = example_entries()
    for _, name, value, spec in (e for e in entries if not e[0]):
        out.append(_line(name, value, value, spec) + "\n")
    out.append(f"\n# {LISTENERS_NOTE}\n")
    for section_name, _, section_spec in _sections():
        out.append(f"\n{f'[{section_name}]':<29} # {section_spec.doc}\n")
        for _, name, value, spec in (e for e in entries if e[0] == section_name):
            out.append(_line(name, value, default_of(section_name, name), spec) + "\n")
        if section_spec.note:
            out.append(f"# {section_spec.note}\n")
    return "".join(out)
