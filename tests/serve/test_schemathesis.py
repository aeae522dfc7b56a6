"""The server against its own OpenAPI document (issue 15, item 9): schemathesis generates requests for every
operation, valid and invalid, and runs every check it has (no 5xx, every status code and content type documented,
bodies matching their schemas, the API key enforced, 405 for methods not offered). Bounded: a fixed number of
examples per operation, derandomized so a failure reproduces."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from tiny_runs import image_run, sentiment_run

from modelforge.serve.app import ServeSettings, create_app
from modelforge.serve.batching import BatchSettings

KEY = "schemathesis-key"
EXAMPLES = 50  # per operation and generation mode
WITHOUT_INPUTS = {"GET /health", "GET /models"}


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    root = tmp_path_factory.mktemp("schemathesis")
    settings_ = ServeSettings(batch=BatchSettings(max_batch_size=4, max_wait_ms=0), api_key=KEY, max_inputs=8,
                              max_body_bytes=256 * 1024)
    app = create_app([f"image={image_run(root)}", f"text={sentiment_run(root)}"], settings_)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def _label(operation) -> str:
    return f"{operation.method.upper()} {operation.path}"


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_conforms(api_schema, mode):
    checks = schemathesis.checks.CHECKS.get_all()
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {"GET /health", "GET /models", "POST /models/{name}/predict"} <= {_label(op) for op in operations}
    failed = []
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case) -> None:
            case.call_and_validate(headers={"X-API-Key": KEY}, checks=checks)

        try:
            run()
        except Unsatisfiable:  # nothing to make invalid in an operation without parameters or body
            assert mode is GenerationMode.NEGATIVE and _label(operation) in WITHOUT_INPUTS, _label(operation)
        except Exception as exc:  # every operation is tried; the failures are reported together
            failed.append(f"{_label(operation)}: {str(exc)[:1500]}")
    assert not failed, "\n\n".join(failed)
