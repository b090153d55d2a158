"""MACs against published figures: CNNs and vision transformers, with fused and unfused attention alike."""

from __future__ import annotations

import pytest
import timm
import torch

from xbench.measure.perf import count_flops

CPU = torch.device("cpu")

# GMACs at 224 px as timm's model cards and the papers publish them (DeiT: ViT-S/16 4.6, ViT-B/16 17.6).
PUBLISHED_GMACS = {
    "resnet50": 4.11,
    "vgg16": 15.47,
    "vit_small_patch16_224": 4.6,
    "vit_base_patch16_224": 17.6,
}


def _set_fused_attention(model: torch.nn.Module, fused: bool) -> None:
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = fused


@pytest.mark.parametrize("name", list(PUBLISHED_GMACS))
def test_macs_match_the_published_figure_within_2_percent(name: str) -> None:
    model = timm.create_model(name).eval()
    macs = count_flops(model, 224, CPU).values["macs_dense"]
    assert macs / 1e9 == pytest.approx(PUBLISHED_GMACS[name], rel=0.02)


@pytest.mark.parametrize("name", ["vit_small_patch16_224", "swin_tiny_patch4_window7_224", "eva02_tiny_patch14_224"])
def test_fused_and_unfused_attention_count_the_same(name: str) -> None:
    model = timm.create_model(name).eval()
    counts = []
    for fused in (True, False):
        _set_fused_attention(model, fused)
        counts.append(count_flops(model, 224, CPU).values["flops_dense"])
    assert any(hasattr(m, "fused_attn") for m in model.modules())
    assert counts[0] == counts[1]
