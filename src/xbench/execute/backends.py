"""Backends execute a suite's task graph and yield each cell's `CellResult` as it finishes; the driver logs it.

- `local` (the default): the cells one after another in this process, keeping the last model variant in memory.
- `ray`: every node of the graph (train, prune step, cell) is a Ray task with declared resources (CPU threads, GPUs),
  depending on the nodes it needs. Heavy state (weights, explanations, raw arrays) goes through the cache directory,
  which every worker must be able to read and write (one machine: any local path; several: a shared file system).
  Ray retries a task whose worker process died (`max_retries`); a task that raised is not retried (it would raise
  again) and is reported once the rest has finished. Only complete results reach the driver, which logs each once.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xbench.core.errors import XbenchInputError, XbenchRunFailure
from xbench.core.extras import require_extra
from xbench.core.results import CellResult
from xbench.plan.graph import Node, TaskGraph

BACKENDS = ("local", "ray")
TASK_RETRIES = 3  # a task whose worker was killed (OOM, pre-emption, SIGKILL) runs again up to this many times


@dataclass(frozen=True)
class BackendOptions:
    """How to run: `workers` and `threads` (torch threads per worker) size a local Ray cluster; `address` names an
    existing one (`auto`, or HOST:PORT); `gpus_per_task` is Ray's `num_gpus` of every task (default: 1 on CUDA)."""

    name: str = "local"
    address: str | None = None
    workers: int | None = None
    threads: int | None = None
    gpus_per_task: float | None = None

    def validated(self) -> BackendOptions:
        if self.name not in BACKENDS:
            raise XbenchInputError(f"must be one of {', '.join(BACKENDS)}, got {self.name!r}", field="--backend")
        if self.name == "ray":
            require_extra("ray", field="--backend")
        for field, value in (("--workers", self.workers), ("--threads", self.threads)):
            if value is not None and value < 1:
                raise XbenchInputError(f"must be at least 1, got {value}", field=field)
        if self.gpus_per_task is not None and self.gpus_per_task < 0:
            raise XbenchInputError(f"must be 0 or more, got {self.gpus_per_task}", field="--gpus-per-task")
        if self.name == "local" and (self.address or self.workers or self.gpus_per_task is not None):
            raise XbenchInputError("--address, --workers and --gpus-per-task need --backend ray", field="--backend")
        if self.address and self.workers:
            raise XbenchInputError(
                "--workers sizes the local Ray cluster xbench starts; an existing cluster (--address) has its own "
                "workers",
                field="--workers",
            )
        return self

    def sizes(self) -> tuple[int, int]:
        """(workers, threads per worker): by default one worker per core, one thread each."""
        cores = os.cpu_count() or 1
        workers = self.workers or max(1, cores // (self.threads or 1))
        return workers, self.threads or max(1, cores // workers)


def results(
    graph: TaskGraph, options: BackendOptions, cache_root: Path, device: str, cluster: RayCluster | None = None
) -> Generator[CellResult, None, None]:
    """Every cell node's result, in the order they finish. The ray backend runs on `cluster` (started by the caller,
    who shuts it down)."""
    if options.name == "ray":
        assert cluster is not None
        yield from _ray_results(graph, cluster, cache_root, device)
        return
    import torch

    from xbench.core.cache import Cache
    from xbench.execute.runner import CellExecutor

    if options.threads:
        torch.set_num_threads(options.threads)
    executor = CellExecutor(Cache(cache_root), torch.device(device))
    # The same nodes, run by the same `run_node` as on a Ray worker: here one after another, depth first.
    for node in graph.depth_first():
        output = executor.run_node(node)
        if node.kind == "cell":
            yield CellResult.model_validate_json(output)


# --------------------------------------------------------------------------------------------------------- Ray


@functools.cache
def _worker_executor(cache_root: str, device: str) -> Any:
    """One executor per worker process, created at its first task: later tasks reuse its data and model variants."""
    import torch

    from xbench.core.cache import Cache
    from xbench.execute.runner import CellExecutor

    return CellExecutor(Cache(Path(cache_root)), torch.device(device))


def run_node(node_json: str, cache_root: str, device: str, threads: int, *dependencies: str) -> str:
    """A Ray task: one node of the graph on a worker. `dependencies` are the outputs of the nodes it waits for (Ray
    passes them in once they exist). Returns a train or prune node's model key, or a cell's result as JSON."""
    import torch

    torch.set_num_threads(threads)  # the worker's share of the machine, so N workers on N cores do not oversubscribe
    with _without_progress_bars():
        return _worker_executor(cache_root, device).run_node(Node.model_validate_json(node_json))


@contextlib.contextmanager
def _without_progress_bars() -> Iterator[None]:
    """No tqdm bars from pytorch-grad-cam or Quantus in the worker's log (Ray forwards it to the driver) while a task
    runs; the worker's environment is as it was after. A worker of a cluster this run started already inherits the
    CLI's setting; one that joined with `ray start` does not."""
    before = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = before


class RayCluster:
    """The Ray cluster a run uses: started (or joined) in a background thread as soon as the run begins, so that
    Ray's start-up and the workers' imports of torch and the explainers overlap the driver's own planning."""

    def __init__(self, options: BackendOptions, device: str) -> None:
        """`device` as requested (auto | cpu | cuda): with auto, torch is asked in the starting thread."""
        self.options, self.device = options, device
        self.workers, self.threads = options.sizes()
        self.gpus = options.gpus_per_task if options.gpus_per_task is not None else 0.0
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._started_here = False
        self._warming: list[Any] = []
        self._connected, self._stop = threading.Event(), threading.Event()
        # When the first worker had imported torch and the rest and could take a task (time.time()): until then a
        # run only waits for the cluster; the suite's parent run reports how long.
        self.first_worker_ready_at: float | None = None

    def start(self) -> RayCluster:
        self._thread = threading.Thread(target=self._connect, name="xbench-ray-start", daemon=True)
        self._thread.start()
        return self

    def _connect(self) -> None:
        try:
            import ray

            # ray.init from this thread cannot install its SIGTERM handler, and says so; the driver's own handling
            # (the run is marked KILLED, the rerun resumes) does not need it.
            logging.getLogger("ray._private.worker").addFilter(
                lambda record: not record.getMessage().startswith("SIGTERM handler is not set")
            )
            if not ray.is_initialized():
                self._started_here = True
                if self.options.address:
                    try:
                        ray.init(address=self.options.address, logging_level="WARNING")
                    except (ConnectionError, ray.exceptions.AuthenticationError) as exc:
                        raise _join_error(self.options.address, exc) from None
                else:
                    # A new cluster with `workers` task slots, even if one from `ray start` runs here (that one takes
                    # --address). The workers inherit this process's environment (plug-ins on PYTHONPATH) and Ray
                    # puts its working directory on their path. No runtime_env: the workers Ray starts with the
                    # cluster have none, so one would make it start others before the first task.
                    ray.init(
                        address="local",
                        num_cpus=self.workers * self.threads,
                        include_dashboard=False,
                        logging_level="WARNING",
                    )
            if self.options.gpus_per_task is None and self.device != "cpu":
                # Where the tasks run decides (this process may be a laptop driving a GPU cluster): one GPU per task
                # when the cluster has any.
                self.gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
            warm = ray.remote(warm_worker).options(num_cpus=self.threads, num_gpus=self.gpus)
            self._warming = [warm.remote() for _ in range(self.workers)]
        except BaseException as exc:  # re-raised in the driver's thread by `ready`
            self._error = exc
        finally:
            self._connected.set()
        if self._error is None:
            self._note_first_worker_ready()
        # Ray's processes die with the thread that started them (PR_SET_PDEATHSIG is per thread on Linux): this
        # thread lives until the run is over, and stops them itself.
        self._stop.wait()
        if self._started_here:
            import ray

            ray.shutdown()

    def _note_first_worker_ready(self) -> None:
        """Wait (in this thread, never past the run's end) for the first warm-up task to finish and note the time."""
        import ray

        while self._warming and not self._stop.is_set():
            try:
                done, _ = ray.wait(self._warming, num_returns=1, timeout=0.5)
            except Exception:  # a cluster going away: the figure is only missing, the run reports its own error
                return
            if done:
                self.first_worker_ready_at = time.time()
                return

    def ready(self) -> None:
        self._connected.wait()
        if self._error is not None:
            raise self._error

    def device_for_cells(self, requested: str) -> tuple[str, str]:
        """(device, how it was decided) for `requested` (auto | cpu | cuda), decided where the cells run: a task with
        the cells' own resources asks its worker's torch. A laptop driving a GPU cluster so gets cuda, and a CPU-only
        cluster cpu, whatever this process's torch sees."""
        import ray

        self.ready()
        worker = ray.remote(device_on_worker).options(num_cpus=self.threads, num_gpus=self.gpus)
        try:
            answer = ray.get(worker.remote(requested))
        except Exception as exc:
            _raise_input_error(exc)
            raise
        gpus = f"holding GPU {', '.join(map(str, answer['gpu_ids']))}" if answer["gpu_ids"] else "holding no GPU"
        return answer["device"], f"decided by a Ray worker {gpus} on {answer['node']} ({answer['torch']})"

    def capable_nodes(self) -> set[str]:
        """The live nodes with the resources one task asks for (after a node died, maybe none)."""
        import ray

        try:
            nodes = [n for n in ray.nodes() if n.get("Alive")]
        except Exception:  # the cluster does not answer: nothing can run on it
            return set()
        return {
            str(n.get("NodeID"))
            for n in nodes
            if n.get("Resources", {}).get("CPU", 0) >= self.threads
            and n.get("Resources", {}).get("GPU", 0) >= self.gpus
        }

    def task_options(self) -> dict[str, Any]:
        """Every task's resources: the worker's threads and GPUs; retried when its worker process dies."""
        return {"num_cpus": self.threads, "num_gpus": self.gpus, "max_retries": TASK_RETRIES, "retry_exceptions": False}

    def shutdown(self) -> None:
        """Stop Ray (if this run started it) and wait until it has."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def _join_error(address: str, exc: BaseException) -> XbenchInputError:
    """Why `ray.init(address=...)` failed, for the user. Ray reports a refused token only in the text of the error its
    connection attempts ended with (after about 20 s of retries), beneath a plain ConnectionError."""
    from ray.exceptions import AuthenticationError

    if isinstance(exc, AuthenticationError) or any(
        word in str(exc.__cause__) for word in ("Unauthenticated", "InvalidAuthToken")
    ):
        return XbenchInputError(
            f"the Ray cluster at {address} refused this process (Ray authenticates every connection with one token "
            "for the whole cluster): set RAY_AUTH_MODE=token (Ray sends no token to an explicit address without it) "
            "and give this process the head's token, from `ray get-auth-token` on the head, in RAY_AUTH_TOKEN or in "
            "~/.ray/auth_token",
            field="--address",
        )
    return XbenchInputError(f"no Ray cluster answers there: {exc}", field="--address")


def decide_device(requested: str, options: BackendOptions, cluster: RayCluster | None) -> tuple[str, str | None]:
    """(device the cells compute on, how it was decided where that was not this process), decided once, where the
    cells run. `cpu` is cpu everywhere; this process and a local Ray cluster's workers share one torch; a cluster
    joined with --address is asked through one of its workers (a CPU laptop may drive a GPU cluster)."""
    if requested == "cpu":
        return "cpu", None
    if options.name == "ray" and options.address and cluster is not None:
        return cluster.device_for_cells(requested)
    from xbench.execute.runner import device_here

    return device_here(requested), None


def warm_worker() -> int:
    """A first task per worker: import what every node needs while the driver is still planning. The worker gives way
    to the driver (a lower CPU priority for the rest of its life): the driver's planning is what every task waits for,
    and later its logging of each cell is short, while the workers' computing keeps every core busy anyway."""
    with contextlib.suppress(OSError):
        os.nice(5)
    import xbench.execute.runner  # noqa: F401  (torch, timm, the explainers and metrics)

    return os.getpid()


def device_on_worker(requested: str) -> dict[str, Any]:
    """What device a task's worker would compute `requested` on, with its own torch and the GPUs Ray gave it."""
    import ray
    import torch

    from xbench.execute.runner import resolve_device

    return {
        "device": resolve_device(requested).type,
        "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
        "node": ray.get_runtime_context().get_node_id()[:8],
        "torch": f"torch {torch.__version__}, CUDA {'available' if torch.cuda.is_available() else 'not available'}",
    }


def _raise_input_error(exc: BaseException) -> None:
    """Raise the `XbenchInputError` a task raised on its worker, if that is what it was: the user gets the message
    and exit code 2 as on the local backend."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, XbenchInputError):
        raise cause


CLUSTER_CHECK_S = 2.0  # how often a run waiting on Ray checks that the cluster can still run what it waits for
# A cluster that had nodes able to run the tasks and has had none for this long lost them (a node or its raylet
# died). One that never had any (an autoscaler still starting them) is waited for, as Ray itself waits.
CLUSTER_LOST_S = 30.0


def failure_reason(exc: BaseException) -> str:
    """Why a Ray task failed, as a sentence (the kind, not the traceback)."""
    import ray.exceptions as errors

    cause = getattr(exc, "cause", None)
    if isinstance(exc, errors.NodeDiedError):
        return "a Ray node died (its raylet or the machine stopped)"
    if isinstance(exc, errors.WorkerCrashedError):
        return f"the Ray worker running it died, {TASK_RETRIES + 1} times"
    if isinstance(exc, errors.OwnerDiedError | errors.ObjectLostError):
        return "a result it needed was lost with the node that held it"
    if isinstance(exc, errors.RayTaskError) and cause is not None:
        return f"the task raised {type(cause).__name__}: {str(cause).splitlines()[0][:200] if str(cause) else ''}"
    return f"Ray failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"


def _ray_results(graph: TaskGraph, cluster: RayCluster, cache_root: Path, device: str) -> Iterator[CellResult]:
    """Each cell's result as its task finishes. Tasks that fail are collected by reason, and tasks that no live node
    can run any more (a node died and the rest lack its resources) end the wait; then `XbenchRunFailure` names them.
    """
    import ray

    cluster.ready()
    pending = _submit(graph, cluster, cache_root, device)
    failures: dict[str, list[str]] = {}
    seen_capable: set[str] = set()
    lost_since: float | None = None
    while pending:
        try:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=CLUSTER_CHECK_S)
        except ray.exceptions.RayError as exc:  # the cluster itself went away
            failures.setdefault(failure_reason(exc), []).extend(node.label for node in pending.values())
            break
        if not done:
            capable = cluster.capable_nodes()
            seen_capable |= capable
            lost_since = None if capable or not seen_capable else (lost_since or time.monotonic())
            if lost_since is not None and time.monotonic() - lost_since > CLUSTER_LOST_S:
                reason = (
                    f"no live Ray node has the {cluster.threads} CPU(s)"
                    + (f" and {cluster.gpus:g} GPU(s)" if cluster.gpus else "")
                    + " a task needs (a node or its raylet died)"
                )
                failures.setdefault(reason, []).extend(node.label for node in pending.values())
                break
            continue
        node = pending.pop(done[0])
        text: str | None = None
        try:
            text = ray.get(done[0])
        except ray.exceptions.RayError as exc:
            _raise_input_error(exc)
            failures.setdefault(failure_reason(exc), []).append(node.label)
        if text is not None:
            yield CellResult.model_validate_json(text)
    if failures:
        raise XbenchRunFailure(next(iter(graph.nodes.values())).cell.suite, failures)


def _submit(graph: TaskGraph, cluster: RayCluster, cache_root: Path, device: str) -> dict[Any, Node]:
    """Every node as a Ray task depending on the tasks of the nodes it needs; the cell nodes' refs. The other refs
    are dropped here: Ray keeps what a submitted task still needs."""
    import ray

    task = ray.remote(run_node)
    refs: dict[str, Any] = {}
    for node in graph.nodes.values():  # topological order: a node's dependencies have their refs already
        refs[node.id] = task.options(name=node.label, **cluster.task_options()).remote(
            node.model_dump_json(), str(cache_root), device, cluster.threads, *(refs[d] for d in node.depends_on)
        )
    return {refs[node.id]: node for node in graph.cell_nodes}
