"""The HTTP server: FastAPI over one or more trained runs, with micro-batching, input limits and an optional API key.

Endpoints: ``GET /health``, ``GET /models``, ``GET /models/{name}``, ``POST /models/{name}/predict``,
``POST /models/{name}/explain``, the web page at ``/`` and OpenAPI at ``/docs``. Every error is JSON
``{"error": message}`` with a 4xx status for anything the client can fix; a stack trace never reaches the client.
Inputs are validated (``serve.inputs``) before they reach a model, so one bad request cannot fail a whole batch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelforge.core.errors import ArtifactError, ConfigError
from modelforge.explain.predictor import ExplainingPredictor
from modelforge.serve.batching import BatchSettings, MicroBatcher
from modelforge.serve.deadline import ClientGone, for_client
from modelforge.serve.errors import ClientError, model_failure
from modelforge.serve.fastpath import PredictFastPath
from modelforge.serve.guards import LOOPBACK_NAMES, ApiKeyGuard, BodyLimit, HostGuard, allowed_hosts_for, error_response
from modelforge.serve.inputs import ServeSettings, explain_options, predict_options, read_inputs, validate_item
from modelforge.serve.openapi import errors, install_security, request_body
from modelforge.serve.runtime import batch_runner
from modelforge.serve.server import ServerSettings, run_server

__all__ = ["ClientError", "ServeSettings", "ServedModel", "create_app", "serve", "validate_item"]

log = logging.getLogger("modelforge.serve")
STATIC = Path(__file__).parent / "static"
T = TypeVar("T")


@dataclass
class ServedModel:
    name: str
    predictor: ExplainingPredictor
    batcher: MicroBatcher
    options: dict[str, Any] = field(default_factory=dict)  # the per-call options its batcher predicts with
    runtime: str = "torch"  # what runs its batched forward pass (``serve.runtime``)

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
            "runtime": self.runtime,
            "batching": {"max_batch_size": settings.max_batch_size, "max_wait_ms": settings.max_wait_ms,
                         "window": settings.window, "queue_size": settings.queue_size,
                         **self.batcher.stats.as_dict()},
        }


# ---- loading ----------------------------------------------------------------------------------------------------
def _name_of(path: Path) -> str:
    path = path.resolve()
    return path.parent.name if path.name == "model" and (path / "config.json").exists() else path.name


def load_models(runs: Sequence[str | Path], settings: BatchSettings, max_new_tokens: int | None = None,
                quantized: bool = False, runtime: str = "auto") -> dict[str, ServedModel]:
    """Load each run as ``NAME=RUN`` or ``RUN`` (named after its directory); names must be unique. A text
    generator predicts with at most ``max_new_tokens`` new tokens per prompt, whatever its recipe's serve: asks;
    ``quantized``: the int8 models measured by ``modelforge quantize``; ``runtime``: see ``serve.runtime``."""
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
        run_batch, runtime_name = batch_runner(predictor, options, runtime, quantized)
        models[name] = ServedModel(name, predictor, MicroBatcher(run_batch, settings, name), options, runtime_name)
    if not models:
        raise ConfigError("give at least one run directory to serve")
    return models


def error_answer(exc: Exception, request: Request | None = None) -> JSONResponse:
    """The JSON answer for an exception a request raised: the client's (4xx, its message), or a 500 whose details
    go to the server log only. The exception handlers and the predict fast path both answer through it."""
    if isinstance(exc, ClientError):
        return error_response(exc.status, exc.message, exc.headers)
    if isinstance(exc, StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        return error_response(exc.status_code, message[:200], getattr(exc, "headers", None))
    if isinstance(exc, RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(422, f"{where}: {first.get('msg', 'invalid request')}"[:200])
    if isinstance(exc, ClientGone):
        return error_response(499, "the client disconnected before the answer was ready")  # nobody reads it
    where = f"{request.method} {request.url.path[:200]}" if request is not None else "a request"
    log.error("internal error on %s", where, exc_info=exc)
    return error_response(500, "internal server error (see the server log)")


def _install_error_handlers(app: FastAPI) -> None:
    async def answer(request: Request, exc: Exception) -> JSONResponse:
        return error_answer(exc, request)

    for kind in (ClientError, StarletteHTTPException, RequestValidationError, ClientGone, Exception):
        app.add_exception_handler(kind, answer)


async def _run_model(model: ServedModel, request: Request, work: Awaitable[T], timeout: float | None) -> T:
    """A predict or explain call for this client, with its failures mapped to client errors where the input is to
    blame (the same mapping for both: ``serve.errors.model_failure``)."""
    try:
        return await for_client(request, work, timeout)
    except (ClientError, ClientGone):
        raise
    except Exception as exc:
        mapped = model_failure(exc, model.name)
        if mapped is None:
            raise
        raise mapped from None


def _jsonable(obj: Any) -> Any:
    """Explanations may hold arrays or tensors: make them plain lists."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def create_app(runs: Sequence[str | Path] | dict[str, ServedModel], settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI app over run directories (or already loaded models); ``serve`` runs it with uvicorn."""
    settings = settings or ServeSettings()
    models = runs if isinstance(runs, dict) else load_models(runs, settings.batch, settings.max_new_tokens,
                                                             settings.quantized, settings.runtime)
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
    # Added innermost first: a request meets the Host check, then the key, then the body limit, then predict's fast
    # path (``app.state.predict`` is set by ``_add_routes`` below, before the first request).
    app.add_middleware(PredictFastPath, handle=lambda name, request: app.state.predict(name, request),
                       on_error=error_answer)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if settings.api_key is not None:
        app.add_middleware(ApiKeyGuard, key=settings.api_key)
    if settings.allowed_hosts is not None:
        app.add_middleware(HostGuard, allowed=settings.allowed_hosts)
    install_security(app, settings.api_key is not None)
    _install_error_handlers(app)
    _add_routes(app, models, settings)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
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
    def get_model(name: str) -> ServedModel:
        if name not in models:
            raise ClientError(404, f"unknown model {name[:60]!r}; available: {', '.join(models)}")
        return models[name]

    @app.get("/health", responses=errors(), summary="Liveness: the server is up and its models are loaded")
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok", "models": len(models)})

    @app.get("/models", responses=errors(401), summary="The served models: task, labels, input spec, batching")
    async def list_models() -> JSONResponse:
        return JSONResponse({"models": [model.describe() for model in models.values()]})

    # HEAD answers as GET without the body (uvicorn drops it); kept out of the schema, whose operation ids are unique.
    app.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False)
    app.add_api_route("/models", list_models, methods=["HEAD"], include_in_schema=False)

    @app.get("/models/{name}", responses=errors(401, 404), summary="One served model")
    async def show_model(name: str) -> JSONResponse:
        return JSONResponse(get_model(name).describe())

    async def predict(name: str, request: Request) -> JSONResponse:
        model = get_model(name)
        # per-call options from the query string, as the task declares them (zero-shot labels, a text query …)
        options = predict_options(request.query_params, model.predictor.task.query_options, settings)
        items = await read_inputs(request, model, settings)
        if options:  # these inputs are compared with one another or with the options: never merged into a batch
            work = model.batcher.run_exclusive(lambda: model.predictor.predict(items, **{**model.options, **options}))
        else:
            work = model.batcher.submit(items)
        predictions = await _run_model(model, request, work, settings.request_timeout)
        return JSONResponse({"model": name, "predictions": predictions})

    # The route documents predict in the OpenAPI schema; ``serve.fastpath`` answers predict requests with this same
    # handler before FastAPI's router (whose per-request matching and parameter solving cost more than the model).
    app.post("/models/{name}/predict", openapi_extra=request_body(),
             responses=errors(401, 404, 413, 415, 422, 503, 504),
             summary="Predict: JSON {\"inputs\": [...]}, a multipart upload or one raw file (image/png, image/jpeg, "
                     "audio/wav, application/octet-stream); requests are micro-batched (query options the model "
                     "declares, e.g. ?labels=…&labels=… or ?query=…, run alone)")(predict)
    app.state.predict = predict

    @app.post("/models/{name}/explain", openapi_extra=request_body(),
              responses=errors(401, 404, 413, 415, 422, 501, 503, 504),
              summary="Explain predictions (?method=…&target=LABEL&steps=N; tasks without explanations answer 501)")
    async def explain(name: str, request: Request) -> JSONResponse:
        model = get_model(name)
        if not model.explainable:
            raise ClientError(501, f"model {name!r} (task {model.predictor.recipe.task}) does not support "
                                   "explanations")
        # ?method=integrated_gradients|saliency|occlusion|gradient_shap&target=LABEL&steps=N (all optional)
        options = explain_options(request.query_params)
        items = await read_inputs(request, model, settings)
        work = model.batcher.run_exclusive(lambda: model.predictor.explain(items, **options))
        result = await _run_model(model, request, work, settings.request_timeout)
        return JSONResponse({"model": name, "explanations": _jsonable(result)})


def serve(runs: Sequence[str | Path], host: str = "127.0.0.1", port: int = 8000,
          settings: ServeSettings | None = None, log_level: str = "info", server: ServerSettings | None = None,
          allowed_hosts: Sequence[str] = (), workers: int = 1, reuse_port: bool = False) -> int:
    """Load the runs and serve them with uvicorn until SIGTERM/SIGINT; returns the exit status. Without an API key
    the server answers only to ``Host`` names of its own address (or ``allowed_hosts``): a web page elsewhere
    cannot reach a loopback server through DNS rebinding. ``workers`` > 1: that many server processes on the port
    (``serve.workers``; the runs are loaded here once first, so that a bad run fails before any worker starts);
    ``reuse_port``: listen on a ``SO_REUSEPORT`` socket (what each of those workers does)."""
    settings = settings or ServeSettings()
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s: %(message)s")
    if workers > 1:
        from modelforge.serve.workers import serve_workers

        load_models(runs, settings.batch, settings.max_new_tokens, settings.quantized, settings.runtime)
        log.info("starting %d worker processes on http://%s:%d", workers, host, port)
        return serve_workers(serve, workers, runs, host, port, settings, log_level, server or ServerSettings(),
                             allowed_hosts)
    if settings.api_key is None and settings.allowed_hosts is None:
        settings = replace(settings, allowed_hosts=allowed_hosts_for(host, allowed_hosts))
    app = create_app(runs, settings)
    if host not in LOOPBACK_NAMES and settings.api_key is None:
        log.warning("serving on %s without an API key: anyone who can reach this address can use the models", host)
    names = ", ".join(app.state.models)
    log.info("serving %s on http://%s:%d (web page at /, API docs at /docs)", names, host, port)
    if reuse_port:
        from modelforge.serve.workers import reuse_port_socket

        run_server(app, host, port, server or ServerSettings(), log_level, sock=reuse_port_socket(host, port))
    else:
        run_server(app, host, port, server or ServerSettings(), log_level)
    return 0
