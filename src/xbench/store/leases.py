"""Leases: which `xbench run` owns which cell runs, on any MLflow store, so runs of one suite can share a tracking
server without deleting, adopting or repeating each other's work.

A run holds a lease on its parent run (tags: owner, host, pid, and a heartbeat a thread renews every
`HEARTBEAT_S`). Before computing a cell it *claims* it: an unfinished child run tagged with the cell key, which it later
fills with the result. A lease is live while its parent run is RUNNING and, on the same host, its process exists;
on another host, while its heartbeat is younger than `LEASE_TTL_S`. Another run skips cells whose claim is live,
discards claims whose lease is stale (a killed run), and never adopts or closes a parent whose lease is live.

MLflow has no compare-and-set, so two runs can claim one cell at the same moment. Each checks after claiming: of the
live claims of a cell, the earliest (start time, then run id) wins and the others withdraw. Every claimant sees the
earlier claim when it checks, because that claim existed before its own; so exactly one computes the cell (given
clocks that agree to within the time between a claim and its check, as NTP keeps them).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

HEARTBEAT_S = 10.0
LEASE_TTL_S = 90.0  # a heartbeat older than this is a dead run's (nine missed beats)
OWNER_TAG = "xbench.lease.owner"
HOST_TAG = "xbench.lease.host"
PID_TAG = "xbench.lease.pid"
HEARTBEAT_TAG = "xbench.lease.heartbeat"


@dataclass(frozen=True)
class Lease:
    """This process's identity as the owner of a run's cells."""

    owner: str
    host: str
    pid: int

    @classmethod
    def mine(cls) -> Lease:
        host = socket.gethostname()
        return cls(f"{host}:{os.getpid()}:{uuid.uuid4().hex[:8]}", host, os.getpid())

    def tags(self) -> dict[str, str]:
        return {OWNER_TAG: self.owner, HOST_TAG: self.host, PID_TAG: str(self.pid), HEARTBEAT_TAG: f"{time.time():.0f}"}


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def is_live(parent: Any, now: float | None = None) -> bool:
    """Whether a parent run's lease is held by a running `xbench run` (an MLflow Run)."""
    if parent is None or parent.info.status != "RUNNING":
        return False
    tags = parent.data.tags
    if OWNER_TAG not in tags:
        return False  # written before leases: an unfinished run of an older xbench is a crashed one
    if tags.get(HOST_TAG) == socket.gethostname():
        return _pid_exists(int(tags.get(PID_TAG, "0") or 0))
    beat = float(tags.get(HEARTBEAT_TAG, "0") or 0)
    return (now if now is not None else time.time()) - beat < LEASE_TTL_S


def describe(parent: Any) -> str:
    tags = parent.data.tags
    return f"pid {tags.get(PID_TAG, '?')} on {tags.get(HOST_TAG, '?')}"


class Heartbeat:
    """Renews a lease's heartbeat on its parent run from a daemon thread until stopped."""

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        self.tracking_uri, self.run_id = tracking_uri, run_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="xbench-lease-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=HEARTBEAT_S)

    def _beat(self) -> None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.tracking_uri)  # its own client: not shared across threads
        while not self._stop.wait(HEARTBEAT_S):
            try:
                client.set_tag(self.run_id, HEARTBEAT_TAG, f"{time.time():.0f}")
            except Exception:  # a store that does not answer for a moment; the next beat tries again
                continue


@dataclass
class Claims:
    """What a run may compute after claiming: its claim run per cell key, and the cells it leaves to others."""

    mine: dict[str, str]  # cell_key -> claim run id
    held_by_others: dict[str, str]  # cell_key -> who holds it
    discarded: int  # stale claims (killed runs) removed


def winners(claims: list[Any]) -> dict[str, Any]:
    """cell_key -> the winning claim run among live claims: the earliest by start time, then run id."""
    by_key: dict[str, list[Any]] = defaultdict(list)
    for run in claims:
        by_key[run.data.tags["xbench.cell_key"]].append(run)
    return {key: min(runs, key=lambda r: (r.info.start_time, r.info.run_id)) for key, runs in by_key.items()}
