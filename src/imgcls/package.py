"""The model package: a folder plain timm loads (`config.json` + `model.safetensors`) plus a model card.

Everything after training reads only this folder: the labels, the task and the preprocessing travel
inside `config.json`, so predict, evaluate, serve and export can never drift from what training used.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgcls import __version__
from imgcls.atomic import atomic_write_text, fsync_dir, fsync_tree, swap_dirs
from imgcls.card import model_card
from imgcls.errors import PackageError

if TYPE_CHECKING:
    import torch

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
DATA_KEYS = ("input_size", "mean", "std", "crop_pct", "crop_mode", "interpolation")
# Weights saved with pickle (torch.save). A package never needs them, and imgcls never reads them: unpickling a file
# from elsewhere can run any code. Named in the error when they are a package's only weights.
PICKLE_PATTERNS = ("*.bin", "*.pth", "*.pt", "*.pth.tar", "*.ckpt", "*.pkl")


class ModelPackage:
    """A loaded model package. The network is built on first use of `model`: an ONNX-only prediction never needs
    it, and building it means importing torch and timm (seconds)."""

    def __init__(
        self,
        path: Path,
        config: dict[str, Any],
        *,
        model: torch.nn.Module | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.path = path
        self.config = config
        self.labels: list[str] = list(config["label_names"])
        self.data_config: dict[str, Any] = resolve_data_config(config["pretrained_cfg"])
        self.device = device
        self._model = model

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            self._model = _build_model(self.path, self.config, self.device)
        return self._model

    @property
    def task(self) -> str:
        return self.config.get("imgcls", {}).get("task", "multiclass")

    @property
    def info(self) -> dict[str, Any]:
        return self.config.get("imgcls", {})

    @property
    def temperature(self) -> float:
        """Softmax temperature fitted by `imgcls evaluate --calibrate` (1.0 = uncalibrated)."""
        return float(self.info.get("temperature") or 1.0)


def replace_dir(new: Path, target: Path) -> None:
    """Put the finished folder `new` at `target`, so that `target` is never half-written nor missing.

    The files of `new` are flushed to disk first; an existing `target` is exchanged with `new` in one atomic step
    where the system can (Linux), else moved aside and replaced by two renames.
    """
    fsync_tree(new)
    if target.exists():
        if swap_dirs(new, target):
            shutil.rmtree(new, ignore_errors=True)  # `new` now holds the old version
        else:
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            new.rename(target)
            shutil.rmtree(old, ignore_errors=True)
    else:
        new.rename(target)
    fsync_dir(target.parent)


def save_package(
    model: torch.nn.Module,
    out_dir: str | Path,
    *,
    labels: list[str],
    data_config: dict[str, Any],
    task: str = "multiclass",
    info: dict[str, Any] | None = None,
) -> Path:
    """Write a model package atomically: a half-written package never replaces a good one.

    Args:
        model: a timm-contract model whose `num_classes` equals `len(labels)`.
        out_dir: the package folder to create or replace.
        labels: class names in classifier-index order.
        data_config: the preprocessing used in training (input_size, mean, std, crop_pct, interpolation).
        task: `multiclass` (more tasks come later).
        info: training summary and evaluation results for the `imgcls` section and the model card.
    """
    from timm.models import save_for_hf

    out_dir = Path(out_dir)
    if getattr(model, "num_classes", None) != len(labels):
        raise PackageError(
            f"{out_dir}: the model has {getattr(model, 'num_classes', '?')} outputs but {len(labels)} labels"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        imgcls_section = {"version": __version__, "task": task, **(info or {})}
        save_for_hf(
            model,
            str(tmp),
            model_config={"label_names": list(labels), "imgcls": imgcls_section},
            data_config={k: v for k, v in data_config.items() if k in DATA_KEYS},
            safe_serialization=True,
        )
        config = json.loads((tmp / CONFIG_NAME).read_text(encoding="utf-8"))
        # Human-readable labels in any script: rewrite without \\u escapes.
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
        (tmp / CARD_NAME).write_text(model_card(config), encoding="utf-8")
        replace_dir(tmp, out_dir)
    except OSError as err:  # disk full, file-size limit, permissions: the previous package stays as it was
        raise PackageError(
            f"{out_dir}: cannot write the model package ({err.strerror or err}); the previous package is untouched"
        ) from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def set_package_info(path: str | Path, **values: Any) -> dict[str, Any]:
    """Update fields of the package's `imgcls` section (e.g. `temperature`) and its model card, atomically."""
    path = Path(path)
    config = read_config(path)
    config.setdefault("imgcls", {}).update(values)
    atomic_write_text(path / CONFIG_NAME, json.dumps(config, indent=2, ensure_ascii=False))
    atomic_write_text(path / CARD_NAME, model_card(config))
    return config


def read_config(path: str | Path) -> dict[str, Any]:
    """Read and validate a package's `config.json`."""
    path = Path(path)
    if not path.is_dir():
        raise PackageError(f"{path}: not a model package folder (expected {CONFIG_NAME} and {WEIGHTS_NAME} inside)")
    config_path = path / CONFIG_NAME
    if not config_path.is_file():
        raise PackageError(f"{path}: no {CONFIG_NAME}; is this a model package (e.g. runs/NAME/model)?")
    if not (path / WEIGHTS_NAME).is_file():
        # timm's `local-dir:` loader would fall back to pytorch_model.bin (or any .pth/.bin) here; refuse instead.
        pickles = sorted({f.name for pattern in PICKLE_PATTERNS for f in path.glob(pattern) if f.is_file()})
        if pickles:
            source = "pytorch_model.bin" if "pytorch_model.bin" in pickles else pickles[0]  # timm's name first
            raise PackageError(
                f"{path}: no {WEIGHTS_NAME}; the weights are only in {', '.join(pickles)}, a pickle file, and imgcls "
                "never unpickles package weights (unpickling can run code). Convert them to safetensors where you "
                'trust the file, e.g. python -c "import torch, safetensors.torch as st; '
                f"st.save_file(torch.load('{source}', weights_only=True), '{WEIGHTS_NAME}')\""
            )
        raise PackageError(f"{path}: no {WEIGHTS_NAME}; the package has no weights")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PackageError(f"{config_path}: not valid JSON ({err})") from None
    for key in ("architecture", "num_classes", "pretrained_cfg"):
        if key not in config:
            raise PackageError(f"{config_path}: missing field {key!r}")
    labels = config.get("label_names")
    if isinstance(labels, dict):  # timm allows {index: name}
        labels = [labels[str(i)] if str(i) in labels else labels[i] for i in range(config["num_classes"])]
        config["label_names"] = labels
    if not labels or len(labels) != config["num_classes"]:
        raise PackageError(
            f"{config_path}: field 'label_names' must list {config['num_classes']} class names "
            f"(found {0 if not labels else len(labels)})"
        )
    return config


def load_package(
    path: str | Path, *, device: str | torch.device = "cpu", token: str | None = None, lazy: bool = False
) -> ModelPackage:
    """Load a package through timm's own `local-dir:` loader, exactly as plain timm would.

    Args:
        path: a package folder, `hf://ORG/NAME[@VERSION]` or `git+URL[@VERSION]` (downloaded once, then cached).
        device: where to put the model.
        token: access token for a private repository.
        lazy: build the network on first use of `.model` (its errors surface then) instead of now.
    """
    if isinstance(path, str) and path.startswith(("hf://", "git+")):
        from imgcls.hub import resolve  # lazy: imgcls.hub imports this module

        path = resolve(path, token=token)
    path = Path(path)
    package = ModelPackage(path, read_config(path), device=device)
    if not lazy:
        package.model  # noqa: B018  (build now: a broken package fails here, not at the first prediction)
    return package


def _build_model(path: Path, config: dict[str, Any], device: str | torch.device) -> torch.nn.Module:
    # read_config made sure model.safetensors is there: timm's local-dir loader then reads it and nothing else, even
    # next to a pytorch_model.bin (its preferred-files order; tests/test_package_pickles.py holds it to that).
    import timm

    import imgcls.models  # noqa: F401  (registers lenet5 and alexnet with timm)

    try:
        model = timm.create_model(f"local-dir:{path.resolve()}", pretrained=True)
    except Exception as err:  # timm raises many types; name the package and keep the cause
        raise PackageError(f"{path}: weights do not load into {config['architecture']}: {err}") from err
    if getattr(model, "num_classes", len(config["label_names"])) != len(config["label_names"]):
        # model_args can describe another head size than label_names: a tampered or mixed-up package.
        raise PackageError(f"{path}: the model has {model.num_classes} outputs but {len(config['label_names'])} labels")
    return model.eval().to(device)


# timm's defaults when a pretrained config leaves a field out (timm.data.constants).
_DEFAULT_DATA = {
    "input_size": (3, 224, 224),
    "interpolation": "bicubic",
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "crop_pct": 0.875,
    "crop_mode": "center",
}


def resolve_data_config(pretrained_cfg: dict[str, Any]) -> dict[str, Any]:
    """The eval preprocessing a package asks for: what `timm.data.resolve_data_config(model=...)` gives for the
    model timm builds from it, read from `config.json` alone (no torch, no timm)."""
    out = {}
    for key, default in _DEFAULT_DATA.items():
        value = pretrained_cfg.get(key)
        out[key] = tuple(value) if isinstance(value, list) else (value or default)
    return out
