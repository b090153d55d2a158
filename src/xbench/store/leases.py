"""Leases: which `xbench run` owns which cell runs, on any MLflow store, so runs of one suite can share a tracking
server without deleting, adopting or repeating each other's work, and without trusting any client's clock.

**A lease** is held on a parent run (tags: owner, host name, host identity, pid, process start time, and a *beat
counter* that a thread raises every `heartbeat_seconds()`). Before computing a cell a run *claims* it: an unfinished
child run tagged with the cell key, which it later fills with the result.

**Liveness, on one clock: the reader's.** A lease is live while its parent run is RUNNING and
- on the same host (same machine id, boot id and pid namespace: a host identity that two containers with one
  hostname do not share; `XBENCH_HOST_ID` overrides it), while a process with that pid *and that start time*
  exists, so a reused pid does not keep a dead run's cells;
- on another host, while its beat counter advances. The reader compares counter values it read itself, timed on
  its own monotonic clock: a counter that has not moved for `lease_ttl_seconds()` of the reader's time is a dead run's.
  No writer's timestamp is ever compared with the reader's clock, so a reader whose clock is minutes ahead judges the
  same way. A reader meeting a lease it has not watched yet waits for one beat (at most the TTL) before judging it.

**Claims: a bakery, decided by the store.** MLflow has no compare-and-set, so two runs can claim one cell at once.
Claiming follows Lamport's bakery algorithm, which needs only reads and writes: a claim is created *choosing*; the
claimant then reads the cell's other claims, takes a ticket one above the highest it saw, and stops choosing; it
then waits until no other live claim of the cell is choosing (or, if one stays choosing, leaves the cell to it) and
keeps the cell only if its (ticket, run id) is the smallest among the live claims. Tickets come from what the store
holds and run ids are assigned by MLflow, so no clock decides; exactly one run computes each cell.

**Losing a lease.** A run stopped (SIGSTOP, a suspended laptop) past its TTL may find on waking that another run has
discarded its claims and adopted its parent. Its heartbeat notices (the parent's owner is no longer it), it logs
nothing more, never closes the parent it lost, and stops with a sentence (`XbenchLeaseLost`, exit 3).
"""

from __future__ import annotations

import hashlib
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OWNER_TAG = "xbench.lease.owner"
HOST_TAG = "xbench.lease.host"  # the host name, for people
HOST_ID_TAG = "xbench.lease.host_id"  # the host identity, for liveness
PID_TAG = "xbench.lease.pid"
STARTED_TAG = "xbench.lease.process_started"  # the process's start time since boot, in clock ticks
BEAT_TAG = "xbench.lease.beat"  # the beat counter
CHOOSING_TAG = "xbench.claim.choosing"
TICKET_TAG = "xbench.claim.ticket"
CELL_KEY_TAG = "xbench.cell_key"


def _seconds(variable: str, default: float) -> float:
    from xbench.core.errors import XbenchInputError

    raw = os.environ.get(variable)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise XbenchInputError(f"{raw!r} is not a positive number of seconds", field=variable)
    return value


def heartbeat_seconds() -> float:
    """How often a run raises its beat counter (`XBENCH_LEASE_HEARTBEAT_S`, default 10 s)."""
    return _seconds("XBENCH_LEASE_HEARTBEAT_S", 10.0)


def lease_ttl_seconds() -> float:
    """How long, on the reader's clock, a counter may stand still before its run is dead (`XBENCH_LEASE_TTL_S`, default
    90 s: nine missed beats; at least three beats whatever the setting)."""
    return max(_seconds("XBENCH_LEASE_TTL_S", 90.0), 3 * heartbeat_seconds())


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def host_identity() -> str:
    """An identity of this host's process table: machine id, boot id and pid namespace (hashed), so pids are only
    compared where they name the same processes. `XBENCH_HOST_ID` overrides it."""
    override = os.environ.get("XBENCH_HOST_ID")
    if override:
        return override
    try:
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        namespace = ""
    parts = (_read("/etc/machine-id"), _read("/proc/sys/kernel/random/boot_id"), namespace, socket.gethostname())
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def process_started(pid: int) -> str:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), "" where there is no /proc or
    no such process."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return ""
    fields = stat.rsplit(")", 1)[-1].split()  # the command name may hold spaces and parentheses
    return fields[19] if len(fields) > 19 else ""


def _pid_exists(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


@dataclass(frozen=True)
class Lease:
    """This process's identity as the owner of a run's cells."""

    owner: str
    host: str
    pid: int
    host_id: str = ""
    started: str = ""

    @classmethod
    def mine(cls) -> Lease:
        import uuid

        host, pid = socket.gethostname(), os.getpid()
        return cls(f"{host}:{pid}:{uuid.uuid4().hex[:8]}", host, pid, host_identity(), process_started(pid))

    def tags(self) -> dict[str, str]:
        return {
            OWNER_TAG: self.owner,
            HOST_TAG: self.host,
            HOST_ID_TAG: self.host_id,
            PID_TAG: str(self.pid),
            STARTED_TAG: self.started,
            BEAT_TAG: "0",
        }

    def holds(self, parent: Any) -> bool:
        """Whether this lease still owns `parent` (an MLflow Run): RUNNING and tagged with this owner."""
        return parent is not None and parent.info.status == "RUNNING" and parent.data.tags.get(OWNER_TAG) == self.owner


def describe(parent: Any) -> str:
    tags = parent.data.tags
    return f"pid {tags.get(PID_TAG, '?')} on {tags.get(HOST_TAG, '?')}"


def _local_verdict(tags: dict[str, str]) -> bool:
    pid = int(tags.get(PID_TAG, "0") or 0)
    if not _pid_exists(pid):
        return False
    started = tags.get(STARTED_TAG, "")
    return not started or process_started(pid) in ("", started)  # a reused pid has another start time


@dataclass
class _Watch:
    owner: str
    beat: str
    since: float  # reader's monotonic time the counter was first seen at this value
    advanced: bool = False


@dataclass
class Liveness:
    """Judges the leases of parent runs by what this reader saw of them, timed on its own monotonic clock.

    `read_run(run_id)` reads a run from the store (None when gone). Judgements are remembered for this reader: a
    counter seen advancing is live for half a TTL, a lease judged dead stays dead for that owner."""

    read_run: Callable[[str], Any]
    say: Callable[[str], None] | None = None
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    host_id: str = field(default_factory=host_identity)
    _watches: dict[str, _Watch] = field(default_factory=dict)
    _live_until: dict[str, float] = field(default_factory=dict)
    _dead: set[tuple[str, str]] = field(default_factory=set)

    def live(self, parents: Iterable[Any]) -> dict[str, bool]:
        """run id -> whether its lease is held by a running `xbench run`, for each parent run given (MLflow Runs)."""
        verdicts: dict[str, bool] = {}
        pending: dict[str, Any] = {}
        for parent in parents:
            if parent is None:
                continue
            verdict = self._judge_now(parent)
            if verdict is None:
                pending[parent.info.run_id] = parent
            else:
                verdicts[parent.info.run_id] = verdict
        if pending:
            verdicts |= self._watch(pending)
        return verdicts

    def is_live(self, parent: Any) -> bool:
        return parent is not None and self.live([parent]).get(parent.info.run_id, False)

    def _judge_now(self, parent: Any) -> bool | None:
        """A verdict without waiting, or None when the counter must be watched."""
        tags = parent.data.tags
        owner = tags.get(OWNER_TAG)
        if parent.info.status != "RUNNING" or owner is None:
            return False  # finished, failed, or written before leases: an unfinished run of an older xbench crashed
        if (parent.info.run_id, owner) in self._dead:
            return False
        if tags.get(HOST_ID_TAG) == self.host_id:
            return _local_verdict(tags)
        run_id, beat, now = parent.info.run_id, tags.get(BEAT_TAG, ""), self.clock()
        watch = self._watches.get(run_id)
        if watch is None or watch.owner != owner:
            self._watches[run_id] = _Watch(owner, beat, now)
            return None
        if watch.beat != beat:
            self._watches[run_id] = _Watch(owner, beat, now, advanced=True)
            self._live_until[run_id] = now + lease_ttl_seconds() / 2
            return True
        if now - watch.since >= lease_ttl_seconds():
            self._dead.add((run_id, owner))
            return False
        return True if self._live_until.get(run_id, -math.inf) > now else None

    def _watch(self, pending: dict[str, Any]) -> dict[str, bool]:
        if self.say is not None:
            holders = ", ".join(sorted({describe(p) for p in pending.values()}))
            self.say(
                f"waiting up to {lease_ttl_seconds():.0f} s for a heartbeat of {len(pending)} unfinished run(s) of "
                f"this suite on another host ({holders}): a live run's cells are left to it, a dead run's taken over"
            )
        verdicts: dict[str, bool] = {}
        while pending:
            self.sleep(min(1.0, heartbeat_seconds() / 4))
            for run_id in list(pending):
                parent = self.read_run(run_id)
                verdict = False if parent is None else self._judge_now(parent)
                if verdict is not None:
                    verdicts[run_id] = verdict
                    del pending[run_id]
        return verdicts


def ticket(claim: Any) -> int:
    """A claim's bakery ticket (0 for a claim without one)."""
    try:
        return int(claim.data.tags.get(TICKET_TAG) or 0)
    except ValueError:  # not written by xbench
        return 0


def claim_winner(claims: list[Any]) -> Any:
    """The claim that keeps a cell, among the live, ticketed claims of it: the smallest (ticket, run id)."""
    return min(claims, key=lambda run: (ticket(run), run.info.run_id))


class Heartbeat:
    """Raises a lease's beat counter on its parent run from a daemon thread until stopped, and notices when the lease
    is lost: the parent has another owner or is no longer RUNNING, or the store could not be reached for a TTL.
    Failures to reach the store are logged, not swallowed."""

    def __init__(self, tracking_uri: str, run_id: str, lease: Lease, say: Callable[[str], None] | None = None) -> None:
        self.tracking_uri, self.run_id, self.lease = tracking_uri, run_id, lease
        self.interval, self.ttl = heartbeat_seconds(), lease_ttl_seconds()
        self.say = say
        self.lost = threading.Event()
        self.why = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="xbench-lease-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval)

    def _lose(self, why: str) -> None:
        self.why = why
        self.lost.set()

    def _beat(self) -> None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.tracking_uri)  # its own client: not shared across threads
        beat, last_renewed, failures = 0, time.monotonic(), 0
        while not self._stop.wait(self.interval):
            try:
                parent = client.get_run(self.run_id)
                if not self.lease.holds(parent):
                    owner = parent.data.tags.get(OWNER_TAG)
                    self._lose(
                        f"its parent run {self.run_id} is now {parent.info.status}"
                        + (f" and held by {describe(parent)}" if owner != self.lease.owner else "")
                    )
                    return
                beat += 1
                client.set_tag(self.run_id, BEAT_TAG, str(beat))
                last_renewed, failures = time.monotonic(), 0
            except Exception as error:  # a store that does not answer for a moment; said, and tried again
                failures += 1
                if self.say is not None and (failures == 1 or failures % 10 == 0):
                    self.say(f"could not renew this run's lease ({failures} time(s) in a row): {error}")
                if time.monotonic() - last_renewed >= self.ttl:
                    self._lose(f"the store did not answer its heartbeat for {self.ttl:.0f} s ({error})")
                    return


@dataclass
class Claims:
    """What a run may compute after claiming: its claim run per cell key, and the cells it leaves to others."""

    mine: dict[str, str]  # cell_key -> claim run id
    held_by_others: dict[str, str]  # cell_key -> who holds it
    discarded: int  # stale claims (killed runs) removed
