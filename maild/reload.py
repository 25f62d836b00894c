"""SIGHUP (``systemctl reload maild``): re-read the configuration file and apply what can
change under running sessions.

Implementation notes (invariants):

- The new file is validated in full (``config.load``) and its certificate and key are
  loaded and matched (``tls_options``) before anything changes; on any error the reload is
  refused with one log line per problem and the running configuration stays, whole.
- The certificate: every listener and STARTTLS share one ``CertificateOptions`` object,
  which makes each new TLS connection from its cached OpenSSL context. A reload replaces
  that object's state with the new one's (:func:`swap_certificate`), so connections made
  from then on present the new certificate, while established ones keep the context they
  were made with: nothing is dropped, nothing restarts.
- Applied as well: ``[auth]`` (login failure delays, read per attempt). Every other section
  needs a restart (listeners, the store, filters are built once); a reload that changes one
  says which in the log and applies none of them.
- The handler only schedules the work on the reactor thread (``callFromThread``), so a
  signal never interrupts a reactor callback halfway.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
from collections.abc import Callable
from typing import Any

from twisted.internet import ssl

from maild import config as configmod
from maild.config import Config, ConfigError
from maild.context import ServerContext

log = logging.getLogger("maild.reload")

APPLIED = ("tls", "auth")  # the sections a reload applies; "path" is not a section


def swap_certificate(current: ssl.CertificateOptions, new: ssl.CertificateOptions) -> None:
    """Make ``current`` hand out ``new``'s certificate, key and chain to new connections."""
    state = dict(new.__dict__)
    state["_context"] = new.getContext()  # built now: a failure shows here, not per connection
    current.__dict__.update(state)


class Reloader:
    def __init__(self, reactor: Any, ctx: ServerContext,
                 make_tls: Callable[[Config], ssl.CertificateOptions | None],
                 notify: Callable[[str], None]) -> None:
        self.reactor = reactor
        self.ctx = ctx
        self.make_tls = make_tls
        self.notify = notify
        self.config = ctx.config  # as applied: what the next reload compares with
        self.reloads = 0

    def install(self) -> None:
        signal.signal(signal.SIGHUP, lambda signum, frame: self.reactor.callFromThread(self.reload))

    def reload(self) -> bool:
        """Re-read and apply; False when the new configuration was refused."""
        self.notify("RELOADING=1")
        try:
            return self._reload()
        finally:
            self.notify("READY=1")

    def _reload(self) -> bool:
        running = self.config
        try:
            new = configmod.load(running.path)
            tls = self.make_tls(new)
            if tls is not None:
                tls.getContext()
        except ConfigError as exc:
            for line in str(exc).splitlines():
                log.error("reload refused, running configuration kept: %s", line)
            return False
        except Exception as exc:  # an OpenSSL error building the context: the same answer
            log.error("reload refused, running configuration kept: tls: %s", exc)
            return False
        restart = [f.name for f in dataclasses.fields(Config)
                   if f.name not in (*APPLIED, "path") and getattr(new, f.name) != getattr(running, f.name)]
        if restart:
            log.warning("reload: changes to %s need a restart (systemctl restart maild); "
                        "not applied", ", ".join(restart))
        if self.ctx.tls is not None and tls is not None:
            swap_certificate(self.ctx.tls, tls)
        elif (self.ctx.tls is None) != (tls is None):
            log.warning("reload: turning TLS on or off needs a restart; certificate not changed")
        self.ctx.auth.config = new.auth
        applied = dataclasses.replace(running, tls=new.tls if self.ctx.tls is not None else running.tls,
                                      auth=new.auth)
        self.config = applied
        self.reloads += 1
        log.info("reload %d: configuration %s applied (certificate %s)", self.reloads, running.path,
                 new.tls.cert_file)
        return True
