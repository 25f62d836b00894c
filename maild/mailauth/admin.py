"""What ``maild domain dns`` and ``maild domain dkim-rotate`` do, as text for the operator.

The CLI opens the store and the configuration; these functions compute the records and the
key changes. Records are zone-file lines (RFC 1035 §5.1) the operator pastes into the
domain's zone; TXT data longer than 255 octets is split into several character-strings
(RFC 1035 §3.3.14, RFC 6376 §3.6.2.2).
"""

from __future__ import annotations

from typing import Any

from maild.config import Config
from maild.dns import Resolver, TempError
from maild.mailauth import dkim

TTL = 3600
_STATE_NOTES = {
    dkim.ACTIVE: "signing",
    dkim.PENDING: "pending: publish it, then `maild domain dkim-rotate {domain} --confirm`",
    dkim.RETIRED: "retired: keep it published a few days, then "
                  "`maild domain dkim-rotate {domain} --remove-old`",
}


def _txt(text: str) -> str:
    chunks = [text[i:i + 255] for i in range(0, len(text), 255)] or [""]
    quoted = " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)
    return quoted if len(chunks) == 1 else f"( {quoted} )"


def _line(name: str, rtype: str, data: str) -> str:
    return f"{name:<40} {TTL} IN {rtype:<5} {data}"


def dkim_lines(domain: str, keys: list[dict[str, Any]]) -> list[str]:
    lines = []
    for key in keys:
        note = _STATE_NOTES[key.get("state", dkim.ACTIVE)].format(domain=domain)
        lines.append(f"; DKIM {key['algorithm']} ({note})")
        lines.append(_line(f"{key['selector']}._domainkey.{domain}.", "TXT",
                           _txt(key["public_record"])))
    return lines


def zone_lines(config: Config, domain: str, keys: list[dict[str, Any]]) -> list[str]:
    """Every record to publish for ``domain``: MX, SPF, each DKIM key, DMARC."""
    domain = domain.lower().rstrip(".")
    host = config.hostname.rstrip(".")
    lines = [
        f"; DNS records for {domain}, served by {host} (see docs/dns.md)",
        f"; {host} itself needs A/AAAA records and a matching PTR for each address.",
        _line(f"{domain}.", "MX", f"10 {host}."),
        # RFC 7208: only our MX hosts send for the domain
        _line(f"{domain}.", "TXT", _txt("v=spf1 mx -all")),
    ]
    lines += dkim_lines(domain, keys)
    policy = config.mailauth.dmarc_policy
    lines.append(_line(f"_dmarc.{domain}.", "TXT", _txt(f"v=DMARC1; p={policy}; adkim=r; aspf=r")))
    return lines


def rotate(config: Config, domain: str, keys: list[dict[str, Any]], *, confirm: bool = False,
           remove_old: bool = False, force: bool = False,
           resolver: Resolver | None = None) -> tuple[list[dict[str, Any]], str]:
    """(the domain's new keys, what to tell the operator). Without options a pending key
    pair is added; ``confirm`` starts signing with it once DNS serves it (``force`` skips
    that check); ``remove_old`` drops the retired pair. Raises ValueError."""
    if not keys:
        keys = dkim.generate_keys(domain)
        return keys, (f"{domain} had no DKIM keys: generated and signing now; publish them:\n"
                      + "\n".join(zone_lines(config, domain, keys)))
    if confirm:
        pending = [k for k in keys if k.get("state") == dkim.PENDING]
        if pending and not force:
            resolver = resolver or Resolver(config.dns)
            try:
                missing = [k["selector"] for k in pending
                           if not dkim.published_sync(resolver, domain, k)]
            except TempError as exc:
                raise ValueError(f"cannot check DNS ({exc}); retry, or pass --force") from None
            if missing:
                raise ValueError(f"DNS does not serve {', '.join(missing)}._domainkey.{domain} "
                                 "yet (check with dig; --force skips this check)")
        keys = dkim.confirm_rotation(keys)
        return keys, (f"{domain} now signs with "
                      f"{', '.join(k['selector'] for k in dkim.signing_keys(keys))}; keep the "
                      "retired keys published for a few days, then --remove-old")
    if remove_old:
        retired = [k["selector"] for k in keys if k.get("state") == dkim.RETIRED]
        if not retired:
            raise ValueError("no retired keys to remove")
        return dkim.remove_retired(keys), (
            f"removed {', '.join(retired)}; delete their TXT records from the {domain} zone")
    keys = dkim.rotate(keys)
    new = [k for k in keys if k.get("state") == dkim.PENDING]
    return keys, (f"new keys for {domain}, not signing yet; publish:\n"
                  + "\n".join(dkim_lines(domain, new))
                  + f"\nthen: maild domain dkim-rotate {domain} --confirm")
