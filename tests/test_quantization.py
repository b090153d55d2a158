"""Quantization as a compression axis: each method's explained (fake-quantized) model against its deployed model on a
CNN and a ViT, stored bytes against a hand count, the suite field's errors, and a quantized suite through run, stats
and the page."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml
from torch import nn

from tests.conftest import SMOKE, xbench_here
from xbench.components.quantizers import quantizers, stored_bytes
from xbench.core.suite import parse_suite
from xbench.plan.planner import plan

CPU = torch.device("cpu")
ARCHITECTURES = {
    "cnn": ("resnet10t", {}),
    "vit": ("vit_tiny_patch16_224", {"img_size": 64, "depth": 4}),
}


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        kind: timm.create_model(name, num_classes=10, **options).eval()
        for kind, (name, options) in ARCHITECTURES.items()
    }


@pytest.mark.parametrize("kind", sorted(ARCHITECTURES))
@pytest.mark.parametrize("method", ["int8_static", "int8_dynamic", "int4_weight", "fp16"])
def test_the_explained_model_computes_what_the_deployed_model_does(
    method: str, kind: str, models: dict[str, nn.Module]
) -> None:
    model = models[kind]
    generator = torch.Generator().manual_seed(1)
    calibration, images = (
        torch.randn(32, 3, 64, 64, generator=generator),
        torch.randn(16, 3, 64, 64, generator=generator),
    )
    quantizer = quantizers.get(method)
    quantized = quantizer.quantize(model, calibration, dict(quantizer.defaults), CPU)
    with torch.no_grad():
        deployed, explained, fp32 = quantized.deployed(images), quantized.explained(images), model(images)
    spread = float(deployed.max() - deployed.min())
    gap = float((deployed - explained).abs().max()) / spread
    assert gap <= quantizer.logit_tolerance, (method, kind, gap)
    # the rounding is really there: the quantized logits are not the fp32 model's, and where the method rounds
    # more than fp16 does, the explained model is nearer the deployed one than the fp32 model is
    fp32_gap = float((deployed - fp32).abs().max()) / spread
    assert fp32_gap > 0
    if method != "fp16":
        assert gap < 0.75 * fp32_gap, (method, kind, gap, fp32_gap)
    # gradients reach the input through the explained model (straight-through where it rounds)
    inputs = images[:2].clone().requires_grad_(True)
    quantized.explained(inputs)[:, 3].sum().backward()
    assert inputs.grad is not None and float(inputs.grad.abs().sum()) > 0
    # the module tree is kept: Grad-CAM's and timm's paths still resolve
    for name, _ in model.named_modules():
        if name and "." not in name:
            quantized.explained.get_submodule(name)


def test_int8_static_runs_pytorchs_int8_kernels(models: dict[str, nn.Module]) -> None:
    import torch.ao.nn.quantized as nnq

    quantized = quantizers.get("int8_static").quantize(models["cnn"], torch.randn(8, 3, 64, 64), {}, CPU)
    kernels = [m for m in quantized.deployed.modules() if isinstance(m, (nnq.Conv2d, nnq.Linear))]
    layers = [m for m in models["cnn"].modules() if type(m) in (nn.Conv2d, nn.Linear)]
    assert len(kernels) == len(layers)
    assert all(m.weight().dtype == torch.qint8 for m in kernels)
    assert quantized.latency_missing is None
    assert "no int4 kernel" in str(
        quantizers.get("int4_weight").quantize(models["cnn"], torch.empty(0), {"group_size": 32}, CPU).latency_missing
    )


def test_int8_dynamic_runs_pytorchs_dynamic_int8_kernel_on_every_linear_layer(models: dict[str, nn.Module]) -> None:
    import torch.ao.nn.quantized.dynamic as nnqd

    for kind, model in models.items():
        quantized = quantizers.get("int8_dynamic").quantize(model, torch.empty(0), {}, CPU)
        kernels = [m for m in quantized.deployed.modules() if isinstance(m, nnqd.Linear)]
        assert len(kernels) == sum(type(m) is nn.Linear for m in model.modules()) > 0, kind
        assert all(m.weight().dtype == torch.qint8 for m in kernels)
        convolutions = [m for m in quantized.deployed.modules() if type(m) is nn.Conv2d]
        assert len(convolutions) == sum(type(m) is nn.Conv2d for m in model.modules())  # they stay fp32
        assert quantized.latency_missing is None and quantized.fast_on == ("cpu",)


def _small() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )
    return model.eval()


def test_stored_bytes_match_a_hand_count() -> None:
    model = _small()
    # conv 4x3x3x3 = 108 weights, BatchNorm 4 x (weight, bias, mean, var) = 16, linear 8 weights + 2 biases
    assert sum(stored_bytes(model).values()) == 4 * (108 + 16 + 10)
    calibration = torch.randn(8, 3, 8, 8)
    int8 = quantizers.get("int8_static").quantize(model, calibration, {}, CPU)
    # 116 int8 weights; 6 output channels x (fp32 scale + int32 zero point); 2 layers x (input, output) x 8 bytes;
    # 18 fp32 biases and BatchNorm values
    assert int8.stored_bytes == 116 + 6 * 8 + 2 * 2 * 8 + 18 * 4
    int4 = quantizers.get("int4_weight").quantize(model, calibration, {"group_size": 32}, CPU)
    # 108 + 8 weights at 4 bits = 54 + 4 bytes; groups: 4 rows of 27 (one group each) + 2 rows of 4 -> 6 fp32 scales
    assert int4.stored_bytes == 54 + 4 + 6 * 4 + 18 * 4
    dynamic = quantizers.get("int8_dynamic").quantize(model, calibration, {}, CPU)
    # the convolution stays fp32 (108 x 4 bytes); 8 int8 linear weights with 2 channels' scale and zero point
    assert dynamic.stored_bytes == 108 * 4 + 8 + 2 * 8 + 18 * 4
    fp16 = quantizers.get("fp16").quantize(model, calibration, {}, CPU)
    assert fp16.stored_bytes == 2 * (108 + 16 + 10)
    # half the convolution pruned: 54 nonzero int8 values and a 108-bit (14-byte) mask beat 108 bytes
    with torch.no_grad():
        model[0].weight.view(-1)[::2] = 0
    assert sum(stored_bytes(model).values()) == (14 + 54 * 4) + 4 * (16 + 10)
    pruned = quantizers.get("int8_static").quantize(model, calibration, {}, CPU)
    assert pruned.stored_bytes == (14 + 54) + 8 + 6 * 8 + 2 * 2 * 8 + 18 * 4


def _suite(quantization: list) -> dict:
    suite = yaml.safe_load(SMOKE.read_text())
    suite["quantization"] = quantization
    return suite


@pytest.mark.parametrize(
    ("quantization", "field", "expected"),
    [
        (["int3"], "quantization[0].method", "available: fp16, int4_weight, int8_dynamic, int8_static"),
        ([{"method": "int4_weight", "bits": 3}], "quantization[0]", "allowed: group_size"),
        ([{"method": "int4_weight", "group_size": 0}], "quantization[0]", "group_size must be an integer"),
        (["int8_static", "int8_static"], "quantization[1]", "listed twice"),
        ([{"method": "int8_static", "calibration_images": 0}], "quantization[0].calibration_images", "equal to 1"),
    ],
)
def test_a_bad_quantization_field_exits_2_naming_it_and_writes_nothing(
    quantization: list, field: str, expected: str, tmp_path: Path
) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(_suite(quantization)))
    result = xbench_here("run", "suite", str(path), "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert field in result.stderr and expected in result.stderr, result.stderr
    assert not (tmp_path / "xbench.db").exists() and not (tmp_path / "cache").exists()


def test_quantization_multiplies_the_variants_and_leaves_unquantized_cells_as_they_were() -> None:
    plain = plan(parse_suite(_suite([])), "cpu")
    assert [c.cell_key for c in plan(parse_suite(_suite(["none"])), "cpu")] == [c.cell_key for c in plain]
    quantized = plan(parse_suite(_suite(["none", "int8_static", {"method": "int4_weight", "group_size": 16}])), "cpu")
    assert len(quantized) == 3 * len(plain)
    assert {c.cell_key for c in plain} <= {c.cell_key for c in quantized}
    methods = {(c.quantization.method, c.quantization.params.get("group_size")) for c in quantized if c.quantization}
    assert methods == {("int8_static", None), ("int4_weight", 16)}
    assert {c.compression_rate for c in quantized if c.quantization} == {1.0, 4.0}  # CR 1 and every pruned rate


def test_a_quantized_suite_runs_and_has_verdicts_bytes_and_a_page(tmp_path: Path) -> None:
    suite = _suite(["none", "int8_static", {"method": "int4_weight", "group_size": 32}])
    suite.update(name="qsmoke", explainers=["saliency"], metrics=["sparseness"])
    suite["dataset"].update(train_size=128)
    suite["models"][0]["train"]["epochs"] = 1
    suite["pruning"][0]["compression_rates"] = [4]
    path = tmp_path / "qsmoke.yaml"
    path.write_text(yaml.safe_dump(suite))
    xbench_here("run", "suite", str(path), "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path, check=True)
    records = json.loads(
        xbench_here("export", "--suite", "qsmoke", "--format", "json", cwd=tmp_path, check=True).stdout
    )
    by_variant = {(r["pruning_method"], r["compression_rate"], r["quantization"]): r for r in records if r["seed"] == 0}
    fp32, int8 = by_variant[("none", 1.0, "none")], by_variant[("none", 1.0, "int8_static")]
    int4 = by_variant[("magnitude", 4.0, "int4_weight(group_size=32)")]
    assert fp32["compression_rate_bits"] == 1.0
    assert 3.5 < int8["compression_rate_bits"] < 4  # int8 weights with scales, biases and norms in fp32
    assert (
        int4["compression_rate_bits"] > by_variant[("none", 1.0, "int4_weight(group_size=32)")]["compression_rate_bits"]
    )
    assert int8["latency_ms_p50"] is not None and int4["latency_ms_p50"] is None  # int4 has no kernel: not timed
    stats = json.loads(xbench_here("stats", "--suite", "qsmoke", "--format", "json", cwd=tmp_path, check=True).stdout)
    compared = {(c["pruning_method"], c["compression_rate"], c["metric"]) for c in stats["comparisons"]}
    assert ("none + int8_static", 1.0, "accuracy") in compared
    assert ("magnitude + int4_weight(group_size=32)", 4.0, "sparseness") in compared
    assert ("magnitude", 4.0, "accuracy") in compared
    xbench_here("leaderboard", "build", "--suite", "qsmoke", cwd=tmp_path, check=True)
    page = (tmp_path / "leaderboard" / "site" / "suite-qsmoke.html").read_text()
    assert 'id="compression"' in page and "fp32 dense bytes / stored bytes" in page
    front = (tmp_path / "leaderboard" / "site" / "index.html").read_text()
    assert "resnet pruned by magnitude and quantized to int8_static:" in front.replace("test_resnet", "resnet")
    assert "resnet quantized to int8_static:" in front.replace("test_resnet", "resnet")


PLUGIN = """
import torch
from xbench.api import QuantizedModel, Quantizer, quantizer


@quantizer("bf16_weights")
class Bf16Weights(Quantizer):
    bits = 16
    description = "weights rounded to bfloat16"

    def quantize(self, model, calibration, params, device):
        import copy

        rounded = copy.deepcopy(model)
        with torch.no_grad():
            for parameter in rounded.parameters():
                parameter.copy_(parameter.bfloat16().float())
        size = 2 * sum(p.numel() for p in rounded.parameters())
        return QuantizedModel(rounded, rounded, size, {"bf16": size})
"""


def test_a_quantizer_from_outside_the_package_is_one_file_listed_and_planned(tmp_path: Path) -> None:
    (tmp_path / "my_quantizers.py").write_text(PLUGIN)
    suite = _suite(["bf16_weights"])
    suite.update(name="plugged", plugins=["my_quantizers"])
    (tmp_path / "plugged.yaml").write_text(yaml.safe_dump(suite))
    script = (
        "from xbench.plan.planner import plan\nfrom xbench.core.suite import load_suite\n"
        "from xbench.components.quantizers import quantizers\n"
        "cells = plan(load_suite('plugged.yaml')[0], 'cpu')\n"
        "print(sorted({c.quantization.method for c in cells if c.quantization}), quantizers.names())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    listed = "['bf16_weights', 'fp16', 'int4_weight', 'int8_dynamic', 'int8_static']"
    assert result.stdout.strip() == f"['bf16_weights'] {listed}"


def test_a_gradient_free_explainer_explains_the_deployed_model_where_its_kernels_are_faster(
    models: dict[str, nn.Module],
) -> None:
    from xbench.components.explainers import explainers
    from xbench.execute.runner import explained_model

    calibration = torch.randn(8, 3, 64, 64)
    int8 = quantizers.get("int8_static").quantize(models["cnn"], calibration, {}, CPU)
    int4 = quantizers.get("int4_weight").quantize(models["cnn"], calibration, {"group_size": 32}, CPU)
    occlusion, saliency = explainers.get("occlusion"), explainers.get("saliency")
    assert explained_model(occlusion, int8.explained, int8, CPU)[0] is int8.deployed
    assert explained_model(saliency, int8.explained, int8, CPU)[0] is int8.explained  # gradients: the twin
    assert explained_model(occlusion, int8.explained, int8, torch.device("cuda"))[0] is int8.explained  # CPU kernels
    assert explained_model(occlusion, int4.explained, int4, CPU)[0] is int4.explained  # no int4 kernel
    attributions = explain_with(occlusion, int8.deployed)
    assert attributions.shape == (2, 1, 64, 64) and np.isfinite(attributions).all()


def explain_with(plugin: object, model: nn.Module) -> np.ndarray:
    from xbench.components.explainers import explain

    x, y = torch.randn(2, 3, 64, 64), torch.tensor([1, 2])
    return explain(plugin, {**plugin.defaults, **plugin.post}, model, x, y, CPU)  # type: ignore[attr-defined]


def test_the_dry_run_counts_the_quantizations(tmp_path: Path) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(_suite(["none", "int8_static", {"method": "int4_weight", "group_size": 16}])))
    result = xbench_here("run", "suite", str(path), "--dry-run", cwd=tmp_path, check=True)
    cells = 2 * 2 * 3 * 2  # CRs × quantizations (fp32 and two) × explainers × seeds of the smoke suite
    assert f"{cells} cells = 1 model(s) × 2 CR(s) × 3 quantization(s) × 2 explainer(s) × 2 seed(s)" in result.stdout
    assert "quantization: fp32, int4_weight(group_size=16), int8_static" in result.stdout
