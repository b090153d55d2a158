"""Leases trust no client clock and no bare pid: liveness by a beat counter timed on the reader's clock, pid with its
process start time, a claim tie-break the store decides (the bakery), a lost lease noticed, a lock wait that ends."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from xbench.core.errors import XbenchStoreBusy
from xbench.store import leases
from xbench.store.leases import Heartbeat, Lease, Liveness
from xbench.store.tracking import Store


def _cells(*keys: str) -> list[SimpleNamespace]:
    return [SimpleNamespace(cell_key=key, label=f"cell {key}") for key in keys]


def _foreign(pid: int = 4242, host_id: str = "another-host") -> Lease:
    return Lease(f"elsewhere:{pid}", "elsewhere", pid, host_id, "123")


class _FakeTime:
    """The reader's monotonic clock, advanced only by the reader's sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.on_sleep: list[Any] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        for hook in self.on_sleep:
            hook()


def test_a_foreign_lease_is_live_while_its_counter_moves_and_dead_once_it_stands_still_for_a_ttl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No writer's timestamp is read: the lease tags hold none, and a reader whose wall clock is 5 minutes ahead
    judges exactly as one whose clock agrees."""
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 300)  # the reader's wall clock, 5 minutes ahead
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    experiment = store.experiment_id("demo", create=True)
    beating = store.open_parent(experiment, "plan-1", "beating", {}, _foreign(1))
    stopped = store.open_parent(experiment, "plan-2", "stopped", {}, _foreign(2))
    assert not any(key.endswith(("heartbeat", "time")) for key in store.client.get_run(beating).data.tags)
    fake = _FakeTime()
    beats = iter(range(1, 10_000))
    fake.on_sleep.append(lambda: store.client.set_tag(beating, leases.BEAT_TAG, str(next(beats))))
    said: list[str] = []
    liveness = Liveness(store._read_run, say=said.append, clock=fake.clock, sleep=fake.sleep)
    verdicts = liveness.live([store.client.get_run(beating), store.client.get_run(stopped)])
    assert verdicts == {beating: True, stopped: False}
    assert leases.lease_ttl_seconds() <= fake.now - 1000.0 < leases.lease_ttl_seconds() + 2  # watched one TTL, no more
    assert "waiting up to 90 s for a heartbeat of 2 unfinished run(s)" in said[0] and "pid 1 on elsewhere" in said[0]
    # judged once, remembered: the stopped run stays dead, the beating one is live without another wait
    waited = fake.now
    assert liveness.live([store.client.get_run(beating), store.client.get_run(stopped)]) == verdicts
    assert fake.now == waited


def test_on_one_host_a_pid_is_alive_only_with_its_own_start_time(tmp_path: Path) -> None:
    me = Lease.mine()
    assert me.started == leases.process_started(os.getpid()) != ""
    liveness = Liveness(lambda run_id: None)
    running = SimpleNamespace(info=SimpleNamespace(status="RUNNING", run_id="r"), data=SimpleNamespace(tags={}))
    running.data.tags = me.tags()
    assert liveness.is_live(running)
    running.data.tags = {**me.tags(), leases.STARTED_TAG: str(int(me.started) + 1)}  # the pid, reused by another
    assert not liveness.is_live(running)
    dead = subprocess.Popen(["true"])
    dead.wait()
    running.data.tags = {**me.tags(), leases.PID_TAG: str(dead.pid)}
    assert not liveness.is_live(running)


def test_two_hosts_with_one_hostname_do_not_compare_pids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two containers may share a hostname; their identities differ (pid namespace, or XBENCH_HOST_ID), so the reader
    does not look up the other's pid in its own process table."""
    here = leases.host_identity()
    assert len(here) == 16 and here == leases.host_identity()
    monkeypatch.setenv("XBENCH_HOST_ID", "container-b")
    twin = Lease.mine()
    assert twin.host == __import__("socket").gethostname() and twin.host_id == "container-b" != here
    fake = _FakeTime()
    liveness = Liveness(lambda run_id: None, clock=fake.clock, sleep=fake.sleep, host_id=here)
    parent = SimpleNamespace(info=SimpleNamespace(status="RUNNING", run_id="r"), data=SimpleNamespace(tags=twin.tags()))
    # its pid is this very process, yet it is judged by its counter (gone here: read_run answers None), not the pid
    assert liveness.live([parent]) == {"r": False}


def _claim(store: Store, experiment: str, parent: str, key: str, ticket: int | None) -> str:
    tags = {"mlflow.parentRunId": parent, "xbench.role": "cell", "xbench.cell_key": key}
    if ticket is None:
        tags[leases.CHOOSING_TAG] = "1"
    else:
        tags |= {leases.CHOOSING_TAG: "0", leases.TICKET_TAG: str(ticket)}
    return str(store.client.create_run(experiment, tags=tags).info.run_id)


def test_the_smallest_ticket_then_the_smallest_run_id_keeps_a_cell_for_every_claimant(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    experiment = store.experiment_id("demo", create=True)
    first = store.open_parent(experiment, "plan-1", "one", {}, Lease.mine())
    second = store.open_parent(experiment, "plan-1", "two", {}, Lease.mine())
    early, late = _claim(store, experiment, first, "x", 1), _claim(store, experiment, second, "x", 2)
    mine_late = {"x": late}
    assert "x" in store.resolve_claims(experiment, second, mine_late) and mine_late == {}
    mine_early = {"x": early}
    assert store.resolve_claims(experiment, first, mine_early) == {} and mine_early == {"x": early}
    # equal tickets (two claimants read at the same moment): both pick the smaller run id
    a, b = _claim(store, experiment, first, "y", 1), _claim(store, experiment, second, "y", 1)
    kept = {store.resolve_claims(experiment, first, mine := {"y": a}) == {} and bool(mine) and a}
    kept |= {store.resolve_claims(experiment, second, mine := {"y": b}) == {} and bool(mine) and b}
    assert kept - {False} == {min(a, b)}


def test_a_claim_made_after_another_run_checked_loses_even_with_an_earlier_start_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the clock-based tie-break lost: run A claims and checks; run B, whose clock is 5 minutes behind,
    claims afterwards with an earlier start time. B's ticket is above A's, so only A computes the cell."""
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    experiment = store.experiment_id("demo", create=True)
    first = store.open_parent(experiment, "plan-1", "one", {}, Lease.mine())
    a = store.claim_cells(experiment, first, _cells("x"))
    assert set(a.mine) == {"x"}
    second = store.open_parent(experiment, "plan-1", "two", {}, Lease.mine())
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() - 300)
    b_claim = _claim(store, experiment, second, "x", None)  # B claimed at the same moment as A checked...
    monkeypatch.setattr(time, "time", real_time)
    assert store.client.get_run(b_claim).info.start_time < store.client.get_run(a.mine["x"]).info.start_time
    from mlflow.entities import RunTag

    store.client.log_batch(b_claim, tags=[RunTag(leases.TICKET_TAG, "2"), RunTag(leases.CHOOSING_TAG, "0")])
    mine = {"x": b_claim}  # ...and read A's ticket 1, so took 2
    assert "x" in store.resolve_claims(experiment, second, mine) and mine == {}
    assert store.resolve_claims(experiment, first, dict(a.mine)) == {}


def test_a_cell_whose_other_claim_stays_choosing_is_left_to_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XBENCH_LEASE_HEARTBEAT_S", "0.2")
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    experiment = store.experiment_id("demo", create=True)
    other = store.open_parent(experiment, "plan-1", "other", {}, Lease.mine())
    _claim(store, experiment, other, "x", None)  # a live run between its claim and its ticket
    me = store.open_parent(experiment, "plan-1", "me", {}, Lease.mine())
    claims = store.claim_cells(experiment, me, _cells("x", "z"))
    assert set(claims.mine) == {"z"} and set(claims.held_by_others) == {"x"}


@pytest.mark.slow  # over 30 s: out of the fast lane, in `make test-all` and CI
def test_a_heartbeat_notices_its_parent_was_adopted_and_says_when_it_cannot_reach_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XBENCH_LEASE_HEARTBEAT_S", "0.1")
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    experiment = store.experiment_id("demo", create=True)
    me = Lease.mine()
    parent = store.open_parent(experiment, "plan-1", "me", {}, me)
    with Heartbeat(store.uri, parent, me) as heartbeat:
        while store.client.get_run(parent).data.tags[leases.BEAT_TAG] == "0":
            time.sleep(0.05)
        assert not heartbeat.lost.is_set()
        store.client.set_tag(parent, leases.OWNER_TAG, "someone-else")  # adopted while this run was stopped
        assert heartbeat.lost.wait(timeout=600)
    assert parent in heartbeat.why and "held by" in heartbeat.why
    assert not store.close_parent(parent, {}, "FAILED", me)  # never closes what it lost
    assert store.client.get_run(parent).info.status == "RUNNING"
    said: list[str] = []
    with Heartbeat(store.uri, "0" * 32, me, say=said.append) as unreachable:
        assert unreachable.lost.wait(timeout=600)
    assert said and said[0].startswith("could not renew this run's lease (1 time(s) in a row)")
    assert "did not answer its heartbeat" in unreachable.why


def test_a_run_waiting_on_a_sqlite_store_gives_up_after_its_timeout_naming_the_holder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    holder_script = (
        "import sys, time\n"
        "from xbench.store.tracking import Store\n"
        "with Store(sys.argv[1]).exclusive('demo'):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(600)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", holder_script, store.uri], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        monkeypatch.setenv("XBENCH_LOCK_TIMEOUT_S", "0.5")
        busy = rf"waited 0.5 s for pid {holder.pid} on .*XBENCH_LOCK_TIMEOUT_S"
        with pytest.raises(XbenchStoreBusy, match=busy), store.exclusive("demo"):
            pass
    finally:
        holder.kill()
        holder.wait()
    with store.exclusive("demo"):  # released with its holder
        pass
