"""Zero-shot CLIP on a tiny random open_clip model saved as a local checkpoint: loading, tokenising (Latin and
Chinese), prompt ensembling, scores against open_clip's own API, packaging, evaluation, export and push."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from clipfactory import write_tiny_clip
from imgcls import Classifier
from imgcls.models import WeightsError
from imgcls.package import PackageError
from imgcls.zeroshot import DEFAULT_TEMPLATES, Label, parse_labels

LABELS = ["cat", "dog", "向日葵", "zebra: a horse with black and white stripes"]


@pytest.fixture
def tiny_clip(tmp_path: Path) -> Path:
    return write_tiny_clip(tmp_path / "tiny-clip")


def _photos(n: int, seed: int = 0) -> list[Image.Image]:
    # Not square and not the model's size: resizing and cropping are part of what must match open_clip.
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (40 + 7 * i, 53, 3), dtype=np.uint8)) for i in range(n)]


def _open_clip_scores(folder: Path, images: list[Image.Image], prompts: list[list[str]]) -> torch.Tensor:
    """CLIP's zero-shot recipe written directly against open_clip's API, as its documentation shows it."""
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    model.eval()
    with torch.no_grad():
        image_features = model.encode_image(torch.stack([preprocess(im) for im in images]), normalize=True)
        classes = []
        for texts in prompts:
            emb = model.encode_text(tokenizer(texts), normalize=True).mean(dim=0)
            classes.append(emb / emb.norm())
        return (model.logit_scale.exp() * image_features @ torch.stack(classes).T).softmax(dim=-1)


def test_scores_equal_open_clip_with_the_template_ensemble(tiny_clip: Path) -> None:
    clf = Classifier.zero_shot(tiny_clip, LABELS)
    images = _photos(4)
    prompts = [
        [t.format(name) for t in DEFAULT_TEMPLATES]
        for name in ("cat", "dog", "向日葵", "zebra, a horse with black and white stripes")
    ]
    expected = _open_clip_scores(tiny_clip, images, prompts)
    got = clf.probabilities(images)
    assert got.shape == (4, 4)
    assert torch.allclose(got, expected, atol=1e-5), (got, expected)
    assert clf.labels == ["cat", "dog", "向日葵", "zebra"]
    top = clf(images[0], top_k=2)
    assert [t["label"] for t in top] == [clf.labels[i] for i in expected[0].argsort(descending=True)[:2].tolist()]


def test_custom_templates_change_the_prompts(tiny_clip: Path) -> None:
    images = _photos(3, seed=1)
    templates = ["a satellite image of {}", "{}"]
    clf = Classifier.zero_shot(tiny_clip, ["cat", "向日葵"], templates=templates)
    expected = _open_clip_scores(tiny_clip, images, [[t.format(n) for t in templates] for n in ("cat", "向日葵")])
    assert torch.allclose(clf.probabilities(images), expected, atol=1e-5)
    default = Classifier.zero_shot(tiny_clip, ["cat", "向日葵"]).probabilities(images)
    assert not torch.allclose(default, expected, atol=1e-5)


def test_chinese_labels_go_through_the_same_tokenizer(tiny_clip: Path) -> None:
    tokenizer = open_clip.get_tokenizer(f"local-dir:{tiny_clip}")
    tokens = tokenizer(["向日葵", "猫"])
    # Byte-level BPE: the Chinese text becomes real vocabulary pieces between start and end tokens, not unknowns.
    sot, eot = tokenizer.sot_token_id, tokenizer.eot_token_id
    for row in tokens.tolist():
        pieces = row[1 : row.index(eot)]
        assert row[0] == sot and len(pieces) >= 1 and all(0 < p < sot for p in pieces)
    assert tokens[0].tolist() != tokens[1].tolist()
    clf = Classifier.zero_shot(tiny_clip, "向日葵,猫,狗")
    head = clf.model.head.weight
    assert F.cosine_similarity(head[0], head[1], dim=0) < 0.9999  # the labels are told apart


def test_labels_from_text_descriptions_files_and_folders(tmp_path: Path, image_folder: Path) -> None:
    assert parse_labels("cat, dog ,zebra：斑马") == [Label("cat"), Label("dog"), Label("zebra", "斑马")]
    listing = tmp_path / "labels.txt"
    listing.write_text("# animals\ncat: a small pet\n\ndog\n", encoding="utf-8")
    assert parse_labels(listing) == [Label("cat", "a small pet"), Label("dog")]
    assert [label.name for label in parse_labels(image_folder)] == ["bird (small)", "cat", "向日葵"]
    with pytest.raises(PackageError, match="'cat' appears twice"):
        parse_labels("cat,dog,cat")
    with pytest.raises(PackageError, match="at least two labels"):
        parse_labels("cat")


def test_clear_errors_for_models_and_templates(tiny_clip: Path, tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="exactly one"):
        Classifier.zero_shot(tiny_clip, "cat,dog", templates=["a photo"])
    with pytest.raises(WeightsError, match="needs pretrained weights"):
        Classifier.zero_shot("ViT-B-32", "cat,dog")
    with pytest.raises(WeightsError, match="not a CLIP model"):
        Classifier.zero_shot("no-such-clip", "cat,dog")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsError, match="open_clip_config.json"):
        Classifier.zero_shot(empty, "cat,dog")
    # An open_clip name with a local checkpoint file: the weights must fit, or the error names the model.
    with pytest.raises(WeightsError, match="could not load the CLIP model"):
        Classifier.zero_shot("ViT-B-32", "cat,dog", pretrained=str(tiny_clip / "open_clip_model.safetensors"))


def test_package_is_a_plain_model_package(tiny_clip: Path, tmp_path: Path) -> None:
    import timm

    out = tmp_path / "zs"
    clf = Classifier.zero_shot(tiny_clip, LABELS, out=out)
    images = _photos(3, seed=2)
    loaded = Classifier.load(out, backend="torch")
    assert torch.allclose(loaded.probabilities(images), clf.probabilities(images), atol=1e-6)
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["architecture"] == "imgcls_clip" and config["label_names"][2] == "向日葵"
    zs = config["imgcls"]["zero_shot"]
    assert zs["templates"] == list(DEFAULT_TEMPLATES) and zs["descriptions"] == {
        "zebra": "a horse with black and white stripes"
    }
    assert "Zero-shot" in (out / "README.md").read_text(encoding="utf-8")
    # Plain timm rebuilds it from config.json (imgcls registers the architecture, as for lenet5).
    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    batch = torch.from_numpy(loaded.preprocess(images))
    with torch.no_grad():
        assert torch.allclose(model(batch), loaded.forward(batch), atol=1e-5)
    # No text tower in the package: only the image tower and the head.
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert all(k.startswith(("visual.", "head.")) for k in keys) and "head.weight" in keys


def test_evaluate_and_compare_with_a_fine_tuned_model(
    tiny_clip: Path, tmp_path: Path, image_folder: Path, tiny_train_kwargs: dict
) -> None:
    from imgcls import train
    from imgcls.compare import compare, load_evaluation
    from imgcls.evaluation import evaluate

    package = tmp_path / "zs"
    Classifier.zero_shot(tiny_clip, image_folder, out=package)
    metrics = evaluate(package, image_folder, out=tmp_path / "zs-eval", progress=False, num_workers=0)
    assert metrics["num_samples"] == 12 and 0.0 <= metrics["top1"] <= 1.0
    assert (tmp_path / "zs-eval" / "report.html").is_file() and (tmp_path / "zs-eval" / "predictions.csv").is_file()
    run = train(data=str(image_folder), **tiny_train_kwargs)
    result = compare([load_evaluation(run.run_dir), load_evaluation(tmp_path / "zs-eval")])
    top1 = dict(result.summary)["top-1"]
    assert top1 == [run.metrics["top1"], metrics["top1"]]
    assert {label for label, _ in result.per_class} == {"bird (small)", "cat", "向日葵"}


def test_zero_shot_package_exports_to_onnx_and_pushes(tiny_clip: Path, tmp_path: Path) -> None:
    from imgcls.export import export_onnx
    from imgcls.hub import push

    package = tmp_path / "zs"
    Classifier.zero_shot(tiny_clip, LABELS, out=package)
    result = export_onnx(package)
    assert result.check["top1_agreement"] == 1.0 and result.check["max_abs_logit_diff"] < 1e-3
    images = _photos(3, seed=3)
    by_onnx = Classifier.load(package, backend="onnx").probabilities(images)
    assert torch.allclose(by_onnx, Classifier.load(package, backend="torch").probabilities(images), atol=1e-4)

    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    ref = push(package, f"git+{remote}", revision="v1")
    pulled = Classifier.load(ref, backend="torch")
    assert pulled.labels == ["cat", "dog", "向日葵", "zebra"]
    assert torch.allclose(pulled.probabilities(images), by_onnx, atol=1e-4)


def test_cli_zeroshot_predicts_and_saves(tiny_clip: Path, tmp_path: Path, image_folder: Path) -> None:
    images = sorted((image_folder / "test").rglob("*.png"))[:3]
    out = tmp_path / "zs"
    cmd = [sys.executable, "-m", "imgcls.cli", "zeroshot", "--model", str(tiny_clip), "--labels", "cat,dog,向日葵"]
    done = subprocess.run(
        [*cmd, "--out", str(out), "--format", "jsonl", "--top-k", "3", *map(str, images)],
        capture_output=True,
        text=True,
        encoding="utf-8",
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["path"] for r in rows] == [str(p) for p in images]
    expected = Classifier.load(out, backend="torch")(images, top_k=3)
    for row, top in zip(rows, expected, strict=True):
        assert [t["label"] for t in row["predictions"]] == [t["label"] for t in top]
        assert sum(t["score"] for t in row["predictions"]) == pytest.approx(1.0, abs=1e-4)

    bad = subprocess.run([*cmd[:5], str(tmp_path), "--labels", "a,b", str(images[0])], capture_output=True, text=True)
    assert bad.returncode == 2 and "imgcls zeroshot: error:" in bad.stderr and "open_clip_config.json" in bad.stderr


def test_zero_shot_package_is_served_over_http(tiny_clip: Path, tmp_path: Path) -> None:
    pytest.importorskip("uvicorn")
    httpx = pytest.importorskip("httpx")
    sys.path.insert(0, str(Path(__file__).parents[1] / "serve"))
    from serve_fixtures import image_bytes, running_server

    from imgcls.serve import create_app, load_classifier

    package = tmp_path / "zs"
    Classifier.zero_shot(tiny_clip, LABELS, out=package)
    clf = load_classifier(package, backend="torch")
    if getattr(clf.backend, "bf16", False):
        clf.backend.bf16 = False  # the comparison below is at fp32 precision
    png = image_bytes((200, 120, 40), size=(45, 37))
    with running_server(create_app(clf)) as url, httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/v1/labels").json()["labels"] == ["cat", "dog", "向日葵", "zebra"]
        response = client.post("/v1/classify", files={"file": ("x.png", png, "image/png")})
    assert response.status_code == 200, response.text
    served = response.json()["predictions"][0]["top"]
    import io

    offline = clf(Image.open(io.BytesIO(png)).convert("RGB"))
    assert [t["label"] for t in served] == [t["label"] for t in offline]
    assert [t["score"] for t in served] == pytest.approx([t["score"] for t in offline], abs=1e-5)
