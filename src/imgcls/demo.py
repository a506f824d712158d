"""A web demo for a model package: drop or paste an image, see the top 5 classes.

```python
from imgcls.demo import launch_demo, write_space

launch_demo("runs/flowers/model")                    # http://127.0.0.1:7860, this machine only
write_space("runs/flowers/model", "spaces/flowers")  # a folder to push as a Hugging Face Space
```

Gradio is imported inside the functions, so `import imgcls.demo` costs nothing until a demo is built.
The demo serves only what it needs: uploads and copies of the example images live in a private temporary
folder, and no other file of this machine can be fetched from it.
"""

from __future__ import annotations

import atexit
import inspect
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import gradio
    from PIL import Image

    from imgcls.predict import Classifier

__all__ = ["build_demo", "card_summary", "default_examples", "launch_demo", "launch_options", "write_space"]

TOP_K = 5
MAX_EXAMPLES = 8
# A public demo must not accept arbitrarily large uploads; a photo of this size is already huge.
MAX_UPLOAD = "25mb"
# The range the demo is written and tested against (6.31); 6.20 made `/file=<url>` SSRF-safe.
GRADIO_REQUIREMENT = "gradio>=6.20,<7"
EXAMPLES_DIR = "examples"
INPUT_ID = "imgcls-input"
# Gradio only ever shrinks a preview (object-fit: scale-down): a 28 px digit would show as a speck.
PAGE_CSS = f"#{INPUT_ID} .image-frame {{ width: 100%; }} #{INPUT_ID} .image-frame img {{ object-fit: contain; }}"


# -- environment --------------------------------------------------------------------------------------------------------
_own_temp_dirs: list[str] = []  # temporary folders this process made for Gradio (removed when the demo stops)


def _remove_own_temp_dirs() -> None:
    while _own_temp_dirs:
        shutil.rmtree(_own_temp_dirs.pop(), ignore_errors=True)


def _stop_on_signals() -> None:
    """Ctrl+C and SIGTERM (`docker stop`, a Space restarting) stop the demo through Gradio's own shutdown.

    A process started with SIGINT ignored or blocked (inherited from whatever launched it) would otherwise never
    stop on Ctrl+C, and SIGTERM's default kills without removing the uploads folder.
    """
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread; the caller owns signals then
    stop = (signal.SIGINT, signal.SIGTERM)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, stop)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def _import_gradio() -> Any:
    """Import gradio with analytics off and its files in a private temporary folder.

    Both are read from the environment (the temp folder partly at import time), so they are set first.
    A `GRADIO_TEMP_DIR` the user already set is respected.
    """
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    if not os.environ.get("GRADIO_TEMP_DIR"):
        # Private (0700) and per process, so no other user or demo sees the uploads; removed at exit.
        temp_dir = tempfile.mkdtemp(prefix="imgcls-demo-")
        _own_temp_dirs.append(temp_dir)
        atexit.register(_remove_own_temp_dirs)
        os.environ["GRADIO_TEMP_DIR"] = temp_dir
    import gradio

    return gradio


def _load_classifier(model: str | Path, backend: str) -> Classifier:
    """`Classifier.load`, passing `backend` only to a `Classifier.load` that has that option."""
    from imgcls.predict import Classifier

    if "backend" in inspect.signature(Classifier.load).parameters:
        return Classifier.load(model, backend=backend)  # type: ignore[call-arg]
    if backend != "auto":
        raise ValueError(f"backend={backend!r}: this version of imgcls has one backend (torch); pass backend='auto'")
    return Classifier.load(model)


# -- what the page says -------------------------------------------------------------------------------------------------
def _strip_front_matter(text: str) -> str:
    lines = text.splitlines()
    if lines and lines[0].strip() == "---":
        for i, line in enumerate(lines[1:], start=1):
            if line.strip() == "---":
                return "\n".join(lines[i + 1 :])
    return text


def card_summary(card: str) -> tuple[str | None, str | None]:
    """The first heading and the first paragraph under it of a model card (markdown with YAML front matter).

    Args:
        card: The text of a model card (`README.md` of a package).

    Returns:
        `(title, paragraph)`; either is None when the card has none.
    """
    title: str | None = None
    paragraph: list[str] = []
    in_code = False
    for line in _strip_front_matter(card).splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            in_code = not in_code
            if paragraph:
                break
            continue
        if in_code:
            continue
        if stripped.startswith("#"):
            if paragraph:
                break
            if title is None:
                title = stripped.lstrip("#").strip() or None
            continue
        if not stripped:
            if paragraph:
                break
            continue
        # Lists and tables are the card's details, not its summary.
        if not paragraph and stripped.startswith(("|", "- ", "* ", "<")):
            continue
        paragraph.append(stripped)
    return title, (" ".join(paragraph) or None)


def _describe_labels(labels: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(f"`{label}`" for label in labels[:limit])
    more = f" and {len(labels) - limit} more" if len(labels) > limit else ""
    return f"Classifies images into {len(labels)} classes: {shown}{more}."


def _page_text(clf: Classifier) -> tuple[str, str]:
    card_path = Path(clf.package.path) / "README.md"
    title = description = None
    if card_path.is_file():
        title, description = card_summary(card_path.read_text(encoding="utf-8", errors="replace"))
    architecture = clf.package.config.get("architecture", "image")
    return title or f"{architecture} image classifier", description or _describe_labels(clf.labels)


# -- examples -----------------------------------------------------------------------------------------------------------
def _is_image(path: Path) -> bool:
    from imgcls.data.images import IMAGE_EXTENSIONS

    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def _example_images(model_dir: Path, limit: int) -> list[tuple[str, Path]]:
    """`(name, path)` of the examples of :func:`default_examples`; the name is the class where known."""
    from imgcls.data.sources import DataError, load_labeled
    from imgcls.package import PackageError, read_config

    own = model_dir / EXAMPLES_DIR
    if own.is_dir():
        images = sorted(p for p in own.iterdir() if _is_image(p))
        if images:
            return [(p.stem, p.resolve()) for p in images[:limit]]
    try:
        config = read_config(model_dir)
    except PackageError:
        return []
    data = config.get("imgcls", {}).get("training", {}).get("data")
    # Only a path that exists: a built-in dataset name would be materialised (written to disk) on demand.
    if not isinstance(data, str) or not Path(data).expanduser().exists():
        return []
    labels = list(config["label_names"])
    try:
        samples = load_labeled(Path(data).expanduser(), labels, split="auto")
    except (DataError, OSError):
        return []
    first: dict[int, Path] = {}
    for sample in samples:  # sorted by label, then path
        if sample.label not in first and _is_image(sample.path):
            first[sample.label] = sample.path
    return [(labels[label], first[label].resolve()) for label in sorted(first)][:limit]


def default_examples(model_dir: str | Path, *, limit: int = MAX_EXAMPLES) -> list[Path]:
    """Example images for a package's demo, found without loading the model.

    The package's own `examples/` folder wins when it has images. Otherwise, when the package's
    `imgcls.training.data` is a folder (or CSV manifest) that exists here, one image per class from its
    test split (else val, else all of it), for the first `limit` classes. Anything else gives no examples:
    a demo without examples is better than one that fails to start.

    Args:
        model_dir: The model package folder.
        limit: At most this many images.

    Returns:
        Absolute paths of image files, in class order.
    """
    return [path for _, path in _example_images(Path(model_dir), limit)]


# -- the demo -----------------------------------------------------------------------------------------------------------
def build_demo(
    clf: Classifier,
    *,
    examples: Sequence[str | Path] | None = None,
    title: str | None = None,
    description: str | None = None,
) -> gradio.Interface:
    """The demo page: an image in (upload or paste), the top 5 classes out as a bar chart.

    Args:
        clf: The classifier to run.
        examples: Images shown under the input, one click to try; None finds them with
            :func:`default_examples`, an empty list shows none.
        title: Page title; default: the model card's first heading.
        description: Text under the title (markdown); default: the model card's first paragraph, else the labels.

    Returns:
        A `gradio.Interface`; call `.launch(**launch_options())` on it, or use :func:`launch_demo`.
    """
    gr = _import_gradio()
    from imgcls.data.images import to_rgb

    card_title, card_description = _page_text(clf)
    if examples is None:
        examples = default_examples(clf.package.path)
    k = min(TOP_K, len(clf.labels))

    def classify(image: Image.Image | None) -> dict[str, float]:
        """The top classes of an image and their probabilities."""
        if image is None:
            raise gr.Error("Upload or paste an image first.")
        try:
            # Gradio hands over the file as decoded (image_mode=None); imgcls's own conversion keeps the
            # demo identical to `Classifier`: EXIF rotation, transparency on white, 16-bit scaling.
            rgb = to_rgb(image)
        except (ValueError, OSError) as err:
            raise gr.Error(f"Cannot read this image: {err}") from None
        top = clf.predict_images([rgb], top_k=k)[0]
        # Multi-label: every label at or above its threshold is one the image has; mark those.
        return {(f"{item['label']} ✓" if item.get("positive") else item["label"]): item["score"] for item in top}

    return gr.Interface(
        fn=classify,
        inputs=gr.Image(
            type="pil",
            image_mode=None,
            sources=["upload", "clipboard"],
            label="Image",
            height=320,
            elem_id=INPUT_ID,
        ),
        outputs=gr.Label(
            num_top_classes=max(k, len(clf.labels)) if clf.task == "multilabel" else k,
            label="Labels (✓ = present)" if clf.task == "multilabel" else f"Top {k}",
        ),
        examples=[[str(Path(p))] for p in examples] or None,
        # Cached examples would run the model at start-up and write into the working directory.
        cache_examples=False,
        title=title if title is not None else card_title,
        description=description if description is not None else card_description,
        # Flagging writes every input to .gradio/flagged in the working directory.
        flagging_mode="never",
        analytics_enabled=False,
        api_name="classify",
    )


def launch_options(*, host: str = "127.0.0.1", port: int | None = None, share: bool = False) -> dict[str, Any]:
    """The keyword arguments :func:`launch_demo` passes to `Interface.launch`, for launching a demo yourself.

    Args:
        host: Interface to listen on; `0.0.0.0` for every interface.
        port: Port; None takes the first free one from 7860.
        share: Also publish a temporary public `*.gradio.live` link.
    """
    import gradio

    options: dict[str, Any] = {
        "server_name": host,
        "server_port": port,
        "share": share,
        # Nothing of this machine's file system: Gradio copies the example images into its temp folder
        # when the page is built and serves them from there, so not even their folder needs allowing.
        "allowed_paths": [],
        "max_file_size": MAX_UPLOAD,
        # Otherwise /monitoring/summary tells anyone the app's traffic.
        "enable_monitoring": False,
        # Gradio 6 takes page styling at launch, not in the Interface.
        "css": PAGE_CSS,
    }
    # Since 6.24 runs (with their uploads) are kept in the browser and can be pushed to a Hub bucket.
    if "run_history" in inspect.signature(gradio.Blocks.launch).parameters:
        options["run_history"] = False
    return options


def launch_demo(
    model: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    backend: str = "auto",
    examples: Sequence[str | Path] | None = None,
) -> None:
    """Serve the demo of a model package until interrupted (Ctrl+C).

    Args:
        model: The model package folder.
        host: Interface to listen on; the default keeps the demo on this machine, `0.0.0.0` opens it to the network.
        port: Port; None takes the first free one from 7860.
        share: Also publish a temporary public `*.gradio.live` link.
        backend: Inference backend for `Classifier.load` (`auto`, `torch`, `onnx`, where supported).
        examples: Example images; None finds them with :func:`default_examples`.
    """
    _import_gradio()
    clf = _load_classifier(model, backend)
    demo = build_demo(clf, examples=examples)
    _stop_on_signals()
    try:
        demo.launch(**launch_options(host=host, port=port, share=share))
    finally:
        # Now, not only at exit: interpreter shutdown first waits for every non-daemon thread, and a killed
        # process never gets there; the uploads must not outlive the demo.
        _remove_own_temp_dirs()


# -- a Hugging Face Space -----------------------------------------------------------------------------------------------
_APP_PY = '''\
"""Web demo of the imgcls model in ./model (written by imgcls.demo.write_space).

Run it with `python app.py`. It listens on GRADIO_SERVER_NAME:GRADIO_SERVER_PORT, which Hugging Face
Spaces set (0.0.0.0:7860); elsewhere it defaults to 127.0.0.1 and the first free port from 7860.
"""

import os
from pathlib import Path

from imgcls.data.images import IMAGE_EXTENSIONS
from imgcls.demo import launch_demo

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    port = os.environ.get("GRADIO_SERVER_PORT")
    launch_demo(
        HERE / "model",
        host=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        port=int(port) if port else None,
        examples=sorted(p for p in (HERE / "examples").glob("*") if p.suffix.lower() in IMAGE_EXTENSIONS),
    )
'''


def _safe_name(text: str) -> str:
    # Unicode letters stay (a Chinese class name is a fine file name); spaces and punctuation do not.
    return re.sub(r"[^\w.-]+", "_", text).strip("._") or "image"


def _gradio_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gradio")
    except PackageNotFoundError:
        return None


def _space_readme(title: str, description: str, labels: Sequence[str], version: str) -> str:
    gradio_version = _gradio_version()
    # JSON strings are valid YAML scalars: safe for any title.
    front = [
        "---",
        f"title: {json.dumps(title, ensure_ascii=False)}",
        "emoji: 🖼️",
        "colorFrom: blue",
        "colorTo: indigo",
        "sdk: gradio",
        *([f"sdk_version: {gradio_version}"] if gradio_version else []),
        f'python_version: "{sys.version_info.major}.{sys.version_info.minor}"',
        "app_file: app.py",
        "pinned: false",
        "tags: [image-classification, imgcls, timm]",
        "---",
    ]
    body = f"""
# {title}

{description}

Drop or paste an image to see its top {min(TOP_K, len(labels))} classes. The model package (weights, labels,
preprocessing and model card) is in [`model/`](model/README.md); the example images are in `examples/`.

## What `app.py` needs

Only the `imgcls` package ({version}) and Gradio: `app.py` imports nothing else, and imgcls brings its own
dependencies (torch, timm, Pillow, ...). `requirements.txt` lists both. If your host cannot install `imgcls`
from a package index, replace that line with a wheel file or a `git+https://...` URL of imgcls.

## Run it

```bash
pip install -r requirements.txt
python app.py                      # http://127.0.0.1:7860
GRADIO_SERVER_NAME=0.0.0.0 python app.py   # open to the network
```

## Publish it as a Hugging Face Space

```bash
hf upload USER/SPACE_NAME . --repo-type space
```
"""
    return "\n".join(front) + "\n" + body


def write_space(model: str | Path, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Write a self-contained demo app folder that runs as a Hugging Face Space or on any Gradio host.

    The folder holds `app.py` (launches the same demo as :func:`launch_demo` on `./model`),
    `requirements.txt` (`imgcls` and `gradio`), `README.md` (Space front matter and how to run it),
    `model/` (a copy of the package) and `examples/` (copies of :func:`default_examples`).

    Args:
        model: The model package folder.
        out_dir: Folder to create.
        overwrite: Replace the files above in an existing folder (e.g. a clone of the Space's repository),
            keeping everything else in it (such as `.git`).

    Returns:
        `out_dir`.

    Raises:
        PackageError: `model` is not a model package.
        FileExistsError: `out_dir` exists, is not empty, and `overwrite` is False.
    """
    from imgcls import __version__
    from imgcls.package import read_config

    model, out_dir = Path(model), Path(out_dir)
    config = read_config(model)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir}: folder exists and is not empty; pass overwrite=True or pick a new folder")
    if (out_dir / "model").resolve() == model.resolve():
        raise ValueError(f"{out_dir}: the Space would overwrite its own source package {model}; pick another folder")
    labels = list(config["label_names"])
    examples = _example_images(model, MAX_EXAMPLES)
    out_dir.mkdir(parents=True, exist_ok=True)

    for name in ("model", EXAMPLES_DIR):
        shutil.rmtree(out_dir / name, ignore_errors=True)
    # Dot entries are leftovers of atomic package writes, never part of the package.
    shutil.copytree(model, out_dir / "model", ignore=shutil.ignore_patterns(".*"))
    (out_dir / EXAMPLES_DIR).mkdir()
    for i, (name, src) in enumerate(examples):
        # Numbered so the page shows them in class order; named so a person sees which class each shows.
        shutil.copyfile(src, out_dir / EXAMPLES_DIR / f"{i:02d}-{_safe_name(name)}{src.suffix.lower()}")

    card = model / "README.md"
    title, description = card_summary(card.read_text(encoding="utf-8")) if card.is_file() else (None, None)
    title = title or f"{config.get('architecture', 'image')} image classifier"
    description = description or _describe_labels(labels)
    (out_dir / "app.py").write_text(_APP_PY, encoding="utf-8")
    (out_dir / "requirements.txt").write_text(
        "# app.py imports only imgcls (which brings torch, timm, Pillow, ...) and gradio.\n"
        f"imgcls=={__version__}\n{GRADIO_REQUIREMENT}\n",
        encoding="utf-8",
    )
    (out_dir / "README.md").write_text(_space_readme(title, description, labels, __version__), encoding="utf-8")
    return out_dir
