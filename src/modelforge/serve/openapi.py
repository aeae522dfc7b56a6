"""The OpenAPI document's hand-written parts: the predict/explain body (JSON or multipart, parsed by hand), the
JSON error answers each route can give, and the API-key security schemes (so ``/docs`` "Try it out" sends a key).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from modelforge.serve.guards import PROTECTED_PREFIX


class PredictRequest(BaseModel):
    """JSON body of predict/explain (the OpenAPI schema; the body is parsed by hand to accept multipart too)."""

    inputs: list[str | int] = Field(min_length=1, description="base64 image, WAV or video bytes (a data: URL prefix "
                                                              "is allowed), text, or integer seeds (image generators)")


class ErrorBody(BaseModel):
    error: str = Field(description="one line saying what is wrong")


_MEANING = {
    400: "Malformed request (bad JSON, bad multipart body, or a Host header this server does not answer to)",
    401: "Missing or invalid API key",
    403: "Cross-origin browser request refused",
    404: "Unknown model",
    413: "Over a size limit (body, inputs per request, pixels, seconds, characters, frames)",
    415: "Content type other than application/json, multipart/form-data or a listed raw file type",
    422: "An input the model cannot use (not base64, not a readable image/WAV/video, empty text, a raw file type "
         "this model does not take …)",
    501: "The model's task has no explanations",
    503: "The model's queue is full: retry after Retry-After seconds",
    504: "No answer within the request timeout",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: the JSON error body for each status it can answer with (400 and 403 come from
    the Host check and apply everywhere)."""
    return {code: {"model": ErrorBody, "description": _MEANING[code]} for code in sorted({400, 403, *codes})}


# One raw file as the whole body (what ``serve.inputs.RAW_TYPES`` accepts; the audio/x-wav and audio/wave aliases
# are accepted too but not listed).
RAW_BODY_TYPES = ("image/png", "image/jpeg", "audio/wav", "application/octet-stream")


def request_body() -> dict[str, Any]:
    upload = {"type": "object", "properties": {
        "file": {"type": "array", "items": {"type": "string", "format": "binary"},
                 "description": "image/WAV/video files"},
        "text": {"type": "array", "items": {"type": "string"}, "description": "texts (text models)"},
        "seed": {"type": "array", "items": {"type": "integer"}, "description": "seeds (image generators)"},
    }}
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": PredictRequest.model_json_schema()},
        "multipart/form-data": {"schema": upload},
        **{media: {"schema": {"type": "string", "format": "binary"}} for media in RAW_BODY_TYPES},
    }}}


def install_security(app: FastAPI, key_required: bool) -> None:
    """Declare both ways of sending the key, and require one on every ``/models…`` operation, when a key is set."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            if key_required:
                schema.setdefault("components", {})["securitySchemes"] = {
                    "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer KEY"},
                    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                }
                for path, operations in schema["paths"].items():
                    if path.startswith(PROTECTED_PREFIX):
                        for operation in operations.values():
                            operation["security"] = [{"bearer": []}, {"apiKey": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
