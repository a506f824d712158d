"""A token given to push or resolve never reaches stdout, stderr, logs, argv, error messages or any file written,
and git really sends it (as an Authorization header scoped to the remote) to an https/http server."""

from __future__ import annotations

import base64
import logging
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hub_fixtures import git, make_package
from huggingface_hub import constants

from imgcls import hub
from imgcls.hub import HubError, parse_ref, push, resolve, scrub

SECRET = "tok-3f9c2a7d51e84b60-SECRET"


class _Refuser(BaseHTTPRequestHandler):
    """A git smart-HTTP endpoint that records each request's Authorization header and refuses it (401)."""

    seen: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        type(self).seen.append(self.headers.get("Authorization"))
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="models"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # keep the test output clean
        pass


@pytest.fixture
def refusing_server() -> Iterator[tuple[str, list[str | None]]]:
    _Refuser.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refuser)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Refuser.seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def argv_spy(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every command line imgcls.hub runs (what `ps` would show)."""
    seen: list[list[str]] = []
    real_run = subprocess.run

    def run(args: list[str], *rest: Any, **kwargs: Any) -> Any:
        seen.append([str(a) for a in args])
        return real_run(args, *rest, **kwargs)

    monkeypatch.setattr(hub.subprocess, "run", run)
    return seen


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMGCLS_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    for name in ("HF_TOKEN", "MODELSCOPE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def _assert_nowhere(secret: str, *, root: Path, texts: list[str]) -> None:
    needles = [secret.encode(), base64.b64encode(f"oauth2:{secret}".encode())]
    for text in texts:
        assert secret not in text
        assert needles[1].decode() not in text
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            assert not any(n in data for n in needles), f"token written into {path}"


def test_git_sends_the_token_as_a_scoped_header_and_never_shows_it(
    refusing_server: tuple[str, list[str | None]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    argv_spy: list[list[str]],
) -> None:
    base, seen = refusing_server
    caplog.set_level(logging.DEBUG)
    package = make_package(tmp_path / "model", ["a", "b"], seed=1)
    errors = []
    with pytest.raises(HubError) as err:
        push(package, f"git+{base}/org/model.git", revision="v1", token=SECRET)
    errors.append(str(err.value))
    assert "refused the token" in str(err.value) and "org/model.git@v1" in str(err.value)
    with pytest.raises(HubError) as err:
        resolve(f"git+{base}/org/model.git@v1", token=SECRET)
    errors.append(str(err.value))
    # A password inside the URL is taken out of it and used as the token, with the URL's user name.
    with pytest.raises(HubError) as err:
        resolve(f"git+http://alice:{SECRET}@{base.removeprefix('http://')}/org/model.git@v1")
    errors.append(str(err.value))

    assert f"Basic {base64.b64encode(f'oauth2:{SECRET}'.encode()).decode()}" in seen
    assert f"Basic {base64.b64encode(f'alice:{SECRET}'.encode()).decode()}" in seen
    assert argv_spy and not any(SECRET in arg for argv in argv_spy for arg in argv)
    out = capsys.readouterr()
    _assert_nowhere(SECRET, root=tmp_path, texts=[*errors, out.out, out.err, caplog.text])


def test_token_stays_out_of_the_remote_and_the_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    remote = tmp_path / "remote.git"
    git("init", "-q", "--bare", remote)
    package = make_package(tmp_path / "model", ["a", "b"], seed=1)
    ref = push(package, f"git+file://{remote}", revision="v1", token=SECRET, message="first release")
    assert resolve(ref, token=SECRET).is_dir()
    assert "first release" in git("log", "-1", "--format=%s", cwd=remote)
    out = capsys.readouterr()
    _assert_nowhere(SECRET, root=tmp_path, texts=[out.out, out.err, caplog.text])


def test_hub_token_never_shows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    package = make_package(tmp_path / "model", ["a", "b"], seed=1)
    errors = []
    for call in (
        lambda: push(package, "hf://acme/secret-model", revision="v1", private=True, token=SECRET),
        lambda: resolve("hf://acme/secret-model@v1", token=SECRET),
    ):
        with pytest.raises(HubError) as err:
            call()
        errors.append(str(err.value))
    out = capsys.readouterr()
    _assert_nowhere(SECRET, root=tmp_path, texts=[*errors, out.out, out.err, caplog.text])


def test_git_env_scopes_the_header_to_the_remote() -> None:
    ref = parse_ref("git+https://www.modelscope.cn/acme/flowers.git@v1")
    runner = hub._Git.for_ref(ref, SECRET)
    n = int(runner.env["GIT_CONFIG_COUNT"]) - 1
    assert runner.env[f"GIT_CONFIG_KEY_{n}"] == "http.https://www.modelscope.cn/.extraHeader"
    assert (
        runner.env[f"GIT_CONFIG_VALUE_{n}"]
        == "Authorization: Basic " + base64.b64encode(f"oauth2:{SECRET}".encode()).decode()
    )
    assert runner.env["GIT_TERMINAL_PROMPT"] == "0"
    # ssh and local remotes get no header (ssh keys and file permissions decide).
    for url in ("git+git@host:org/m.git", "git+/srv/models/m.git", "git+file:///srv/models/m.git"):
        env = hub._Git.for_ref(parse_ref(url), SECRET).env
        assert not any("Authorization" in value or SECRET in value for value in env.values())


def test_token_lookup_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELSCOPE_API_TOKEN", "ms-env")
    monkeypatch.setenv("HF_TOKEN", "hf-env")
    ms = parse_ref("git+https://www.modelscope.cn/acme/flowers.git")
    assert hub.find_token(ms, "explicit") == "explicit"
    assert hub.find_token(ms) == "ms-env"
    assert hub.find_token(parse_ref("hf://acme/flowers")) == "hf-env"
    assert hub.find_token(parse_ref("git+https://huggingface.co/acme/flowers")) == "hf-env"
    assert hub.find_token(parse_ref("git+https://gitlab.example.com/acme/flowers.git")) is None
    assert hub.find_token(parse_ref("git+https://u:in-url@gitlab.example.com/acme/flowers.git")) == "in-url"


def test_scrub_hides_tokens_url_passwords_and_headers() -> None:
    text = f"fatal: https://u:{SECRET}@host/x failed; Authorization: Basic abc==; token {SECRET}"
    cleaned = scrub(text, (SECRET,))
    assert SECRET not in cleaned and "abc==" not in cleaned
    assert "https://u:***@host/x" in cleaned and "Authorization: Basic ***" in cleaned
