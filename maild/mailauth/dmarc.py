"""DMARC (RFC 7489): record parsing, policy discovery, alignment, disposition, and the
per-message rows aggregate reports are built from.

Discovery and evaluation are separate: :func:`discover_sync` asks DNS (blocking, through
the resolver service), :func:`evaluate` is pure - the pct sample is an injected number
in [0, 1) so tests choose it.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from publicsuffixlist import PublicSuffixList

from maild.dns import Resolver, TempError
from maild.util.authresults import DkimResult, DmarcResult, SpfResult

POLICIES = ("none", "quarantine", "reject")
_WEAKER = {"reject": "quarantine", "quarantine": "none", "none": "none"}  # RFC 7489 §6.6.4


@dataclass(frozen=True)
class DmarcRecord:
    """The tags of a DMARC record (RFC 7489 §6.3) that evaluation and reports use."""

    p: str
    sp: str | None = None
    pct: int = 100
    adkim: str = "r"
    aspf: str = "r"
    rua: tuple[str, ...] = ()


class RecordError(ValueError):
    pass


def parse_record(text: str) -> DmarcRecord:
    """RFC 7489 §6.4 syntax; raises RecordError for a record we must not apply."""
    tags: dict[str, str] = {}
    for i, part in enumerate(p.strip() for p in text.split(";")):
        if not part:
            continue
        name, eq, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not eq:
            raise RecordError(f"malformed tag {part!r}")
        if i == 0 and (name != "v" or value != "DMARC1"):
            raise RecordError("v=DMARC1 must come first")
        tags.setdefault(name, value)
    rua = tuple(u.strip() for u in tags.get("rua", "").split(",") if u.strip())
    p = tags.get("p", "").lower()
    if p not in POLICIES:
        if not rua:
            raise RecordError(f"invalid p={p!r}")
        p = "none"  # §6.6.3 step 6: a record with rua but no valid p acts as p=none
    sp = tags["sp"].lower() if "sp" in tags else None
    if sp is not None and sp not in POLICIES:
        if not rua:
            raise RecordError(f"invalid sp={sp!r}")
        p, sp = "none", None
    pct = 100
    if "pct" in tags:
        try:
            pct = min(100, max(0, int(tags["pct"])))
        except ValueError:
            pct = 100  # §6.3: an unparseable value is ignored, the default applies
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    return DmarcRecord(p=p, sp=sp, pct=pct, adkim=adkim if adkim in ("r", "s") else "r",
                       aspf=aspf if aspf in ("r", "s") else "r", rua=rua)


@functools.cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


def organizational_domain(domain: str) -> str:
    """RFC 7489 §3.2: the public suffix plus one label (the domain itself when it is a
    public suffix)."""
    domain = domain.lower().rstrip(".")
    return _psl().privatesuffix(domain) or domain


def aligned(identifier: str, from_domain: str, mode: str) -> bool:
    """RFC 7489 §3.1: strict needs the same name, relaxed the same organizational domain."""
    identifier, from_domain = identifier.lower().rstrip("."), from_domain.lower().rstrip(".")
    if mode == "s":
        return identifier == from_domain
    return organizational_domain(identifier) == organizational_domain(from_domain)


def _fetch(resolver: Resolver, domain: str) -> list[str]:
    texts = [t.decode("utf-8", "replace") for t in resolver.txt_sync(f"_dmarc.{domain}")]
    return [t for t in texts if t.startswith("v=DMARC1")]  # §6.6.3 step 3


def discover_sync(resolver: Resolver, from_domain: str) -> tuple[str, str] | None:
    """(record domain, record text) per RFC 7489 §6.6.3, or None without a policy.
    Several records at one name mean no policy. Raises TempError."""
    found = _fetch(resolver, from_domain)
    if len(found) == 1:
        return from_domain, found[0]
    if found:
        return None
    org = organizational_domain(from_domain)
    if org != from_domain:
        found = _fetch(resolver, org)
        if len(found) == 1:
            return org, found[0]
    return None


def evaluate(from_domain: str, record_domain: str, record: DmarcRecord,
             spf: SpfResult | None, dkim: list[DkimResult], sample: float) -> DmarcResult:
    """The DMARC result and disposition. ``sample`` is uniform in [0, 1) (§6.6.4 pct)."""
    spf_aligned = (spf is not None and spf.result == "pass"
                   and aligned(spf.domain, from_domain, record.aspf))
    dkim_aligned = any(d.result == "pass" and aligned(d.domain, from_domain, record.adkim)
                       for d in dkim)
    # §6.3 sp: the record was found at the organizational domain for a subdomain.
    policy = record.p
    if record_domain != from_domain and record.sp is not None:
        policy = record.sp
    passed = spf_aligned or dkim_aligned
    disposition = "none"
    if not passed:
        disposition = policy if sample * 100 < record.pct else _WEAKER[policy]
    return DmarcResult("pass" if passed else "fail", from_domain, policy=policy,
                       disposition=disposition, record_domain=record_domain,
                       spf_aligned=spf_aligned, dkim_aligned=dkim_aligned)


def check_sync(resolver: Resolver, from_domain: str | None, spf: SpfResult | None,
               dkim: list[DkimResult], sample: float) -> tuple[DmarcResult, DmarcRecord | None]:
    """Discover and evaluate; the record is returned for the aggregate-report row."""
    if from_domain is None:
        return DmarcResult("permerror", None, reason="no single From domain"), None
    try:
        discovered = discover_sync(resolver, from_domain)
    except TempError:
        return DmarcResult("temperror", from_domain, reason="policy lookup timed out"), None
    if discovered is None:
        return DmarcResult("none", from_domain), None
    record_domain, text = discovered
    try:
        record = parse_record(text)
    except RecordError as exc:
        return DmarcResult("permerror", from_domain, record_domain=record_domain,
                           reason=str(exc)), None
    return evaluate(from_domain, record_domain, record, spf, dkim, sample), record


class ReportLog:
    """What RFC 7489 §7.2 aggregate reports need, one JSON line per message evaluated
    against a published policy, in ``data_dir/dmarc/YYYY-MM-DD.jsonl`` (UTC days). A
    report sender reads whole past days; the file is append-only."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()

    def append_sync(self, client_ip: str, result: DmarcResult, record: DmarcRecord,
                    spf: SpfResult | None, dkim: list[DkimResult], envelope_to: list[str],
                    now: float | None = None) -> None:
        now = time.time() if now is None else now
        row: dict[str, Any] = {
            "time": now,
            "source_ip": client_ip,
            "header_from": result.from_domain,
            "envelope_to": sorted({r.rpartition("@")[2].lower() for r in envelope_to}),
            "policy_domain": result.record_domain,
            "policy_published": asdict(record),
            "disposition": result.disposition,
            "dkim_aligned": "pass" if result.dkim_aligned else "fail",
            "spf_aligned": "pass" if result.spf_aligned else "fail",
            "dkim": [{"domain": d.domain, "selector": d.selector, "result": d.result}
                     for d in dkim],
            "spf": ({"domain": spf.domain, "scope": spf.scope, "result": spf.result}
                    if spf is not None else None),
        }
        line = json.dumps(row, sort_keys=True) + "\n"
        path = self.directory / f"{datetime.fromtimestamp(now, UTC):%Y-%m-%d}.jsonl"
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as f:
                f.write(line)
