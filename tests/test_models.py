from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch.optim.optimizer import register_optimizer_step_post_hook

import xbench.components.models as models
from xbench.components.data import ImageData
from xbench.core.cache import Cache
from xbench.core.errors import XbenchInputError
from xbench.core.suite import ModelConfig, TrainConfig


def test_pretrained_path_loads_local_weights_through_timm(tmp_path: Path, small_data: ImageData) -> None:
    torch.manual_seed(1)
    source = timm.create_model("test_resnet", num_classes=1000)
    weights = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(weights))
    model = models.create_model(ModelConfig(name="test_resnet", pretrained=str(weights)), small_data.num_classes)
    loaded = model.state_dict()
    body = [k for k in loaded if not k.startswith("fc.")]
    assert body and all(torch.equal(loaded[k], source.state_dict()[k]) for k in body)
    assert model.get_classifier().out_features == small_data.num_classes


def test_missing_weights_file_is_an_input_error(small_data: ImageData) -> None:
    with pytest.raises(XbenchInputError, match="does not exist"):
        models.create_model(ModelConfig(name="test_resnet", pretrained="/nowhere.safetensors"), 8)


def test_unknown_model_name_suggests_close_names() -> None:
    with pytest.raises(XbenchInputError, match="did you mean 'resnet18'"):
        models.check_model_name("resnet81", "models[0].name")


def test_training_lowers_the_loss(small_data: ImageData, tiny_model: torch.nn.Module) -> None:
    options = models.FitOptions(epochs=3, lr=0.01, batch_size=16, lr_schedule="onecycle")
    losses = models.fit(tiny_model, small_data, options, 0, torch.device("cpu"), "test")
    assert losses[-1] < losses[0]


def test_steps_cap_the_optimiser_steps(small_data: ImageData, tiny_model: torch.nn.Module) -> None:
    optimiser_steps = 0

    def count(*args: object) -> None:
        nonlocal optimiser_steps
        optimiser_steps += 1

    for optimizer in ("adamw", "sgd"):
        optimiser_steps = 0
        options = models.FitOptions(epochs=1, lr=0.01, batch_size=16, optimizer=optimizer, max_steps=7)
        handle = register_optimizer_step_post_hook(count)
        try:
            losses = models.fit(tiny_model, small_data, options, 0, torch.device("cpu"), "test")
        finally:
            handle.remove()
        assert optimiser_steps == 7 and len(losses) == 2  # 64 images / 16 = 4 steps an epoch


def test_early_stopping_keeps_the_best_validation_weights(
    small_data: ImageData, tiny_model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A learning rate this large wrecks the model after the first epoch, so patience 1 stops early; every validation
    # is recorded with the weights it scored, and the model fit returns must hold the best-scoring weights, not the
    # last epoch's.
    validated: list[tuple[float, dict[str, torch.Tensor]]] = []
    measure = models._validation_accuracy

    def recording(model: torch.nn.Module, *args: object) -> float:
        score = measure(model, *args)  # type: ignore[arg-type]
        validated.append((score, {k: v.detach().clone() for k, v in model.state_dict().items()}))
        return score

    monkeypatch.setattr(models, "_validation_accuracy", recording)
    options = models.FitOptions(epochs=6, lr=5.0, batch_size=16, patience=1, validation_fraction=0.25)
    losses = models.fit(tiny_model, small_data, options, 0, torch.device("cpu"), "test")
    assert len(losses) == len(validated) < 6  # stopped early: the last epoch scored no better than the best
    best_score = max(score for score, _ in validated)
    best_state = next(state for score, state in validated if score == best_score)
    final_state = tiny_model.state_dict()
    assert all(torch.equal(final_state[k], best_state[k]) for k in best_state)
    last_state = validated[-1][1]
    assert not all(torch.equal(final_state[k], last_state[k]) for k in last_state if k.endswith("weight"))


def test_trained_model_is_cached_and_not_retrained(
    tmp_path: Path, small_data: ImageData, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = ModelConfig(name="test_resnet", train=TrainConfig(epochs=1, batch_size=32))
    cache = Cache(tmp_path)
    first, key = models.trained_model(config, small_data, 0, cache, torch.device("cpu"))
    assert cache.path("models", key, ".safetensors").exists()

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached model was trained again")

    monkeypatch.setattr(models, "fit", no_training)
    second, same_key = models.trained_model(config, small_data, 0, cache, torch.device("cpu"))
    assert same_key == key
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    other_key = models.trained_model_key(config.model_copy(update={"train": TrainConfig(epochs=2)}), small_data, 0)
    assert other_key != key
