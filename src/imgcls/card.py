"""The model card: the package's README.md, generated from its config."""

from __future__ import annotations

from typing import Any


def _table(rows: list[tuple[str, str]]) -> str:
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def model_card(config: dict[str, Any]) -> str:
    """A model card (README.md) from the package config: what it classifies, how it was made, how it scores."""
    info = config.get("imgcls", {})
    labels = config.get("label_names", [])
    arch = config["architecture"]
    pcfg = config.get("pretrained_cfg", {})
    training = info.get("training", {})
    evaluation = info.get("evaluation", {})
    shown = ", ".join(f"`{label}`" for label in labels[:50]) + (" …" if len(labels) > 50 else "")
    parts = [
        "---",
        "library_name: timm",
        "pipeline_tag: image-classification",
        "tags: [image-classification, timm, imgcls]",
        "---",
        "",
        f"# {arch} fine-tuned with imgcls",
        "",
        f"A {info.get('task', 'multiclass')} image classifier for {len(labels)} classes: {shown}.",
        "",
        "## Training",
        "",
        f"- architecture: `{arch}`",
        f"- started from: {training.get('init', 'random initialisation')}",
        f"- training images: {training.get('train_images', '?')}, validation images: {training.get('val_images', '?')}",
        f"- epochs: {training.get('epochs', '?')}, best epoch: {training.get('best_epoch', '?')}",
        f"- data: {training.get('data', '?')}",
        f"- input: {pcfg.get('input_size')}, mean {pcfg.get('mean')}, std {pcfg.get('std')}, "
        f"crop_pct {pcfg.get('crop_pct')}, {pcfg.get('interpolation')} interpolation",
        "",
    ]
    if evaluation:
        rows = [(k, f"{v:.4f}" if isinstance(v, float) else str(v)) for k, v in evaluation.items()]
        parts += ["## Evaluation", "", _table(rows), ""]
    if info.get("temperature"):
        parts += [f"Scores are calibrated with temperature {info['temperature']} (fitted on validation images).", ""]
    parts += [
        "## Use",
        "",
        "```python",
        "from imgcls import Classifier",
        'clf = Classifier.load("PATH_TO_THIS_FOLDER")',
        'clf("image.jpg")  # [{"label": ..., "score": ...}, ...] top 5',
        "```",
        "",
        "Plain timm loads it too (import imgcls first for lenet5/alexnet):",
        "",
        "```python",
        "import timm",
        'model = timm.create_model("local-dir:PATH_TO_THIS_FOLDER", pretrained=True)',
        "```",
        "",
    ]
    return "\n".join(parts)
