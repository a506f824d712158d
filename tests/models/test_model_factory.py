"""create_model: local weights with a new head, refused pickles, offline errors, img_size routing."""

from __future__ import annotations

import builtins
import time
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import save_file
from timm.models._hub import save_for_hf

from imgcls.models import WeightsError, create_model, data_config, head_parameter_names, list_models


def _save(model: torch.nn.Module, path: Path) -> Path:
    save_file(model.state_dict(), str(path))
    return path


def _assert_backbone_kept_head_new(model: torch.nn.Module, source: torch.nn.Module, num_classes: int) -> None:
    loaded, original = model.state_dict(), source.state_dict()
    head = head_parameter_names(model)
    assert loaded.keys() == original.keys()
    for key, tensor in loaded.items():
        if key in head:
            assert tensor.shape[0] == num_classes
            assert tensor.shape != original[key].shape or not torch.equal(tensor, original[key])
        else:
            assert torch.equal(tensor, original[key]), key


@pytest.mark.parametrize(
    ("name", "source_classes", "img_size"),
    [("resnet18", 1000, None), ("vit_tiny_patch16_224", 1000, 32), ("lenet5", 7, None)],
)
def test_weights_file_keeps_backbone_and_replaces_head(
    tmp_path: Path, name: str, source_classes: int, img_size: int | None
) -> None:
    source = create_model(name, source_classes, img_size=img_size)
    file = _save(source, tmp_path / "source.safetensors")

    model = create_model(name, num_classes=3, weights=file, img_size=img_size)

    assert model.num_classes == 3
    assert model.get_classifier().weight.shape == (3, model.head_hidden_size)
    if name != "lenet5":  # LeNet's num_features is its 16 conv channels, the classifier sees 84 (timm's VGG split)
        assert model.head_hidden_size == model.num_features
    _assert_backbone_kept_head_new(model, source, 3)
    channels, height, width = data_config(model)["input_size"]
    assert model(torch.randn(1, channels, height, width)).shape == (1, 3)


def test_weights_file_replaces_both_distilled_heads(tmp_path: Path) -> None:
    source = create_model("deit_tiny_distilled_patch16_224", 1000, img_size=32)
    model = create_model(
        "deit_tiny_distilled_patch16_224", 5, weights=_save(source, tmp_path / "d.safetensors"), img_size=32
    )
    assert head_parameter_names(model) == {"head.weight", "head.bias", "head_dist.weight", "head_dist.bias"}
    _assert_backbone_kept_head_new(model, source, 5)


def test_weights_with_same_class_count_keep_the_head(tmp_path: Path) -> None:
    source = create_model("resnet18", 4)
    model = create_model("resnet18", 4, weights=_save(source, tmp_path / "r.safetensors"))
    for key, tensor in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], tensor), key


def test_weights_from_a_timm_folder_and_a_plain_pth(tmp_path: Path) -> None:
    source = create_model("lenet5", 10)
    save_for_hf(source, tmp_path / "pkg", safe_serialization=True)
    torch.save(source.state_dict(), tmp_path / "plain.pth")

    for weights in (tmp_path / "pkg", tmp_path / "plain.pth"):
        model = create_model("lenet5", 2, weights=weights)
        _assert_backbone_kept_head_new(model, source, 2)


def test_headless_backbone_file_gets_a_head(tmp_path: Path) -> None:
    source = create_model("resnet18", 0)
    model = create_model("resnet18", 6, weights=_save(source, tmp_path / "backbone.safetensors"))
    assert model.fc.weight.shape == (6, 512)
    assert torch.equal(model.conv1.weight, source.conv1.weight)


def test_weights_adapt_the_stem_to_one_channel(tmp_path: Path) -> None:
    source = create_model("resnet18", 1000)
    model = create_model("resnet18", 3, in_chans=1, weights=_save(source, tmp_path / "r.safetensors"))
    assert model.conv1.weight.shape == (64, 1, 7, 7)
    torch.testing.assert_close(model.conv1.weight, source.conv1.weight.sum(dim=1, keepdim=True))
    assert data_config(model)["input_size"] == (1, 224, 224)


def test_backbone_that_does_not_fit_lists_keys(tmp_path: Path) -> None:
    file = _save(create_model("resnet18", 1000), tmp_path / "r18.safetensors")
    with pytest.raises(WeightsError, match=r"r18\.safetensors: does not fit resnet34: \d+ missing: layer1\.2\."):
        create_model("resnet34", 3, weights=file)

    vit_file = _save(create_model("vit_tiny_patch16_224", 1000, img_size=32), tmp_path / "vit.safetensors")
    with pytest.raises(WeightsError, match=r"shape \(file vs model\): .*\(192,\) vs \(384,\)"):
        create_model("vit_small_patch16_224", 3, weights=vit_file, img_size=32)


def test_pickle_with_objects_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):  # unpickling would call exec(...) and create the marker file
            return (builtins.exec, (f"open({str(marker)!r}, 'w').write('x')",))

    torch.save({"conv1.weight": torch.zeros(6, 3, 5, 5), "payload": Payload()}, tmp_path / "evil.pth")

    with pytest.raises(WeightsError, match="refused to load"):
        create_model("lenet5", 3, weights=tmp_path / "evil.pth")
    assert not marker.exists()


def test_missing_or_unknown_weights_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        create_model("lenet5", 3, weights=tmp_path / "nope.safetensors")
    (tmp_path / "weights.npz").write_bytes(b"\0")
    with pytest.raises(WeightsError, match="unknown weights format"):
        create_model("lenet5", 3, weights=tmp_path / "weights.npz")
    (tmp_path / "broken.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(WeightsError, match="not a readable weights file"):
        create_model("lenet5", 3, weights=tmp_path / "broken.safetensors")


def test_pretrained_offline_fails_fast_with_a_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # tests/conftest.py sets HF_HUB_OFFLINE=1 before huggingface_hub is imported; this holds even if it was not.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    start = time.perf_counter()
    # An empty cache_dir: weights cached on this machine must not make the test pass by accident.
    with pytest.raises(WeightsError, match="resnet18: could not fetch.*--weights FILE") as info:
        create_model("resnet18", 3, pretrained=True, cache_dir=tmp_path)
    assert time.perf_counter() - start < 5
    assert isinstance(info.value.__cause__, OSError)


def test_pretrained_without_published_weights(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="lenet5: timm has no published weights.*--weights FILE"):
        create_model("lenet5", 3, pretrained=True)


def test_unknown_model() -> None:
    with pytest.raises(RuntimeError, match="Unknown model"):
        create_model("no_such_net", 3)


def test_img_size_goes_only_to_models_that_take_it() -> None:
    vit = create_model("vit_tiny_patch16_224", 3, img_size=48)
    assert vit.patch_embed.grid_size == (3, 3)
    assert data_config(vit)["input_size"] == (3, 48, 48)

    resnet = create_model("resnet18", 3, img_size=48)  # would raise TypeError if passed to ResNet
    assert data_config(resnet)["input_size"] == (3, 48, 48)
    assert resnet.pretrained_cfg["input_size"] == (3, 48, 48)  # so plain timm.data.resolve_data_config agrees


def test_list_models_includes_ours() -> None:
    assert {"lenet5", "alexnet", "resnet18"} <= set(list_models())
    assert list_models("lenet*") == ["lenet5"]
    assert "alexnet.tv_in1k" in list_models("alex*", pretrained=True)
    assert not list_models("lenet*", pretrained=True)
