"""set_backbone_trainable / head_parameter_names, and data_config with overrides."""

from __future__ import annotations

import pytest
import torch

from imgcls.models import create_model, data_config, head_parameter_names, set_backbone_trainable


def _trainable(model: torch.nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize(
    ("name", "head", "img_size"),
    [
        ("resnet18", {"fc.weight", "fc.bias"}, None),
        (
            "deit_tiny_distilled_patch16_224",
            {"head.weight", "head.bias", "head_dist.weight", "head_dist.bias"},
            32,
        ),
        ("lenet5", {"head.weight", "head.bias"}, None),
        ("vgg11", {"head.fc.weight", "head.fc.bias"}, None),
    ],
)
def test_freezing_leaves_exactly_the_heads_trainable(name: str, head: set[str], img_size: int | None) -> None:
    model = create_model(name, 10, img_size=img_size)
    everything = {n for n, _ in model.named_parameters()}
    assert head_parameter_names(model) == head

    set_backbone_trainable(model, False)
    assert _trainable(model) == head

    set_backbone_trainable(model, True)
    assert _trainable(model) == everything


def test_alexnet_head_is_the_last_layer() -> None:
    model = create_model("alexnet", 10)
    set_backbone_trainable(model, False)
    assert _trainable(model) == {"classifier.6.weight", "classifier.6.bias"}


def test_freezing_a_headless_model_is_refused() -> None:
    model = create_model("resnet18", 0)
    assert head_parameter_names(model) == set()
    with pytest.raises(ValueError, match="nothing to train"):
        set_backbone_trainable(model, False)


def test_data_config_is_timms_view_of_the_model() -> None:
    assert data_config(create_model("resnet18", 3)) == {
        "input_size": (3, 224, 224),
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "crop_pct": 0.95,
        "crop_mode": "center",
        "interpolation": "bicubic",
    }
    lenet = data_config(create_model("lenet5", 3))
    assert lenet["input_size"] == (3, 32, 32)
    assert lenet["crop_pct"] == 1.0
    assert data_config(create_model("lenet5", 3, in_chans=1))["mean"] == (0.5,)


def test_data_config_overrides() -> None:
    model = create_model("resnet18", 3, in_chans=1)

    cfg = data_config(model, input_size=96, crop_pct=1.0, interpolation="bilinear", mean=0.5, std=None)
    assert cfg["input_size"] == (1, 96, 96)  # an int keeps the model's channel count
    assert (cfg["crop_pct"], cfg["interpolation"], cfg["mean"]) == (1.0, "bilinear", (0.5,))
    assert cfg["std"] == data_config(model)["std"]  # None means "keep"
    assert data_config(model, input_size=(64, 80))["input_size"] == (1, 64, 80)
    assert data_config(model, input_size=(1, 48, 48), crop_mode="squash")["crop_mode"] == "squash"

    with pytest.raises(ValueError, match="channel"):
        data_config(model, input_size=(3, 48, 48))
    with pytest.raises(ValueError, match="mean has 3 values"):
        data_config(model, mean=(0.1, 0.2, 0.3))
    with pytest.raises(TypeError, match="img_size"):
        data_config(model, img_size=32)


def test_data_config_refuses_a_size_a_fixed_size_model_cannot_take() -> None:
    vit = create_model("vit_tiny_patch16_224", 3, img_size=32)
    assert data_config(vit, input_size=32)["input_size"] == (3, 32, 32)
    with pytest.raises(ValueError, match="img_size=64"):
        data_config(vit, input_size=64)
