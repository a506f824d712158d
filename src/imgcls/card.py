"""The model card: the package's README.md, generated from its config.

The YAML front matter is what the Hugging Face Hub reads (library, pipeline, license, tags and a `model-index`
with the evaluation), so the Hub's widget, search and leaderboards understand a pushed package without edits.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

import yaml

# How the package's headline numbers appear in `model-index` (Hub metric ids where one exists).
_METRICS = (
    ("top1", "accuracy", "Top-1 accuracy", None),
    ("top5", "top_5_accuracy", "Top-5 accuracy", None),
    ("macro_f1", "f1", "Macro F1", {"average": "macro"}),
)


def _table(rows: list[tuple[str, str]]) -> str:
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def _dataset_name(data: Any) -> str:
    # A training path like /home/me/data/flowers says where the data lay, not what it is; keep the last part only.
    text = str(data or "").rstrip("/\\")
    return PurePath(text).name or text or "custom"


def model_name(config: dict[str, Any]) -> str:
    """A short name for the model: the package's `imgcls.name` or `<architecture>-imgcls`."""
    return str(config.get("imgcls", {}).get("name") or f"{config['architecture']}-imgcls")


def front_matter(config: dict[str, Any]) -> dict[str, Any]:
    """The model card metadata the Hub understands, as a plain dict (also handy for tests and other tools)."""
    info = config.get("imgcls", {})
    training = info.get("training", {})
    evaluation = info.get("evaluation", {})
    meta: dict[str, Any] = {
        "library_name": "timm",
        "pipeline_tag": "image-classification",
        "license": str(info.get("license") or "other"),
        "tags": ["image-classification", "timm", "imgcls", config["architecture"]],
    }
    metrics = [
        {"type": metric, "value": float(evaluation[key]), "name": name, **({"args": args} if args else {})}
        for key, metric, name, args in _METRICS
        if isinstance(evaluation.get(key), (int, float))
    ]
    if metrics:
        dataset = _dataset_name(training.get("data"))
        meta["model-index"] = [
            {
                "name": model_name(config),
                "results": [
                    {
                        "task": {"type": "image-classification", "name": "Image Classification"},
                        "dataset": {
                            "name": dataset,
                            "type": dataset,
                            "split": str(evaluation.get("split", "test")),
                        },
                        "metrics": metrics,
                    }
                ],
            }
        ]
    return meta


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def model_card(config: dict[str, Any], *, ref: str | None = None) -> str:
    """A model card (README.md) from the package config: what it classifies, how it was made, how it scores.

    Args:
        config: the package's `config.json` content.
        ref: where the package is published (`hf://ORG/NAME@v1.0.0`, `git+URL@v1.0.0`); the usage example loads it
            from there. Without it the example loads the folder itself.
    """
    info = config.get("imgcls", {})
    labels = config.get("label_names", [])
    arch = config["architecture"]
    pcfg = config.get("pretrained_cfg", {})
    training = info.get("training", {})
    evaluation = info.get("evaluation", {})
    shown = ", ".join(f"`{label}`" for label in labels[:50]) + (" …" if len(labels) > 50 else "")
    meta = yaml.safe_dump(front_matter(config), sort_keys=False, allow_unicode=True, width=1000).strip()
    where = ref or "PATH_TO_THIS_FOLDER"
    parts = [
        "---",
        meta,
        "---",
        "",
        f"# {info.get('name') or f'{arch} fine-tuned with imgcls'}",
        "",
        f"A {info.get('task', 'multiclass')} image classifier for {len(labels)} classes: {shown}.",
        "",
        "## Use",
        "",
        "```python",
        "from imgcls import Classifier",
        f'Classifier.load("{where}")("image.jpg")  # [{{"label": ..., "score": ...}}, ...] top 5',
        "```",
        "",
    ]
    if ref and ref.startswith("hf://"):
        parts += ["For a private repository pass `token=...` or log in with `hf auth login` first.", ""]
    parts += [
        "Plain timm loads the folder too (import imgcls first for lenet5, alexnet and imgcls_clip):",
        "",
        "```python",
        "import timm",
        'model = timm.create_model("local-dir:PATH_TO_THIS_FOLDER", pretrained=True)',
        "```",
        "",
    ]
    input_line = (
        f"- input: {pcfg.get('input_size')}, mean {pcfg.get('mean')}, std {pcfg.get('std')}, "
        f"crop_pct {pcfg.get('crop_pct')}, {pcfg.get('interpolation')} interpolation"
    )
    zero_shot = info.get("zero_shot")
    if zero_shot:  # nothing was trained: say what it was built from instead
        parts += [*_zero_shot_section(zero_shot), f"- architecture: `{arch}`", input_line, ""]
    else:
        parts += [
            "## Training",
            "",
            f"- architecture: `{arch}`",
            f"- started from: {training.get('init', 'random initialisation')}",
            f"- data: {_dataset_name(training.get('data')) if training.get('data') else '?'}",
            f"- training images: {training.get('train_images', '?')}, validation images: {training.get('val_images', '?')}",
            f"- epochs: {training.get('epochs', '?')}, best epoch: {training.get('best_epoch', '?')}",
            f"- precision: {training.get('precision', '?')}",
            input_line,
            "",
        ]
    if evaluation:
        rows = [(k, _fmt(v)) for k, v in evaluation.items()]
        parts += ["## Evaluation", "", _table(rows), ""]
    if info.get("temperature"):
        parts += [f"Scores are calibrated with temperature {info['temperature']} (fitted on validation images).", ""]
    parts += ["## Limitations", "", *_limitations(labels, training, evaluation, pcfg), ""]
    return "\n".join(parts)


def _zero_shot_section(zero_shot: dict[str, Any]) -> list[str]:
    """How a zero-shot package came about: no training images, only the CLIP model and the prompts."""
    lines = [
        "## Zero-shot",
        "",
        f"No training images: CLIP (`{zero_shot.get('clip')}`"
        + (f", weights `{zero_shot['pretrained']}`" if zero_shot.get("pretrained") else "")
        + ") scores each image against text prompts made from the labels; the score is a softmax over the labels.",
        "",
        "Prompt templates (averaged per label): " + "; ".join(f"`{t}`" for t in zero_shot.get("templates", [])),
        "",
    ]
    if zero_shot.get("descriptions"):
        lines += ["Label descriptions used in the prompts:", ""]
        lines += [f"- `{name}`: {text}" for name, text in zero_shot["descriptions"].items()] + [""]
    return lines


def _limitations(
    labels: list[str], training: dict[str, Any], evaluation: dict[str, Any], pcfg: dict[str, Any]
) -> list[str]:
    lines = [
        f"- It knows only these {len(labels)} classes: an image of anything else still gets one of them, "
        "often with a high score.",
    ]
    images = evaluation.get("images")
    if not evaluation:
        lines.append("- It was not evaluated on held-out images; measure it on your own data before relying on it.")
    elif isinstance(images, int) and images < 1000:
        lines.append(
            f"- The evaluation used {images} images ({evaluation.get('split', 'test')} split); "
            "with so few, the numbers can move by several points on other samples."
        )
    train_images = training.get("train_images")
    if isinstance(train_images, int):
        lines.append(
            f"- It learned from {train_images} images; photos unlike them (other cameras, lighting, viewpoints or "
            "sources) may score lower than the table says."
        )
    if pcfg.get("input_size"):
        lines.append(
            f"- Inputs are resized to {tuple(pcfg['input_size'])[-2:]} pixels, so details smaller than that are lost."
        )
    return lines
