"""Publish, version and fetch model packages: Hugging Face Hub repos (`hf://`) and any git remote (`git+URL`).

A reference names a package and one of its versions:

- `hf://ORG/NAME@v1.0.0`: a Hugging Face Hub model repository at a tag, branch or commit.
- `git+URL@v1.0.0`: any git remote (a ModelScope model repo, GitLab, Gitea, a bare repo on disk) at a tag,
  branch or full commit id; URL may be `https://...`, `ssh://...`, `git@host:org/repo.git`, `file:///path` or
  `/path`.
- anything else: a package folder on disk.

`resolve()` turns a reference into a package folder (downloading and caching it), `push()` publishes a folder
as a new version, `pull()` copies a version into a folder. Versions are immutable: a tag that exists is never
moved, so a cached tag or commit loads offline without asking the remote.

Access tokens never reach argv, logs, remote URLs, git config or the repository: git gets them through
environment-scoped config (`GIT_CONFIG_COUNT`), huggingface_hub through its `token` argument, and every error
text is scrubbed of them.
"""

from __future__ import annotations

import base64
import fnmatch
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from imgcls.card import model_card, model_name
from imgcls.package import CARD_NAME, CONFIG_NAME, PackageError, load_package, read_config, replace_dir

if TYPE_CHECKING:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

logger = logging.getLogger(__name__)

HF_PREFIX = "hf://"
GIT_PREFIX = "git+"
# Stored with git-lfs when it is installed: hosts refuse multi-megabyte blobs in plain git.
LFS_PATTERNS = ("*.safetensors", "*.onnx", "*.onnx.data")
# The files a package owns in a repository. A new version replaces these and removes the stale ones (an old
# model.onnx must not outlive the weights it was exported from); anything else in the repository (a LICENSE,
# ModelScope's configuration.json, images the card shows) is left alone.
PACKAGE_PATTERNS = (CONFIG_NAME, CARD_NAME, "*.safetensors", "*.onnx", "*.onnx.data")
_HEX_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# What hosts say when they refuse a big blob that should have gone through git-lfs.
_TOO_LARGE = re.compile(
    r"large file|too large|exceeds|file size limit|GH001|HTTP 413|pre-receive hook declined|\blfs\b", re.I
)
_AUTH_FAILED = re.compile(
    r"HTTP 40[13]|\b40[13]\b|Authentication failed|could not read Username|terminal prompts disabled|"
    r"Permission denied|access denied|not authorized",
    re.I,
)


class HubError(PackageError):
    """A remote package that cannot be published or fetched; the message names the repository and the version.

    It is a `PackageError` so that callers that already report unusable packages (the CLI) report these too.
    """


# -- references ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HubRef:
    """A parsed package reference.

    Attributes:
        kind: `hf`, `git` or `local`.
        location: the Hub repo id (`ORG/NAME`), the git URL without any password, or the local path.
        revision: the tag, branch or commit asked for; None means the default branch (or the folder itself).
        password: a password found in the URL's user info (`https://user:TOKEN@host/...`); it is taken out of
            `location` so it is never stored or shown, and used as the token.
    """

    kind: Literal["hf", "git", "local"]
    location: str
    revision: str | None = None
    password: str | None = field(default=None, repr=False, compare=False)

    def __str__(self) -> str:
        prefix = {"hf": HF_PREFIX, "git": GIT_PREFIX, "local": ""}[self.kind]
        return f"{prefix}{self.location}" + (f"@{self.revision}" if self.revision else "")

    @property
    def repository(self) -> str:
        """The reference without the version, for messages."""
        return str(HubRef(self.kind, self.location))

    @property
    def host(self) -> str:
        """The git server's host name (empty for local paths and the Hub)."""
        if self.kind != "git":
            return ""
        if _SCHEME.match(self.location):
            return (urlsplit(self.location).hostname or "").lower()
        scp = re.match(r"^(?:[^@/]+@)?([^:/]+):", self.location)
        return scp.group(1).lower() if scp else ""

    def with_revision(self, revision: str | None) -> HubRef:
        return HubRef(self.kind, self.location, revision, self.password)


def is_remote(ref: str | Path) -> bool:
    """Whether `ref` names a remote package (`hf://...` or `git+...`) rather than a folder."""
    return isinstance(ref, str) and ref.startswith((HF_PREFIX, GIT_PREFIX))


def _split_revision(spec: str, path_start: int) -> tuple[str, str | None]:
    # Only an "@" inside the path part starts a revision: the one in `git@host:` or `https://user@host/` is user info.
    at = spec.rfind("@", path_start)
    if at < 0:
        return spec, None
    return spec[:at], spec[at + 1 :]


def parse_ref(ref: str | Path) -> HubRef:
    """Parse `hf://ORG/NAME[@REV]`, `git+URL[@REV]` or a local path.

    Raises:
        HubError: the reference is malformed (the message shows the expected form).
    """
    if isinstance(ref, Path) or not is_remote(ref):
        return HubRef("local", str(ref))
    if ref.startswith(HF_PREFIX):
        repo, revision = _split_revision(ref, len(HF_PREFIX))
        repo = repo[len(HF_PREFIX) :].strip("/")
        if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", repo) or revision == "":
            raise HubError(f"{ref}: expected hf://ORG/NAME or hf://ORG/NAME@VERSION")
        return HubRef("hf", repo, revision)

    spec = ref[len(GIT_PREFIX) :]
    if not spec:
        raise HubError(f"{ref}: expected git+URL or git+URL@VERSION (URL: https://..., ssh://..., file://..., /path)")
    password = None
    if _SCHEME.match(spec):
        authority_end = spec.find("/", spec.index("://") + 3)
        url, revision = _split_revision(spec, len(spec) if authority_end < 0 else authority_end)
        parts = urlsplit(url)
        if parts.password is not None:
            # Keep the user name (some hosts need it) but never the secret.
            password = parts.password
            netloc = parts.netloc.rsplit("@", 1)[1]
            netloc = f"{parts.username}@{netloc}" if parts.username else netloc
            url = urlunsplit(parts._replace(netloc=netloc))
    elif spec.startswith(("/", ".", "~")):
        url, revision = _split_revision(spec, 0)
        if revision is not None and Path(spec).expanduser().exists():
            url, revision = spec, None  # a folder whose name has an "@" in it
        url = str(Path(url).expanduser().resolve())
    else:
        scp = re.match(r"^(?:[^@/]+@)?[^:/]+:", spec)  # user@host:org/repo.git
        if not scp:
            raise HubError(
                f"{ref}: expected git+URL with URL like https://host/org/repo.git, git@host:org/repo.git, /path"
            )
        url, revision = _split_revision(spec, scp.end())
    if not url or revision == "":
        raise HubError(f"{ref}: expected git+URL or git+URL@VERSION")
    return HubRef("git", url, revision, password)


_BAD_TAG = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|^[-/.]|[/.]$|\.lock$")


def _check_version_name(revision: str, repository: str) -> None:
    # git's ref-name rules (the Hub uses the same ones); checked before anything is uploaded.
    if not revision or _BAD_TAG.search(revision):
        raise HubError(f"{repository}: {revision!r} is not a valid version name (use something like v1.0.0)")


# -- tokens and secrecy -------------------------------------------------------------------------------------------
def find_token(ref: HubRef, token: str | None = None) -> str | None:
    """The access token for `ref`: explicit > a password in the URL > the host's variable > huggingface_hub's login.

    `HF_TOKEN` and the `hf auth login` cache serve the Hub (and huggingface.co git URLs); `MODELSCOPE_API_TOKEN`
    serves ModelScope git URLs. Other git hosts use the token given, or git's own credential helpers and ssh keys.
    """
    if token:
        return token
    if ref.password:
        return ref.password
    host = ref.host
    if ref.kind == "hf" or host.endswith(("huggingface.co", "hf.co")):
        from huggingface_hub import get_token

        return os.environ.get("HF_TOKEN") or get_token()
    if "modelscope" in host:
        return os.environ.get("MODELSCOPE_API_TOKEN") or None
    return None


def _secrets(token: str | None, *extra: str | None) -> tuple[str, ...]:
    return tuple(s for s in (token, *extra) if s)


def scrub(text: str, secrets: tuple[str, ...] = ()) -> str:
    """`text` with the given secrets, URL passwords and Authorization header values replaced by `***`."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    text = re.sub(r"(://[^/@\s:]+):[^/@\s]+@", r"\1:***@", text)
    return re.sub(r"(Authorization:\s*\w+\s+)\S+", r"\1***", text, flags=re.I)


# -- git plumbing -------------------------------------------------------------------------------------------------
@dataclass
class _Git:
    """Runs git for one remote with its credentials in the environment only."""

    ref: HubRef
    env: dict[str, str]
    secrets: tuple[str, ...]

    @classmethod
    def for_ref(cls, ref: HubRef, token: str | None) -> _Git:
        if shutil.which("git") is None:
            raise HubError(f"{ref.repository}: git is not installed; install it to use git+ references")
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
        secrets = _secrets(token)
        url = ref.location
        if token and url.lower().startswith(("https://", "http://")):
            parts = urlsplit(url)
            basic = base64.b64encode(f"{parts.username or 'oauth2'}:{token}".encode()).decode()
            # Config from the environment lives only as long as the process: nothing lands in .git/config, the
            # URL or argv (which `ps` shows). Scoped to the remote's origin so a redirect elsewhere gets no token.
            n = int(env.get("GIT_CONFIG_COUNT", "0") or 0)
            env.update(
                {
                    "GIT_CONFIG_COUNT": str(n + 1),
                    f"GIT_CONFIG_KEY_{n}": f"http.{parts.scheme}://{parts.hostname}"
                    + (f":{parts.port}" if parts.port else "")
                    + "/.extraHeader",
                    f"GIT_CONFIG_VALUE_{n}": f"Authorization: Basic {basic}",
                }
            )
            secrets = _secrets(token, basic)
        return cls(ref, env, secrets)

    def __call__(
        self, *args: str | Path, what: str, cwd: Path | None = None, extra_env: dict[str, str] | None = None
    ) -> str:
        """Run `git ARGS`; on failure raise HubError naming `what` with git's scrubbed message."""
        env = {**self.env, **(extra_env or {})}
        proc = subprocess.run(
            ["git", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL
        )
        if proc.returncode != 0:
            message = scrub((proc.stderr or proc.stdout).strip(), self.secrets)
            hint = ""
            if _AUTH_FAILED.search(message):
                hint = (
                    " — the server refused the token: check that it is valid and has access (write access, to push)"
                    if self.secrets
                    else " — the server needs credentials: pass a token (--token, or MODELSCOPE_API_TOKEN / HF_TOKEN "
                    "for those hosts), or set up git's credential helper or an ssh key"
                )
            raise HubError(f"{what}: git {args[0] if args[0] != '-C' else args[2]} failed: {message}{hint}")
        return proc.stdout


@functools.lru_cache(maxsize=1)
def lfs_available() -> bool:
    """Whether the git-lfs extension is installed (large files then go through it)."""
    if shutil.which("git") is None:
        return False
    proc = subprocess.run(["git", "lfs", "version"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return proc.returncode == 0


def _uses_lfs(work: Path) -> bool:
    attributes = work / ".gitattributes"
    return attributes.is_file() and "filter=lfs" in attributes.read_text(encoding="utf-8", errors="replace")


@dataclass(frozen=True)
class _RemoteRefs:
    refs: dict[str, str]  # ref name -> commit id (tags peeled)
    head: str | None  # the branch HEAD points to

    def pick(self, revision: str | None, what: str) -> tuple[str | None, str]:
        """(ref name or None for a bare commit id, commit id) for the version asked for."""
        refs = self.refs
        if revision is None:
            branches = [r for r in refs if r.startswith("refs/heads/")]
            name = self.head or ("HEAD" if "HEAD" in refs else (branches[0] if len(branches) == 1 else None))
            if name is None or name not in refs:
                raise HubError(f"{what}: the repository has no default branch; give a version ({self.summary()})")
            return name, refs[name]
        for name in (f"refs/tags/{revision}", f"refs/heads/{revision}", revision):
            if name.startswith("refs/") and name in refs:
                return name, refs[name]
        if _HEX_SHA.fullmatch(revision):
            return None, revision
        raise HubError(f"{what}: no version {revision!r} in the repository ({self.summary()})")

    def summary(self) -> str:
        tags = [r.removeprefix("refs/tags/") for r in self.refs if r.startswith("refs/tags/")]
        heads = [r.removeprefix("refs/heads/") for r in self.refs if r.startswith("refs/heads/")]
        if not tags and not heads:
            return "it is empty"
        return f"tags: {_names(tags)}; branches: {_names(heads)}"


def _names(names: list[str]) -> str:
    return ", ".join(sorted(names)[-20:]) or "none"


def _remote_refs(git: _Git, what: str) -> _RemoteRefs:
    out = git("ls-remote", "--symref", git.ref.location, what=what)
    refs: dict[str, str] = {}
    peeled: dict[str, str] = {}
    head = None
    for line in out.splitlines():
        target, _, name = line.partition("\t")
        if target.startswith("ref: "):
            if name == "HEAD":
                head = target[5:]
        elif name.endswith("^{}"):
            peeled[name[:-3]] = target  # an annotated tag: the commit it points to
        elif name:
            refs[name] = target
    refs.update(peeled)
    return _RemoteRefs(refs, head)


# -- verification -------------------------------------------------------------------------------------------------
def _check_safetensors(path: Path, label: str) -> None:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if head.startswith(b"version "):
            if b"git-lfs" in head + f.read(100):
                raise PackageError(
                    f"{label}: {path.name} is a git-lfs pointer, not the weights; install git-lfs "
                    "(https://git-lfs.com, e.g. `apt install git-lfs`) and load it again"
                )
        if len(head) < 8:
            raise PackageError(f"{label}: {path.name} is truncated ({size} bytes)")
        n = int.from_bytes(head, "little")
        if n > size - 8:
            raise PackageError(f"{label}: {path.name} is truncated or corrupt (header of {n} bytes, file {size})")
        try:
            header = json.loads(f.read(n))
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, AttributeError, IndexError) as err:
            raise PackageError(f"{label}: {path.name} has an unreadable header ({err})") from None
    if 8 + n + end != size:
        raise PackageError(
            f"{label}: {path.name} is {size:,} bytes but its header describes {8 + n + end:,}; "
            "the file is truncated or corrupt — write or download it again"
        )


def verify_package(path: str | Path, *, full: bool = True, name: str | None = None) -> dict[str, Any]:
    """Check that a folder is a usable model package and return its config.

    Args:
        path: the package folder.
        full: also load the weights into the model (catches weights that do not fit the architecture); without
            it only the config and the weight files' headers and sizes are checked.
        name: how messages name the package (e.g. the reference it came from); default: the path.

    Raises:
        PackageError: missing or invalid config, missing labels, git-lfs pointers, truncated or unloadable weights.
    """
    path = Path(path)
    label = name or str(path)
    try:
        config = read_config(path)
    except PackageError as err:
        raise PackageError(f"{label}: {err}" if name else str(err)) from None
    for weights in sorted(path.glob("*.safetensors")):
        _check_safetensors(weights, label)
    if full:
        try:
            package = load_package(path)
        except PackageError as err:
            raise PackageError(f"{label}: {err}" if name else str(err)) from None
        # timm builds the model from `model_args`, so a config whose labels match its top-level `num_classes`
        # can still describe a model with another number of outputs.
        outputs = getattr(package.model, "num_classes", None)
        if outputs is not None and outputs != len(package.labels):
            raise PackageError(
                f"{label}: the model has {outputs} outputs but {len(package.labels)} labels in {CONFIG_NAME}"
            )
    return config


def _package_files(model_dir: Path) -> list[Path]:
    # Top-level files only; hidden ones are scratch (.config.json.tmp) or tooling (.gitattributes).
    return sorted(p for p in model_dir.iterdir() if p.is_file() and not p.name.startswith("."))


def _is_package_file(name: str) -> bool:
    return "/" not in name and any(fnmatch.fnmatch(name, pattern) for pattern in PACKAGE_PATTERNS)


def _card_for(model_dir: Path, config: dict[str, Any], ref: str) -> bytes | None:
    """The model card to publish: regenerated with the published reference, unless the user edited it."""
    card = model_dir / CARD_NAME
    if card.is_file() and card.read_text(encoding="utf-8", errors="replace") != model_card(config):
        return None  # hand-written or edited: publish as it is
    return model_card(config, ref=ref).encode("utf-8")


def commit_message(config: dict[str, Any], revision: str | None = None, message: str | None = None) -> tuple[str, str]:
    """(subject, body) for a published version: the subject carries the headline metrics, the body the rest.

    Args:
        config: the package config.
        revision: the version being published.
        message: the user's own subject line; the metrics still go in the body.
    """
    info = config.get("imgcls", {})
    evaluation = info.get("evaluation", {})
    training = info.get("training", {})
    labels = config.get("label_names", [])
    metrics = " ".join(
        f"{key}={float(evaluation[key]):.4f}"
        for key in ("top1", "top5", "macro_f1")
        if isinstance(evaluation.get(key), (int, float)) and not isinstance(evaluation.get(key), bool)
    )
    scored = f"{evaluation.get('split', 'test')} {metrics} ({evaluation.get('images', '?')} images)" if metrics else ""
    subject = message or (
        f"{model_name(config)} {revision or ''}".rstrip()
        + f": {config['architecture']}, {len(labels)} classes"
        + (f"; {scored}" if scored else "; not evaluated")
    )
    body = [
        f"labels: {', '.join(map(str, labels[:30]))}" + (" ..." if len(labels) > 30 else ""),
        f"architecture: {config['architecture']}",
    ]
    if scored:
        body.append(f"evaluation: {scored}")
    if training:
        body.append(
            "training: "
            + ", ".join(
                f"{k}={training[k]}"
                for k in ("init", "train_images", "val_images", "epochs", "best_epoch", "precision")
                if k in training
            )
        )
    body.append(f"imgcls {info.get('version', '?')}")
    return subject, "\n".join(body)


# -- resolve --------------------------------------------------------------------------------------------------------
def imgcls_home() -> Path:
    """imgcls's cache root: `$IMGCLS_HOME`, default `~/.cache/imgcls`."""
    return Path(os.environ.get("IMGCLS_HOME") or "~/.cache/imgcls").expanduser()


def git_cache_dir(ref: HubRef, cache_dir: Path | None = None) -> Path:
    """Where versions of a git remote are cached: `$IMGCLS_HOME/hub/git/<hash of the URL>`."""
    root = Path(cache_dir) if cache_dir is not None else imgcls_home() / "hub" / "git"
    return root / hashlib.sha256(ref.location.encode("utf-8")).hexdigest()[:16]


def resolve(ref: str | Path, *, token: str | None = None, cache_dir: Path | None = None) -> Path:
    """A local package folder for a reference: downloaded and cached for `hf://` and `git+`, as is for a path.

    Args:
        ref: `hf://ORG/NAME[@VERSION]`, `git+URL[@VERSION]` or a package folder.
        token: access token for private repositories (default: see `find_token`).
        cache_dir: cache root (default: huggingface_hub's cache for `hf://`, `$IMGCLS_HOME/hub/git` for git).

    Raises:
        HubError: the repository or version does not exist, the token was refused, or the remote cannot be
            reached and the version is not cached.
        PackageError: what was downloaded is not a usable package (tampered, half-written, LFS pointers).
    """
    parsed = parse_ref(ref)
    if parsed.kind == "local":
        return Path(parsed.location)
    if parsed.revision is not None:
        _check_version_name(parsed.revision, parsed.repository)
    if parsed.kind == "hf":
        return _resolve_hf(parsed, find_token(parsed, token), cache_dir)
    return _resolve_git(parsed, find_token(parsed, token), cache_dir)


def _resolve_hf(ref: HubRef, token: str | None, cache_dir: Path | None) -> Path:
    from huggingface_hub import snapshot_download

    from imgcls import __version__

    try:
        folder = snapshot_download(
            ref.location,
            revision=ref.revision,
            token=token,
            cache_dir=cache_dir,
            library_name="imgcls",
            library_version=__version__,
        )
    except Exception as err:  # huggingface_hub raises HTTP, offline and cache errors; translate the known ones
        mapped = _hf_error(err, ref, token)
        if mapped is err:
            raise
        raise mapped from err
    path = Path(folder)
    verify_package(path, full=False, name=str(ref))
    return path


def _hf_error(err: Exception, ref: HubRef, token: str | None) -> Exception:
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        IncompleteSnapshotError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    what = str(ref)
    version = ref.revision or "main"
    no_token = "no token was found: pass token=... / --token, set HF_TOKEN, or run `hf auth login`"
    if isinstance(err, GatedRepoError):
        text = f"{what}: the repository is gated; accept its conditions on the Hub with an account whose token you pass"
    elif isinstance(err, RepositoryNotFoundError):
        reason = no_token if token is None else "the token given has no access to it"
        text = f"{what}: repository {ref.location} not found, or it is private and {reason}"
    elif isinstance(err, RevisionNotFoundError):
        text = f"{what}: no version {version!r} in {ref.location}"
    elif isinstance(err, IncompleteSnapshotError):
        text = (
            f"{what}: the cached copy of version {version!r} of {ref.location} is incomplete (an interrupted "
            "download) and the Hub cannot be reached; load it again with network access"
        )
    elif isinstance(err, LocalEntryNotFoundError):
        if constants.HF_HUB_OFFLINE:
            text = (
                f"{what}: version {version!r} of {ref.location} is not in the local cache and downloads are off "
                "(HF_HUB_OFFLINE=1); load it once with network access"
            )
        else:
            text = f"{what}: the Hub cannot be reached and version {version!r} of {ref.location} is not cached"
    elif isinstance(err, HfHubHTTPError) and err.response is not None and err.response.status_code in (401, 403):
        reason = no_token if token is None else "the token was refused or lacks the permission (write, for a push)"
        text = f"{what}: HTTP {err.response.status_code} from the Hub for {ref.location}: {reason}"
    elif isinstance(err, (HfHubHTTPError, OSError, ValueError)):
        text = f"{what}: {type(err).__name__}: {err}"
    else:
        return err
    return HubError(scrub(text, _secrets(token)))


def _read_ref(cache: Path, name: str) -> str | None:
    path = cache / "refs" / name
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return value if _HEX_SHA.fullmatch(value) else None


def _write_ref(cache: Path, name: str, sha: str) -> None:
    path = cache / "refs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(sha, encoding="utf-8")
    os.replace(tmp, path)  # readers never see half a commit id


def _resolve_git(ref: HubRef, token: str | None, cache_dir: Path | None) -> Path:
    cache = git_cache_dir(ref, cache_dir)
    what = str(ref)
    revision = ref.revision
    # Tags and commit ids never move, so a cached one is used without asking the remote (this is what makes
    # offline loading work).
    if revision is not None:
        sha = revision if _HEX_SHA.fullmatch(revision) else _read_ref(cache, f"tags/{revision}")
        if sha and (cache / "snapshots" / sha).is_dir():
            return cache / "snapshots" / sha

    git = _Git.for_ref(ref, token)
    try:
        remote = _remote_refs(git, what)
    except HubError:
        # Unreachable: a branch seen before still loads (it may be stale, so say so).
        branch = _read_ref(cache, "HEAD" if revision is None else f"heads/{revision}")
        if branch and (cache / "snapshots" / branch).is_dir():
            logger.warning("%s: the remote cannot be reached; using the cached commit %s", what, branch[:12])
            return cache / "snapshots" / branch
        raise
    name, sha = remote.pick(revision, what)
    snapshot = cache / "snapshots" / sha
    if not snapshot.is_dir():
        sha = _fetch_snapshot(git, name, sha, cache, what)
        snapshot = cache / "snapshots" / sha
    (cache / "url").write_text(ref.location + "\n", encoding="utf-8")
    if name and name.startswith("refs/"):
        _write_ref(cache, name.removeprefix("refs/"), sha)
    if revision is None:
        _write_ref(cache, "HEAD", sha)
    return snapshot


def _fetch_snapshot(git: _Git, name: str | None, sha: str, cache: Path, what: str) -> str:
    """Check out one commit into `cache/snapshots/<sha>`, verified, atomically; returns the commit id."""
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=cache))
    try:
        work = tmp / "work"
        git("init", "-q", work, what=what)
        git("-C", work, "remote", "add", "origin", git.ref.location, what=what)
        try:
            git("-C", work, "fetch", "-q", "--depth", "1", "--no-tags", "origin", name or sha, what=what)
        except HubError:
            if name:
                raise
            # Some servers refuse a bare commit id in a shallow fetch; take the whole history then.
            git("-C", work, "fetch", "-q", "--tags", "origin", "+refs/heads/*:refs/remotes/origin/*", what=what)
        target = name and "FETCH_HEAD" or sha
        # Smudge LFS files explicitly below, so a git-lfs that is installed but not enabled globally still works.
        git("-C", work, "checkout", "-q", "--detach", target, what=what, extra_env={"GIT_LFS_SKIP_SMUDGE": "1"})
        if lfs_available() and _uses_lfs(work):
            git("-C", work, "lfs", "pull", "origin", what=what)
        sha = git("-C", work, "rev-parse", "HEAD", what=what).strip()
        shutil.rmtree(work / ".git")
        verify_package(work, full=True, name=what)
        snapshot = cache / "snapshots" / sha
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(work, snapshot)
        except OSError:
            if not snapshot.is_dir():  # not a concurrent fetch of the same commit that won the race
                raise
        return sha
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def pull(ref: str | Path, out_dir: str | Path, *, token: str | None = None) -> Path:
    """Write the package `ref` names into `out_dir` (replacing a package there, never other files).

    Raises:
        HubError: `out_dir` holds something that is not a model package, or see `resolve`.
    """
    source = resolve(ref, token=token)
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / CONFIG_NAME).exists())):
        raise HubError(f"{out_dir}: exists and is not a model package; give an empty or new folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for file in _package_files(source):
            shutil.copyfile(file, tmp / file.name)  # follows the Hub cache's symlinks into its blobs
        replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


# -- push -------------------------------------------------------------------------------------------------------------
def push(
    model_dir: str | Path,
    dest: str,
    *,
    revision: str | None = None,
    private: bool = False,
    token: str | None = None,
    message: str | None = None,
) -> str:
    """Publish a model package as a new version of a Hub repository or a git remote.

    The package is verified first (config, labels, weights that load); nothing is uploaded if that fails, or if
    the version already exists.

    Args:
        model_dir: the package folder (e.g. `runs/NAME/model`).
        dest: `hf://ORG/NAME` or `git+URL` (a `@VERSION` suffix works as `revision`).
        revision: the version tag to create, e.g. `v1.0.0`; without it only the default branch moves.
        private: create the Hub repository private (and refuse to push into an existing public one).
        token: access token (default: see `find_token`).
        message: the commit subject; the metrics are added to the commit body in any case.

    Returns:
        A reference that loads exactly what was pushed (`hf://ORG/NAME@v1.0.0`, `git+URL@<commit>`...).
    """
    ref = parse_ref(dest)
    if ref.kind == "local":
        raise HubError(f"{dest}: push needs hf://ORG/NAME or git+URL (a git remote)")
    if ref.revision and revision and ref.revision != revision:
        raise HubError(f"{dest}: two versions given ({ref.revision} in the reference, {revision} as revision)")
    revision = revision or ref.revision
    ref = ref.with_revision(None)
    if revision is not None:
        _check_version_name(revision, str(ref))
    if private and ref.kind == "git":
        raise HubError(
            f"{ref}: --private applies to hf:// only; a git remote's visibility is set on its server "
            "(create the repository private there, then push without --private)"
        )
    model_dir = Path(model_dir)
    config = verify_package(model_dir, full=True)
    token = find_token(ref, token)
    logger.info("pushing %s to %s%s", model_dir, ref, f" as {revision}" if revision else "")
    if ref.kind == "hf":
        plan = plan_hf_upload(model_dir, ref.location, revision, private=private, message=message, config=config)
        sha = execute_hf_upload(plan, token=token)
        return plan.ref or f"{HF_PREFIX}{ref.location}@{sha}"
    return _push_git(ref, model_dir, config, revision, token, message)


@dataclass(frozen=True)
class UploadFile:
    """One file of an upload: where it goes, how big it is and its SHA-256 (what the Hub's LFS keys on)."""

    path_in_repo: str
    size: int
    sha256: str
    local_path: Path | None = None  # None: `content` is generated (the model card with the published reference)
    content: bytes | None = field(default=None, repr=False)

    def operation(self) -> CommitOperationAdd:
        from huggingface_hub import CommitOperationAdd

        source = self.content if self.content is not None else self.local_path
        return CommitOperationAdd(path_in_repo=self.path_in_repo, path_or_fileobj=source)  # type: ignore[arg-type]


@dataclass(frozen=True)
class HfUploadPlan:
    """Exactly what a push to the Hub sends: the files, the commit and the tag."""

    repo_id: str
    private: bool
    revision: str | None
    commit_message: str
    commit_description: str
    files: tuple[UploadFile, ...]
    branch: str = "main"

    @property
    def ref(self) -> str | None:
        """The reference that loads the pushed version (None without a tag: the commit id is known after it)."""
        return f"{HF_PREFIX}{self.repo_id}@{self.revision}" if self.revision else None

    def operations(self, existing: list[str]) -> list[CommitOperationAdd | CommitOperationDelete]:
        """The commit: every package file added, and package files of an older version that this one lacks deleted."""
        from huggingface_hub import CommitOperationDelete

        keep = {f.path_in_repo for f in self.files}
        stale = [name for name in existing if _is_package_file(name) and name not in keep]
        return [f.operation() for f in self.files] + [CommitOperationDelete(path_in_repo=name) for name in stale]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def plan_hf_upload(
    model_dir: str | Path,
    repo_id: str,
    revision: str | None = None,
    *,
    private: bool = False,
    message: str | None = None,
    config: dict[str, Any] | None = None,
) -> HfUploadPlan:
    """Build the upload of a package to `repo_id` without touching the network; the package is verified first.

    Args:
        model_dir: the package folder.
        repo_id: `ORG/NAME`.
        revision: the tag to create.
        private: create the repository private.
        message: the commit subject (the metrics go in the description regardless).
        config: the package config when the caller already verified the package (skips loading it again).
    """
    model_dir = Path(model_dir)
    if config is None:
        config = verify_package(model_dir, full=True)
    ref = f"{HF_PREFIX}{repo_id}" + (f"@{revision}" if revision else "")
    card = _card_for(model_dir, config, ref)
    files: list[UploadFile] = []
    for path in _package_files(model_dir):
        if path.name == CARD_NAME and card is not None:
            files.append(UploadFile(CARD_NAME, len(card), hashlib.sha256(card).hexdigest(), content=card))
        else:
            files.append(UploadFile(path.name, path.stat().st_size, _sha256(path), local_path=path))
    if card is not None and not any(f.path_in_repo == CARD_NAME for f in files):
        files.append(UploadFile(CARD_NAME, len(card), hashlib.sha256(card).hexdigest(), content=card))
    subject, body = commit_message(config, revision, message)
    return HfUploadPlan(
        repo_id=repo_id,
        private=private,
        revision=revision,
        commit_message=subject,
        commit_description=body,
        files=tuple(sorted(files, key=lambda f: f.path_in_repo)),
    )


def execute_hf_upload(plan: HfUploadPlan, *, token: str | None = None, api: HfApi | None = None) -> str:
    """Send a plan: create the repository if needed, commit the files, tag the version. Returns the commit id.

    Refuses (before committing) a version tag that already exists and, with `private`, an existing public repo.
    """
    from huggingface_hub import HfApi

    api = api or HfApi(library_name="imgcls")
    repo = HubRef("hf", plan.repo_id, plan.revision)
    try:
        api.create_repo(plan.repo_id, token=token, private=plan.private, repo_type="model", exist_ok=True)
        if plan.private and not getattr(api.model_info(plan.repo_id, token=token), "private", True):
            raise HubError(
                f"{repo}: the repository exists and is public; make it private on the Hub first, or push without "
                "--private"
            )
        if plan.revision is not None:
            tags = {t.name for t in api.list_repo_refs(plan.repo_id, token=token).tags}
            if plan.revision in tags:
                raise HubError(f"{repo}: version {plan.revision} already exists; versions never move, pick a new one")
        existing = api.list_repo_files(plan.repo_id, revision=plan.branch, token=token)
        info = api.create_commit(
            plan.repo_id,
            plan.operations(existing),
            commit_message=plan.commit_message,
            commit_description=plan.commit_description,
            revision=plan.branch,
            token=token,
        )
        if plan.revision is not None:
            api.create_tag(
                plan.repo_id, tag=plan.revision, tag_message=plan.commit_message, revision=info.oid, token=token
            )
    except HubError:
        raise
    except Exception as err:
        mapped = _hf_error(err, repo, token)
        if mapped is err:
            raise
        raise mapped from err
    logger.info("pushed %s (commit %s)", repo, info.oid[:12])
    return info.oid


def _push_git(
    ref: HubRef, model_dir: Path, config: dict[str, Any], revision: str | None, token: str | None, message: str | None
) -> str:
    git = _Git.for_ref(ref, token)
    what = str(ref.with_revision(revision))
    remote = _remote_refs(git, what)  # reachable and allowed, before any work
    if revision is not None and f"refs/tags/{revision}" in remote.refs:
        raise HubError(f"{what}: version {revision} already exists; versions never move, pick a new one")
    published = f"{GIT_PREFIX}{ref.location}" + (f"@{revision}" if revision else "")
    card = _card_for(model_dir, config, published)
    with tempfile.TemporaryDirectory(prefix="imgcls-push-") as tmp:
        work = Path(tmp) / "repo"
        # Old versions' weights are not needed to commit a new one: skip their LFS download and history.
        git(
            "clone",
            "-q",
            "--depth",
            "1",
            "--no-tags",
            ref.location,
            work,
            what=what,
            extra_env={"GIT_LFS_SKIP_SMUDGE": "1"},
        )
        branch = git("-C", work, "symbolic-ref", "--short", "HEAD", what=what).strip()
        lfs = lfs_available()
        if lfs:
            git("-C", work, "lfs", "install", "--local", what=what)
            git("-C", work, "lfs", "track", *LFS_PATTERNS, what=what)
        elif _uses_lfs(work):
            raise HubError(
                f"{what}: the repository stores large files with git-lfs, which is not installed here; install "
                "it (https://git-lfs.com, e.g. `apt install git-lfs`) and push again"
            )
        for old in git("-C", work, "ls-files", "-z", what=what).split("\0"):
            if old and _is_package_file(old):
                (work / old).unlink(missing_ok=True)
        for file in _package_files(model_dir):
            shutil.copyfile(file, work / file.name)
        if card is not None:
            (work / CARD_NAME).write_bytes(card)
        git("-C", work, "add", "-A", what=what)
        subject, body = commit_message(config, revision, message)
        identity = _identity(git, work)
        changed = subprocess.run(["git", "-C", str(work), "diff", "--cached", "--quiet"], env=git.env).returncode != 0
        if changed:
            git("-C", work, "commit", "-q", "-m", subject, "-m", body, what=what, extra_env=identity)
        elif not remote.refs:
            raise HubError(f"{what}: nothing to commit")
        else:
            logger.info("%s: the package is unchanged; tagging the current commit", what)
        if revision is not None:
            git("-C", work, "tag", "-a", revision, "-m", subject, "-m", body, what=what, extra_env=identity)
        targets = [f"HEAD:refs/heads/{branch}"] + ([f"refs/tags/{revision}"] if revision else [])
        try:
            _git_push(git, work, targets, what)
        except HubError as err:
            if not lfs and _TOO_LARGE.search(str(err)):
                raise HubError(
                    f"{err}\nThe remote refused large files: install git-lfs (https://git-lfs.com, e.g. "
                    "`apt install git-lfs`) so the weights go through it, and push again"
                ) from None
            raise
        sha = git("-C", work, "rev-parse", "HEAD", what=what).strip()
    logger.info("pushed %s (commit %s)", what, sha[:12])
    return f"{GIT_PREFIX}{ref.location}@{revision or sha}"


def _git_push(git: _Git, work: Path, targets: list[str], what: str) -> None:
    # Atomic: the branch and the tag land together or not at all, so a failed push leaves no half version.
    try:
        git("-C", work, "push", "-q", "--atomic", "origin", *targets, what=what)
    except HubError as err:
        if "atomic" not in str(err):
            raise
        git("-C", work, "push", "-q", "origin", *targets, what=what)


def _identity(git: _Git, work: Path) -> dict[str, str]:
    """A committer identity when git has none configured (CI machines, containers); the user's otherwise."""
    proc = subprocess.run(["git", "-C", str(work), "config", "user.email"], env=git.env, capture_output=True, text=True)
    if proc.returncode == 0 and proc.stdout.strip():
        return {}
    name, email = "imgcls", "imgcls@localhost"
    return {
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
    }
