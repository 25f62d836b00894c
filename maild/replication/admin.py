"""`maild replica ...`: status, promote, resync (verify: verify.py; docs/replication.md)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from maild.replication.service import STATUS_FILE
from maild.store import Store, redo

STATUS_STALE = 5.0  # seconds: an older status file means no daemon reports


def status(store: Store) -> dict[str, Any]:
    """What the node's daemon reports (data_dir/replication-status.json), completed by the
    positions read from the store itself."""
    out: dict[str, Any] = {"role": store.repl_role, "epoch": store.repl_epoch,
                           "fenced": store.repl_fence, "daemon": None}
    try:
        daemon = json.loads((store.data_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        daemon = None
    if daemon is not None and time.time() - float(daemon.get("time", 0)) < STATUS_STALE:
        out["daemon"] = daemon
    envs = {}
    for where, log_ in store.replication_logs().items():
        pos = log_.position()
        row: dict[str, Any] = {"position": pos, "oldest": log_.first()}
        reported = (out["daemon"] or {}).get("environments", {}).get(where, {})
        row.update({k: v for k, v in reported.items() if k != "position"})
        if pos:
            epoch = log_.epoch_at(pos)
            row["epoch"] = epoch
        envs[where] = row
    out["environments"] = envs
    return out


def promote(store: Store) -> int:
    """Make this node the leader under a new epoch, durably; return the epoch. The running
    daemon takes it up within a second (service.STATE_POLL)."""
    state = redo.read_state(store.data_dir)
    epochs = [int(e) for e, _ in state.get("history", [])] + [int(state.get("epoch", 1))]
    epoch = max(epochs) + 1
    state["epoch"] = epoch
    state["role"] = "leader"
    state["led"] = True  # for good: its data may now hold writes no other node has
    state["fenced"] = None
    positions = {where: log_.position() for where, log_ in store.replication_logs().items()}
    state.setdefault("history", []).append([epoch, positions])
    redo.write_state(store.data_dir, state)
    return epoch


def set_aside_report(store: Store) -> str:
    """What a set-aside data directory holds: per environment its log position and epoch,
    per user and mailbox its message count and highest modseq (report.txt beside it)."""
    lines = [f"epoch {store.repl_epoch}"]
    for where, log_ in store.replication_logs().items():
        pos = log_.position()
        lines.append(f"{where}: position {pos}, epoch {log_.epoch_at(pos) if pos else '-'}")
    for user in store.users():
        for mailbox in store.mailboxes(user.address):
            lines.append(f"{user.address} {mailbox.name}: {mailbox.messages} message(s), "
                         f"highest modseq {mailbox.highestmodseq}")
    return "\n".join(lines) + "\n"


def resync(data_dir: Path, config: Any = None) -> Path | None:
    """Set this node's data aside (data_dir/set-aside/<time>/, a complete data directory an
    admin can open and read, never merged) and make it an empty follower that copies the
    leader anew. Run with the daemon stopped. Returns where the old data went."""
    state = redo.read_state(data_dir)
    parts = [p for p in ("directory", "shards") if (data_dir / p).exists()]
    target = None
    if parts:
        target = data_dir / "set-aside" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target.mkdir(parents=True)
        for part in parts:
            shutil.move(str(data_dir / part), str(target / part))
        if (data_dir / redo.STATE_FILE).exists():
            shutil.copy2(data_dir / redo.STATE_FILE, target / redo.STATE_FILE)
        (target / "README").write_text(
            "Set aside by `maild replica resync`: this node's data before it rejoined as a\n"
            "follower. Changes here that the leader never received (async mode) were NOT\n"
            "merged. Open it read-only with a configuration whose data_dir points here;\n"
            "report.txt lists what it holds. Compare with the leader: maild replica verify.\n")
        if config is not None:
            old = Store(target, config.store, replication=config.replication)
            try:
                (target / "report.txt").write_text(set_aside_report(old))
            finally:
                old.close()
    history = state.get("history", [])
    redo.write_state(data_dir, {"epoch": int(state.get("epoch", 1)), "role": "follower",
                                "fenced": None, "history": history})
    return target
