"""The HTTP server: FastAPI over one or more trained runs, with micro-batching, input limits and an optional API key.

Endpoints: ``GET /health``, ``GET /models``, ``GET /models/{name}``, ``POST /models/{name}/predict``,
``POST /models/{name}/explain``, the web page at ``/`` and OpenAPI at ``/docs``. Every error is JSON
``{"error": message}`` with a 4xx status for anything the client can fix; a stack trace never reaches the client.
Inputs are validated (``serve.inputs``) before they reach a model, so one bad request cannot fail a whole batch.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelforge.core.errors import ArtifactError, ConfigError, ModelforgeError
from modelforge.explain.predictor import ExplainingPredictor
from modelforge.serve.batching import BatchSettings, MicroBatcher, QueueFullError
from modelforge.serve.inputs import ClientError, ServeSettings, read_inputs, validate_item

__all__ = ["ClientError", "ServeSettings", "ServedModel", "create_app", "serve", "validate_item"]

log = logging.getLogger("modelforge.serve")
STATIC = Path(__file__).parent / "static"


class PredictRequest(BaseModel):
    """JSON body of predict/explain (the OpenAPI schema; the body is parsed by hand to accept multipart too)."""

    inputs: list[str | int] = Field(description="base64 image, WAV or video bytes (a data: URL prefix is allowed), "
                                                "text, or integer seeds (image generators)")


@dataclass
class ServedModel:
    name: str
    predictor: ExplainingPredictor
    batcher: MicroBatcher
    options: dict[str, Any] = field(default_factory=dict)  # the per-call options its batcher predicts with

    @property
    def kind(self) -> str | None:
        return self.predictor.task.input_kind

    @property
    def generates(self) -> bool:
        """A text generator (declares "generate"; its ``sampling()`` gives the settings): its inputs are prompts,
        each costing a forward pass per new token."""
        return "generate" in self.predictor.task.capabilities

    @property
    def explainable(self) -> bool:
        """The predictor has ``explain`` and (when it says so) supports this task."""
        return callable(getattr(self.predictor, "explain", None)) and getattr(self.predictor, "can_explain", True)

    @property
    def input_spec(self) -> dict[str, Any]:
        return self.predictor.task.input_spec()

    def describe(self) -> dict[str, Any]:
        task, settings = self.predictor.task, self.batcher.settings
        spec = self.input_spec
        return {
            "name": self.name,
            "task": self.predictor.recipe.task,
            "recipe": self.predictor.recipe.name,
            "model": self.predictor.recipe.model.name,
            "labels": task.state().get("labels"),
            "input": spec,
            "explain": self.explainable,
            **({"generation": asdict(task.sampling(**self.options))} if self.generates else {}),
            "batching": {"max_batch_size": settings.max_batch_size, "max_wait_ms": settings.max_wait_ms,
                         "queue_size": settings.queue_size, **self.batcher.stats.as_dict()},
        }


# ---- loading ----------------------------------------------------------------------------------------------------
def _name_of(path: Path) -> str:
    path = path.resolve()
    return path.parent.name if path.name == "model" and (path / "config.json").exists() else path.name


def load_models(runs: Sequence[str | Path], settings: BatchSettings,
                max_new_tokens: int | None = None, quantized: bool = False) -> dict[str, ServedModel]:
    """Load each run as ``NAME=RUN`` or ``RUN`` (named after its directory); names must be unique. A text
    generator predicts with at most ``max_new_tokens`` new tokens per prompt, whatever its recipe's serve: asks;
    ``quantized``: the int8 models measured by ``modelforge quantize``."""
    models: dict[str, ServedModel] = {}
    for spec in runs:
        text = str(spec)
        name, _, path = text.partition("=") if "=" in text and not Path(text).exists() else ("", "", text)
        predictor = ExplainingPredictor(Path(path), quantized=quantized)
        name = name or _name_of(Path(path))
        if name in models:
            raise ConfigError(f"two runs are both named {name!r}; name them apart with NAME=RUN")
        if predictor.task.input_kind is None:
            raise ArtifactError(f"{path}: task {predictor.recipe.task!r} has no input_kind: it cannot be served")
        generates = "generate" in predictor.task.capabilities and max_new_tokens is not None
        options = {"max_new_tokens_cap": max_new_tokens} if generates else {}
        batcher = MicroBatcher(functools.partial(predictor.predict, **options), settings, name)
        models[name] = ServedModel(name, predictor, batcher, options)
    if not models:
        raise ConfigError("give at least one run directory to serve")
    return models


# ---- request body limit -------------------------------------------------------------------------------------------
class BodyLimitMiddleware:
    """Refuses bodies over ``max_bytes`` with 413 before the app reads them: by Content-Length when declared,
    otherwise while reading (chunked uploads). The body is buffered (it is small by construction) and replayed."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"request body is over the {self.max_bytes} byte limit"
        await JSONResponse({"error": message}, status_code=413, headers={"Connection": "close"})(scope, receive, send)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _api_key_check(expected: str | None):
    """A dependency: ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``, compared in constant time."""

    async def check(request: Request) -> None:
        if expected is None:
            return
        given = request.headers.get("x-api-key", "")
        auth = request.headers.get("authorization", "")
        if not given and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise ClientError(401, "missing or invalid API key (send Authorization: Bearer KEY or X-API-Key: KEY)",
                              {"WWW-Authenticate": "Bearer"})

    return check


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ClientError)
    async def client_error(request: Request, exc: ClientError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        return _error(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _error(500, "internal server error (see the server log)")


async def _run_model(model: ServedModel, items: list[Any]) -> list[Any]:
    """Batched inference, with the model's failures mapped to client errors where the input is to blame."""
    try:
        return await model.batcher.submit(items)
    except QueueFullError as exc:
        raise ClientError(503, str(exc), {"Retry-After": str(exc.retry_after)}) from None
    except ModelforgeError as exc:
        raise ClientError(422, str(exc).splitlines()[0]) from None
    except (ValueError, TypeError, OSError) as exc:  # a well-formed file the task still cannot use
        log.warning("model %s rejected an input: %r", model.name, exc)
        raise ClientError(422, f"the model could not process this input ({exc.__class__.__name__})") from None


def _jsonable(obj: Any) -> Any:
    """Explanations may hold arrays or tensors: make them plain lists."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def _openapi_body() -> dict[str, Any]:
    upload = {"type": "object", "properties": {
        "file": {"type": "array", "items": {"type": "string", "format": "binary"},
                 "description": "image/WAV/video files"},
        "text": {"type": "array", "items": {"type": "string"}, "description": "texts (text models)"},
        "seed": {"type": "array", "items": {"type": "integer"}, "description": "seeds (image generators)"},
    }}
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": PredictRequest.model_json_schema()},
        "multipart/form-data": {"schema": upload},
    }}}


def create_app(runs: Sequence[str | Path] | dict[str, ServedModel], settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI app over run directories (or already loaded models); ``serve`` runs it with uvicorn."""
    settings = settings or ServeSettings()
    models = runs if isinstance(runs, dict) else load_models(runs, settings.batch, settings.max_new_tokens,
                                                             settings.quantized)
    _check_generation(models)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for model in models.values():
            model.batcher.start()
        yield
        for model in models.values():
            await model.batcher.stop()

    app = FastAPI(title="modelforge", version="0.1.0", lifespan=lifespan,
                  description="Predictions from trained modelforge runs. Errors are JSON: {\"error\": message}.")
    app.state.models, app.state.settings = models, settings
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    _install_error_handlers(app)
    _add_routes(app, models, settings)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _check_generation(models: dict[str, ServedModel]) -> None:
    """Check each generator's ``serve:`` settings now rather than on every request (a bad recipe key fails at
    start-up with one line)."""
    for model in models.values():
        if model.generates:
            model.predictor.task.sampling(**model.options)


def _add_routes(app: FastAPI, models: dict[str, ServedModel], settings: ServeSettings) -> None:
    auth = [Depends(_api_key_check(settings.api_key))]

    def get_model(name: str) -> ServedModel:
        if name not in models:
            raise ClientError(404, f"unknown model {name!r}; available: {', '.join(models)}")
        return models[name]

    @app.get("/health", summary="Liveness: the server is up and its models are loaded")
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok", "models": len(models)})

    @app.get("/models", dependencies=auth, summary="The served models: task, labels, input spec, batching")
    async def list_models() -> JSONResponse:
        return JSONResponse({"models": [model.describe() for model in models.values()]})

    @app.get("/models/{name}", dependencies=auth, summary="One served model")
    async def show_model(name: str) -> JSONResponse:
        return JSONResponse(get_model(name).describe())

    @app.post("/models/{name}/predict", dependencies=auth, openapi_extra=_openapi_body(),
              summary="Predict: JSON {\"inputs\": [...]} or a multipart upload; requests are micro-batched")
    async def predict(name: str, request: Request) -> JSONResponse:
        model = get_model(name)
        items = await read_inputs(request, model, settings)
        return JSONResponse({"model": name, "predictions": await _run_model(model, items)})

    @app.post("/models/{name}/explain", dependencies=auth, openapi_extra=_openapi_body(),
              summary="Explain predictions (?method=…&target=LABEL; tasks without explanations answer 501)")
    async def explain(name: str, request: Request) -> JSONResponse:
        model = get_model(name)
        if not model.explainable:
            raise ClientError(501, f"model {name!r} (task {model.predictor.recipe.task}) does not support "
                                   "explanations")
        # ?method=integrated_gradients|saliency|occlusion|gradient_shap&target=LABEL (both optional)
        options = {key: value for key, value in request.query_params.items() if key in ("method", "target")}
        items = await read_inputs(request, model, settings)
        try:
            result = await model.batcher.run_exclusive(lambda: model.predictor.explain(items, **options))
        except ModelforgeError as exc:
            raise ClientError(422, str(exc).splitlines()[0]) from None
        return JSONResponse({"model": name, "explanations": _jsonable(result)})


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def serve(runs: Sequence[str | Path], host: str = "127.0.0.1", port: int = 8000,
          settings: ServeSettings | None = None, log_level: str = "info") -> None:
    """Load the runs and serve them with uvicorn until interrupted."""
    import uvicorn

    settings = settings or ServeSettings()
    app = create_app(runs, settings)
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s: %(message)s")
    if host not in LOOPBACK and settings.api_key is None:
        log.warning("serving on %s without an API key: anyone who can reach this address can use the models", host)
    names = ", ".join(app.state.models)
    log.info("serving %s on http://%s:%d (web page at /, API docs at /docs)", names, host, port)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=True)
