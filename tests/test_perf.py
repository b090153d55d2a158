import pytest
import torch
from torch import nn

from xbench.core.suite import PerfConfig
from xbench.measure.perf import count_flops, latency, measure


def test_dense_flops_count_two_per_multiply_accumulate() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(4 * 8 * 8, 5, bias=False))
    figures = count_flops(model, 8, torch.device("cpu"))
    conv_macs = 4 * 8 * 8 * 3 * 3 * 3
    linear_macs = 4 * 8 * 8 * 5
    assert figures.values["flops_dense"] == 2 * (conv_macs + linear_macs)


def test_zero_weights_still_count_as_count_flops() -> None:
    model = nn.Conv2d(3, 4, 3, bias=False)
    before = count_flops(model, 8, torch.device("cpu")).values["flops_dense"]
    with torch.no_grad():
        model.weight.zero_()
    assert count_flops(model, 8, torch.device("cpu")).values["flops_dense"] == before > 0


class _Unmeasurable(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("this model cannot run on a blank input")


def test_a_figure_that_cannot_be_measured_is_recorded_with_its_reason() -> None:
    figures = count_flops(_Unmeasurable(), 8, torch.device("cpu"))
    assert "flops_dense" not in figures.values
    assert "cannot run on a blank input" in figures.missing["flops_dense"]
    assert "cannot run on a blank input" in figures.missing["flops_effective"]


def test_latency_reports_spread_and_throughput() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    result = latency(model, 16, 4, torch.device("cpu"), PerfConfig(warmup=1, repeats=7))
    assert "CUDA only" in result.missing["peak_memory_mb_bs4"]
    figures = result.values
    assert figures["latency_ms_p90_bs4"] >= figures["latency_ms_p50_bs4"] > 0
    assert figures["latency_ms_std_bs4"] >= 0
    assert figures["throughput_bs4"] == pytest.approx(4 / (figures["latency_ms_p50_bs4"] / 1000))


def test_measure_covers_every_batch_size() -> None:
    figures = measure(nn.Conv2d(3, 2, 1), 8, torch.device("cpu"), PerfConfig(batch_sizes=[1, 3], warmup=0, repeats=2))
    assert {"flops_dense", "file_size_mb", "throughput_bs1", "throughput_bs3"} <= set(figures.values)


@pytest.mark.parametrize(
    "settings",
    [{"precision": "bf16"}, {"channels_last": True}, {"precision": "bf16", "channels_last": True}],
)
def test_timing_settings_run_and_leave_the_model_alone(settings: dict) -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    figures = latency(model, 16, 2, torch.device("cpu"), PerfConfig(warmup=1, repeats=3, **settings)).values
    assert figures["latency_ms_p50_bs2"] > 0
    assert model[0].weight.is_contiguous()  # channels_last was applied to a copy
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class FitsBatchesUpTo(nn.Module):
    """Raises the real CUDA out-of-memory error for batches larger than `limit` (the fault cannot be caused on a CPU,
    so the model raises it), and records every batch size it was given."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.linear = nn.Linear(3, 2)
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(len(x))
        if len(x) > self.limit:
            raise torch.cuda.OutOfMemoryError(f"tried batch {len(x)}")
        return self.linear(x.mean(dim=(2, 3)))


def test_latency_halves_the_batch_on_out_of_memory_and_says_so() -> None:
    model = FitsBatchesUpTo(limit=8)
    figures = latency(model, 8, 32, torch.device("cpu"), PerfConfig(batch_sizes=[32], warmup=1, repeats=2))
    assert "latency_ms_p50_bs8" in figures.values and "latency_ms_p50_bs32" not in figures.values
    assert "out of memory at batch size 32" in figures.missing["latency_ms_p50_bs32"]
    assert "measured at batch size 8 instead" in figures.missing["latency_ms_p50_bs16"]
    assert set(model.seen) == {32, 16, 8}


def test_latency_at_batch_one_out_of_memory_is_missing_with_the_reason() -> None:
    figures = latency(FitsBatchesUpTo(limit=0), 8, 4, torch.device("cpu"), PerfConfig(warmup=0, repeats=1))
    assert not figures.values and "out of memory at batch size 1" in figures.missing["latency_ms_p50_bs4"]
