import math
from pathlib import Path

import numpy as np
import pytest
import torch

from xbench.core.cache import Cache
from xbench.core.results import CellResult
from xbench.core.suite import parse_suite
from xbench.execute.runner import CellExecutor
from xbench.plan.planner import Cell, plan


def tiny_suite(image_size: int) -> list[Cell]:
    return plan(
        parse_suite(
            {
                "name": "tiny",
                "dataset": {"image_size": image_size, "train_size": 32, "eval_size": 4},
                "models": [{"name": "test_resnet", "train": {"epochs": 1, "batch_size": 16}}],
                "pruning": [{"method": "magnitude", "compression_rates": [2], "finetune": {"epochs": 0}}],
                "explainers": ["gradcam"],
                "metrics": ["sparseness", "attribution_localisation"],
                "perf": {"batch_sizes": [2], "warmup": 0, "repeats": 2},
            }
        ),
        "cpu",
    )


def test_a_cell_shipped_as_json_runs_and_reports_every_figure(tmp_path: Path) -> None:
    cell = Cell.from_json(tiny_suite(48)[1].to_json())  # as a remote worker would receive it
    executor = CellExecutor(Cache(tmp_path / "cache"), torch.device("cpu"))
    result = executor.execute(cell)
    assert CellResult.model_validate_json(result.model_dump_json()) == result  # plain, typed, serialisable
    assert result.cell == cell and result.cell_key == cell.cell_key
    assert result.figures["sparsity_scope"] == pytest.approx(0.5, abs=0.005)
    assert result.rate_counts == "the pruned scope"  # magnitude pruning: its CR counts the pruned weights
    assert math.isfinite(result.metrics["sparseness"].mean) and len(result.metrics["sparseness"].per_image) == 4
    assert len(result.correct) == 4 and result.figures["accuracy"] == sum(result.correct) / 4
    assert result.figures["explain_forward_passes_per_image"] == 1  # gradcam: one forward, one backward per image
    assert result.figures["explain_backward_passes_per_image"] == 1
    assert result.metrics["sparseness"].engine == "quantus"
    attributions = executor.artifacts.get(result.artifact("gallery_attributions"))  # raw arrays, not pictures
    assert (
        attributions.shape == (4, 1, 48, 48)
        and executor.artifacts.get(result.artifact("gallery_images")).dtype == "uint8"
    )
    assert "xbench.git_sha" in result.environment and "torch_version" in result.environment


def test_accuracy_comes_from_every_eval_image_and_explanations_from_explain_size(tmp_path: Path) -> None:
    """`dataset.eval_size` 12 and `explain_size` 3: `correct` and accuracy on all 12, each metric's scores (and the
    scores.csv rows) on the first 3, and the MLflow param says both."""
    from xbench.core.results import per_image_scores
    from xbench.store.mapping import cell_params

    cell = tiny_suite(48)[1]
    cell = cell.model_copy(update={"dataset": cell.dataset.model_copy(update={"eval_size": 12, "explain_size": 3})})
    result = CellExecutor(Cache(tmp_path / "cache"), torch.device("cpu")).execute(cell)
    assert len(result.correct) == 12 and result.figures["accuracy"] == pytest.approx(sum(result.correct) / 12)
    assert len(result.metrics["sparseness"].per_image) == 3 and result.scored_images == [0, 1, 2]
    scores = per_image_scores(result)
    assert len(scores["correct"]) == 12 and len(scores["sparseness"]) == 3
    params = cell_params(cell)
    assert params["eval_size"] == 12 and params["explain_size"] == 3


def test_a_metric_that_can_score_no_image_is_an_explicit_nan_with_a_reason(tmp_path: Path) -> None:
    # At 32 px the last stage of test_resnet is 1x1, so every Grad-CAM map is constant.
    cell = tiny_suite(32)[0]
    result = CellExecutor(Cache(tmp_path / "cache"), torch.device("cpu")).execute(cell)
    assert math.isnan(result.metrics["sparseness"].mean) and result.metrics["sparseness"].per_image == (None,) * 4
    assert "every attribution map is constant" in result.metrics["sparseness"].missing


def test_a_metric_that_fails_on_a_cell_is_a_nan_with_the_error_not_a_crash(tmp_path: Path) -> None:
    # k larger than the image (32 x 32 = 1024 pixels): Quantus's top-k intersection cannot be computed.
    suite = parse_suite(
        {
            "name": "tiny",
            "dataset": {"image_size": 32, "train_size": 32, "eval_size": 4},
            "models": [{"name": "test_resnet", "train": {"epochs": 1, "batch_size": 16}}],
            "explainers": ["saliency"],
            "metrics": ["sparseness", {"name": "top_k_intersection", "k": 5000}],
            "perf": {"batch_sizes": [2], "warmup": 0, "repeats": 2},
        }
    )
    result = CellExecutor(Cache(tmp_path / "cache"), torch.device("cpu")).execute(plan(suite, "cpu")[0])
    assert math.isfinite(result.metrics["sparseness"].mean)
    assert math.isnan(result.metrics["top_k_intersection"].mean)
    assert result.metrics["top_k_intersection"].missing  # the error, as the reason


def test_a_damaged_cache_file_is_named_removed_and_computed_again(tmp_path: Path, capsys) -> None:
    """A cached model cut to 100 bytes (a full disk, a bad copy) made the next run crash with a Rust traceback that
    named no file; now the file is named, removed and recomputed, and the cell gives the same figures."""
    cells = tiny_suite(48)
    cache = Cache(tmp_path / "cache")
    first = CellExecutor(cache, torch.device("cpu")).execute(cells[1])
    damaged = sorted((tmp_path / "cache" / "models").glob("*.safetensors")) + sorted(
        (tmp_path / "cache" / "pruned").glob("*.safetensors")
    )
    assert len(damaged) == 2
    for path in damaged:
        path.write_bytes(path.read_bytes()[:100])
    explanation = next((tmp_path / "cache" / "explanations").glob("*.npy"))
    explanation.write_bytes(b"not an array")
    again = CellExecutor(cache, torch.device("cpu")).execute(cells[1])
    logged = capsys.readouterr()
    for path in [*damaged, explanation]:
        assert f"damaged cache file {path}" in logged.out + logged.err
        assert path.exists() and path.stat().st_size > 100  # written again
    assert again.figures["accuracy"] == first.figures["accuracy"]
    assert again.metrics["sparseness"].mean == pytest.approx(first.metrics["sparseness"].mean)


def test_damage_that_still_parses_is_found_by_the_digest_named_and_recomputed(tmp_path: Path, capsys) -> None:
    """64 KiB zeroed inside a cached model (its header intact: safetensors still loads it) and a zeroed explanation
    (still a valid .npy) were used silently; now each file's sha256 beside it finds them, and a fresh executor (a new
    process) removes, names and recomputes them, with the same figures."""
    cells = tiny_suite(48)
    cache_dir = tmp_path / "cache"
    first = CellExecutor(Cache(cache_dir), torch.device("cpu")).execute(cells[1])
    model = sorted((cache_dir / "models").glob("*.safetensors"))[0]
    assert model.with_name(model.name + ".sha256").is_file()
    data = bytearray(model.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    data[header : header + 65536] = bytes(min(65536, len(data) - header))
    model.write_bytes(bytes(data))
    from safetensors.torch import load_file

    assert load_file(str(model))  # the damage still parses
    explanation = next((cache_dir / "explanations").glob("*.npy"))
    np.save(explanation, np.zeros_like(np.load(explanation)), allow_pickle=False)
    again = CellExecutor(Cache(cache_dir), torch.device("cpu")).execute(cells[1])
    logged = capsys.readouterr()
    for path in (model, explanation):
        assert f"damaged cache file {path}" in logged.out + logged.err and "does not match" in logged.out + logged.err
    assert again.figures["accuracy"] == first.figures["accuracy"]
    assert again.metrics["sparseness"].mean == pytest.approx(first.metrics["sparseness"].mean)


def test_tie_draws_score_an_ordering_metric_under_several_tie_orders_and_log_their_spread(tmp_path: Path) -> None:
    suite = parse_suite(
        {
            "name": "ties",
            "tie_draws": 3,
            "dataset": {"image_size": 48, "train_size": 32, "eval_size": 4},
            "models": [{"name": "test_resnet", "train": {"epochs": 1, "batch_size": 16}}],
            "explainers": ["gradcam"],  # tied maps: a coarse CAM upsampled
            "metrics": [{"name": "pixel_flipping", "features_in_step": 768}, "sparseness"],
            "perf": {"batch_sizes": [2], "warmup": 0, "repeats": 2},
        }
    )
    result = CellExecutor(Cache(tmp_path / "cache"), torch.device("cpu")).execute(plan(suite, "cpu")[0])
    flipping = result.metrics["pixel_flipping"]
    assert flipping.tie_std is not None and flipping.tie_std >= 0  # an ordering metric, scored 3 times
    assert result.metrics["sparseness"].tie_std is None  # no order of features, nothing to draw
    assert result.figures["attribution_tie_share"] > 0.5


@pytest.fixture
def measured(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The keys of the variants measured (not read from the cache) while a test runs, in order."""
    keys: list[str] = []
    measure = CellExecutor._measure

    def counted(self: CellExecutor, key: str, *args, **kwargs):
        keys.append(key)
        return measure(self, key, *args, **kwargs)

    monkeypatch.setattr(CellExecutor, "_measure", counted)
    return keys


def test_a_variant_is_measured_once_and_every_worker_reads_its_figures(tmp_path: Path, measured: list[str]) -> None:
    dense, pruned = tiny_suite(48)
    first = CellExecutor(Cache(tmp_path / "cache"), torch.device("cpu")).execute(pruned)
    assert len(measured) == 2  # the trained model (the pruned variant's reference), then the pruned variant
    # another worker (a new executor on the same cache) measures nothing again and reports the same figures
    other = CellExecutor(Cache(tmp_path / "cache"), torch.device("cpu"))
    assert other.execute(pruned).figures == first.figures
    base = other.execute(dense).figures
    assert len(measured) == 2
    assert base["latency_ms_p50_bs2"] == pytest.approx(
        first.figures["latency_ms_p50_bs2"] * first.figures["measured_speedup_bs2"]
    )  # the dense cell's speed is the one the pruned cell's speed-up was measured against
    # timed with another number of torch threads, the speed is another figure: measured again
    threads = torch.get_num_threads()
    torch.set_num_threads(2 if threads == 1 else 1)
    try:
        CellExecutor(Cache(tmp_path / "cache"), torch.device("cpu")).execute(dense)
    finally:
        torch.set_num_threads(threads)
    assert len(measured) == 3


def test_the_task_that_makes_a_variant_measures_it_for_its_cells(tmp_path: Path, measured: list[str]) -> None:
    from xbench.plan.graph import build_graph

    graph = build_graph(tiny_suite(48))
    makers = [node for node in graph.nodes.values() if node.kind != "cell"]
    assert [(node.kind, node.measures) for node in makers] == [("train", True), ("prune", True)]
    for node in makers:  # as a Ray worker runs them
        CellExecutor(Cache(tmp_path / "cache"), torch.device("cpu")).run_node(node)
    assert len(measured) == 2
    for node in graph.cell_nodes:  # on another worker
        CellExecutor(Cache(tmp_path / "cache"), torch.device("cpu")).run_node(node)
    assert len(measured) == 2
