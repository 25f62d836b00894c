"""Replication to a follower node (docs/replication.md).

The store records every write transaction of every environment in a redo log
(maild/store/redo.py); this package carries it: a leader streams each environment's records
from the follower's position over TLS (wire.py, session.py), the follower fetches the body
files it lacks, applies the records in order through the store and acknowledges what it
has fsynced; service.py holds roles, epochs, fencing and sync-mode waits.
"""

from maild.replication.service import ReplicationService

__all__ = ["ReplicationService"]
