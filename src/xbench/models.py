"""timm models: creation (scratch, timm hub, or a local weights file), training, and the trained-model cache."""

from __future__ import annotations

import difflib
import time
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import load_model, save_model
from torch import nn

from xbench.cache import Cache, content_key
from xbench.data import ImageData
from xbench.errors import XbenchInputError
from xbench.progress import track
from xbench.suite import ModelConfig

TRAINING_VERSION = "2"


def check_model_name(name: str, field: str) -> None:
    """Plan-time check that timm knows the architecture, with close names as a hint."""
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise XbenchInputError(f"unknown timm model {name!r}{hint} (see `xbench list models`)", field=field)


def timm_model(name: str, num_classes: int, image_size: int | None = None, **kwargs: Any) -> nn.Module:
    """timm.create_model, telling models with a fixed input size (ViT, DeiT, ...) the size of the data."""
    if image_size is not None:
        try:
            return timm.create_model(name, num_classes=num_classes, img_size=image_size, **kwargs)
        except TypeError as exc:  # CNNs take any input size and have no img_size argument
            if "img_size" not in str(exc):
                raise
    return timm.create_model(name, num_classes=num_classes, **kwargs)


def create_model(config: ModelConfig, num_classes: int, image_size: int | None = None) -> nn.Module:
    """`pretrained`: False (random init), True (timm hub weights) or a local file loaded through timm."""
    if isinstance(config.pretrained, str):
        weights = Path(config.pretrained).expanduser()
        if not weights.is_file():
            raise XbenchInputError(f"weights file {str(weights)!r} does not exist", field="models[].pretrained")
        return timm_model(
            config.name, num_classes, image_size, pretrained=True, pretrained_cfg_overlay={"file": str(weights)}
        )
    return timm_model(config.name, num_classes, image_size, pretrained=config.pretrained)


def fit(
    model: nn.Module,
    data: ImageData,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    device: torch.device,
    description: str,
    weight_decay: float = 0.0,
    lr_schedule: str = "constant",
) -> list[float]:
    """AdamW + cross-entropy with horizontal flips; returns the mean loss of each epoch."""
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    count = len(data.train_y)
    steps_per_epoch = -(-count // batch_size)
    scheduler = None
    if lr_schedule == "onecycle" and epochs > 0:
        # One-cycle (warm-up then cosine decay) reaches a good model in few epochs, which a CPU budget needs.
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimiser, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.15
        )
    generator = torch.Generator().manual_seed(seed)
    model.to(device).train()
    losses = []
    for epoch in range(epochs):
        order = torch.randperm(count, generator=generator)
        batches = [order[i : i + batch_size] for i in range(0, count, batch_size)]
        total = 0.0
        for batch in track(batches, f"{description} epoch {epoch + 1}/{epochs}"):
            x, y = data.train_x[batch], data.train_y[batch]
            flip = torch.rand(len(batch), generator=generator) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            loss = nn.functional.cross_entropy(model(x.to(device)), y.to(device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            if scheduler is not None:
                scheduler.step()
            total += loss.item() * len(batch)
        losses.append(total / count)
    model.eval()
    return losses


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, device: torch.device, batch_size: int = 128) -> torch.Tensor:
    model.to(device).eval()
    return torch.cat([model(x[i : i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(x), batch_size)])


def accuracy(model: nn.Module, data: ImageData, device: torch.device) -> float:
    return (predict(model, data.eval_x, device) == data.eval_y).float().mean().item()


def trained_model_key(config: ModelConfig, data: ImageData, seed: int) -> str:
    return content_key(
        {"model": config.model_dump(), "data": data.fingerprint, "seed": seed, "version": TRAINING_VERSION}
    )


def trained_model(
    config: ModelConfig, data: ImageData, seed: int, cache: Cache, device: torch.device
) -> tuple[nn.Module, str]:
    """The model trained as `config` says, from the cache when it was trained before (no retraining)."""
    key = trained_model_key(config, data, seed)
    weights = cache.path("models", key, ".safetensors")
    torch.manual_seed(seed)
    if weights.exists():
        model = timm_model(config.name, data.num_classes, data.image_size)
        load_model(model, str(weights), device="cpu")
        return model.to(device).eval(), key
    model = create_model(config, data.num_classes, data.image_size)
    started = time.perf_counter()
    train = config.train
    losses = fit(
        model, data, epochs=train.epochs, lr=train.lr, batch_size=train.batch_size, seed=seed, device=device,
        description=f"train {config.name}", weight_decay=train.weight_decay, lr_schedule=train.lr_schedule,
    )  # fmt: skip
    model.cpu()
    cache.write(weights, lambda path: save_model(model, str(path)))
    cache.write_json(
        cache.path("models", key, ".json"),
        {"model": config.model_dump(), "losses": losses, "train_seconds": time.perf_counter() - started},
    )
    return model.to(device).eval(), key
