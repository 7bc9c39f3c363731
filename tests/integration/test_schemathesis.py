"""Property-based fuzzing of every documented endpoint, from the service's own /swagger.json
(Swagger 2.0): whatever schemathesis sends, no 5xx, and every answer matches the documented status
codes, content type and response schema. A bounded number of examples per operation keeps it to a
few minutes (LIVECODE_FUZZ_EXAMPLES to change it).

The operations are driven from one test rather than schemathesis' pytest plugin, whose lazy
(fixture-based) loader does not work with pytest 9; the server's URL only exists once the
`cluster` fixture has started it."""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXAMPLES = int(os.environ.get("LIVECODE_FUZZ_EXAMPLES", "25"))
CHECKS = [schemathesis.checks.not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
# Long-lived streams: a generated request may open one for a real execution and keep it open.
SKIP_PATHS = ("/ws", "/events", "/stream")


def test_every_operation_conforms_to_its_own_schema(cluster: Any) -> None:
    schema = schemathesis.openapi.from_url(cluster.base + "/swagger.json")
    failures: list[str] = []
    tested = 0
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            failures.append(f"unusable operation in the schema: {result.err()}")
            continue
        operation = result.ok()
        if operation.path.endswith(SKIP_PATHS):
            continue
        tested += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            case.call_and_validate(base_url=cluster.base, checks=CHECKS, timeout=30)

        try:
            check()
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - collect all failures, then report
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}"[:3000])
    assert tested >= 10, tested
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)


def test_real_resources_match_their_documented_schemas(cluster: Any) -> None:
    """Fuzzed ids rarely name a real resource, so also check real ones: a finished execution
    (nullable fields null or set), a session, an autosave, a listing, the dead-letter list."""
    from tests.support.client import ApiClient

    schema = schemathesis.openapi.from_url(cluster.base + "/swagger.json")
    client = ApiClient(cluster.base)
    sid = client.create_session("import sys\nprint('out'); print('err', file=sys.stderr); sys.exit(3)")["session_id"]
    queued = client.execute(sid, stdin="x")
    eid = queued.json()["execution_id"]
    client.wait_execution(eid)
    responses = [
        ("/api/v1/code-sessions", "POST", client.request(
            "POST", "/api/v1/code-sessions", json={"language": "python", "source_code": "1"})),
        ("/api/v1/code-sessions/{session_id}", "GET", client.request("GET", f"/api/v1/code-sessions/{sid}")),
        ("/api/v1/code-sessions/{session_id}", "PATCH", client.request(
            "PATCH", f"/api/v1/code-sessions/{sid}", json={"source_code": "print(2)"})),
        ("/api/v1/executions/session/{session_id}/execute", "POST", queued),
        ("/api/v1/executions/{execution_id}", "GET", client.request("GET", f"/api/v1/executions/{eid}")),
        ("/api/v1/executions/session/{session_id}", "GET", client.request(
            "GET", f"/api/v1/executions/session/{sid}")),
        ("/api/v1/admin/dead-letters", "GET", client.request("GET", "/api/v1/admin/dead-letters")),
        ("/api/v1/admin/analytics", "GET", client.request("GET", "/api/v1/admin/analytics?bucket=hour")),
        ("/api/v1/languages", "GET", client.request("GET", "/api/v1/languages")),
        ("/health", "GET", client.request("GET", "/health")),
        ("/api/v1/executions/{execution_id}/deliveries", "GET",
         client.request("GET", f"/api/v1/executions/{eid}/deliveries")),
    ]
    # The Judge0-compatible API: a finished submission (all fields, nulls included), a batch read.
    j0 = client.request("POST", "/judge0/submissions?wait=true",
                        json={"source_code": "import sys; sys.exit(3)", "language_id": 71})
    token = j0.json()["token"]
    responses += [
        ("/judge0/submissions", "POST", j0),
        ("/judge0/submissions/{token}", "GET", client.request("GET", f"/judge0/submissions/{token}?fields=*")),
        ("/judge0/submissions/batch", "GET", client.request("GET", f"/judge0/submissions/batch?tokens={token},x")),
        # base64: the shared cluster's other submissions may have output that is not UTF-8 (a 400 then)
        ("/judge0/submissions", "GET", client.request("GET", "/judge0/submissions?base64_encoded=true")),
        ("/judge0/languages", "GET", client.request("GET", "/judge0/languages")),
        ("/judge0/statuses", "GET", client.request("GET", "/judge0/statuses")),
        ("/judge0/config_info", "GET", client.request("GET", "/judge0/config_info")),
    ]
    for path, method, response in responses:
        assert response.status_code < 300, (path, response.text)
        schema[path][method].validate_response(response)


def test_the_piston_api_conforms_to_its_own_schema(cluster: Any) -> None:
    """The same for /piston (Piston's v2 API, its own OpenAPI document): Piston's answers,
    `{"message"}` errors included, and never a 5xx."""
    schema = schemathesis.openapi.from_url(cluster.base + "/piston/openapi.json")
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 3
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            case.call_and_validate(base_url=cluster.base + "/piston", checks=CHECKS, timeout=60)

        try:
            check()
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - collect all failures, then report
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}"[:3000])
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)
