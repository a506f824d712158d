"""LeNet-5 and AlexNet: registered with timm, honour its model contract, round-trip through its hub format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from timm.models._hub import save_for_hf

from imgcls.models import AlexNet, LeNet5, create_model, data_config

CLASSIC = [
    # name, class, default size, (num_features, feature map side at the default size), head_hidden_size
    ("lenet5", LeNet5, 32, (16, 5), 84),
    ("alexnet", AlexNet, 224, (256, 6), 4096),
]


@pytest.mark.parametrize(("name", "cls", "size", "features", "hidden"), CLASSIC, ids=[c[0] for c in CLASSIC])
def test_timm_builds_it_with_its_contract(
    name: str, cls: type, size: int, features: tuple[int, int], hidden: int
) -> None:
    model = timm.create_model(name, num_classes=10).eval()
    x = torch.randn(2, 3, size, size)

    assert isinstance(model, cls)
    assert model.num_classes == 10
    assert model.num_features == features[0]
    assert model.head_hidden_size == hidden
    assert model.pretrained_cfg is model.default_cfg
    assert model.pretrained_cfg["input_size"] == (3, size, size)
    # The cfg's classifier key names the module that get_classifier() returns: timm drops it for new class counts.
    assert model.get_submodule(model.pretrained_cfg["classifier"]) is model.get_classifier()
    assert model.get_submodule(model.pretrained_cfg["first_conv"]).in_channels == 3

    feats = model.forward_features(x)
    assert feats.shape == (2, features[0], features[1], features[1])
    assert model.forward_head(feats, pre_logits=True).shape == (2, hidden)
    torch.testing.assert_close(model(x), model.forward_head(feats))
    assert model(x).shape == (2, 10)


@pytest.mark.parametrize("name", ["lenet5", "alexnet"])
def test_reset_classifier_and_other_inputs(name: str) -> None:
    model = timm.create_model(name, num_classes=10, in_chans=1, drop_rate=0.5)
    sizes = {"lenet5": (28, 64), "alexnet": (63, 96)}[name]

    model.reset_classifier(4)
    assert model.num_classes == 4
    for size in sizes:
        assert model(torch.randn(2, 1, size, size)).shape == (2, 4)

    model.reset_classifier(0)  # an embedding model: the output is what the classifier would see
    assert model(torch.randn(2, 1, sizes[0], sizes[0])).shape == (2, model.head_hidden_size)
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(3, global_pool="avg")


def test_lenet5_is_the_classic_size() -> None:
    model = timm.create_model("lenet5")
    assert model.num_classes == 10
    assert sum(p.numel() for p in model.parameters()) == 62_006


def test_lenet5_round_trips_through_timm_hub_format(tmp_path: Path) -> None:
    model = create_model("lenet5", 4, in_chans=1, img_size=28).eval()
    save_for_hf(model, tmp_path, model_config={"label_names": ["a", "b", "c", "d"]}, safe_serialization=True)

    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architecture"] == "lenet5"
    assert config["pretrained_cfg"]["input_size"] == [1, 28, 28]
    assert (tmp_path / "model.safetensors").is_file()

    reloaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    # Ours too, without restating the channel count (the default 3 must not turn the stem into RGB).
    ours = create_model(f"local-dir:{tmp_path}", 4, pretrained=True).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(reloaded(x), model(x))
        assert torch.equal(ours(x), model(x))
    assert data_config(reloaded) == data_config(ours) == data_config(model)
    assert reloaded.pretrained_cfg["label_names"] == ["a", "b", "c", "d"]


def test_alexnet_loads_torchvision_weights(tmp_path: Path) -> None:
    torchvision = pytest.importorskip("torchvision")
    reference = torchvision.models.alexnet(weights=None).eval()
    torch.save(reference.state_dict(), tmp_path / "alexnet-tv.pth")

    model = create_model("alexnet", 1000, weights=tmp_path / "alexnet-tv.pth").eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))
