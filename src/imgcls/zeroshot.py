"""Zero-shot classification with CLIP (open_clip): labels in words, no training images.

Each label becomes prompts ("a photo of a {}.", an ensemble by default, or the user's templates), the prompts go
through CLIP's text tower, and the label's embedding is the normalised mean of its prompts' normalised embeddings.
Those rows, times CLIP's logit scale, become the linear head of a `ClipImageClassifier` (the image tower with the
timm contract), saved as an ordinary model package: predict, evaluate, serve, demo, export and push need nothing
special, and the text tower is not needed any more.

CLIP references (`resolve_clip_ref`): a folder holding `open_clip_config.json` and the weights (an open_clip
`hf-hub:` repository downloaded once), `hf-hub:ORG/NAME`, or an open_clip model name with pretrained weights, a tag
or a local file (`ViT-B-32:laion2b_s34b_b79k`, `ViT-B-32:/models/clip.safetensors`, or `pretrained=`).
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from imgcls.models import WeightsError
from imgcls.package import PackageError

__all__ = [
    "DEFAULT_TEMPLATES",
    "ClipModel",
    "Label",
    "encode_labels",
    "image_tower",
    "is_clip_ref",
    "load_clip",
    "parse_labels",
    "zero_shot_package",
]

log = logging.getLogger(__name__)

# Prompt ensemble: the same label in several phrasings, averaged. Ensembling a handful of templates is worth a few
# points of top-1 over a single "a photo of a {}." on photo benchmarks (Radford et al. 2021, sec. 3.1.4); these
# cover the common ways a picture of a thing differs (quality, size, rendering) without leaning on one dataset.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a close-up photo of a {}.",
    "a blurry photo of a {}.",
    "a bright photo of a {}.",
    "a photo of the small {}.",
    "a photo of the large {}.",
    "a drawing of a {}.",
    "a rendering of a {}.",
)
CLIP_PREFIX = "open_clip:"
_OPEN_CLIP_CONFIG = "open_clip_config.json"
# "zebra: a horse with black and white stripes"; the full-width colon too, for labels typed in CJK.
_DESCRIPTION_SEP = re.compile(r"\s*[:：]\s*")


@dataclass(frozen=True)
class Label:
    """A class name and, optionally, a description that the prompts use as well."""

    name: str
    description: str | None = None

    def prompts(self, templates: Sequence[str]) -> list[str]:
        # A description completes the name, so every template reads "a photo of a zebra, a horse with ... stripes."
        text = f"{self.name}, {self.description}" if self.description else self.name
        return [template.replace("{}", text) for template in templates]


def parse_labels(spec: str | Path | Sequence[str | Label]) -> list[Label]:
    """Labels from a comma-separated string, a text file (one per line), a folder of class folders, or a list.

    Each entry is `name` or `name: description`.

    Raises:
        PackageError: no labels, an empty or duplicate name.
    """
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        if path.is_dir():
            from imgcls.data.sources import discover

            # The dataset's class names, so the package evaluates on that data directly.
            entries: list[str | Label] = list(discover(path, val_fraction=0.0).classes)
            where = f"{path} (class folders)"
        elif path.is_file():
            text = path.read_text(encoding="utf-8")
            entries = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
            where = str(path)
        else:
            entries = [part for part in str(spec).split(",") if part.strip()]
            where = "--labels"
    else:
        entries, where = list(spec), "labels"
    labels: list[Label] = []
    for entry in entries:
        if isinstance(entry, Label):
            labels.append(entry)
            continue
        name, _, description = (part.strip() for part in _split_description(str(entry)))
        if not name:
            raise PackageError(f"{where}: {entry!r} has no label name before the description")
        labels.append(Label(name, description or None))
    if len(labels) < 2:
        raise PackageError(f"{where}: give at least two labels (e.g. 'cat,dog'); found {len(labels)}")
    seen: set[str] = set()
    for label in labels:
        if label.name in seen:
            raise PackageError(f"{where}: label {label.name!r} appears twice; each label must be unique")
        seen.add(label.name)
    return labels


def _split_description(entry: str) -> tuple[str, str, str]:
    parts = _DESCRIPTION_SEP.split(entry.strip(), maxsplit=1)
    return (parts[0], ":", parts[1]) if len(parts) == 2 else (parts[0], "", "")


def check_templates(templates: Sequence[str]) -> list[str]:
    """Templates must each hold one `{}` where the label goes."""
    templates = [str(t) for t in templates]
    if not templates:
        raise PackageError("templates: give at least one prompt template, e.g. 'a photo of a {}.'")
    for template in templates:
        if template.count("{}") != 1:
            raise PackageError(f"template {template!r}: needs exactly one {{}} where the label goes")
    return templates


@dataclass
class ClipModel:
    """A loaded CLIP model, its tokenizer and the configs needed to rebuild its image tower."""

    ref: str
    pretrained: str | None
    model: torch.nn.Module
    tokenizer: Any
    model_cfg: dict[str, Any]
    preprocess_cfg: dict[str, Any]

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())


def is_clip_ref(ref: str | Path) -> bool:
    """Whether `ref` names a CLIP model rather than a timm model or a package (used where either is accepted).

    `open_clip:ANYTHING`, a folder with `open_clip_config.json`, or `NAME:TAG` with an open_clip model name. A bare
    `hf-hub:` id means timm there; write `open_clip:hf-hub:ORG/NAME` for a CLIP one.
    """
    ref = str(ref)
    if ref.startswith(CLIP_PREFIX) or (Path(ref) / _OPEN_CLIP_CONFIG).is_file():
        return True
    name, sep, _ = ref.partition(":")
    if not sep or name in ("hf-hub", "local-dir", "hf", "git+https", "git+ssh", "git+file"):
        return False
    try:
        import open_clip
    except ImportError:
        return False
    return name in open_clip.list_models()


def resolve_clip_ref(ref: str | Path, pretrained: str | None = None) -> tuple[str, str | None]:
    """(open_clip model name or `hf-hub:`/`local-dir:` id, pretrained tag or file) for a CLIP reference."""
    import open_clip

    ref = str(ref).removeprefix(CLIP_PREFIX)
    if ref.startswith(("hf-hub:", "local-dir:")):
        if pretrained:
            raise WeightsError(f"{ref}: carries its own weights; drop pretrained={pretrained!r}")
        return ref, None
    path = Path(ref)
    if path.is_dir():
        if not (path / _OPEN_CLIP_CONFIG).is_file():
            raise WeightsError(
                f"{path}: not a CLIP model folder (no {_OPEN_CLIP_CONFIG}); a local CLIP model is the folder of an "
                f"open_clip hf-hub repository: {_OPEN_CLIP_CONFIG} and open_clip_model.safetensors"
            )
        return f"local-dir:{path.resolve()}", None
    name, _, tag = ref.partition(":")
    pretrained = pretrained or tag or None
    if name not in open_clip.list_models():
        raise WeightsError(
            f"{ref}: not a CLIP model: give a folder with {_OPEN_CLIP_CONFIG}, hf-hub:ORG/NAME, or an open_clip "
            f"model name (open_clip.list_models(), e.g. ViT-B-32) with pretrained weights"
        )
    if not pretrained:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)[:6]) or "none published"
        raise WeightsError(
            f"{name}: needs pretrained weights, a tag ({tags}) or a local checkpoint file "
            f"({name}:/path/to/weights.safetensors); a randomly initialised CLIP cannot classify"
        )
    return name, pretrained


def load_clip(ref: str | Path, pretrained: str | None = None) -> ClipModel:
    """Load a CLIP model with its tokenizer (see `resolve_clip_ref` for the references accepted).

    Raises:
        WeightsError: the model or its weights cannot be loaded (offline, unknown name, file that does not fit).
    """
    try:
        import open_clip
    except ImportError:
        raise WeightsError("zero-shot classification needs open_clip: pip install 'imgcls[clip]'") from None
    name, pretrained = resolve_clip_ref(ref, pretrained)
    try:
        model = open_clip.create_model(name, pretrained=pretrained, device="cpu")
        tokenizer = open_clip.get_tokenizer(name)
        model_cfg = copy.deepcopy(open_clip.get_model_config(name))
    # open_clip raises all of these: offline hub, missing file, weights that do not fit (some checks are asserts).
    except (OSError, RuntimeError, ValueError, KeyError, AssertionError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise WeightsError(
            f"{ref}: could not load the CLIP model ({type(err).__name__}: {first}). Without network access, "
            f"download the open_clip repository on another machine and pass its folder "
            f"({_OPEN_CLIP_CONFIG} + open_clip_model.safetensors)"
        ) from err
    if model_cfg is None or "vision_cfg" not in model_cfg:
        raise WeightsError(f"{ref}: open_clip gives no vision_cfg for this model, so its image tower cannot be saved")
    if model_cfg.get("vision_cfg", {}).get("timm_model_pretrained"):
        # The package holds the tower's weights; rebuilding must not try to download ImageNet weights.
        model_cfg["vision_cfg"]["timm_model_pretrained"] = False
    preprocess_cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    return ClipModel(str(ref), pretrained, model.eval(), tokenizer, model_cfg, preprocess_cfg)


@torch.inference_mode()
def encode_labels(
    clip: ClipModel, labels: Sequence[Label], templates: Sequence[str], batch_size: int = 256
) -> torch.Tensor:
    """(num_labels, embed_dim) unit vectors: each label's prompt embeddings, normalised, averaged, normalised."""
    prompts = [label.prompts(templates) for label in labels]
    flat = [p for group in prompts for p in group]
    chunks = [
        clip.model.encode_text(clip.tokenizer(flat[i : i + batch_size]), normalize=True).float()
        for i in range(0, len(flat), batch_size)
    ]
    embeddings = torch.cat(chunks)
    rows, start = [], 0
    for group in prompts:
        rows.append(F.normalize(embeddings[start : start + len(group)].mean(dim=0), dim=-1))
        start += len(group)
    return torch.stack(rows)


def clip_tower_config(clip: ClipModel) -> dict[str, Any]:
    """What `ClipImageClassifier` needs to rebuild the image tower (JSON, stored as the package's model_args)."""
    return {
        "embed_dim": int(clip.model_cfg["embed_dim"]),
        "vision_cfg": copy.deepcopy(clip.model_cfg["vision_cfg"]),
        "quick_gelu": bool(clip.model_cfg.get("quick_gelu", False)),
    }


def image_tower(clip: ClipModel, num_classes: int = 0) -> torch.nn.Module:
    """The CLIP image tower as a timm-contract `imgcls_clip` model, with the CLIP weights and a fresh head."""
    import timm

    import imgcls.models  # noqa: F401  (registers imgcls_clip)
    from imgcls.models._clip import clip_data_config

    data_cfg = clip_data_config(clip.preprocess_cfg)
    model = timm.create_model(
        "imgcls_clip",
        num_classes=num_classes,
        clip_cfg=clip_tower_config(clip),
        pretrained_cfg_overlay={k: v for k, v in data_cfg.items()},
    )
    model.visual.load_state_dict(clip.model.visual.state_dict())
    return model.eval()


def zero_shot_package(
    ref: str | Path,
    labels: str | Path | Sequence[str | Label],
    *,
    templates: Sequence[str] | None = None,
    pretrained: str | None = None,
    out: str | Path | None = None,
    name: str | None = None,
) -> Any:
    """Build a zero-shot classifier as a model package (written to `out` when given) and return it loaded.

    Args:
        ref: a CLIP model (see `resolve_clip_ref`).
        labels: see `parse_labels`.
        templates: prompt templates with one `{}`; default `DEFAULT_TEMPLATES`.
        pretrained: an open_clip pretrained tag or local checkpoint, for a model given by name.
        out: the package folder to write; without it the package lives in memory only.
        name: a name for the model card.

    Returns:
        The `ModelPackage`.
    """
    from timm.data import resolve_data_config

    from imgcls.package import ModelPackage, load_package, save_package

    parsed = parse_labels(labels)
    templates = check_templates(templates if templates is not None else DEFAULT_TEMPLATES)
    clip = load_clip(ref, pretrained)
    text = encode_labels(clip, parsed, templates)
    model = image_tower(clip, num_classes=len(parsed))
    with torch.no_grad():
        # logit_scale * cos(image, label): CLIP's own zero-shot logits; the softmax over labels is the score.
        model.head.weight.copy_(text * clip.logit_scale)
        model.head.bias.zero_()
    names = [label.name for label in parsed]
    info = {
        "zero_shot": {
            "clip": str(ref),
            "pretrained": Path(clip.pretrained).name
            if clip.pretrained and Path(clip.pretrained).is_file()
            else clip.pretrained,
            "templates": templates,
            "descriptions": {label.name: label.description for label in parsed if label.description},
            "logit_scale": round(clip.logit_scale, 6),
        },
        "name": name or f"zero-shot CLIP ({Path(str(ref)).name or ref})",
    }
    data_cfg = resolve_data_config(model=model)
    if out is not None:
        save_package(model, out, labels=names, data_config=data_cfg, info=info)
        return load_package(out)
    config = {
        "architecture": "imgcls_clip",
        "num_classes": len(names),
        "label_names": names,
        "pretrained_cfg": data_cfg,
        "imgcls": {"task": "multiclass", **info},
    }
    return ModelPackage(Path(str(ref)), config, model=model)
