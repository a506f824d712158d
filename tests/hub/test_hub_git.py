"""Publishing to and loading from real git remotes (bare repositories on disk): versions, cache, refusals."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from hub_fixtures import git, make_package, remote_state, same_weights, weights

from imgcls import hub
from imgcls.hub import HubError, parse_ref, pull, push, resolve
from imgcls.package import PackageError
from imgcls.predict import Classifier

V1_LABELS = ["cat", "dog", "bird"]
V2_LABELS = ["apple", "pear", "plum", "fig"]


@pytest.fixture(autouse=True)
def imgcls_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("IMGCLS_HOME", str(home))
    return home


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    path = tmp_path / "models" / "shapes.git"
    path.parent.mkdir()
    git("init", "-q", "--bare", path)
    return path


@pytest.fixture
def packages(tmp_path: Path) -> tuple[Path, Path]:
    v1 = make_package(tmp_path / "v1" / "model", V1_LABELS, seed=1)
    # "Retrained": other weights, other labels, other numbers.
    v2 = make_package(
        tmp_path / "v2" / "model",
        V2_LABELS,
        seed=2,
        evaluation={"split": "test", "images": 40, "top1": 0.95, "top5": 1.0, "macro_f1": 0.94},
    )
    return v1, v2


def _commit_to(remote: Path, tmp: Path, files: dict[str, bytes | str], tag: str) -> None:
    """Commit files straight into the remote behind imgcls's back (a tampering or careless user)."""
    work = tmp / f"tamper-{tag}"
    git("clone", "-q", remote, work)
    for name, content in files.items():
        data = content.encode() if isinstance(content, str) else content
        (work / name).write_bytes(data)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", f"edit for {tag}", cwd=work)
    git("tag", tag, cwd=work)
    # A pointer without its object is the point of some tests; git-lfs, when installed, would refuse it.
    git("-c", "lfs.allowincompletepush=true", "push", "-q", "origin", "HEAD", tag, cwd=work)


def test_push_two_versions_and_load_each(remote: Path, packages: tuple[Path, Path], tmp_path: Path) -> None:
    v1, v2 = packages
    url = f"file://{remote}"
    assert push(v1, f"git+{url}", revision="v1") == f"git+{url}@v1"
    assert push(v2, f"git+{url}@v2") == f"git+{url}@v2"

    got1 = resolve(f"git+{url}@v1")
    got2 = resolve(f"git+{url}@v2")
    got2_path = resolve(f"git+{remote}@v2")  # a plain path names the same remote
    assert same_weights(weights(got1), weights(v1)) and not same_weights(weights(got1), weights(v2))
    assert same_weights(weights(got2), weights(v2)) and same_weights(weights(got2_path), weights(v2))
    assert Classifier.load(got1).labels == V1_LABELS
    assert Classifier.load(got2).labels == V2_LABELS
    # The default branch is the newest version.
    assert same_weights(weights(resolve(f"git+{url}")), weights(v2))

    # The commit and the annotated tag carry the metrics.
    log = git("log", "--format=%s%n%b", "v2", cwd=remote)
    assert "v2" in log and "top1=0.9500" in log and "macro_f1=0.9400" in log and "(40 images)" in log
    assert "top1=0.9000" in git("tag", "-n9", "-l", "v1", cwd=remote)
    assert git("cat-file", "-t", "v1", cwd=remote) == "tag"

    # pull writes the version into a folder that loads like the original.
    out = pull(f"git+{url}@v1", tmp_path / "pulled")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert Classifier.load(out).labels == V1_LABELS
    assert 'Classifier.load("git+file://' in (out / "README.md").read_text()


def test_cached_versions_load_without_the_remote(
    remote: Path, packages: tuple[Path, Path], imgcls_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    v1, v2 = packages
    url = f"git+file://{remote}"
    push(v1, url, revision="v1")
    push(v2, url, revision="v2")
    first = resolve(f"{url}@v1")
    branch = resolve(url)
    assert first.is_relative_to(imgcls_home / "hub" / "git")

    remote.rename(remote.with_name("gone.git"))  # unreachable from now on
    assert resolve(f"{url}@v1") == first  # a tag: straight from the cache, no network
    sha = git("rev-parse", "v1^{commit}", cwd=remote.with_name("gone.git"))
    assert resolve(f"{url}@{sha}") == first  # a full commit id as well
    with caplog.at_level(logging.WARNING, logger="imgcls.hub"):
        assert resolve(url) == branch  # a branch falls back to what was seen last, with a warning
    assert "cannot be reached" in caplog.text
    with pytest.raises(HubError, match=r"shapes\.git@v2.*git ls-remote failed"):
        resolve(f"{url}@v2")  # never fetched, remote gone


def test_missing_version_names_repository_and_version(remote: Path, packages: tuple[Path, Path]) -> None:
    push(packages[0], f"git+{remote}", revision="v1")
    with pytest.raises(HubError) as err:
        resolve(f"git+{remote}@v9")
    text = str(err.value)
    assert str(remote) in text and "'v9'" in text and "tags: v1" in text


def test_tampered_or_half_written_versions_are_refused(
    remote: Path, packages: tuple[Path, Path], tmp_path: Path, imgcls_home: Path
) -> None:
    v1, _ = packages
    push(v1, f"git+{remote}", revision="v1")
    config = json.loads((v1 / "config.json").read_text())
    config["label_names"] = ["cat", "dog"]  # 3 outputs, 2 labels
    _commit_to(remote, tmp_path, {"config.json": json.dumps(config)}, "v3")
    data = (v1 / "model.safetensors").read_bytes()
    _commit_to(
        remote, tmp_path, {"config.json": (v1 / "config.json").read_text(), "model.safetensors": data[:-100]}, "v4"
    )
    config["label_names"], config["num_classes"] = ["a", "b"], 2  # labels fit num_classes, not the model's head
    _commit_to(remote, tmp_path, {"config.json": json.dumps(config), "model.safetensors": data}, "v5")
    config["model_args"]["num_classes"] = 2  # a 2-class model: the 3-class weights do not load into it
    _commit_to(remote, tmp_path, {"config.json": json.dumps(config)}, "v6")

    with pytest.raises(PackageError, match=r"@v3.*label_names"):
        resolve(f"git+{remote}@v3")
    with pytest.raises(PackageError, match=r"@v4.*truncated"):
        resolve(f"git+{remote}@v4")
    with pytest.raises(PackageError, match=r"@v5.*3 outputs but 2 labels"):
        resolve(f"git+{remote}@v5")
    with pytest.raises(PackageError, match=r"@v6.*weights do not load"):
        resolve(f"git+{remote}@v6")
    # Nothing refused was cached.
    cache = hub.git_cache_dir(parse_ref(f"git+{remote}"))
    assert not (cache / "refs" / "tags").exists() or sorted(p.name for p in (cache / "refs" / "tags").iterdir()) == []
    assert resolve(f"git+{remote}@v1").is_dir()


@pytest.mark.parametrize("damage", ["labels", "weights", "config"])
def test_invalid_package_is_refused_before_anything_is_pushed(
    remote: Path, packages: tuple[Path, Path], damage: str
) -> None:
    v1, v2 = packages
    push(v1, f"git+{remote}", revision="v1")
    before = remote_state(remote)
    if damage == "labels":
        config = json.loads((v2 / "config.json").read_text())
        del config["label_names"]
        (v2 / "config.json").write_text(json.dumps(config))
    elif damage == "weights":
        data = (v2 / "model.safetensors").read_bytes()
        (v2 / "model.safetensors").write_bytes(data[: len(data) // 2])
    else:
        (v2 / "config.json").unlink()
    with pytest.raises(PackageError):
        push(v2, f"git+{remote}", revision="v2")
    assert remote_state(remote) == before


def test_existing_version_is_never_moved(remote: Path, packages: tuple[Path, Path]) -> None:
    v1, v2 = packages
    push(v1, f"git+{remote}", revision="v1")
    before = remote_state(remote)
    with pytest.raises(HubError, match="v1 already exists"):
        push(v2, f"git+{remote}", revision="v1")
    assert remote_state(remote) == before


def test_new_version_replaces_package_files_and_keeps_the_rest(
    remote: Path, packages: tuple[Path, Path], tmp_path: Path
) -> None:
    v1, v2 = packages
    (v1 / "model.onnx").write_bytes(b"exported from v1")  # stale once v2 lands
    push(v1, f"git+{remote}", revision="v1")
    _commit_to(remote, tmp_path, {"LICENSE": "MIT\n"}, "license")
    ref = push(v2, f"git+{remote}")  # no version: the branch moves, the commit id names it
    assert ref.startswith(f"git+{remote}@") and len(ref.rsplit("@", 1)[1]) == 40
    files = set(git("ls-tree", "--name-only", "HEAD", cwd=remote).split())
    assert files >= {"config.json", "model.safetensors", "README.md", "LICENSE"} and "model.onnx" not in files
    assert same_weights(weights(resolve(ref)), weights(v2))
    assert (resolve(f"git+{remote}@v1") / "model.onnx").read_bytes() == b"exported from v1"


def test_pushing_an_unchanged_package_makes_no_new_commit(remote: Path, packages: tuple[Path, Path]) -> None:
    first = push(packages[0], f"git+{remote}")
    assert push(packages[0], f"git+{remote}") == first
    assert git("rev-list", "--count", "HEAD", cwd=remote) == "1"
    # A version of the same files is a new commit only because the card names that version.
    push(packages[0], f"git+{remote}", revision="v1")
    assert git("diff", "--name-only", "HEAD~1", "HEAD", cwd=remote) == "README.md"


def test_lfs_remote_without_git_lfs_is_a_clear_message(
    remote: Path, packages: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub, "lfs_available", lambda: False)
    attrs = "*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    pointer = "version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 1234\n"
    config = (packages[0] / "config.json").read_text()
    _commit_to(remote, tmp_path, {".gitattributes": attrs, "config.json": config, "model.safetensors": pointer}, "v0")
    before = remote_state(remote)
    with pytest.raises(HubError, match="install it"):
        push(packages[1], f"git+{remote}", revision="v1")
    assert remote_state(remote) == before
    with pytest.raises(PackageError, match="git-lfs pointer"):
        resolve(f"git+{remote}@v0")


def test_private_and_odd_destinations_are_refused(packages: tuple[Path, Path], remote: Path) -> None:
    with pytest.raises(HubError, match="--private applies to hf://"):
        push(packages[0], f"git+{remote}", private=True)
    with pytest.raises(HubError, match="push needs"):
        push(packages[0], str(remote))
    with pytest.raises(HubError, match="not a valid version"):
        push(packages[0], f"git+{remote}", revision="v 1")
    with pytest.raises(HubError, match="two versions"):
        push(packages[0], f"git+{remote}@v1", revision="v2")
    with pytest.raises(HubError, match="does not appear to be a git repository|git ls-remote failed"):
        push(packages[0], f"git+{remote.with_name('missing.git')}", revision="v1")


def test_pull_refuses_to_overwrite_other_files(remote: Path, packages: tuple[Path, Path], tmp_path: Path) -> None:
    push(packages[0], f"git+{remote}", revision="v1")
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    with pytest.raises(HubError, match="not a model package"):
        pull(f"git+{remote}@v1", other)
    assert (other / "todo.txt").read_text() == "keep me"
    # An older package there is replaced.
    pull(f"git+{remote}@v1", packages[1])
    assert Classifier.load(packages[1]).labels == V1_LABELS


@pytest.mark.skipif(not hub.lfs_available(), reason="git-lfs is not installed")
def test_weights_go_through_git_lfs_when_installed(remote: Path, packages: tuple[Path, Path]) -> None:
    v1, v2 = packages
    push(v1, f"git+file://{remote}", revision="v1")
    push(v2, f"git+{remote}", revision="v2")  # a plain path remote too
    assert git("show", "v1:model.safetensors", cwd=remote).startswith("version https://git-lfs.github.com/spec/v1")
    assert "*.safetensors filter=lfs" in git("show", "v1:.gitattributes", cwd=remote)
    assert len(list(remote.glob("lfs/objects/*/*/*"))) == 2
    assert same_weights(weights(resolve(f"git+file://{remote}@v1")), weights(v1))
    assert same_weights(weights(resolve(f"git+{remote}@v2")), weights(v2))


def test_remote_refusing_large_files_asks_for_git_lfs(
    remote: Path, packages: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub, "lfs_available", lambda: False)
    hook = remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'error: File model.safetensors exceeds the 10 KB file size limit' >&2\nexit 1\n")
    hook.chmod(0o755)
    with pytest.raises(HubError, match=r"exceeds the 10 KB(.|\n)*install git-lfs"):
        push(packages[0], f"git+{remote}", revision="v1")
    assert remote_state(remote) == ""
