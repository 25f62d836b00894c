"""The one TOML configuration file, parsed into typed, validated values.

Every error names the file and the dotted key, e.g.
``etc/maild.toml: imap.listen[0]: port 99999 out of range 1-65535``.
Validation happens before anything touches the data directory.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path


class ConfigError(Exception):
    """A configuration problem; str() is the one line shown to the operator."""


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Listeners:
    listen: list[Address] = field(default_factory=list)
    tls_listen: list[Address] = field(default_factory=list)

    @property
    def enabled(self) -> bool:
        return bool(self.listen or self.tls_listen)


@dataclass(frozen=True)
class SmtpConfig(Listeners):
    max_message_size: int = 25 * 1024 * 1024
    max_recipients: int = 100
    max_line_length: int = 1000  # RFC 5321 §4.5.3.1.6, including CRLF
    max_connections: int = 500
    max_connections_per_ip: int = 20
    messages_per_minute_per_ip: int = 120
    messages_per_minute_per_user: int = 120
    command_timeout: float = 300.0  # RFC 5321 §4.5.3.2.7
    data_timeout: float = 600.0  # RFC 5321 §4.5.3.2.6 (per chunk)
    max_bad_commands: int = 20
    allow_plaintext_auth_on_loopback: bool = False


@dataclass(frozen=True)
class ImapConfig(Listeners):
    append_limit: int = 50 * 1024 * 1024  # RFC 7889 APPENDLIMIT
    max_line_length: int = 64 * 1024
    max_command_size: int = 1024 * 1024  # a whole non-APPEND command, literals included
    max_connections: int = 2000
    max_connections_per_ip: int = 50
    autologout_authenticated: float = 30 * 60.0  # RFC 3501 §5.4
    autologout_unauthenticated: float = 60.0
    max_bad_commands: int = 20  # in a row; then * BYE and close
    allow_plaintext_auth_on_loopback: bool = False
    fetch_cache_mb: int = 32  # ENVELOPE, BODYSTRUCTURE, header fields kept for repeats; 0: none
    sort_cache_mb: int = 16  # SORT keys and THREAD facts kept for repeats; 0: none


@dataclass(frozen=True)
class Pop3Config(Listeners):
    max_connections: int = 500
    max_connections_per_ip: int = 20
    idle_timeout: float = 600.0  # RFC 1939 §3: at least 10 minutes
    max_bad_commands: int = 20  # in a row; then -ERR and close
    mark_seen_on_retr: bool = True
    allow_plaintext_auth_on_loopback: bool = False


@dataclass(frozen=True)
class ApiConfig(Listeners):
    pass


# Mozilla's "intermediate" profile (v5.7): forward secrecy and AEAD ciphers only, for TLS
# 1.2; TLS 1.3's suites are all of that kind and always on.
INTERMEDIATE_CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                        "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                        "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
                        "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305")
TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")


@dataclass(frozen=True)
class TlsConfig:
    cert_file: Path | None = None
    key_file: Path | None = None
    min_version: str = "TLSv1.2"
    ciphers: str = INTERMEDIATE_CIPHERS  # OpenSSL cipher string for TLS 1.2
    handshake_timeout: float = 20.0  # seconds from accept (or STARTTLS) to a finished handshake

    def __post_init__(self) -> None:
        if self.min_version not in TLS_VERSIONS:
            raise ConfigError(f"tls.min_version: expected one of {', '.join(TLS_VERSIONS)}, "
                              f"got {self.min_version!r}")
        if self.handshake_timeout <= 0:
            raise ConfigError(f"tls.handshake_timeout: must be greater than 0, got {self.handshake_timeout}")


@dataclass(frozen=True)
class DnsConfig:
    nameservers: list[Address] = field(default_factory=list)
    timeout: float = 5.0


@dataclass(frozen=True)
class StoreConfig:
    shards: int = 4
    map_size_mb: int = 64 * 1024  # sparse; grown maps lose writes (see docs/storage.md)
    directory_map_size_mb: int = 4 * 1024
    group_commit: bool = True
    max_batch: int = 256
    default_quota_mb: int = 0  # 0: unlimited
    inline_body_max: int = 32 * 1024  # bodies up to this size live in LMDB, sharing its group commit


@dataclass(frozen=True)
class AuthConfig:
    """The auth penalty (docs/security.md): a delay before verifying, never a lockout."""

    failure_delay: float = 1.0  # first failure; doubles per failure from the same IP
    max_failure_delay: float = 30.0
    account_free_failures: int = 10  # failures of one account (any IP) before its own delay
    max_pending_per_ip: int = 8  # attempts from one IP queued at once; more answer "failed" at once


@dataclass(frozen=True)
class FiltersConfig:
    """Content filters (docs/filters.md). An empty address disables that engine."""

    clamd: str = ""  # "/run/clamav/clamd.ctl" (unix socket) or "127.0.0.1:3310"
    clamd_timeout: float = 30.0
    clamd_max_size: int = 25 * 1024 * 1024  # larger messages are not scanned; <= StreamMaxLength
    clamd_on_error: str = "tempfail"  # or "accept" (deliver with X-Virus-Scan: failed)
    rspamd_url: str = ""  # the normal worker, e.g. "http://127.0.0.1:11333"
    rspamd_controller_url: str = ""  # the controller, for Junk training; "" disables training
    rspamd_password: str = ""  # controller password, if the controller asks for one
    rspamd_timeout: float = 15.0
    rspamd_on_error: str = "fallback"  # or "tempfail" or "accept"
    fallback_junk_score: float = 5.0
    fallback_reject_score: float = 15.0
    dnsbl_zones: list[str] = field(default_factory=list)
    dnsbl_score: float = 4.0  # added per zone listing the client IP
    blocked_extensions: list[str] = field(default_factory=lambda: [
        "exe", "scr", "com", "pif", "js", "vbs", "bat", "cmd", "jar"])
    scan_zip: bool = True  # apply blocked_extensions to the names inside zip attachments

    def __post_init__(self) -> None:
        choices = {"clamd_on_error": ("tempfail", "accept"),
                   "rspamd_on_error": ("fallback", "tempfail", "accept")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"filters.{key}: expected one of {', '.join(allowed)}, "
                                  f"got {getattr(self, key)!r}")
        for key in ("clamd_timeout", "clamd_max_size", "rspamd_timeout"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"filters.{key}: must be greater than 0, got {getattr(self, key)}")
        for key in ("rspamd_url", "rspamd_controller_url"):
            url = getattr(self, key)
            if url and not url.startswith(("http://", "https://")):
                raise ConfigError(f"filters.{key}: expected an http:// URL, got {url!r}")
        if self.clamd and not self.clamd.startswith("/"):
            parse_address(self.clamd, "filters.clamd")


@dataclass(frozen=True)
class MailauthConfig:
    """Mail authentication (docs/dns.md): SPF, DKIM, DMARC, ARC inbound; DKIM signing."""

    verify: bool = True  # check SPF/DKIM/DMARC/ARC on [smtp] and add Authentication-Results
    sign: bool = True  # DKIM-sign mail from [submission] with the From domain's keys
    enforce_dmarc: bool = True  # act on p=reject (550) and p=quarantine (Junk); else record
    dmarc_reports: bool = True  # keep aggregate-report rows in data_dir/dmarc/
    dmarc_policy: str = "quarantine"  # the p= `maild domain dns` publishes for our domains

    def __post_init__(self) -> None:
        if self.dmarc_policy not in ("none", "quarantine", "reject"):
            raise ConfigError("mailauth.dmarc_policy: expected one of none, quarantine, "
                              f"reject, got {self.dmarc_policy!r}")


TLS_POLICIES = ("none", "opportunistic", "required")


@dataclass(frozen=True)
class OutboundConfig:
    """The outbound queue (docs/outbound.md): MX delivery, retries, bounces, TLS policy."""

    port: int = 25  # destination port of every MX; tests point it at their own servers
    poll_interval: float = 1.0  # seconds between scans of the queue for due entries
    retry_min: float = 300.0  # first retry after this many seconds, doubling per attempt
    retry_max: float = 4 * 3600.0  # longest wait between two attempts
    max_age: float = 5 * 86400.0  # give up (DSN) at the first failure after this age
    delay_warning: float = 4 * 3600.0  # "delayed" DSN once after this age; 0: never
    max_connections: int = 20  # deliveries in flight at once
    max_per_domain: int = 4  # deliveries in flight to one destination domain
    connect_timeout: float = 30.0
    command_timeout: float = 300.0  # RFC 5321 §4.5.3.2: each reply
    data_timeout: float = 600.0  # RFC 5321 §4.5.3.2.6: the reply to the final "."
    tls_policy: str = "opportunistic"  # none, opportunistic, required
    tls_required_domains: list[str] = field(default_factory=list)
    tls_disabled_domains: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.tls_policy not in TLS_POLICIES:
            raise ConfigError(f"outbound.tls_policy: expected one of {', '.join(TLS_POLICIES)}, "
                              f"got {self.tls_policy!r}")
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"outbound.port: {self.port} out of range 1-65535")
        for key in ("max_per_domain", "poll_interval", "retry_min", "retry_max"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"outbound.{key}: must be greater than 0")

    def tls_policy_for(self, domain: str) -> str:
        domain = domain.lower()
        if domain in (d.lower() for d in self.tls_required_domains):
            return "required"
        if domain in (d.lower() for d in self.tls_disabled_domains):
            return "none"
        return self.tls_policy


@dataclass(frozen=True)
class Config:
    hostname: str
    data_dir: Path
    path: Path
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    submission: SmtpConfig = field(default_factory=SmtpConfig)
    imap: ImapConfig = field(default_factory=ImapConfig)
    pop3: Pop3Config = field(default_factory=Pop3Config)
    api: ApiConfig = field(default_factory=ApiConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    filters: FiltersConfig = field(default_factory=FiltersConfig)
    mailauth: MailauthConfig = field(default_factory=MailauthConfig)
    outbound: OutboundConfig = field(default_factory=OutboundConfig)


_SECTIONS: dict[str, type] = {
    "smtp": SmtpConfig,
    "submission": SmtpConfig,
    "imap": ImapConfig,
    "pop3": Pop3Config,
    "api": ApiConfig,
    "tls": TlsConfig,
    "dns": DnsConfig,
    "store": StoreConfig,
    "auth": AuthConfig,
    "filters": FiltersConfig,
    "mailauth": MailauthConfig,
    "outbound": OutboundConfig,
}

_POSITIVE = {"shards", "map_size_mb", "directory_map_size_mb", "max_batch", "max_message_size",
             "max_recipients", "max_line_length", "max_connections", "max_connections_per_ip",
             "append_limit", "max_command_size", "max_bad_commands", "max_pending_per_ip"}


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


def _convert(value: object, hint: object, key: str, base: Path) -> object:
    origin = typing.get_origin(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if key.rsplit(".", 1)[-1] in _POSITIVE and value <= 0:
            raise ConfigError(f"{key}: must be greater than 0, got {value}")
        if value < 0:
            raise ConfigError(f"{key}: must not be negative, got {value}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"{key}: expected a non-negative number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key}: expected a non-empty string, got {value!r}")
        return value
    if hint is Path or hint == (Path | None):
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key}: expected a path string, got {value!r}")
        path = Path(value)
        return path if path.is_absolute() else base / path
    if origin is list:
        (item_hint,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if item_hint is Address:
            return [parse_address(v, f"{key}[{i}]") for i, v in enumerate(value)]
        return [_convert(v, item_hint, f"{key}[{i}]", base) for i, v in enumerate(value)]
    raise ConfigError(f"{key}: unsupported type")  # pragma: no cover - schema bug


def _build(cls: type, table: object, prefix: str, base: Path) -> object:
    if not isinstance(table, dict):
        raise ConfigError(f"{prefix}: expected a table")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - names)
    if unknown:
        raise ConfigError(f"{prefix}.{unknown[0]}: unknown key")
    values = {name: _convert(table[name], hints[name], f"{prefix}.{name}", base) for name in table}
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
        raise ConfigError(f"{path}: {exc}") from None


def from_dict(raw: dict[str, object], path: Path) -> Config:
    # Relative paths are relative to the directory the daemon is started from, as with
    # Postfix's and Dovecot's command-line tools; the README runs everything from the
    # project root.
    base = Path.cwd()
    allowed = {"hostname", "data_dir", *_SECTIONS}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown key")
    for required in ("hostname", "data_dir"):
        if required not in raw:
            raise ConfigError(f"{required}: missing required key")
    hostname = _convert(raw["hostname"], str, "hostname", base)
    data_dir = _convert(raw["data_dir"], Path, "data_dir", base)
    sections = {name: _build(cls, raw.get(name, {}), name, base) for name, cls in _SECTIONS.items()}
    config = Config(hostname=hostname, data_dir=data_dir, path=path, **sections)  # type: ignore[arg-type]
    if config.api.enabled:
        # The HTTP API (DESIGN.md) has no issue scheduled yet; refuse rather than ignore.
        raise ConfigError("api.listen: the HTTP API is not available in this version; leave it empty")
    tls_needed = [name for name in ("smtp", "submission", "imap", "pop3")
                  if getattr(config, name).enabled]
    if tls_needed and (config.tls.cert_file is None or config.tls.key_file is None):
        raise ConfigError(f"tls.cert_file: required when {tls_needed[0]} is enabled")
    return config
