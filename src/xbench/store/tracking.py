"""MLflow: one experiment per suite, one parent run per `xbench run`, one nested child run per cell: the client
(`Store`), the SQLite suite lock and the claims of shared servers (the leases' rules live in `leases`).

What a result is in MLflow is `mapping`'s; the records read back are `records`'. Reads are used by export, the
leaderboard and check, so this module never imports torch.

Why ~600 lines: `Store` is one client whose methods share its connection, its lock and its claims; each method is one
MLflow operation (log a cell, claim cells, adopt a parent, read results back).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from xbench.core.errors import XbenchInputError
from xbench.core.extras import require_extra
from xbench.core.results import ArtifactStore, CellResult
from xbench.store import leases
from xbench.store.mapping import (
    CELL_KEY_TAG,
    EQUIVALENCE_TAG,
    HUMAN_KEY_TAG,
    HUMAN_REPORT_FILE,
    HUMAN_ROLE,
    PLAN_KEY_TAG,
    REFERENCE_TAG,
    RESULT_FILE,
    ROLE_TAG,
    SEQUENTIAL_TAG,
    SUITE_TAG,
    Pictures,
    batches,
    cell_params,
    order_of,
    result_files,
    result_metrics,
    result_tags,
)
from xbench.store.records import ResultRecords, StoredRun

DEFAULT_DB = "xbench.db"
# MLflow 3's UI opens an experiment on its GenAI overview ("Traces: 0") unless told it holds model-development runs.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def resolve_tracking_uri(uri: str | None = None) -> str:
    """CLI flag > MLFLOW_TRACKING_URI > a SQLite file `xbench.db` in the working directory."""
    if uri is not None:
        return uri
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / DEFAULT_DB}"


def _lock_timeout() -> float:
    """How long a run waits for another to release a SQLite store (`XBENCH_LOCK_TIMEOUT_S`, default an hour)."""
    raw = os.environ.get("XBENCH_LOCK_TIMEOUT_S", "3600")
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise XbenchInputError(f"{raw!r} is not a number of seconds >= 0", field="XBENCH_LOCK_TIMEOUT_S")
    return value


def experiment_name(suite: str) -> str:
    return f"xbench/{suite}"


class Store(ResultRecords):
    """An MLflow tracking store (SQLite file by default, or any tracking server URI)."""

    def __init__(self, uri: str | None = None) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = resolve_tracking_uri(uri)
        if urlparse(self.uri).scheme.startswith("postgresql"):
            require_extra("psycopg", field="--tracking-uri")
        # Opening a new SQLite store creates its schema; two processes doing it at once collide, so one at a time.
        with self._database_lock("open", wait_message=None):
            self.client = MlflowClient(tracking_uri=self.uri)
        self._results: dict[str, CellResult] = {}  # run_id -> result, as load_results read them
        self._liveness: leases.Liveness | None = None

    def exclusive(self, suite: str) -> contextlib.AbstractContextManager[None]:
        """Hold the suite's write lock on a SQLite store (a file lock beside the database) while a run writes.

        SQLite has one writer at a time, and two runs of one suite would both compute the cells neither had logged
        yet. The second run waits, saying for whom, and continues once the first is done. A tracking server is shared
        by design and takes no lock here.
        """
        return self._database_lock(
            f"suite-{suite}",
            wait_message=f"another xbench run of suite {suite} ({{holder}}) is writing to this store; waiting for it "
            "to finish (for parallel runs use an MLflow tracking server: --tracking-uri http://...)",
        )

    @contextlib.contextmanager
    def _database_lock(self, purpose: str, wait_message: str | None) -> Iterator[None]:
        """An exclusive file lock `.<database>.<purpose>.lock` beside a SQLite database (nothing for other stores); the
        holder's pid in `.<database>.<purpose>.holder`, so a waiting run can say whom it waits for."""
        if urlparse(self.uri).scheme != "sqlite":
            yield
            return
        from filelock import FileLock, Timeout

        database = Path(self.uri.removeprefix("sqlite:///"))
        lock_path = database.resolve().parent / f".{database.name}.{purpose}.lock"
        holder = lock_path.with_suffix(".holder")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(lock_path)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            named = (holder.read_text(errors="replace").strip()[:200] if holder.exists() else "") or "another process"
            patience = _lock_timeout()
            if wait_message is not None:
                from xbench.core.progress import log

                log(wait_message.format(holder=named) + f" (at most {patience:g} s: XBENCH_LOCK_TIMEOUT_S)")
            try:
                lock.acquire(timeout=patience)
            except Timeout:
                from xbench.core.errors import XbenchStoreBusy

                raise XbenchStoreBusy(
                    f"waited {patience:g} s for {named}, which still holds {database.name} ({purpose}); nothing was "
                    "written. Wait for it, stop it, or raise XBENCH_LOCK_TIMEOUT_S"
                ) from None
        try:
            import socket

            holder.write_text(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}")
            yield
        finally:
            lock.release()

    def _artifact_location(self, suite: str) -> str | None:
        """SQLite stores keep artifacts beside the database file (MLflow would use ./mlruns of the cwd)."""
        parsed = urlparse(self.uri)
        if parsed.scheme != "sqlite":
            return None
        database = Path(self.uri.removeprefix("sqlite:///"))
        return (database.resolve().parent / "xbench-artifacts" / suite).as_uri()

    def experiment_id(self, suite: str, create: bool = False) -> str | None:
        """The suite's experiment; `create` makes it (or marks an older one) as a model-development experiment, so the
        MLflow UI opens on its runs."""
        experiment = self.client.get_experiment_by_name(experiment_name(suite))
        if experiment is not None:
            if create and experiment.tags.get("mlflow.experimentKind") is None:
                for key, value in EXPERIMENT_KIND.items():
                    self.set_experiment_tag(experiment.experiment_id, key, value)
            return experiment.experiment_id
        if not create:
            return None
        from mlflow.exceptions import MlflowException

        try:
            return self.client.create_experiment(
                experiment_name(suite),
                artifact_location=self._artifact_location(suite),
                tags={SUITE_TAG: suite, **EXPERIMENT_KIND},
            )
        except MlflowException:  # another run of the suite created it a moment ago: use theirs
            experiment = self.client.get_experiment_by_name(experiment_name(suite))
            if experiment is None:
                raise
            return str(experiment.experiment_id)

    def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None:
        """Set an experiment tag unless it already has this value. Two runs setting one tag at once can collide in
        MLflow's insert (a unique-key error from PostgreSQL); the tag then holds a value, and if it is ours, done."""
        from mlflow.exceptions import MlflowException

        for attempt in range(3):
            if self.client.get_experiment(experiment_id).tags.get(key) == value:
                return
            try:
                self.client.set_experiment_tag(experiment_id, key, value)
                return
            except MlflowException:
                if attempt == 2:
                    raise

    def _search(self, experiment_id: str, filter_string: str) -> list[Any]:
        runs, token = [], None
        while True:
            page = self.client.search_runs(
                [experiment_id],
                filter_string=filter_string,
                max_results=1000,
                page_token=token,
                order_by=["attributes.start_time DESC"],
            )
            runs += list(page)
            token = page.token
            if not token:
                return runs

    def finished_cells(self, experiment_id: str) -> dict[str, str]:
        """cell_key -> run_id of every finished cell run (the newest, if a key was ever logged twice)."""
        finished: dict[str, str] = {}
        for run in self._search(experiment_id, f"tags.`{ROLE_TAG}` = 'cell' and attributes.status = 'FINISHED'"):
            finished.setdefault(run.data.tags[CELL_KEY_TAG], run.info.run_id)
        return finished

    def _unfinished_cells(self, experiment_id: str) -> list[Any]:
        return self._search(experiment_id, f"tags.`{ROLE_TAG}` = 'cell' and attributes.status != 'FINISHED'")

    def _parents(self, runs: list[Any]) -> dict[str, Any]:
        """parent run id -> the parent run (None when it was deleted) of each run."""
        parents: dict[str, Any] = {}
        for run in runs:
            parent_id = run.data.tags.get("mlflow.parentRunId", "")
            if parent_id and parent_id not in parents:
                try:
                    parents[parent_id] = self.client.get_run(parent_id)
                except Exception:  # deleted, or from another store: no lease holds it
                    parents[parent_id] = None
        return parents

    def liveness(self) -> leases.Liveness:
        """This store's judge of other runs' leases (`leases.Liveness`), remembering what it saw of them."""
        if self._liveness is None:
            from xbench.core.progress import log

            self._liveness = leases.Liveness(self._read_run, say=log)
        return self._liveness

    def _read_run(self, run_id: str) -> Any:
        try:
            return self.client.get_run(run_id)
        except Exception:  # deleted, or from another store: no lease holds it
            return None

    def claim_cells(self, experiment_id: str, parent_id: str, cells: list[Any]) -> leases.Claims:
        """Claim the cells this run will compute (`leases`): cells another live run has claimed are left to it, claims
        of dead runs are discarded, and of claims made at once the bakery's smallest (ticket, run id) wins."""
        unfinished = self._unfinished_cells(experiment_id)
        parents = self._parents(unfinished)
        live = self.liveness().live(p for p in parents.values() if p is not None and p.info.run_id != parent_id)
        held: dict[str, str] = {}
        discarded = 0
        for run in unfinished:
            parent_of = run.data.tags.get("mlflow.parentRunId", "")
            if live.get(parent_of, False):
                held.setdefault(run.data.tags.get(CELL_KEY_TAG, ""), leases.describe(parents[parent_of]))
            else:  # a killed or crashed run's claim, or a half-logged cell: every cell appears once
                self.client.delete_run(run.info.run_id)
                discarded += 1
        mine: dict[str, str] = {}
        for cell in cells:  # the bakery's first step: each claim is made choosing, without a ticket
            if cell.cell_key not in held:
                run = self.client.create_run(
                    experiment_id,
                    run_name=cell.label,
                    tags={
                        "mlflow.parentRunId": parent_id,
                        ROLE_TAG: "cell",
                        CELL_KEY_TAG: cell.cell_key,
                        leases.CHOOSING_TAG: "1",
                    },
                )
                mine[cell.cell_key] = run.info.run_id
        highest: dict[str, int] = {}  # the second: a ticket one above the highest this run sees for the cell
        for run in self._unfinished_cells(experiment_id):
            key = run.data.tags.get(CELL_KEY_TAG, "")
            if key in mine and run.info.run_id != mine[key]:
                highest[key] = max(highest.get(key, 0), leases.ticket(run))
        from mlflow.entities import RunTag

        for key, run_id in mine.items():
            ticket = [RunTag(leases.TICKET_TAG, str(highest.get(key, 0) + 1)), RunTag(leases.CHOOSING_TAG, "0")]
            self.client.log_batch(run_id, tags=ticket)
        held |= self.resolve_claims(experiment_id, parent_id, mine)
        return leases.Claims(mine, held, discarded)

    def resolve_claims(self, experiment_id: str, parent_id: str, mine: dict[str, str]) -> dict[str, str]:
        """The bakery's last step: withdraw this run's claims (`mine`, cell key -> claim run, changed in place) that
        lose to another live claim, the smallest (ticket, run id) winning, once no live claim of the cell is still
        choosing; a cell whose other claim stays choosing for a heartbeat is left to it. Returns cell key -> who holds
        it, for the cells withdrawn."""
        deadline = time.monotonic() + leases.heartbeat_seconds()
        while True:
            runs = [
                r
                for r in self._search(experiment_id, f"tags.`{ROLE_TAG}` = 'cell'")
                if r.data.tags.get(CELL_KEY_TAG) in mine
            ]
            # a cell another run logged after this run read what was finished (it may have waited on a lease since)
            logged = {r.data.tags[CELL_KEY_TAG] for r in runs if r.info.status == "FINISHED"}
            claims = [r for r in runs if r.info.status != "FINISHED"]
            parents = self._parents(claims)
            live_parents = self.liveness().live(
                p for p in parents.values() if p is not None and p.info.run_id != parent_id
            )
            live_parents[parent_id] = True
            live = [r for r in claims if live_parents.get(r.data.tags.get("mlflow.parentRunId", ""), False)]
            choosing = {
                r.data.tags[CELL_KEY_TAG]
                for r in live
                if r.data.tags.get(leases.CHOOSING_TAG) == "1" and r.info.run_id not in mine.values()
            }
            if not choosing or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        held: dict[str, str] = {}
        by_key: dict[str, list[Any]] = {}
        for run in live:
            if run.data.tags.get(leases.CHOOSING_TAG) != "1":
                by_key.setdefault(run.data.tags[CELL_KEY_TAG], []).append(run)
        for key in list(mine):
            if key in logged:
                self.client.delete_run(mine.pop(key))
                held[key] = "another run, which has logged it"
                continue
            if key in choosing:
                holder = next(r for r in live if r.data.tags[CELL_KEY_TAG] == key and r.info.run_id != mine[key])
            elif not any(r.info.run_id == mine[key] for r in by_key.get(key, [])):
                mine.pop(key)  # another run discarded this claim, judging this run dead: the cell is not ours
                held[key] = "another run"
                continue
            else:
                holder = leases.claim_winner(by_key[key])
                if holder.info.run_id == mine[key]:
                    continue
            self.client.delete_run(mine.pop(key))
            held[key] = leases.describe(parents[holder.data.tags["mlflow.parentRunId"]])
        return held

    def withdraw(self, run_ids: list[str]) -> None:
        """Delete claims this run will not fill (it failed or was interrupted), so no one waits for them."""
        for run_id in run_ids:
            try:
                self.client.delete_run(run_id)
            except Exception:  # already gone; the next run discards what is left anyway
                continue

    def open_parent(
        self, experiment_id: str, plan_key: str, run_name: str, tags: dict[str, str], lease: leases.Lease
    ) -> str:
        """Continue the unfinished parent run of the same plan whose lease is dead (a resumed run), or start a new
        one; a parent whose lease is live belongs to a run still going, and is never adopted."""
        from mlflow.entities import RunTag

        query = f"tags.`{ROLE_TAG}` = 'suite' and tags.`{PLAN_KEY_TAG}` = '{plan_key}'"
        unfinished = [run for run in self._search(experiment_id, query) if run.info.status != "FINISHED"]
        live = self.liveness().live(unfinished)
        for run in unfinished:
            if not live.get(run.info.run_id, False):
                resumed = {**lease.tags(), "xbench.resumed_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
                self.client.log_batch(run.info.run_id, tags=[RunTag(k, v) for k, v in resumed.items()])
                self.client.update_run(run.info.run_id, status="RUNNING")
                if lease.holds(self._read_run(run.info.run_id)):  # two resumed runs adopting at once: one keeps it
                    return str(run.info.run_id)
        run = self.client.create_run(
            experiment_id,
            run_name=run_name,
            tags={**tags, ROLE_TAG: "suite", PLAN_KEY_TAG: plan_key, **lease.tags()},
        )
        return str(run.info.run_id)

    def close_parent(
        self, run_id: str, metrics: dict[str, float], status: str = "FINISHED", lease: leases.Lease | None = None
    ) -> bool:
        """Log the run's totals and end it with `status`, unless `lease` no longer holds it (another run adopted it
        while this one was stopped: that run closes it). Whether it was closed."""
        from mlflow.entities import Metric

        if lease is not None and not lease.holds(self._read_run(run_id)):
            return False
        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        self.client.set_terminated(run_id, status=status)
        return True

    def claim_discarded(self, claim: str) -> bool:
        """Whether another run discarded this claim (judging its run dead)."""
        run = self._read_run(claim)
        return run is None or run.info.lifecycle_stage != "active"

    def log_result(
        self,
        experiment_id: str,
        parent_id: str,
        result: CellResult,
        artifacts: ArtifactStore,
        extra_tags: dict[str, str] | None = None,
        claim: str | None = None,
        pictures: Pictures | None = None,
    ) -> str:
        """Write one cell result as a finished child run (into its `claim` run, when it has one): params, metrics and
        tags for the UI, `result.json` (the result itself, what `load_cell_results` reads back), its raw arrays, and
        what `pictures` draws from them (the store itself draws nothing: presentation passes its drawer in)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag

        cell = result.cell
        if claim is None:
            claim = self.client.create_run(
                experiment_id, run_name=cell.label, tags={"mlflow.parentRunId": parent_id, ROLE_TAG: "cell"}
            ).info.run_id
        run_id = claim
        now = int(time.time() * 1000)
        params = [Param(k, str(v)) for k, v in cell_params(cell).items()]
        metrics = [Metric(k, float(v), now, 0) for k, v in result_metrics(result).items()]
        tags = [RunTag(k, str(v)) for k, v in {**result_tags(result), **(extra_tags or {})}.items()]
        for batch_params, batch_tags, batch_metrics in batches(params, tags, metrics):
            self.client.log_batch(run_id, metrics=batch_metrics, params=batch_params, tags=batch_tags)
        source = json.dumps({**cell.dataset.model_dump(mode="json"), "data_seed": cell.data_seed}, sort_keys=True)
        name = f"{cell.dataset.name}-{cell.dataset.image_size}px"
        self._log_inputs(
            run_id,
            [
                DatasetInput(
                    Dataset(f"{name}-{split}", result.data_digest[:36], "xbench", source),
                    tags=[InputTag("mlflow.data.context", context)],
                )
                for split, context in (("train", "training"), ("eval", "evaluation"))
            ],
        )
        with tempfile.TemporaryDirectory(prefix="xbench-log-") as workdir:
            result_files(result, artifacts, Path(workdir), pictures)
            self.client.log_artifacts(run_id, workdir)  # one call: each call is a round trip to a tracking server
        self.client.set_terminated(run_id, status="FINISHED")
        return str(run_id)

    def _log_inputs(self, run_id: str, datasets: list[Any]) -> None:
        """Link the run to its datasets. MLflow's store looks a dataset up and inserts it when absent, in two steps:
        two runs of one suite logging the same dataset at the same moment can both miss it, and the second insert
        then breaks the unique key (PostgreSQL's UniqueViolation, SQLite's UNIQUE constraint). The row exists by
        then, so the same call made again finds it and only links the run."""
        from mlflow.exceptions import MlflowException

        for attempt in range(3):
            try:
                self.client.log_inputs(run_id, datasets=datasets)
                return
            except MlflowException as error:
                message = str(error)
                if attempt == 2 or not ("UniqueViolation" in message or "UNIQUE constraint" in message):
                    raise

    def artifact(self, run_id: str, name: str, destination: Path) -> Path | None:
        """A run's artifact copied under `destination`, or None if the run has no such artifact."""
        try:
            return Path(self.client.download_artifacts(run_id, name, str(destination)))
        except Exception:  # MLflow raises several types for a missing artifact; absence is what matters here
            return None

    def reference(self, suite: str) -> str | None:
        """The reference a suite's runs named (`reference:` in the suite), if any."""
        experiment = self.client.get_experiment_by_name(experiment_name(suite))
        return None if experiment is None else experiment.tags.get(REFERENCE_TAG)

    def sequential_text(self, suite: str) -> str | None:
        experiment = self.client.get_experiment_by_name(experiment_name(suite))
        return None if experiment is None else experiment.tags.get(SEQUENTIAL_TAG)

    def equivalence(self, suite: str) -> dict[str, float]:
        """The equivalence margins a suite's last run named (`equivalence:` in the suite), if any."""
        experiment = self.client.get_experiment_by_name(experiment_name(suite))
        text = None if experiment is None else experiment.tags.get(EQUIVALENCE_TAG)
        if not text:
            return {}
        try:
            margins = json.loads(text)
        except ValueError:
            return {}
        return {str(k): float(v) for k, v in margins.items()} if isinstance(margins, dict) else {}

    def suites(self) -> list[str]:
        from mlflow.entities import ViewType

        return sorted(
            e.tags[SUITE_TAG]
            for e in self.client.search_experiments(view_type=ViewType.ACTIVE_ONLY)
            if SUITE_TAG in e.tags
        )

    def load_cell_results(self, suite: str) -> list[tuple[StoredRun, CellResult]]:
        """(its run, CellResult) of every cell of `suite`: its newest finished run, read back from `result.json`.
        Raises XbenchInputError if the suite has no results."""
        experiment_id = self.experiment_id(suite)
        if experiment_id is None:
            known = ", ".join(self.suites()) or "none"
            raise XbenchInputError(f"no results for suite {suite!r} in {self.uri} (suites with results: {known})")
        runs: dict[str, Any] = {}
        for run in self._search(experiment_id, f"tags.`{ROLE_TAG}` = 'cell' and attributes.status = 'FINISHED'"):
            runs.setdefault(run.data.tags[CELL_KEY_TAG], run)
        loaded = []
        with tempfile.TemporaryDirectory(prefix="xbench-results-") as workdir:
            for index, run in enumerate(runs.values()):
                destination = Path(workdir) / str(index)
                destination.mkdir()
                path = self.artifact(run.info.run_id, RESULT_FILE, destination)
                if path is None:
                    raise XbenchInputError(
                        f"cell run {run.info.run_id} of suite {suite!r} has no {RESULT_FILE}: it was logged by an "
                        "older xbench; run the suite again into a new store"
                    )
                stored = StoredRun(run.info.run_id, int(run.info.start_time), dict(run.data.tags))
                loaded.append((stored, CellResult.model_validate_json(path.read_text())))
        return sorted(loaded, key=lambda pair: order_of(pair[1]))

    def log_human_study(self, suite: str, report: dict[str, Any], files: list[Path]) -> str:
        """A human study's analysis as a finished run of the suite's experiment: params (design, pairs, counts),
        metrics (preference and equal rates, p-values, alpha, metric agreement), `human_study.json` (the report, what
        `human_studies` reads back) and `files` (manifest, answers, text report) as artifacts."""
        import hashlib

        from mlflow.entities import Metric, Param

        experiment_id = self.experiment_id(suite)
        if experiment_id is None:
            raise XbenchInputError(f"no results for suite {suite!r} in {self.uri}", field="--suite")
        # The same answers analysed the same way are one study: a rerun finds its run instead of logging it twice.
        key = hashlib.sha256(json.dumps(report, sort_keys=True, default=str).encode()).hexdigest()[:32]
        query = f"tags.`{ROLE_TAG}` = '{HUMAN_ROLE}' and tags.`{HUMAN_KEY_TAG}` = '{key}'"
        for run in self._search(experiment_id, query):
            if run.info.status == "FINISHED":
                return str(run.info.run_id)
            self.client.delete_run(run.info.run_id)  # a half-logged one from a crash
        name = f"human study: {report['design']} ({report['answers']} answers)"
        tags = {ROLE_TAG: HUMAN_ROLE, HUMAN_KEY_TAG: key}
        run_id = self.client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
        params = {
            "design": report["design"],
            "workers": report["workers"],
            "answers": report["answers"],
            "excluded_workers": len(report["excluded_workers"]),
            "min_check_accuracy": report["min_check_accuracy"],
        }
        values: dict[str, float | None] = {"alpha": report["alpha"]}
        if report["design"] == "pairwise":
            params["pairs"] = ", ".join(f"{p['a']}:{p['b']}" for p in report["pairs"])
            for p in report["pairs"]:
                prefix = f"human.{p['a']} vs {p['b']}."
                values |= {
                    prefix + "prefer_a": p["a_rate"],
                    prefix + "equal_rate": p["equal_rate"],
                    prefix + "chi2_p": p["chi2_p"],
                    prefix + "binom_p": p["binom_p"],
                    prefix + "p": p["p"],
                    prefix + "p_holm": p["p_holm"],
                }
        else:
            params["variants"] = ", ".join(v["variant"] for v in report["variants"])
            values["human.chi2_p"] = report["chi2_p"]
            values |= {f"human.{v['variant']}.accuracy": v["accuracy"] for v in report["variants"]}
            for c in report.get("contrasts", []):
                values |= {f"human.{c['b']} - {c['a']}.p": c["p"], f"human.{c['b']} - {c['a']}.p_holm": c["p_holm"]}
        values |= {f"agreement.{row['metric']}": row["agreement"] for row in report.get("agreement", [])}
        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            params=[Param(k, str(v)) for k, v in params.items()],
            metrics=[Metric(k, float(v), now, 0) for k, v in values.items() if v is not None],
        )
        with tempfile.TemporaryDirectory(prefix="xbench-human-") as workdir:
            report_file = Path(workdir) / HUMAN_REPORT_FILE
            report_file.write_text(json.dumps(report, indent=1))
            for path in [report_file, *files]:
                self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, status="FINISHED")
        return str(run_id)

    def human_studies(self, suite: str) -> list[dict[str, Any]]:
        """The reports of every finished human study of `suite`, newest first."""
        experiment_id = self.experiment_id(suite)
        if experiment_id is None:
            return []
        reports = []
        with tempfile.TemporaryDirectory(prefix="xbench-human-") as workdir:
            runs = self._search(experiment_id, f"tags.`{ROLE_TAG}` = '{HUMAN_ROLE}' and attributes.status = 'FINISHED'")
            for index, run in enumerate(runs):
                destination = Path(workdir) / str(index)
                destination.mkdir()
                path = self.artifact(run.info.run_id, HUMAN_REPORT_FILE, destination)
                if path is not None:
                    reports.append({**json.loads(path.read_text()), "run_id": run.info.run_id})
        return reports

    def arrays(self, run_id: str, names: tuple[str, ...]) -> dict[str, Any]:
        """The named raw arrays of a loaded cell run (e.g. gallery_images, gallery_attributions), from its artifacts."""

        found = {}
        with tempfile.TemporaryDirectory(prefix="xbench-arrays-") as workdir:
            for name in names:
                path = self.artifact(run_id, f"{name}.npy", Path(workdir))
                if path is not None:
                    found[name] = np.load(path, allow_pickle=False)
        return found
