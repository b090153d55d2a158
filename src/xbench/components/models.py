"""timm models: creation (scratch, timm hub, or a local weights file), training, and the trained-model cache."""

from __future__ import annotations

import difflib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from safetensors.torch import load_model, save_model
from torch import nn

from xbench.components.data import ImageData
from xbench.core.cache import Cache, content_key, library_versions
from xbench.core.errors import XbenchInputError
from xbench.core.progress import track
from xbench.core.suite import ModelConfig, Preprocessing, TrainConfig

TRAINING_VERSION = "2"


def check_model_name(name: str, field: str) -> None:
    """Plan-time check that timm knows the architecture, with close names as a hint."""
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise XbenchInputError(f"unknown timm model {name!r}{hint} (see `xbench list models`)", field=field)


def check_model_options(name: str, options: dict[str, Any], image_size: int, field: str) -> None:
    """Plan-time check that timm.create_model takes the suite's options for this model."""
    if not options:
        return
    import pickle

    try:
        timm_model(name, 2, image_size, **options)
    # what timm raises for options it cannot use, a checkpoint_path among them (a file that is not weights: torch's
    # refusal to unpickle, a truncated archive, an IndexError in timm's key remapping, a missing file)
    except (
        TypeError,
        ValueError,
        AssertionError,
        RuntimeError,
        IndexError,
        KeyError,
        OSError,
        EOFError,
        pickle.UnpicklingError,
    ) as exc:
        raise XbenchInputError(
            f"timm.create_model({name!r}) does not take these options: {type(exc).__name__}: {str(exc)[:300]}",
            field=field,
        ) from None


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
            config.name,
            num_classes,
            image_size,
            pretrained=True,
            pretrained_cfg_overlay={"file": str(weights)},
            **config.options,
        )
    return timm_model(config.name, num_classes, image_size, pretrained=config.pretrained, **config.options)


@dataclass(frozen=True)
class FitOptions:
    """How to train or fine-tune: `max_steps` caps optimiser steps; `patience` enables early stopping on a validation
    split of `validation_fraction` of the training images (the best weights are kept)."""

    epochs: int
    lr: float
    batch_size: int
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    optimizer: str = "adamw"
    max_steps: int | None = None
    validation_fraction: float = 0.0
    patience: int | None = None

    @classmethod
    def for_training(cls, train: TrainConfig) -> FitOptions:
        return cls(
            train.epochs,
            train.lr,
            train.batch_size,
            train.weight_decay,
            train.lr_schedule,
            optimizer=train.optimizer or "adamw",
            patience=train.early_stop_patience,
            validation_fraction=train.validation_fraction or 0.1,
        )


def _optimizer(model: nn.Module, options: FitOptions) -> torch.optim.Optimizer:
    if options.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=options.lr, momentum=0.9, nesterov=True, weight_decay=options.weight_decay
        )
    return torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)


def fit(
    model: nn.Module, data: ImageData, options: FitOptions, seed: int, device: torch.device, description: str
) -> list[float]:
    """Cross-entropy with horizontal flips; returns the mean training loss of each epoch run."""
    generator = torch.Generator().manual_seed(seed)
    count = data.train_count
    # Early stopping validates on the dataset's own held-out images (`validation_size`) when it has them, else on
    # `validation_fraction` of the training images.
    separate = options.patience is not None and data.validation is not None
    held_out = round(options.validation_fraction * count) if options.patience is not None and not separate else 0
    # Draw the split only when it is used, so training without early stopping sees the same batches as before.
    order = torch.randperm(count, generator=generator) if held_out else torch.arange(count)
    validation, training = order[:held_out], order[held_out:]
    steps_per_epoch = -(-len(training) // options.batch_size)
    epochs = options.epochs if options.max_steps is None else -(-options.max_steps // steps_per_epoch)
    total_steps = epochs * steps_per_epoch if options.max_steps is None else options.max_steps
    optimiser = _optimizer(model, options)
    scheduler = None
    if options.lr_schedule == "onecycle" and total_steps > 0:
        # One-cycle (warm-up then cosine decay) reaches a good model in few epochs, which a CPU budget needs.
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimiser, max_lr=options.lr, total_steps=total_steps, pct_start=0.15
        )
    model.to(device).train()
    losses: list[float] = []
    best: tuple[float, dict[str, torch.Tensor]] | None = None
    stale_epochs, step = 0, 0
    for epoch in range(epochs):
        batches = _epoch_batches(data, training, options.batch_size, generator)
        total, seen = 0.0, 0
        for x, y in track(batches, f"{description} epoch {epoch + 1}/{epochs}", total=steps_per_epoch):
            if step == total_steps:
                break
            loss = nn.functional.cross_entropy(model(x.to(device)), y.to(device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            if scheduler is not None:
                scheduler.step()
            total, seen, step = total + loss.item() * len(y), seen + len(y), step + 1
        losses.append(total / max(seen, 1))
        if held_out or separate:
            score = _validation_accuracy(model, data, None if separate else validation, device)
            model.train()
            if best is None or float(score) > best[0]:
                best, stale_epochs = (float(score), {k: v.detach().clone() for k, v in model.state_dict().items()}), 0
            else:
                stale_epochs += 1
                if stale_epochs >= (options.patience or 0):
                    break
    if best is not None:
        model.load_state_dict(best[1])
    model.eval()
    return losses


def _epoch_batches(
    data: ImageData, training: torch.Tensor, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled (x, y) batches. In memory: indexed, with random horizontal flips. Streamed: a DataLoader
    over the image files with worker processes, augmented by the dataset's transform; its order comes from the same
    seeded generator."""
    if data.train_stream is None:
        shuffled = training[torch.randperm(len(training), generator=generator)]
        for start in range(0, len(shuffled), batch_size):
            batch = shuffled[start : start + batch_size]
            x, y = data.train_x[batch], data.train_y[batch]
            flip = torch.rand(len(batch), generator=generator) < 0.5
            yield torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x), y
        return
    from torch.utils.data import DataLoader, Subset

    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    loader = DataLoader(
        Subset(data.train_stream, training.tolist()),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        num_workers=data.loader_workers,
        worker_init_fn=_seed_loader_worker,
        persistent_workers=False,
    )
    yield from loader


def _seed_loader_worker(worker_id: int) -> None:
    """Each DataLoader worker's augmentation draws from torch's per-worker seed (derived from the loader's generator),
    and so do the libraries torchvision's transforms call."""
    import random

    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def _validation_accuracy(
    model: nn.Module, data: ImageData, validation: torch.Tensor | None, device: torch.device
) -> float:
    """Accuracy on the training images at `validation`, or on the dataset's held-out images when it is None."""
    count = len(data.validation or ()) if validation is None else len(validation)
    correct = 0
    for start in range(0, count, 256):  # a streamed set is read in chunks, never whole
        if validation is None:
            assert data.validation is not None
            items = [data.validation[i] for i in range(start, min(start + 256, count))]
            x, y = torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items], dtype=torch.int64)
        else:
            x, y = data.train_examples(validation[start : start + 256])
        correct += int((predict(model, x, device) == y).sum())
    return correct / max(count, 1)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, device: torch.device, batch_size: int = 128) -> torch.Tensor:
    model.to(device).eval()
    with torch.no_grad():  # thousands of eval images: no autograd graph to build and free per batch
        return torch.cat(
            [model(x[i : i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(x), batch_size)]
        )


def accuracy(model: nn.Module, data: ImageData, device: torch.device) -> float:
    return (predict(model, data.eval_x, device) == data.eval_y).float().mean().item()


def model_preprocessing(config: ModelConfig) -> Preprocessing:
    """The model's own data config from timm (mean, std, interpolation, crop): what its pretrained weights expect.
    ViTs use 0.5/0.5, torchvision's CNNs ImageNet's mean and std; an unknown name gets ImageNet's."""
    from timm.models import get_pretrained_cfg

    pretrained = get_pretrained_cfg(config.name)
    if pretrained is None:
        return Preprocessing()
    interpolation = pretrained.interpolation if pretrained.interpolation in ("bilinear", "bicubic") else "bilinear"
    return Preprocessing(
        mean=tuple(pretrained.mean),
        std=tuple(pretrained.std),
        interpolation=interpolation,
        crop_pct=pretrained.crop_pct or 0.875,
    )


def trained_model_key(config: ModelConfig, data: ImageData, seed: int) -> str:
    return content_key(
        {
            "model": config.model_dump(),
            "data": data.fingerprint,
            "seed": seed,
            "version": TRAINING_VERSION,
            "libraries": library_versions(),
        }
    )


def trained_model(
    config: ModelConfig, data: ImageData, seed: int, cache: Cache, device: torch.device
) -> tuple[nn.Module, str]:
    """The model trained as `config` says, from the cache when it was trained before (no retraining)."""
    key = trained_model_key(config, data, seed)
    weights = cache.path("models", key, ".safetensors")
    torch.manual_seed(seed)
    if weights.exists():
        model = timm_model(config.name, data.num_classes, data.image_size, **config.options)
        loaded = cache.read(
            weights, lambda path: load_model(model, str(path), device="cpu"), weights.with_suffix(".json")
        )
        if loaded is not None:
            return model.to(device).eval(), key
    torch.manual_seed(seed)  # again: a damaged cached file above consumed random draws building its model
    model = create_model(config, data.num_classes, data.image_size)
    started = time.perf_counter()
    losses = fit(model, data, FitOptions.for_training(config.train), seed, device, f"train {config.name}")
    model.cpu()
    cache.write(weights, lambda path: save_model(model, str(path)))
    cache.write_json(
        cache.path("models", key, ".json"),
        {"model": config.model_dump(), "losses": losses, "train_seconds": time.perf_counter() - started},
    )
    return model.to(device).eval(), key
