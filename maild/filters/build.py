"""The content filters from ``[filters]``, for maild.daemon.build_filters.

One :class:`ParallelFilters` runs, concurrently at end of DATA: the attachment policy,
clamd, and the spam scorer (rspamd with the built-in fallback, or the fallback alone when
no rspamd is configured). With an rspamd controller configured, Junk training starts too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from maild.config import Config
from maild.dns.resolver import Resolver
from maild.filters.attachments import AttachmentFilter
from maild.filters.clamav import ClamavFilter, ClamdClient
from maild.filters.contacts import SentContacts
from maild.filters.fallback import FallbackSpamFilter
from maild.filters.parallel import ParallelFilters
from maild.filters.rspamd import RspamdClient, RspamdFilter
from maild.filters.spam import SpamPolicy
from maild.filters.training import JunkTrainer
from maild.util.transaction import Filter

if TYPE_CHECKING:
    from maild.store import Store


def build_filters(config: Config, store: Store, reactor: Any, train: bool = True) -> list[Filter]:
    """``train``: this process runs junk training (one process of a worker tree: the change
    feed brings every worker's moves to each process, so each would teach rspamd again)."""
    settings = config.filters
    scanners: list[Filter] = []
    if settings.blocked_extensions:
        scanners.append(AttachmentFilter(reactor, settings.blocked_extensions, settings.scan_zip))
    if settings.clamd:
        client = ClamdClient(reactor, settings.clamd, settings.clamd_timeout)
        scanners.append(ClamavFilter(client, settings.clamd_max_size, settings.clamd_on_error))
    policy = SpamPolicy(store, SentContacts(store, reactor))
    resolver = Resolver(config.dns, reactor) if settings.dnsbl_zones else None
    fallback = FallbackSpamFilter(policy, resolver, settings.dnsbl_zones, settings.dnsbl_score,
                                  settings.fallback_junk_score, settings.fallback_reject_score)
    if settings.rspamd_url:
        rspamd = RspamdClient(reactor, settings.rspamd_url, settings.rspamd_controller_url,
                              settings.rspamd_timeout, settings.rspamd_password,
                              authserv_id=config.hostname)
        scanners.append(RspamdFilter(rspamd, policy, settings.rspamd_on_error, fallback))
        if settings.rspamd_controller_url and train:
            JunkTrainer(store, rspamd).start()
    else:
        scanners.append(fallback)
    return [ParallelFilters(scanners)]
