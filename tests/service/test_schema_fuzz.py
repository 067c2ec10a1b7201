"""Schema-driven fuzzing (schemathesis) of the app's OpenAPI: no input a client can send gives a 500,
and every response matches the documented schema, status codes and headers.

The engine here is the model-free test double, so hundreds of requests take seconds; the real
model is fuzzed with a few examples in test_server.py.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.app import create_app
from service.settings import Settings

from .conftest import FakeEngine

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

app = create_app(Settings(_env_file=None, scheduler="static", max_wait_ms=0, max_question_chars=300),
                 engine_factory=lambda _: FakeEngine())
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_breaks_the_api(case):
    case.call_and_validate(checks=CHECKS)
