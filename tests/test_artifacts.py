"""The content-addressed artifact store under concurrency and damage: two processes storing the same array at once
both succeed (every cell on the same data stores the same gallery), and a damaged file is replaced by the next put."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np

from xbench.core.results import ArtifactStore

TRIALS = 30


def _put_after(barrier: multiprocessing.synchronize.Barrier, roots: list[str], errors: multiprocessing.Queue) -> None:
    """One of two processes: each trial, both wait at the barrier, then store one array into that trial's root."""
    array = np.arange(200_000, dtype=np.float32).reshape(400, 500)  # large enough for the writes to overlap
    for root in roots:
        barrier.wait()
        try:
            ArtifactStore(Path(root)).put("gallery", array)
        except Exception as exc:  # reported to the test, which fails naming it
            errors.put(f"{type(exc).__name__}: {exc}")


def test_two_processes_storing_one_digest_at_once_both_succeed(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    errors = context.Queue()
    barrier = context.Barrier(2)
    roots = [str(tmp_path / f"trial{trial}") for trial in range(TRIALS)]
    # Two processes started once, meeting at the barrier before each trial: the races are the same as with two new
    # processes per trial, without starting 60 interpreters.
    workers = [context.Process(target=_put_after, args=(barrier, roots, errors)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
        assert worker.exitcode == 0
    assert errors.empty(), errors.get()
    for root in map(Path, roots):
        (stored,) = root.glob("*.npy")  # one file, no temporary left behind
        assert list(root.iterdir()) == [stored]
        ref = ArtifactStore(root).put("gallery", np.arange(200_000, dtype=np.float32).reshape(400, 500))
        assert ArtifactStore(root).get(ref).sum() == np.arange(200_000, dtype=np.float32).sum()


def test_a_damaged_artifact_is_replaced_by_the_next_put(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    array = np.ones((8, 8))
    ref = store.put("a", array)
    store.path(ref).write_bytes(b"half a file")
    store.put("a", array)
    assert np.array_equal(store.get(ref), array)
