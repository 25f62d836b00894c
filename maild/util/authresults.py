"""Typed results of SPF, DKIM, DMARC and ARC, and the Authentication-Results header.

One :class:`AuthResults` per message lives in ``Transaction.notes["auth_results"]`` for
the filters after mail authentication (the spam scorer reads it). Result words are the
RFC 8601 §2.7 ones: a filter compares ``results.dmarc.result == "pass"`` and so on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

TEMPERROR = "temperror"
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`{|}~]+")  # RFC 2045 §5.1 token


def _value(text: str) -> str:
    """A value (RFC 2045 token or quoted-string), as RFC 8601 §2.2 requires."""
    if _TOKEN.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _pvalue_address(address: str) -> str:
    """smtp.mailfrom takes [local-part "@"] domain-name (RFC 8601 §2.2); anything odd is
    quoted instead."""
    local, _, domain = address.rpartition("@")
    if domain and _TOKEN.fullmatch(domain) and (not local or _TOKEN.fullmatch(local)):
        return address
    return _value(address)


def _comment(text: str) -> str:
    return "(" + re.sub(r"[()\\\r\n]", " ", text) + ")"


@dataclass(frozen=True)
class SpfResult:
    """RFC 7208 §2.6: none neutral pass fail softfail temperror permerror."""

    result: str
    scope: str  # "mailfrom" or "helo" (RFC 7208 §2.3, §2.4)
    domain: str  # the domain whose policy was evaluated
    identity: str  # the MAIL FROM address, or the HELO name
    explanation: str = ""

    def resinfo(self) -> str:
        prop = (f"smtp.mailfrom={_pvalue_address(self.identity)}" if self.scope == "mailfrom"
                else f"smtp.helo={_value(self.identity)}")
        if self.explanation and self.result in (TEMPERROR, "permerror"):  # say why
            return f"spf={self.result} {_comment(self.explanation)} {prop}"
        return f"spf={self.result} {prop}"


@dataclass(frozen=True)
class DkimResult:
    """One DKIM-Signature (RFC 6376 §6.1): pass fail policy neutral temperror permerror.

    ``policy`` is a signature that verified but that we do not accept (rsa-sha1,
    RFC 8301 §3.1); only ``pass`` counts for DMARC."""

    result: str
    domain: str  # d=
    selector: str  # s=
    algorithm: str  # a=
    b: str = ""  # the first characters of b=, to tell signatures apart (RFC 6008)
    reason: str = ""

    def resinfo(self) -> str:
        parts = [f"dkim={self.result}"]
        if self.reason:
            parts.append(_comment(self.reason))
        parts.append(f"header.d={_value(self.domain)}")
        parts.append(f"header.s={_value(self.selector)}")
        parts.append(f"header.a={_value(self.algorithm)}")
        if self.b:
            parts.append(f"header.b={_value(self.b)}")
        return " ".join(parts)


@dataclass(frozen=True)
class DmarcResult:
    """RFC 7489 §11.2: none pass fail temperror permerror, and what we did about it."""

    result: str
    from_domain: str | None
    policy: str | None = None  # the p= or sp= that applied: none quarantine reject
    disposition: str = "none"  # after pct sampling (RFC 7489 §6.6.4): none quarantine reject
    record_domain: str | None = None  # where the record was found
    spf_aligned: bool = False
    dkim_aligned: bool = False
    reason: str = ""

    def resinfo(self) -> str:
        parts = [f"dmarc={self.result}"]
        if self.policy is not None:
            parts.append(_comment(f"p={self.policy} dis={self.disposition}"))
        elif self.reason:
            parts.append(_comment(self.reason))
        if self.from_domain:
            parts.append(f"header.from={_value(self.from_domain)}")
        return " ".join(parts)


@dataclass(frozen=True)
class ArcResult:
    """RFC 8617 §4.4 chain validation status: none pass fail (temperror when a key
    lookup timed out)."""

    result: str
    instances: int = 0  # ARC sets found
    reason: str = ""

    def resinfo(self) -> str:
        note = f"i={self.instances}" + (f" {self.reason}" if self.reason else "")
        return f"arc={self.result} {_comment(note)}" if self.instances or self.reason \
            else f"arc={self.result}"


@dataclass
class AuthResults:
    spf: SpfResult | None = None
    dkim: list[DkimResult] = field(default_factory=list)
    dmarc: DmarcResult | None = None
    arc: ArcResult | None = None

    @property
    def temperror(self) -> bool:
        """A DNS lookup timed out somewhere: the answer is "try again", never pass/fail."""
        results = [r.result for r in (self.spf, self.dmarc, self.arc) if r is not None]
        results += [d.result for d in self.dkim]
        return TEMPERROR in results

    def header_value(self, authserv_id: str) -> str:
        """The Authentication-Results value (RFC 8601 §2.2), one resinfo per folded line."""
        infos = []
        if self.spf is not None:
            infos.append(self.spf.resinfo())
        if self.dkim:
            infos.extend(d.resinfo() for d in self.dkim)
        else:
            infos.append("dkim=none")
        if self.dmarc is not None:
            infos.append(self.dmarc.resinfo())
        if self.arc is not None:
            infos.append(self.arc.resinfo())
        return authserv_id + ";" + ";".join("\r\n\t" + i for i in infos)
