import json
from pathlib import Path

import pytest
import torch

from tests.conftest import xbench_here
from xbench.core.errors import XbenchInputError
from xbench.core.suite import PerfConfig
from xbench.measure.profiling import parse_prune, profile

CPU = torch.device("cpu")
FAST = PerfConfig(warmup=1, repeats=3)


def test_structured_profile_shows_fewer_params_and_flops_than_the_unpruned_model() -> None:
    result = profile("test_resnet", 32, [1, 4], CPU, prune="channel_magnitude:2", settings=FAST)
    base, pruned = result["variants"]["unpruned"]["figures"], result["variants"]["channel_magnitude:2"]["figures"]
    assert pruned["compression_rate_model"] == pytest.approx(2, rel=0.02)
    assert pruned["params"] < base["params"] and pruned["flops_dense"] < base["flops_dense"]
    assert pruned["theoretical_speedup"] > 1 and pruned["measured_speedup_bs4"] > 0
    assert pruned["file_size_mb"] < base["file_size_mb"]
    assert "CUDA only" in result["variants"]["unpruned"]["missing"]["peak_memory_mb_bs1"]


def test_unstructured_profile_keeps_dense_flops_and_reports_effective_ones() -> None:
    result = profile("test_resnet", 32, [2], CPU, prune="magnitude:4", settings=FAST)
    base, pruned = result["variants"]["unpruned"]["figures"], result["variants"]["magnitude:4"]["figures"]
    assert pruned["flops_dense"] == base["flops_dense"] and pruned["params"] == base["params"]
    assert pruned["sparsity_scope"] == pytest.approx(0.75, abs=0.005)
    assert pruned["flops_effective"] < base["flops_effective"] and pruned["theoretical_speedup"] > 1


@pytest.mark.parametrize(
    ("spec", "message"),
    [("magnitud:2", "did you mean 'magnitude'"), ("magnitude", "METHOD:CR"), ("magnitude:0.5", ">= 1")],
)
def test_bad_prune_specs_are_input_errors(spec: str, message: str) -> None:
    with pytest.raises(XbenchInputError, match=message):
        parse_prune(spec)


def test_profile_command_prints_json(tmp_path: Path) -> None:
    result = xbench_here(
        "profile",
        "test_resnet",
        "--image-size",
        "32",
        "--batch-size",
        "2",
        "--prune",
        "channel_random:2",
        "--warmup",
        "1",
        "--repeats",
        "3",
        "--format",
        "json",
        cwd=tmp_path,
        check=True,
    )
    figures = json.loads(result.stdout)["variants"]["channel_random:2"]["figures"]
    assert {
        "params",
        "params_nonzero",
        "compression_rate_model",
        "compression_rate_scope",
        "sparsity",
        "flops_dense",
        "macs_dense",
        "flops_effective",
        "latency_ms_p50_bs2",
        "latency_ms_p90_bs2",
        "latency_ms_std_bs2",
        "throughput_bs2",
        "theoretical_speedup",
        "measured_speedup_bs2",
        "file_size_mb",
    } <= set(figures)


def test_a_no_op_prune_is_refused_naming_the_scope_that_can() -> None:
    """Channel pruning of a ViT with scope conv removes nothing; profile refuses it as a suite would."""
    with pytest.raises(
        XbenchInputError, match=r"--prune: channel_magnitude cannot prune test_vit.*use scope 'conv_linear'"
    ):
        profile("test_vit", 32, [1], CPU, prune="channel_magnitude:2", settings=FAST)


def test_a_rate_the_solver_cannot_reach_is_an_error_not_a_row() -> None:
    with pytest.raises(XbenchInputError, match=r"reached CR .* where 5000 was asked for"):
        profile("test_resnet", 32, [1], CPU, prune="channel_magnitude:5000", settings=FAST)


def test_profile_command_exits_2_on_a_no_op_prune(tmp_path: Path) -> None:
    result = xbench_here("profile", "test_vit", "--image-size", "32", "--prune", "channel_magnitude:2", cwd=tmp_path)
    assert result.returncode == 2
    assert "use scope 'conv_linear'" in result.stderr and "figure" not in result.stdout
