"""Fuzzing with schemathesis: the model API through nginx, and the bridge, on the real stack.

Two properties, for every generated request (schema-conforming *and* schema-violating ones,
schemathesis' "all" generation mode, from each service's own OpenAPI document):

* no answer is a 5xx: bad input is the client's problem, never an internal error;
* every 4xx body has the documented error shape (docs/api.md, ``driftloop_service.http_errors``):
  exactly ``{"error", "message", "detail": [{"field", "rule", "message"}]}``.

The model API is fuzzed through nginx (what clients reach), on its public routes; its schema is
read from a replica (nginx need not serve ``/openapi.json``). ``X-Request-ID`` is not in the
schema, so it is fuzzed too, as a header drawn next to each case, and the known 500 (an id of
125+ characters on ``/predict/batch``) is also a test of its own. The bridge is fuzzed directly
(nothing public fronts it) with its real bearer token, so generated payloads get past
authentication into the parsers.

The run is bounded (``MAX_EXAMPLES`` per operation, ``DRIFTLOOP_FUZZ_MAX_EXAMPLES`` to change
it) so the file takes about two minutes. A failure prints the curl command that reproduces it.
"""

from __future__ import annotations

import os
import re
import string
import time
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode

from driftloop_contracts import EXAMPLE_FEATURES

pytestmark = pytest.mark.integration

#: Examples per operation (schemathesis/hypothesis); bounded for CI.
MAX_EXAMPLES = int(os.environ.get("DRIFTLOOP_FUZZ_MAX_EXAMPLES", "25"))
#: The model API's public routes: what nginx forwards to clients.
PUBLIC_MODEL_API = r"^/(predict|predict/batch|feedback|model)$"
#: Keys of every error body, and of each ``detail`` item (docs/api.md).
ERROR_KEYS = {"error", "message", "detail"}
DETAIL_KEYS = {"field", "rule", "message"}
_SNAKE = re.compile(r"[a-z][a-z0-9_]*")
#: Request ids a client may send: any printable ASCII (what an HTTP header can carry), and
#: id-like ones (letters, digits, ``._:-``) around 128 characters, where id limits sit.
REQUEST_IDS = st.one_of(
    st.text(
        alphabet=string.ascii_letters + string.digits + string.punctuation + " ",
        min_size=1,
        max_size=300,
    ),
    st.text(alphabet=string.ascii_letters + string.digits + "._:-", min_size=100, max_size=140),
)
SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)


def config(base_url: str, headers: dict[str, str] | None = None) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "base-url": base_url,
            "headers": headers or {},
            "request-timeout": 10,
            "generation": {"mode": "all", "max-examples": MAX_EXAMPLES},
        }
    )


def documented_error_problems(response: Any) -> list[str]:
    """Why a 4xx body is not the documented error shape (empty list: it is)."""
    try:
        body = response.json()
    except ValueError:
        return [f"not JSON: {response.text[:200]!r}"]
    if not isinstance(body, dict) or set(body) != ERROR_KEYS:
        return [f"keys {sorted(body) if isinstance(body, dict) else type(body).__name__}"]
    problems = []
    if not (isinstance(body["error"], str) and _SNAKE.fullmatch(body["error"])):
        problems.append(f"error {body['error']!r} is not a snake_case code")
    if not (isinstance(body["message"], str) and body["message"]):
        problems.append("message is empty or not a string")
    if not isinstance(body["detail"], list):
        return [*problems, "detail is not a list"]
    for item in body["detail"]:
        if not isinstance(item, dict) or set(item) != DETAIL_KEYS:
            problems.append(f"detail item {item!r}")
        elif not all(isinstance(item[k], str) for k in DETAIL_KEYS):
            problems.append(f"detail item with a non-string value: {item!r}")
    return problems


def check_answer(response: Any, reproduce: str) -> None:
    """No 5xx; a 4xx has the documented body. ``reproduce`` is printed on failure."""
    status = response.status_code
    assert status < 500, f"{status} {response.text[:500]}\nreproduce: {reproduce}"
    if status >= 400:
        problems = documented_error_problems(response)
        assert not problems, (
            f"{status} body is not the documented error shape: {problems}\n"
            f"body: {response.text[:500]}\nreproduce: {reproduce}"
        )


def wait_until(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        time.sleep(0.2)


def _predicts(url: str) -> bool:
    try:
        return httpx.post(f"{url}/predict", json=EXAMPLE_FEATURES, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def with_shared_defs(document: dict[str, Any]) -> dict[str, Any]:
    """The document with request-body schemas' local ``$defs`` moved to ``components``.

    The model API documents its raw-body routes with ``openapi_extra`` (``json_body_doc``),
    whose pydantic schema keeps its sub-models in a local ``$defs`` and refers to them as
    ``#/$defs/...``: inside an OpenAPI document that pointer resolves against the document
    root, where there is no ``$defs``, so schemathesis cannot build schema-violating bodies for
    ``/predict/batch``. Moving them to ``#/components/schemas`` is the same schema, resolvable.
    """
    schemas = document.setdefault("components", {}).setdefault("schemas", {})

    def hoist(node: Any) -> Any:
        if isinstance(node, dict):
            for name, sub in node.pop("$defs", {}).items():
                sub = hoist(sub)
                assert schemas.get(name, sub) == sub, f"two different schemas named {name}"
                schemas[name] = sub
            return {
                key: (
                    value.replace("#/$defs/", "#/components/schemas/")
                    if key == "$ref" and isinstance(value, str)
                    else hoist(value)
                )
                for key, value in node.items()
            }
        if isinstance(node, list):
            return [hoist(item) for item in node]
        return node

    document["paths"] = hoist(document["paths"])
    return document


def with_webhook_bodies(document: dict[str, Any]) -> dict[str, Any]:
    """The bridge's OpenAPI document with its webhooks' request bodies described.

    The webhook routes read the raw body (auth checks run before parsing), so their OpenAPI
    entries have no ``requestBody`` and schemathesis would send empty bodies only. The body
    models are the bridge's own pydantic payload models; described here, the generated
    requests reach the payload parsers (valid envelopes, broken fields, wrong types).
    """
    from driftloop_bridge.payloads import AlertmanagerWebhook, GrafanaWebhook

    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for path, model in (
        ("/webhooks/grafana", GrafanaWebhook),
        ("/webhooks/alertmanager", AlertmanagerWebhook),
    ):
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(body.pop("$defs", {}))
        schemas[model.__name__] = body
        document["paths"][path]["post"]["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        }
    return document


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def serving(stack: Any, champion: str) -> Any:
    """The stack with every replica serving the champion and nginx routing to them."""
    wait_until(lambda: all(_predicts(u) for u in stack.model_api_urls), 120, "replicas to serve")
    wait_until(lambda: all(_predicts(stack.nginx_url) for _ in range(4)), 60, "nginx to route")
    return stack


@pytest.fixture(scope="module")
def model_api_schema(serving: Any) -> Any:
    document = with_shared_defs(
        httpx.get(f"{serving.model_api_urls[0]}/openapi.json", timeout=10).json()
    )
    schema = schemathesis.openapi.from_dict(document, config=config(serving.nginx_url))
    return schema.include(path_regex=PUBLIC_MODEL_API)


@pytest.fixture(scope="module")
def bridge_schema(stack: Any) -> Any:
    wait_until(
        lambda: httpx.get(f"{stack.bridge_url}/health/ready", timeout=5).status_code == 200,
        60,
        "the bridge to be ready",
    )
    document = with_webhook_bodies(httpx.get(f"{stack.bridge_url}/openapi.json", timeout=10).json())
    headers = {"Authorization": f"Bearer {stack.webhook_token}"}
    return schemathesis.openapi.from_dict(document, config=config(stack.bridge_url, headers))


# --- fuzzing ----------------------------------------------------------------------------------

# Each operation is fuzzed on its own, once with schema-conforming and once with
# schema-violating data, by a plain hypothesis test over schemathesis' case strategy
# (schemathesis' own pytest wrapper, ``from_fixture``, does not run on pytest 9.2).
MODEL_API_OPERATIONS = [
    ("POST", "/predict"),
    ("POST", "/predict/batch"),
    ("POST", "/feedback"),
    ("GET", "/model"),
]
BRIDGE_OPERATIONS = [
    ("POST", "/webhooks/grafana"),
    ("POST", "/webhooks/alertmanager"),
    ("GET", "/decisions"),
    ("GET", "/pending"),
    ("GET", "/dead-letters"),
    ("GET", "/brake"),
    ("POST", "/brake/reset"),
    ("GET", "/health/live"),
    ("GET", "/health/ready"),
]
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
#: Operations without parameters or body: nothing to violate, so no schema-violating run.
NO_INPUT = {
    ("GET", "/model"),
    ("GET", "/health/live"),
    ("GET", "/health/ready"),
    ("GET", "/brake"),
    ("POST", "/brake/reset"),
}


def cases(ops: list[tuple[str, str]]) -> list[tuple[str, str, GenerationMode]]:
    return [
        (method, path, mode)
        for method, path in ops
        for mode in MODES
        if mode is GenerationMode.POSITIVE or (method, path) not in NO_INPUT
    ]


def operations(schema: Any) -> set[tuple[str, str]]:
    return {(op.ok().method.upper(), op.ok().path) for op in schema.get_all_operations()}


def fuzz(schema: Any, method: str, path: str, mode: GenerationMode, fuzz_request_id: bool) -> None:
    """Run ``MAX_EXAMPLES`` generated requests against one operation; check every answer."""
    strategy = schema[path][method].as_strategy(generation_mode=mode)
    request_ids = REQUEST_IDS if fuzz_request_id else st.none()

    @SETTINGS
    @given(case=strategy, request_id=request_ids)
    def run(case: Any, request_id: str | None) -> None:
        headers = {"X-Request-ID": request_id} if request_id is not None else None
        response = case.call(headers=headers)
        check_answer(response, case.as_curl_command(headers=headers))

    run()


def test_the_fuzzed_operations_are_the_schemas(model_api_schema: Any, bridge_schema: Any) -> None:
    """The lists above are what the services publish (a new route is fuzzed or named here)."""
    assert operations(model_api_schema) == set(MODEL_API_OPERATIONS)
    assert operations(bridge_schema) == set(BRIDGE_OPERATIONS)


@pytest.mark.parametrize(("method", "path", "mode"), cases(MODEL_API_OPERATIONS))
def test_model_api_through_nginx(
    model_api_schema: Any, method: str, path: str, mode: GenerationMode
) -> None:
    fuzz(model_api_schema, method, path, mode, fuzz_request_id=True)


@pytest.mark.parametrize(("method", "path", "mode"), cases(BRIDGE_OPERATIONS))
def test_bridge(bridge_schema: Any, method: str, path: str, mode: GenerationMode) -> None:
    fuzz(bridge_schema, method, path, mode, fuzz_request_id=False)


# --- the known case ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "rows"),
    [(n, 2) for n in (124, 125, 126, 127, 128, 129, 200, 1000)] + [(125, 1000)],
)
def test_long_request_id_on_batch_is_not_a_server_error(
    serving: Any, length: int, rows: int
) -> None:
    """A client's ``X-Request-ID`` of 125+ characters made ``/predict/batch`` answer 500 (each
    row's id, ``<id>-<index>``, outgrew the event's 128-character limit)."""
    request_id = "r" * length
    response = httpx.post(
        f"{serving.nginx_url}/predict/batch",
        json={"rows": [EXAMPLE_FEATURES] * rows},
        headers={"X-Request-ID": request_id},
        timeout=30,
    )
    reproduce = (
        f"curl -X POST {serving.nginx_url}/predict/batch -H 'X-Request-ID: {request_id}' "
        f"-H 'Content-Type: application/json' -d '{{\"rows\": [EXAMPLE_FEATURES x {rows}]}}'"
    )
    check_answer(response, reproduce)
    if response.status_code == 200:
        assert len(response.json()["predictions"]) == rows
