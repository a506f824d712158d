"""The Hugging Face Hub path up to the network: loading from huggingface_hub's own cache offline, the exact upload
that a push sends, and the errors a user sees."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx2
import pytest
from hub_fixtures import make_package, same_weights, weights, write_hub_cache
from huggingface_hub import constants
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

from imgcls import hub
from imgcls.hub import HubError, HubRef, execute_hf_upload, plan_hf_upload, pull, resolve
from imgcls.predict import Classifier

LABELS = ["rose", "tulip", "daisy"]


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """huggingface_hub's default cache moved into tmp, with downloads off."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("IMGCLS_HOME", str(tmp_path / "home"))
    return cache


@pytest.fixture
def package(tmp_path: Path) -> Path:
    return make_package(tmp_path / "model", LABELS, seed=3)


def test_cached_version_loads_offline(hub_cache: Path, package: Path, tmp_path: Path) -> None:
    snapshot = write_hub_cache(hub_cache, "acme/flowers", "v1.0.0", package)
    other = make_package(tmp_path / "other", ["a", "b"], seed=4)
    write_hub_cache(hub_cache, "acme/flowers", "v2.0.0", other)

    got = resolve("hf://acme/flowers@v1.0.0")
    assert got == snapshot
    assert same_weights(weights(got), weights(package))
    assert Classifier.load(got).labels == LABELS
    assert Classifier.load(resolve("hf://acme/flowers@v2.0.0")).labels == ["a", "b"]
    # By commit id too, and from an explicit cache folder.
    assert resolve(f"hf://acme/flowers@{snapshot.name}") == snapshot
    assert resolve("hf://acme/flowers@v1.0.0", cache_dir=hub_cache) == snapshot
    # pull writes real files, not the cache's symlinks.
    out = pull("hf://acme/flowers@v1.0.0", tmp_path / "pulled")
    assert not (out / "model.safetensors").is_symlink() and Classifier.load(out).labels == LABELS


def test_uncached_version_offline_names_repository_and_version(hub_cache: Path, package: Path) -> None:
    write_hub_cache(hub_cache, "acme/flowers", "v1.0.0", package)
    with pytest.raises(HubError, match=r"acme/flowers.*'v9'.*not in the local cache.*HF_HUB_OFFLINE"):
        resolve("hf://acme/flowers@v9")
    with pytest.raises(HubError, match=r"acme/nothing.*'main'"):
        resolve("hf://acme/nothing")


def test_half_downloaded_snapshot_is_refused(hub_cache: Path, package: Path) -> None:
    snapshot = write_hub_cache(hub_cache, "acme/flowers", "v1.0.0", package)
    (snapshot / "model.safetensors").unlink()  # the tree listing says it belongs there
    with pytest.raises(HubError, match=r"acme/flowers@v1\.0\.0.*incomplete"):
        resolve("hf://acme/flowers@v1.0.0")


def test_truncated_cached_weights_are_refused(hub_cache: Path, package: Path) -> None:
    snapshot = write_hub_cache(hub_cache, "acme/flowers", "v1.0.0", package)
    blob = (snapshot / "model.safetensors").resolve()
    blob.write_bytes(blob.read_bytes()[:-10])
    with pytest.raises(hub.PackageError, match=r"hf://acme/flowers@v1\.0\.0.*truncated"):
        resolve("hf://acme/flowers@v1.0.0")


def _http_error(cls: type[HfHubHTTPError], status: int, message: str) -> HfHubHTTPError:
    response = httpx2.Response(status, request=httpx2.Request("GET", "https://huggingface.co/api/models/acme/x"))
    return cls(message, response=response)


@pytest.mark.parametrize(
    ("error", "token", "expected"),
    [
        (_http_error(RevisionNotFoundError, 404, "no rev"), None, r"hf://acme/x@v3: no version 'v3' in acme/x"),
        (_http_error(RepositoryNotFoundError, 404, "nope"), None, r"acme/x not found.*no token was found.*HF_TOKEN"),
        (_http_error(RepositoryNotFoundError, 404, "nope"), "hf_secret1", r"not found.*token given has no access"),
        (_http_error(GatedRepoError, 403, "gated"), "hf_secret1", r"gated"),
        (_http_error(HfHubHTTPError, 401, "bad token hf_secret1"), "hf_secret1", r"HTTP 401.*token was refused"),
        (_http_error(HfHubHTTPError, 403, "forbidden"), "hf_secret1", r"HTTP 403.*permission"),
    ],
)
def test_hub_errors_name_repository_and_version_and_hide_the_token(
    error: Exception, token: str | None, expected: str
) -> None:
    err = hub._hf_error(error, HubRef("hf", "acme/x", "v3"), token)
    assert isinstance(err, HubError)
    assert "hf_secret1" not in str(err)
    import re

    assert re.search(expected, str(err)), str(err)


def test_upload_plan_is_exactly_what_is_sent(package: Path) -> None:
    (package / "model.onnx").write_bytes(b"onnx bytes")
    plan = plan_hf_upload(package, "acme/flowers", "v1.0.0", private=True)
    assert plan.repo_id == "acme/flowers" and plan.private and plan.revision == "v1.0.0" and plan.branch == "main"
    assert plan.ref == "hf://acme/flowers@v1.0.0"
    files = {f.path_in_repo: f for f in plan.files}
    assert sorted(files) == ["README.md", "config.json", "model.onnx", "model.safetensors"]
    for name in ("config.json", "model.onnx", "model.safetensors"):
        data = (package / name).read_bytes()
        assert (files[name].size, files[name].sha256, files[name].local_path) == (
            len(data),
            hashlib.sha256(data).hexdigest(),
            package / name,
        )
    card = files["README.md"].content
    assert card is not None and files["README.md"].sha256 == hashlib.sha256(card).hexdigest()
    assert b'Classifier.load("hf://acme/flowers@v1.0.0")' in card
    assert plan.commit_message == (
        "lenet5-imgcls v1.0.0: lenet5, 3 classes; test top1=0.9000 top5=1.0000 macro_f1=0.8800 (10 images)"
    )
    assert "labels: rose, tulip, daisy" in plan.commit_description
    assert "epochs=3" in plan.commit_description

    # The commit adds every file and deletes only package files this version lacks.
    ops = plan.operations(["README.md", ".gitattributes", "LICENSE", "model.int8.onnx", "config.json", "img/a.png"])
    added = {op.path_in_repo: op for op in ops if type(op).__name__ == "CommitOperationAdd"}
    deleted = [op.path_in_repo for op in ops if type(op).__name__ == "CommitOperationDelete"]
    assert sorted(added) == sorted(files) and deleted == ["model.int8.onnx"]
    assert added["README.md"].upload_info.sha256.hex() == files["README.md"].sha256
    assert added["model.safetensors"].upload_info.sha256.hex() == files["model.safetensors"].sha256


def test_edited_model_card_is_published_as_written(package: Path) -> None:
    (package / "README.md").write_text("# my own card\n")
    files = {f.path_in_repo: f for f in plan_hf_upload(package, "acme/flowers", "v1").files}
    assert files["README.md"].local_path == package / "README.md" and files["README.md"].content is None


def test_invalid_package_is_refused_before_planning(package: Path) -> None:
    (package / "model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")  # valid, no tensors
    with pytest.raises(hub.PackageError, match="weights do not load"):
        plan_hf_upload(package, "acme/flowers", "v1")


class RecordingApi:
    """Records the HfApi calls a push makes (what would go over the network), answering like an empty repo."""

    def __init__(self, *, tags: tuple[str, ...] = (), public: bool = False, files: tuple[str, ...] = ()) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.tags, self.public, self.files = tags, public, list(files)

    def _record(self, name: str, **kwargs: Any) -> None:
        self.calls.append((name, kwargs))

    def create_repo(self, repo_id: str, **kwargs: Any) -> None:
        self._record("create_repo", repo_id=repo_id, **kwargs)

    def model_info(self, repo_id: str, **kwargs: Any) -> Any:
        self._record("model_info", repo_id=repo_id, **kwargs)
        return type("Info", (), {"private": not self.public})()

    def list_repo_refs(self, repo_id: str, **kwargs: Any) -> Any:
        self._record("list_repo_refs", repo_id=repo_id, **kwargs)
        return type("Refs", (), {"tags": [type("Ref", (), {"name": t})() for t in self.tags]})()

    def list_repo_files(self, repo_id: str, **kwargs: Any) -> list[str]:
        self._record("list_repo_files", repo_id=repo_id, **kwargs)
        return self.files

    def create_commit(self, repo_id: str, operations: list[Any], **kwargs: Any) -> Any:
        self._record("create_commit", repo_id=repo_id, operations=operations, **kwargs)
        return type("CommitInfo", (), {"oid": "c" * 40})()

    def create_tag(self, repo_id: str, **kwargs: Any) -> None:
        self._record("create_tag", repo_id=repo_id, **kwargs)


def test_execute_creates_private_repo_commits_then_tags(package: Path) -> None:
    plan = plan_hf_upload(package, "acme/flowers", "v1.0.0", private=True)
    api = RecordingApi(files=(".gitattributes", "model.onnx"))
    assert execute_hf_upload(plan, token="hf_x", api=api) == "c" * 40  # type: ignore[arg-type]
    names = [name for name, _ in api.calls]
    assert names == ["create_repo", "model_info", "list_repo_refs", "list_repo_files", "create_commit", "create_tag"]
    calls = dict(api.calls)
    assert calls["create_repo"]["private"] is True and calls["create_repo"]["exist_ok"] is True
    commit = calls["create_commit"]
    assert commit["commit_message"] == plan.commit_message and commit["revision"] == "main"
    assert sorted(op.path_in_repo for op in commit["operations"]) == [
        "README.md",
        "config.json",
        "model.onnx",  # deleted: the old version's export
        "model.safetensors",
    ]
    assert calls["create_tag"] == {
        "repo_id": "acme/flowers",
        "tag": "v1.0.0",
        "tag_message": plan.commit_message,
        "revision": "c" * 40,
        "token": "hf_x",
    }


def test_execute_refuses_existing_version_and_public_repo_before_committing(package: Path) -> None:
    plan = plan_hf_upload(package, "acme/flowers", "v1.0.0", private=True)
    api = RecordingApi(tags=("v1.0.0",))
    with pytest.raises(HubError, match="v1.0.0 already exists"):
        execute_hf_upload(plan, api=api)  # type: ignore[arg-type]
    api = RecordingApi(public=True)
    with pytest.raises(HubError, match="exists and is public"):
        execute_hf_upload(plan, api=api)  # type: ignore[arg-type]
    assert "create_commit" not in [name for name, _ in api.calls]


def test_push_offline_fails_cleanly(hub_cache: Path, package: Path) -> None:
    with pytest.raises(HubError, match=r"hf://acme/flowers@v1: .*Offline"):
        hub.push(package, "hf://acme/flowers", revision="v1", token="hf_secret_offline")
