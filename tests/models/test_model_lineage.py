"""Every architecture in the course lineage builds for 10 classes and takes one training step."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from imgcls.models import create_model, data_config, head_parameter_names

# (name, img_size): small sizes keep the suite fast; ViT/DeiT/Swin are built for them, the rest take any size.
LINEAGE = [
    ("lenet5", None),
    ("alexnet", 64),
    ("vgg11", 32),
    ("resnet18", 64),
    ("resnet50", 64),
    ("mobilenetv3_large_100", 64),
    ("vit_tiny_patch16_224", 32),
    ("deit_tiny_distilled_patch16_224", 32),
    ("swin_tiny_patch4_window7_224", 32),
]


@pytest.mark.parametrize(("name", "img_size"), LINEAGE, ids=[n for n, _ in LINEAGE])
def test_one_training_step(name: str, img_size: int | None) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, img_size=img_size)
    channels, height, width = data_config(model)["input_size"]
    assert (height, width) == ((32, 32) if img_size is None else (img_size, img_size))
    x = torch.randn(2, channels, height, width)
    y = torch.tensor([1, 7])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    model.train()
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    optimizer.step()

    assert logits.shape == (2, 10)
    assert math.isfinite(loss.item())
    head = head_parameter_names(model)
    assert head
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters() if n in head)
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()
