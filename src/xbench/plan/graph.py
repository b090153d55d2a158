"""A suite's work as a task graph: train (model, seed) -> prune steps -> [eval selection] -> cells.

Pure and torch-free: built from the plan's cells, it says what has to be computed once and in which order, so a
backend can run independent nodes in parallel (two seeds' trainings, the explainers of one variant) while an
iterative pruning chain still runs step after step. A cell node measures its variant (accuracy, size, FLOPs, speed),
explains its eval images and scores them; what it shares with other cells (trained and pruned weights,
explanations) is in the content-addressed cache, so a node that runs twice (a retry, a rerun) recomputes nothing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict

from xbench.core.cache import content_key
from xbench.core.cells import Cell, pruning_label
from xbench.core.suite import schedule_steps

NodeKind = Literal["train", "prune", "select", "cell"]


class Node(BaseModel):
    """One unit of work. `cell` carries what the work needs (model, data, seed, pruning); for a prune node its
    compression_rate is the step's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    kind: NodeKind
    cell: Cell
    depends_on: tuple[str, ...] = ()
    # A train or prune node whose model variant cells use (or is their reference): it measures the variant once, for
    # all of them, so that the cells on other workers read its figures instead of measuring it again.
    measures: bool = False

    @property
    def label(self) -> str:
        cell = self.cell
        if self.kind == "train":
            return f"train {cell.model.name} | seed {cell.seed}"
        if self.kind == "prune":
            assert cell.pruning is not None
            variant = pruning_label(cell.pruning.method, cell.compression_rate)
            return f"prune {cell.model.name} | {variant} | seed {cell.seed}"
        if self.kind == "select":
            return f"select eval images of {cell.model.name} (correct under all {len(self.depends_on)} variants)"
        return cell.label


@dataclass
class TaskGraph:
    """Nodes in a topological order (every node after the nodes it depends on)."""

    nodes: dict[str, Node] = field(default_factory=dict)

    def add(self, node: Node) -> str:
        self.nodes.setdefault(node.id, node)
        return node.id

    @property
    def cell_nodes(self) -> list[Node]:
        return [node for node in self.nodes.values() if node.kind == "cell"]

    def depth_first(self) -> list[Node]:
        """Every node once, each after the nodes it depends on, taking the cells in plan order and each cell's
        missing dependencies just before it: one process running them in this order keeps one model variant in use
        at a time (the order the local backend runs the graph in; Ray runs the same nodes as their inputs exist)."""
        order: list[Node] = []
        done: set[str] = set()

        def visit(node_id: str) -> None:
            if node_id in done:
                return
            node = self.nodes[node_id]
            for dependency in node.depends_on:
                visit(dependency)
            done.add(node_id)
            order.append(node)

        for node in self.cell_nodes:
            visit(node.id)
        for node_id in self.nodes:  # nodes no cell needs (none today), last
            visit(node_id)
        return order

    def counts(self) -> dict[str, int]:
        return dict(Counter(node.kind for node in self.nodes.values()))

    def critical_path(self) -> int:
        """The longest chain of nodes: what bounds the speed-up from more workers."""
        depth: dict[str, int] = {}
        for node in self.nodes.values():
            depth[node.id] = 1 + max((depth[d] for d in node.depends_on), default=0)
        return max(depth.values(), default=0)


def _train_id(cell: Cell) -> str:
    identity = {
        "model": cell.model.model_dump(mode="json"),
        "dataset": cell.dataset.model_dump(mode="json"),
        "data_seed": cell.data_seed,
        "seed": cell.seed,
        "device": cell.device,
        "plugins": cell.plugins,
    }
    return "train:" + content_key(identity)


def _variant_node(graph: TaskGraph, cell: Cell) -> str:
    """Add the train node and pruning chain that produce `cell`'s model variant; returns the last one's id."""
    base = cell.model_copy(update={"pruning": None, "compression_rate": 1.0})
    previous = graph.add(Node(id=_train_id(cell), kind="train", cell=base))
    if cell.pruning is not None:
        for step in schedule_steps(cell.compression_rate, cell.pruning.schedule):
            step_cell = cell.model_copy(update={"compression_rate": step})
            identity = [previous, cell.pruning.model_dump(mode="json"), step]
            previous = graph.add(
                Node(id="prune:" + content_key(identity), kind="prune", cell=step_cell, depends_on=(previous,))
            )
    return previous


def build_graph(cells: list[Cell]) -> TaskGraph:
    """The graph of `cells` (in plan order): one train node per (model, data, seed), one prune node per step of each
    pruning chain (an iterative step depends on the previous one), one selection node per model with an eval
    selection (it depends on every variant of the model), one node per cell."""
    graph = TaskGraph()
    variant_of = {cell.cell_key: _variant_node(graph, cell) for cell in cells}
    for cell in cells:
        depends_on = [variant_of[cell.cell_key]]
        if cell.eval_selection is not None:
            members = [
                _variant_node(
                    graph,
                    cell.model_copy(
                        update={"seed": m.seed, "pruning": m.pruning, "compression_rate": m.compression_rate}
                    ),
                )
                for m in cell.eval_selection.group
            ]
            identity = [
                cell.model.model_dump(mode="json"),
                cell.dataset.model_dump(mode="json"),
                cell.data_seed,
                cell.eval_selection.model_dump(mode="json"),
            ]
            selection = Node(
                id="select:" + content_key(identity), kind="select", cell=cell, depends_on=tuple(dict.fromkeys(members))
            )
            depends_on.append(graph.add(selection))
        graph.add(Node(id="cell:" + cell.cell_key, kind="cell", cell=cell, depends_on=tuple(depends_on)))
    # Every trained model is some variant's reference; a prune step is measured when a cell uses its variant.
    for node_id in {*variant_of.values(), *(i for i, n in graph.nodes.items() if n.kind == "train")}:
        graph.nodes[node_id] = graph.nodes[node_id].model_copy(update={"measures": True})
    return graph
