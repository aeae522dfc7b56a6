"""The server against its own OpenAPI document (issue 15, item 9): schemathesis generates requests for every
operation, valid and invalid, and runs every check it has (no 5xx, every status code and content type documented,
bodies matching their schemas, the API key enforced, 405 for methods not offered). Bounded: a fixed number of
examples per operation, derandomized so a failure reproduces."""

from __future__ import annotations

import collections

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from tiny_runs import image_run, sentiment_run

from modelforge.serve.app import ServeSettings, create_app
from modelforge.serve.batching import BatchSettings

KEY = "schemathesis-key"
EXAMPLES = 40  # per operation, model name and generation mode
WITHOUT_INPUTS = {"GET /health", "GET /models"}


class KeyAuth:
    """Every generated request carries the right key (schemathesis's ``ignored_auth`` check still sends wrong ones
    and expects 401)."""

    def get(self, case, context) -> str:
        return KEY

    def set(self, case, data: str, context) -> None:
        case.headers = {**(case.headers or {}), "X-API-Key": data}


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    root = tmp_path_factory.mktemp("schemathesis")
    settings_ = ServeSettings(batch=BatchSettings(max_batch_size=4, max_wait_ms=0), api_key=KEY, max_inputs=8,
                              max_body_bytes=256 * 1024)
    app = create_app([f"image={image_run(root)}", f"text={sentiment_run(root)}"], settings_)
    # One schema serves every model, so it cannot say which strings a model reads (a base64 PNG for one, any text for
    # another): a schema-valid input a model cannot use is the documented 422 (or 413 over a limit), not a failure.
    config = SchemathesisConfig.from_dict({"checks": {"positive_data_acceptance": {
        "expected-statuses": [200, 401, 404, 413, 422, 501, 503]}}})
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    schema.auth.auth(refresh_interval=None, retry_on=[])(KeyAuth)
    return schema


def _label(operation) -> str:
    return f"{operation.method.upper()} {operation.path}"


def _variants(operation) -> list[dict | None]:
    """Generated model names (404s), and each served model's name so the inputs reach validation and the model."""
    return [None, {"name": "image"}, {"name": "text"}] if "{name}" in operation.path else [None]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_conforms(api_schema, mode):
    checks = schemathesis.checks.CHECKS.get_all()
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {"GET /health", "GET /models", "POST /models/{name}/predict"} <= {_label(op) for op in operations}
    failed, statuses = [], collections.Counter()
    for operation in operations:
        for path_parameters in _variants(operation):
            # Invalid bodies in JSON only: a multipart form carries no types (every field is text), so a "boolean"
            # text field arrives as the text "true".
            strategy = operation.as_strategy(generation_mode=mode, auth_storage=api_schema.auth,
                                             path_parameters=path_parameters)
            if mode is GenerationMode.NEGATIVE and operation.method.lower() == "post":
                strategy = strategy.filter(lambda case: case.media_type == "application/json")

            @given(case=strategy)
            @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            def run(case) -> None:
                statuses[case.call_and_validate(checks=checks).status_code] += 1

            try:
                run()
            except Unsatisfiable:  # nothing to make invalid in an operation without parameters or body
                assert mode is GenerationMode.NEGATIVE and _label(operation) in WITHOUT_INPUTS, _label(operation)
            except Exception as exc:  # every operation is tried; the failures are reported together
                failed.append(f"{_label(operation)} {path_parameters}: {str(exc)[:1500]}")
    print(f"\nschemathesis {mode.value}: {len(operations)} operations, {statuses.total()} requests, statuses "
          f"{dict(sorted(statuses.items()))}, {len(checks)} checks, failures {len(failed)}")
    assert not failed, "\n\n".join(failed)
