"""References parse the way users write them; the model card is front matter the Hub understands."""

from __future__ import annotations

from pathlib import Path

import pytest
from hub_fixtures import make_package
from huggingface_hub import ModelCard

from imgcls.card import model_card
from imgcls.hub import HubError, HubRef, commit_message, is_remote, parse_ref
from imgcls.package import read_config


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("hf://acme/flowers", HubRef("hf", "acme/flowers")),
        ("hf://acme/flowers@v1.0.0", HubRef("hf", "acme/flowers", "v1.0.0")),
        ("hf://acme/flowers@refs/pr/1", HubRef("hf", "acme/flowers", "refs/pr/1")),
        ("git+file:///srv/m.git@v2", HubRef("git", "file:///srv/m.git", "v2")),
        ("git+file:///srv/m.git", HubRef("git", "file:///srv/m.git")),
        ("git+/srv/m.git@v2", HubRef("git", "/srv/m.git", "v2")),
        ("git+https://gitlab.example.com/acme/m.git@v1", HubRef("git", "https://gitlab.example.com/acme/m.git", "v1")),
        ("git+https://bob@gitlab.example.com/acme/m.git", HubRef("git", "https://bob@gitlab.example.com/acme/m.git")),
        ("git+https://bob@host:8443/acme/m@v1", HubRef("git", "https://bob@host:8443/acme/m", "v1")),
        ("git+ssh://git@host:22/acme/m.git@release/2", HubRef("git", "ssh://git@host:22/acme/m.git", "release/2")),
        ("git+git@host:acme/m.git", HubRef("git", "git@host:acme/m.git")),
        ("git+git@host:acme/m.git@v3", HubRef("git", "git@host:acme/m.git", "v3")),
        ("runs/x/model", HubRef("local", "runs/x/model")),
    ],
)
def test_parse_ref(ref: str, expected: HubRef) -> None:
    assert parse_ref(ref) == expected
    assert str(parse_ref(ref)) == ref


def test_parse_ref_takes_the_password_out_of_the_url() -> None:
    ref = parse_ref("git+https://oauth2:s3cret@www.modelscope.cn/acme/m.git@v1")
    assert ref.location == "https://oauth2@www.modelscope.cn/acme/m.git" and ref.revision == "v1"
    assert ref.password == "s3cret" and "s3cret" not in repr(ref) + str(ref)
    assert ref.host == "www.modelscope.cn"


def test_parse_ref_local_folder_with_at_sign(tmp_path: Path) -> None:
    folder = tmp_path / "me@work" / "m.git"
    folder.mkdir(parents=True)
    assert parse_ref(f"git+{folder}") == HubRef("git", str(folder))


@pytest.mark.parametrize("bad", ["hf://", "hf://a/b/c", "hf://acme/flowers@", "git+", "git+host-only", "git+/srv/m@"])
def test_malformed_refs_say_the_expected_form(bad: str) -> None:
    with pytest.raises(HubError, match="expected"):
        parse_ref(bad)


def test_is_remote() -> None:
    assert is_remote("hf://a/b") and is_remote("git+/srv/m.git")
    assert not is_remote("runs/x/model") and not is_remote(Path("hf:/a"))


def test_card_front_matter_parses_with_huggingface_hub(tmp_path: Path) -> None:
    package = make_package(tmp_path / "model", ["cat", "dog", "bird"], seed=1, license="apache-2.0")
    card = ModelCard.load(package / "README.md")
    data = card.data
    assert data.library_name == "timm"
    assert data.pipeline_tag == "image-classification"
    assert data.license == "apache-2.0"
    assert {"image-classification", "timm", "imgcls", "lenet5"} <= set(data.tags)
    assert data.model_name == "lenet5-imgcls"
    results = {r.metric_type: r for r in data.eval_results}
    assert results["accuracy"].metric_value == 0.9
    assert results["top_5_accuracy"].metric_value == 1.0
    assert results["f1"].metric_value == 0.88 and results["f1"].metric_args == {"average": "macro"}
    assert {r.task_type for r in data.eval_results} == {"image-classification"}
    assert {r.dataset_split for r in data.eval_results} == {"test"}
    assert {r.dataset_name for r in data.eval_results} == {"shapes"}  # not the user's home folder

    text = card.text
    assert "`cat`, `dog`, `bird`" in text
    assert "| top1 | 0.9000 |" in text and "| macro_f1 | 0.8800 |" in text
    assert "random initialisation" in text and "training images: 36" in text and "epochs: 3, best epoch: 2" in text
    assert 'Classifier.load("PATH_TO_THIS_FOLDER")("image.jpg")' in text
    assert "## Limitations" in text and "only these 3 classes" in text and "10 images" in text
    assert "/home/someone" not in text


def test_card_defaults_and_published_reference(tmp_path: Path) -> None:
    package = make_package(tmp_path / "model", ["a", "b"], seed=1)
    config = read_config(package)
    config["imgcls"].pop("evaluation")
    card = ModelCard(model_card(config, ref="hf://acme/flowers@v1.0.0"))
    assert card.data.license == "other" and not card.data.eval_results
    assert 'Classifier.load("hf://acme/flowers@v1.0.0")("image.jpg")' in card.text
    assert "token=" in card.text and "not evaluated" in card.text
    subject, _ = commit_message(config, "v1.0.0")
    assert subject == "lenet5-imgcls v1.0.0: lenet5, 2 classes; not evaluated"
