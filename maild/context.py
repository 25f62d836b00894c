"""What the daemon hands to every protocol front end."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime
    from twisted.internet.ssl import CertificateOptions

    from maild.auth import Authenticator
    from maild.config import Config
    from maild.delivery import Delivery
    from maild.filters.chain import FilterChain
    from maild.store import Store
    from maild.util.shared import SharedTable


@dataclass
class ServerContext:
    config: Config
    store: Store
    auth: Authenticator
    tls: CertificateOptions | None
    reactor: IReactorTime  # all a front end uses of it: timers (the wiring's reactor does more)
    filters: FilterChain
    delivery: Delivery
    # State the listeners of one protocol section share (connection counts, rates, POP3
    # locks), by section name: maild.util.session.SessionFactory.shared.
    shared: dict[str, Any] = field(default_factory=dict)
    # With several worker processes: the tree's shared table (maild/util/shared.py), where
    # that state is counted across workers instead; None in a single process.
    tree: SharedTable | None = None

    @property
    def read_only(self) -> str | None:
        """Why this node takes no writes now (a replication follower, a fenced leader:
        docs/replication.md); None when it takes them. Front ends refuse writes up front."""
        return self.store.repl_fence
