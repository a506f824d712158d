"""`write_space`: the app folder has what a Space needs, and its `app.py` serves the demo in a process of its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from demo_helpers import free_port, http_get, make_package, wait_for_http

from imgcls import __version__
from imgcls.demo import write_space


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("space")
    return write_space(make_package(root), root / "space")


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_space_folder_has_everything(space: Path) -> None:
    names = sorted(p.relative_to(space).as_posix() for p in space.rglob("*") if p.is_file())
    assert names == [
        "README.md",
        "app.py",
        "examples/00-bird_small.png",
        "examples/01-cat.png",
        "examples/02-向日葵.png",
        "model/README.md",
        "model/config.json",
        "model/model.safetensors",
        "requirements.txt",
    ]
    meta = _front_matter((space / "README.md").read_text(encoding="utf-8"))
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    assert meta["title"] == "lenet5 fine-tuned with imgcls"
    requirements = (space / "requirements.txt").read_text().split("\n")
    assert f"imgcls=={__version__}" in requirements and any(r.startswith("gradio>=6") for r in requirements)
    # The copied package is the package: same labels, same weights.
    assert json.loads((space / "model" / "config.json").read_text(encoding="utf-8"))["label_names"][2] == "向日葵"


def test_write_space_does_not_clobber(tmp_path: Path, space: Path) -> None:
    target = tmp_path / "clone"
    (target / ".git").mkdir(parents=True)
    (target / "README.md").write_text("old")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_space(space / "model", target)
    write_space(space / "model", target, overwrite=True)
    assert (target / ".git").is_dir() and (target / "model" / "model.safetensors").is_file()
    assert _front_matter((target / "README.md").read_text(encoding="utf-8"))["sdk"] == "gradio"


def test_space_app_serves_the_demo(space: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADIO_")}
    # The app's own temp folder goes under TMPDIR, so the test can see it removed at exit.
    env.update(GRADIO_SERVER_PORT=str(port), HF_HUB_OFFLINE="1", TMPDIR=str(tmp_path))
    log = tmp_path / "app.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=space, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        status = wait_for_http(url + "/", timeout=90, alive=lambda: proc.poll() is None)
        assert status == 200, log.read_text(errors="replace")
        config = json.loads(http_get(url + "/config")[1])
        assert config["title"] == "lenet5 fine-tuned with imgcls"
        datasets = [c["props"] for c in config["components"] if c.get("type") == "dataset"]
        assert len(datasets) == 1 and len(datasets[0]["samples"]) == 3
        assert http_get(url + "/gradio_api/file=" + str(space / "model" / "config.json"))[0] == 403
    finally:
        # Ctrl+C, as a person stops it: Gradio closes the server and the temp folder is removed at exit.
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)  # Gradio shuts down slowly on a loaded machine
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert not list(tmp_path.glob("imgcls-demo-*")), log.read_text(errors="replace")
    # Nothing written next to app.py (no flagging or example cache in the working directory).
    assert not (space / ".gradio").exists() and not (space / "flagged").exists()
