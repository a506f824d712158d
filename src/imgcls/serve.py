"""`imgcls serve`: a REST server over one `Classifier`, batching images across concurrent requests.

```
POST /v1/classify   multipart files (field `file` or `files`), JSON {"images": [base64, ...]} or a raw image body
GET  /v1/labels     the class names, in classifier-index order
GET  /healthz       liveness (never needs the API key)
GET  /docs          OpenAPI (Swagger) page
```

Requests only parse and decode (in a thread pool, off the event loop); one background worker owns the model. It
gathers the decoded images of all waiting requests into a batch of up to `max_batch_size`, waiting at most
`max_wait_ms` after the oldest arrived, and runs one forward pass per batch in its own thread. Under many clients the
server therefore runs the model at its offline batched speed instead of one image at a time.

Every bad input gets a 4xx answer `{"error": "<what and how to fix it>", "detail": ...}`; nothing a client sends can
stop the worker. A model failure fails only the requests whose images were in that batch, and only after each image
was retried on its own, so one poisoned image cannot take the requests batched with it down.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import inspect
import json
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from PIL import Image
from pydantic import BaseModel
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from imgcls import __version__
from imgcls.data.images import ImageLoadError, decode_image

if TYPE_CHECKING:
    from imgcls.predict import Classifier

__all__ = ["MicroBatcher", "ServeError", "create_app", "load_classifier", "serve"]

logger = logging.getLogger(__name__)

FILE_FIELDS = ("file", "files")
"""Multipart field names that carry images (repeatable)."""
DEFAULT_TOP_K = 5
MAX_FORM_FIELDS = 8  # only `top_k` is a text field; a few more are allowed so that the error can name them

PredictFn = Callable[[list[Image.Image], int], list[list[dict[str, Any]]]]


class ServeError(Exception):
    """A request that cannot be answered; becomes `{"error": message, "detail": detail}` with `status`."""

    def __init__(self, status: int, message: str, detail: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail
        self.headers = headers


# -- response schemas (for /docs; the handlers return plain dicts) ------------------------------------------------------
class Score(BaseModel):
    label: str
    score: float
    # Multi-label models only: whether the score reaches the label's threshold (the image has the label).
    positive: bool | None = None


class ImagePrediction(BaseModel):
    filename: str | None = None
    top: list[Score]


class ClassifyResponse(BaseModel):
    model: str
    predictions: list[ImagePrediction]


class LabelsResponse(BaseModel):
    labels: list[str]


class ErrorResponse(BaseModel):
    error: str
    detail: Any = None


_ERRORS = {
    400: "Malformed request: empty, wrong field name, bad base64 or JSON (the message says which)",
    401: "Missing or wrong `Authorization: Bearer KEY` (only when the server has an API key)",
    408: "The request body stalled (no data for the server's body timeout); the connection is closed",
    413: "Body over the size limit, too many images, or an image over the pixel limit",
    415: "Not an image (the message names the file), or an unsupported Content-Type",
    422: "Invalid parameter, e.g. top_k < 1",
    500: "The model failed on this image (internal; the server keeps running)",
}
_CLASSIFY_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "files": {
                        "type": "array",
                        "items": {"type": "string", "format": "binary"},
                        "description": "Images; the field may also be called `file` and be repeated.",
                    },
                    "top_k": {"type": "integer", "minimum": 1, "description": "Labels per image (default 5)."},
                },
            }
        },
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "images": {
                        "type": "array",
                        "items": {"type": "string", "contentEncoding": "base64"},
                        "description": "Base64 image files (a `data:image/...;base64,` prefix is allowed).",
                    },
                    "image": {"type": "string", "contentEncoding": "base64", "description": "One image."},
                    "top_k": {"type": "integer", "minimum": 1, "default": DEFAULT_TOP_K},
                },
            },
            "example": {"images": ["iVBORw0KGgo..."], "top_k": 3},
        },
        "image/*": {"schema": {"type": "string", "format": "binary"}},
    },
}


# -- micro-batching -----------------------------------------------------------------------------------------------------
@dataclass
class _Job:
    image: Image.Image
    top_k: int
    future: asyncio.Future[list[dict[str, Any]]]
    arrived: float = field(default_factory=time.monotonic)


class MicroBatcher:
    """One background worker that runs the model on batches gathered from concurrent requests.

    Args:
        predict: `predict(images, top_k)` → one top-k list per image, sorted by score; called from one thread only.
        max_batch_size: most images per forward pass.
        max_wait_ms: how long the oldest waiting image may wait for the batch to fill.
    """

    def __init__(self, predict: PredictFn, *, max_batch_size: int = 32, max_wait_ms: float = 5.0) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.stats: dict[str, int] = {"batches": 0, "images": 0, "largest_batch": 0, "failed_batches": 0}
        self._pending: deque[_Job] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def queued(self) -> int:
        return len(self._pending)

    async def start(self) -> None:
        """Start the worker on the running event loop (the app's lifespan calls this)."""
        # Created here, not in __init__: an app may be started more than once, each time on a new event loop.
        self._wake = asyncio.Event()
        # One thread: the model is only guaranteed safe from one thread, and a second would just fight for the cores.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imgcls-model")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="imgcls-batcher")

    async def stop(self) -> None:
        """Stop the worker; requests still waiting get a 503."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        while self._pending:
            job = self._pending.popleft()
            if not job.future.done():
                job.future.set_exception(ServeError(503, "the server is shutting down; retry on another instance"))
        if self._executor is not None:
            # A forward pass in flight finishes in its thread; nobody waits for it.
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def warm_up(self, image: Image.Image) -> None:
        """Run one forward pass in the model thread, so the first request does not pay for lazy initialisation."""
        await self._call_model([image], 1)

    async def submit(self, images: Sequence[Image.Image], top_k: int) -> list[list[dict[str, Any]]]:
        """Queue decoded images and wait for their top-k lists (raises `ServeError` if the model fails on one)."""
        if not self.running or self._wake is None:
            raise ServeError(503, "the model worker is not running; the server is starting or stopping")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in images]
        self._pending.extend(_Job(img, top_k, fut) for img, fut in zip(images, futures, strict=True))
        self._wake.set()
        return list(await asyncio.gather(*futures))

    async def _run(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                while not self._pending:
                    self._wake.clear()
                    await self._wake.wait()
                # Images that arrived during the last forward pass have already waited; only wait out the rest.
                deadline = loop.time() + max(0.0, self.max_wait - (time.monotonic() - self._pending[0].arrived))
                while len(self._pending) < self.max_batch_size:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    self._wake.clear()
                    try:
                        # Waiting on an event (not the queue) with a timeout can never lose a job.
                        await asyncio.wait_for(self._wake.wait(), remaining)
                    except asyncio.TimeoutError:
                        break
                batch: list[_Job] = []
                while self._pending and len(batch) < self.max_batch_size:
                    job = self._pending.popleft()
                    if not job.future.done():  # its request was cancelled (client gone): skip the work
                        batch.append(job)
                if batch:
                    await self._run_batch(batch)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not leave every later request hanging
                logger.exception("imgcls serve: the batching worker hit an error; it keeps running")

    async def _call_model(self, images: list[Image.Image], top_k: int) -> list[list[dict[str, Any]]]:
        assert self._executor is not None
        loop = asyncio.get_running_loop()
        tops = await loop.run_in_executor(self._executor, self.predict, images, top_k)
        if len(tops) != len(images):
            raise RuntimeError(f"the model returned {len(tops)} results for {len(images)} images")
        return tops

    async def _run_batch(self, batch: list[_Job]) -> None:
        # One forward pass at the largest top_k asked for; the lists are sorted, so each job keeps its prefix.
        top_k = max(job.top_k for job in batch)
        try:
            tops = await self._call_model([job.image for job in batch], top_k)
        except Exception as err:
            self.stats["failed_batches"] += 1
            if len(batch) > 1:
                logger.warning(
                    "imgcls serve: a batch of %d failed (%r); retrying its images one by one", len(batch), err
                )
                for job in batch:
                    await self._run_batch([job])
                return
            logger.error("imgcls serve: the model failed on an image", exc_info=err)
            if not batch[0].future.done():
                batch[0].future.set_exception(
                    ServeError(500, "the model failed on this image", f"{type(err).__name__}: {str(err)[:300]}")
                )
            return
        self.stats["batches"] += 1
        self.stats["images"] += len(batch)
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(batch))
        for job, top in zip(batch, tops, strict=True):
            if not job.future.done():
                job.future.set_result(top[: job.top_k])


# -- reading requests ---------------------------------------------------------------------------------------------------
@dataclass
class _Item:
    """One image of a request, before decoding."""

    field: str  # the form field (`file`) or JSON path (`images[2]`) it came in
    filename: str | None = None
    data: bytes | None = None
    b64: str | None = None

    @property
    def name(self) -> str:
        """How error messages refer to it: by filename where the client gave one."""
        return f"file {self.filename!r}" if self.filename else self.field


def _declared_length(request: Request, max_bytes: int) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        raise ServeError(400, f"invalid Content-Length header {value!r}") from None
    if length > max_bytes:
        # Refused before reading a byte; the client's own Content-Length says it is too big.
        raise ServeError(
            413,
            f"request body too large ({length:,} bytes); the limit is {max_bytes:,} bytes",
            {"limit_bytes": max_bytes, "content_length": length},
        )
    return length


async def _limited_stream(request: Request, max_bytes: int, timeout: float | None) -> AsyncIterator[bytes]:
    """The request body, raising 413 as soon as it passes `max_bytes`, whatever Content-Length claimed (or lacked),
    and 408 when no byte arrives for `timeout` seconds."""
    total = 0
    chunks = request.stream()
    while True:
        try:
            # uvicorn has no body timeout of its own: without this, a client that stops sending mid-body holds its
            # connection and this handler forever (found by benchmarks/soak.py).
            chunk = await asyncio.wait_for(anext(chunks), timeout)
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            raise ServeError(
                408,
                f"request body stalled: no data for {timeout:g} s after {total:,} bytes; send the whole body promptly",
                {"timeout_s": timeout, "received_bytes": total},
                # The rest of the body will never be read: the connection cannot carry another request.
                headers={"Connection": "close"},
            ) from None
        total += len(chunk)
        if total > max_bytes:
            raise ServeError(413, f"request body too large (over {max_bytes:,} bytes)", {"limit_bytes": max_bytes})
        yield chunk


async def _read_body(request: Request, max_bytes: int, timeout: float | None) -> bytes:
    return b"".join([chunk async for chunk in _limited_stream(request, max_bytes, timeout)])


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _check_top_k(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.strip().lstrip("+").isdigit():
            value = int(value)
        else:
            raise ServeError(422, f"{where} must be an integer >= 1, got {value!r}")
    if value < 1:
        raise ServeError(422, f"{where} must be an integer >= 1, got {value}")
    return value


async def _multipart_items(
    request: Request, max_bytes: int, timeout: float | None, max_images: int
) -> tuple[list[_Item], int | None]:
    parser = MultiPartParser(
        request.headers,
        _limited_stream(request, max_bytes, timeout),
        max_files=max_images,
        max_fields=MAX_FORM_FIELDS,
    )
    try:
        form = await parser.parse()
    except MultiPartException as err:
        if err.message.startswith("Too many files"):
            raise ServeError(413, f"too many images; at most {max_images} per request", {"limit": max_images}) from None
        raise ServeError(400, f"malformed multipart body: {err.message}") from None
    try:
        items: list[_Item] = []
        top_k: int | None = None
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if name not in FILE_FIELDS:
                    raise ServeError(
                        400,
                        f"unexpected file field {name!r}; send images in the form field 'file' or 'files' "
                        "(e.g. curl -F file=@cat.jpg)",
                        {"field": name, "expected": list(FILE_FIELDS)},
                    )
                where = f"field {name!r} (image {len(items) + 1})"
                items.append(_Item(field=where, filename=value.filename or None, data=await value.read()))
            elif name == "top_k":
                top_k = _check_top_k(value, "form field 'top_k'")
            elif name in FILE_FIELDS:
                raise ServeError(
                    400,
                    f"form field {name!r} holds text, not a file; upload the image as a file (curl -F {name}=@cat.jpg)",
                    {"field": name},
                )
            else:
                raise ServeError(
                    400,
                    f"unexpected form field {name!r}; the fields are 'file' or 'files' (images) and 'top_k'",
                    {"field": name, "expected": [*FILE_FIELDS, "top_k"]},
                )
    finally:
        await form.close()
    return items, top_k


def _json_items(body: bytes) -> tuple[list[_Item], int | None]:
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ServeError(400, f"invalid JSON body: {err}") from None
    example = '{"images": ["<base64>", ...], "top_k": 5}'
    if not isinstance(payload, dict):
        raise ServeError(400, f"the JSON body must be an object like {example}, got {type(payload).__name__}")
    unknown = sorted(set(payload) - {"images", "image", "top_k"})
    if unknown:
        raise ServeError(
            400, f'unknown JSON field(s) {unknown}; expected {example} or {{"image": "<base64>"}}', {"unknown": unknown}
        )
    if "images" in payload and "image" in payload:
        raise ServeError(400, "send either 'images' (a list) or 'image' (one base64 string), not both")
    if "images" in payload:
        images = payload["images"]
        if not isinstance(images, list):
            raise ServeError(400, f"'images' must be a list of base64 strings, got {type(images).__name__}")
        names = [f"images[{i}]" for i in range(len(images))]
    elif "image" in payload:
        images, names = [payload["image"]], ["image"]
    else:
        raise ServeError(400, f"no images in the JSON body; expected {example}")
    for value, name in zip(images, names, strict=True):
        if not isinstance(value, str):
            raise ServeError(400, f"{name} must be a base64 string, got {type(value).__name__}", {"field": name})
    top_k = _check_top_k(payload["top_k"], "JSON field 'top_k'") if payload.get("top_k") is not None else None
    return [_Item(field=name, b64=value) for value, name in zip(images, names, strict=True)], top_k


def _b64decode(text: str, name: str) -> bytes:
    if text.startswith("data:"):  # a data URL, as a browser's FileReader gives it
        header, sep, text = text.partition(",")
        if not sep or not header.endswith(";base64"):
            raise ServeError(400, f"{name}: a data URL must be base64 (data:image/png;base64,...)", {"field": name})
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        pass
    try:
        # Line-wrapped base64 (MIME, `base64` without -w0) is common; strip the whitespace and try once more.
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as err:
        raise ServeError(400, f"{name}: not valid base64 ({err})", {"field": name}) from None


def _decode_item(item: _Item) -> Image.Image:
    """Bytes or base64 → RGB image; runs in the decode pool."""
    data = item.data if item.data is not None else _b64decode(item.b64 or "", item.name)
    item.data = item.b64 = None  # the pixels are all we keep
    detail = {"field": item.field, "filename": item.filename} if item.filename else {"field": item.field}
    if not data:
        raise ServeError(400, f"{item.name} is empty (0 bytes)", detail)
    try:
        return decode_image(data, item.name)
    except ImageLoadError as err:
        if err.kind == "too_large":
            raise ServeError(413, f"{item.name}: image too large to decode ({err.reason})", detail) from None
        raise ServeError(415, f"{item.name}: {err.reason}", detail) from None


# -- the app ------------------------------------------------------------------------------------------------------------
def _model_name(clf: Classifier) -> str:
    config = getattr(getattr(clf, "package", None), "config", None) or {}
    return str(config.get("architecture", "unknown"))


def _error_response(
    status: int, message: str, detail: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": message, "detail": jsonable_encoder(detail)}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    async def on_serve_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServeError)
        return _error_response(exc.status, exc.message, exc.detail, headers=exc.headers)

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return _error_response(exc.status_code, str(exc.detail), None, headers=exc.headers)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = list(exc.errors())
        first = errors[0] if errors else {}
        loc = [str(part) for part in first.get("loc", ())]
        where = f"{loc[0]} parameter {loc[-1]!r}" if len(loc) >= 2 else "request"
        message = f"invalid {where}: {first.get('msg', 'invalid value')}"
        return _error_response(422, message, errors)

    async def on_client_gone(request: Request, exc: Exception) -> JSONResponse:
        # The client closed the connection mid-body: nobody will read an answer, and it is no server error. Without
        # this handler each one logged two tracebacks and counted as a 500 (found by benchmarks/soak.py).
        logger.debug("imgcls serve: client disconnected during %s %s", request.method, request.url.path)
        return _error_response(400, "the client closed the connection before sending the whole body")

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("imgcls serve: unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error_response(500, "internal server error", type(exc).__name__)

    app.add_exception_handler(ServeError, on_serve_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(ClientDisconnect, on_client_gone)
    app.add_exception_handler(Exception, on_unexpected)


# Module level: FastAPI resolves the (string, see `from __future__`) annotations below in the module's namespace.
_BEARER = HTTPBearer(auto_error=False, description="The key the server was started with (`--api-key`).")


def _check_api_key(given: bytes, expected: bytes) -> None:
    """Raise the 401 unless `given` (the bearer token's bytes) is the key; compared in constant time."""
    if not given or not hmac.compare_digest(given, expected):
        raise ServeError(
            401,
            "missing or wrong API key; send the header 'Authorization: Bearer <key>'"
            if given
            else "this server needs an API key; send the header 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )


def _api_key_dependency(api_key: str) -> Callable[..., Any]:
    expected = api_key.encode("utf-8")

    async def require_api_key(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]) -> None:
        # Header values arrive latin-1 decoded; encoding back gives the bytes the client sent, so that a non-ASCII
        # key compares bytes with bytes (compare_digest refuses non-ASCII str) and in constant time.
        given = credentials.credentials.encode("latin-1") if credentials is not None else b""
        _check_api_key(given, expected)

    return require_api_key


class _RequireApiKey:
    """ASGI middleware: with an API key, every path but `/healthz` needs it (docs, schema and unknown paths too).

    The `/v1` routes also declare the key as a dependency, which is what puts it in the OpenAPI schema; this
    guard covers the routes FastAPI adds itself and answers before a body is read.
    """

    def __init__(self, app: Any, api_key: str) -> None:
        self.app = app
        self.expected = api_key.encode("utf-8")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") == "/healthz":
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        try:
            _check_api_key(token.strip() if scheme.lower() == b"bearer" else b"", self.expected)
        except ServeError as err:
            response = _error_response(err.status, err.message, None, headers=err.headers)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def create_app(
    clf: Classifier,
    *,
    max_batch_size: int = 32,
    max_wait_ms: float = 5.0,
    max_bytes: int = 10 * 2**20,
    max_images_per_request: int = 64,
    api_key: str | None = None,
    body_timeout: float | None = 30.0,
) -> FastAPI:
    """Build the FastAPI app over a loaded classifier (start it with uvicorn, or use `serve`).

    Args:
        clf: the classifier; only `predict_images`, `labels`, `task`, `data_config` and `package.config` are used.
        max_batch_size: most images per forward pass.
        max_wait_ms: how long the first image of a batch may wait for more to arrive. Higher gives bigger batches
            under moderate load at the cost of latency when idle.
        max_bytes: largest request body accepted, all images and encoding overhead together (base64 adds a third).
        max_images_per_request: most images in one request.
        api_key: when set, every path but `/healthz` (the `/v1` routes, `/docs`, `/openapi.json`) needs
            `Authorization: Bearer <api_key>`.
        body_timeout: seconds a request body may go without a byte before the request gets a 408 and its
            connection is closed (None: wait forever). A slow client that keeps sending is never cut off.

    Returns:
        The app. `app.state.stats` counts batches and images (live); `app.state.batcher` is the `MicroBatcher`.
    """
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
    if max_images_per_request < 1:
        raise ValueError(f"max_images_per_request must be >= 1, got {max_images_per_request}")
    if api_key is not None and not api_key:
        raise ValueError("api_key is empty; pass None for no key")
    if body_timeout is not None and not body_timeout > 0:
        raise ValueError(f"body_timeout must be > 0 seconds (or None), got {body_timeout}")

    model_name = _model_name(clf)
    labels = list(clf.labels)
    batcher = MicroBatcher(
        lambda images, top_k: clf.predict_images(images, top_k=top_k),
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
    )
    # Decoding releases the GIL inside Pillow, so a few threads use the cores the model thread leaves idle.
    decode_threads = min(8, os.cpu_count() or 2)
    state: dict[str, ThreadPoolExecutor] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state["decode"] = ThreadPoolExecutor(max_workers=decode_threads, thread_name_prefix="imgcls-decode")
        await batcher.start()
        try:
            size = getattr(clf, "data_config", {}).get("input_size", (3, 32, 32))
            await batcher.warm_up(Image.new("RGB", (int(size[-1]), int(size[-2]))))
            yield
        finally:
            await batcher.stop()
            state.pop("decode").shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="imgcls",
        version=__version__,
        summary=f"Image classification with {model_name} ({len(labels)} labels)",
        lifespan=lifespan,
        responses={code: {"model": ErrorResponse, "description": text} for code, text in _ERRORS.items()},
    )
    app.state.batcher = batcher
    app.state.stats = batcher.stats
    _install_error_handlers(app)
    v1_dependencies = [Depends(_api_key_dependency(api_key))] if api_key else []
    if api_key:
        app.add_middleware(_RequireApiKey, api_key=api_key)

    @app.post(
        "/v1/classify",
        response_model=ClassifyResponse,
        response_model_exclude_none=True,
        dependencies=v1_dependencies,
        openapi_extra={"requestBody": _CLASSIFY_BODY},
        summary="Classify one or more images",
    )
    async def classify(
        request: Request,
        top_k: Annotated[
            int | None, Query(ge=1, description="Labels per image (default 5; a JSON or form `top_k` wins).")
        ] = None,
    ) -> dict[str, Any]:
        """Top-k labels for each image: multipart files (field `file` or `files`, repeatable), JSON with base64
        `images` (or one `image`), or a raw image body (`Content-Type: image/...`)."""
        length = _declared_length(request, max_bytes)
        chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
        if length == 0 or (length is None and not chunked):
            raise ServeError(400, "empty request body; send images as multipart files (field 'file') or JSON base64")
        media_type = _media_type(request)
        loop = asyncio.get_running_loop()
        if media_type == "multipart/form-data":
            items, body_top_k = await _multipart_items(request, max_bytes, body_timeout, max_images_per_request)
        elif media_type == "application/json" or media_type.endswith("+json"):
            body = await _read_body(request, max_bytes, body_timeout)
            # A 10 MiB JSON body takes tens of milliseconds to parse: not on the event loop.
            items, body_top_k = await loop.run_in_executor(state["decode"], _json_items, body)
        elif media_type == "application/x-www-form-urlencoded":
            # What a form (or curl -d) sends when it has no file input: it cannot carry images.
            raise ServeError(
                400,
                "no images: a url-encoded form cannot carry files; send multipart/form-data with the image in the "
                "field 'file' (curl -F file=@cat.jpg)",
            )
        elif media_type.startswith("image/") or media_type == "application/octet-stream":
            body = await _read_body(request, max_bytes, body_timeout)
            items, body_top_k = [_Item(field="request body", data=body)], None
        else:
            raise ServeError(
                415,
                f"unsupported Content-Type {media_type or '(none)'!r}; send multipart/form-data (field 'file'), "
                "application/json ({'images': [base64, ...]}) or an image/* body",
                {"content_type": media_type or None},
            )
        if not items:
            raise ServeError(400, "no images in the request; send them in the form field 'file' or 'files'")
        if len(items) > max_images_per_request:
            raise ServeError(
                413,
                f"too many images ({len(items)}); at most {max_images_per_request} per request",
                {"limit": max_images_per_request},
            )
        k = body_top_k or top_k or DEFAULT_TOP_K
        images = await asyncio.gather(*(loop.run_in_executor(state["decode"], _decode_item, item) for item in items))
        tops = await batcher.submit(images, k)
        return {
            "model": model_name,
            "predictions": [
                {"filename": item.filename, "top": top} if item.filename else {"top": top}
                for item, top in zip(items, tops, strict=True)
            ],
        }

    @app.get("/v1/labels", response_model=LabelsResponse, dependencies=v1_dependencies, summary="The class names")
    async def get_labels() -> dict[str, Any]:
        """The labels the model predicts, in classifier-index order."""
        return {"labels": labels}

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> JSONResponse:
        """`ok` while the model worker runs (503 otherwise); needs no API key."""
        body = {
            "status": "ok" if batcher.running else "unavailable",
            "model": model_name,
            "task": getattr(clf, "task", None),
            "labels": len(labels),
            "queued": batcher.queued,
        }
        return JSONResponse(body, status_code=200 if batcher.running else 503)

    return app


# -- the verb -----------------------------------------------------------------------------------------------------------
def load_classifier(model: str | Path, backend: str = "auto") -> Classifier:
    """`Classifier.load(model, backend=backend)`, on versions of `Classifier.load` with or without `backend`."""
    from imgcls.predict import Classifier

    if "backend" in inspect.signature(Classifier.load).parameters:
        return Classifier.load(model, backend=backend)
    if backend not in ("auto", "torch"):
        raise ValueError(f"backend {backend!r} is not available in this version of imgcls; use 'torch'")
    return Classifier.load(model)


def _url(host: str, port: int) -> str:
    # A wildcard bind is reachable on localhost; an IPv6 literal needs brackets in a URL.
    shown = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}.get(host, f"[{host}]" if ":" in host else host)
    return f"http://{shown}:{port}"


def serve(
    model: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    backend: str = "auto",
    max_batch_size: int = 32,
    max_wait_ms: float = 5.0,
    max_bytes: int = 10 * 2**20,
    max_images_per_request: int = 64,
    api_key: str | None = None,
    body_timeout: float | None = 30.0,
    log_level: str = "info",
) -> None:
    """Serve a model package over HTTP until interrupted (one process; Ctrl+C stops it cleanly).

    Args:
        model: the model package folder (e.g. `runs/NAME/model`).
        host: interface to bind; the default answers only this machine. `0.0.0.0` opens it to the network.
        port: TCP port; 0 picks a free one (the printed URL shows which).
        backend: `torch`, `onnx` or `auto`, passed to `Classifier.load`.
        max_batch_size: most images per forward pass.
        max_wait_ms: how long the first image of a batch may wait for more.
        max_bytes: largest request body accepted.
        max_images_per_request: most images in one request.
        api_key: require `Authorization: Bearer <api_key>` on `/v1` routes. It is never printed or logged.
        body_timeout: seconds a request body may stall (no byte arriving) before the request gets a 408.
        log_level: uvicorn's log level (`info` logs one line per request; `warning` only problems).
    """
    import uvicorn

    clf = load_classifier(model, backend)
    app = create_app(
        clf,
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        max_bytes=max_bytes,
        max_images_per_request=max_images_per_request,
        api_key=api_key,
        body_timeout=body_timeout,
    )
    name, n_labels = _model_name(clf), len(clf.labels)
    auth = "API key required on /v1" if api_key else "no API key"

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[Any] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and self.servers:
                # Printed after binding, so that port 0 shows the port the system picked.
                bound = self.servers[0].sockets[0].getsockname()[1]
                url = _url(host, bound)
                print(f"imgcls serve: {name} ({n_labels} labels) at {url}/v1/classify ({auth})", flush=True)
                print(f"imgcls serve: API docs at {url}/docs", flush=True)

    try:
        Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, workers=1)).run()
    except KeyboardInterrupt:
        # uvicorn shuts down gracefully on Ctrl+C, then raises the signal again for embedders; for us it is the end.
        print("imgcls serve: stopped", flush=True)
