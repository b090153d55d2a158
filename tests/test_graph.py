"""The task graph: what a suite computes once, and in which order; and the backend options' input errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import xbench_here
from xbench.core.errors import XbenchInputError
from xbench.core.suite import load_suite, parse_suite
from xbench.execute.backends import BackendOptions
from xbench.plan.graph import Node, build_graph
from xbench.plan.planner import plan


def test_quick_is_three_trainings_fifteen_pruning_steps_and_45_cells() -> None:
    suite, _ = load_suite("quick")
    graph = build_graph(plan(suite, "cpu"))
    assert graph.counts() == {"train": 3, "prune": 15, "cell": 45}
    assert graph.critical_path() == 7  # train -> CR 2 -> 4 -> 8 -> 16 -> 32 -> a cell
    position = {node_id: index for index, node_id in enumerate(graph.nodes)}
    for node in graph.nodes.values():
        assert all(position[d] < position[node.id] for d in node.depends_on)  # topological order
        if node.kind == "prune":
            previous = graph.nodes[node.depends_on[0]]
            if node.cell.compression_rate == 2:
                assert previous.kind == "train" and previous.cell.seed == node.cell.seed
            else:  # an iterative step prunes the previous step's model
                assert previous.kind == "prune" and previous.cell.compression_rate == node.cell.compression_rate / 2
    for node in graph.cell_nodes:
        parent = graph.nodes[node.depends_on[0]]
        assert parent.cell.seed == node.cell.seed
        assert parent.kind == ("train" if node.cell.pruning is None else "prune")
        assert parent.cell.compression_rate == node.cell.compression_rate
    assert Node.model_validate_json(graph.cell_nodes[0].model_dump_json()) == graph.cell_nodes[0]


def test_the_local_order_runs_each_node_once_after_its_inputs_and_keeps_a_seed_together() -> None:
    """depth_first is how one process runs the graph: every node once, after its dependencies, cells in plan order;
    a seed's training and pruning chain come just before its first cells, not all trainings first."""
    suite, _ = load_suite("quick")
    cells = plan(suite, "cpu")
    graph = build_graph(cells)
    order = graph.depth_first()
    assert sorted(n.id for n in order) == sorted(graph.nodes) and len(order) == len(graph.nodes)
    position = {node.id: index for index, node in enumerate(order)}
    assert all(position[d] < position[node.id] for node in order for d in node.depends_on)
    assert [n.cell.cell_key for n in order if n.kind == "cell"] == [c.cell_key for c in cells]
    trainings = [i for i, n in enumerate(order) if n.kind == "train"]
    first_cell_of_seed = {
        seed: next(i for i, n in enumerate(order) if n.kind == "cell" and n.cell.seed == seed) for seed in (0, 1)
    }
    assert [order[i].cell.seed for i in trainings] == [0, 1, 2]
    assert first_cell_of_seed[0] < trainings[1] < first_cell_of_seed[1]  # seed 1 is trained after seed 0's cells start


def test_each_variant_a_cell_uses_is_measured_by_the_node_that_makes_it_and_no_other() -> None:
    suite = parse_suite(
        {
            "name": "sparse-steps",
            "seeds": [0, 1],
            "models": [{"name": "test_resnet"}],
            "pruning": [{"method": "magnitude", "schedule": "iterative", "compression_rates": [1, 8]}],
            "explainers": ["gradcam", "saliency"],
            "metrics": ["sparseness"],
        }
    )
    graph = build_graph(plan(suite, "cpu"))
    measured = {(n.kind, n.cell.seed, n.cell.compression_rate) for n in graph.nodes.values() if n.measures}
    # CR 2 and 4 are steps on the way to 8 that no cell uses: not measured; the trained model is every variant's
    # reference (and here a variant of its own)
    assert measured == {(kind, seed, cr) for seed in (0, 1) for kind, cr in (("train", 1.0), ("prune", 8.0))}
    assert not any(n.measures for n in graph.cell_nodes)


def test_a_oneshot_variant_is_one_pruning_step_per_seed() -> None:
    suite, _ = load_suite("smoke")
    graph = build_graph(plan(suite, "cpu"))
    assert graph.counts() == {"train": 2, "prune": 2, "cell": 8}
    assert graph.critical_path() == 3


@pytest.mark.parametrize(
    ("options", "field"),
    [
        (BackendOptions(name="spark"), "--backend"),
        (BackendOptions(name="local", workers=2), "--backend"),
        (BackendOptions(name="ray", workers=0), "--workers"),
        (BackendOptions(name="ray", address="auto", workers=2), "--workers"),
        (BackendOptions(name="ray", gpus_per_task=-1), "--gpus-per-task"),
    ],
)
def test_backend_options_name_the_wrong_field(options: BackendOptions, field: str) -> None:
    with pytest.raises(XbenchInputError) as error:
        options.validated()
    assert error.value.field == field


def test_a_wrong_backend_exits_2_naming_the_choices_and_writes_nothing(tmp_path: Path) -> None:
    result = xbench_here(
        "run", "suite", "smoke", "--backend", "spark", "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path
    )
    assert result.returncode == 2
    assert "--backend" in result.stdout + result.stderr and "local, ray" in result.stdout + result.stderr
    assert list(tmp_path.iterdir()) == []


def test_default_sizes_give_each_core_one_worker_with_one_thread() -> None:
    workers, threads = BackendOptions(name="ray").sizes()
    assert threads == 1 and workers >= 1
    assert BackendOptions(name="ray", workers=1, threads=2).sizes() == (1, 2)
