"""The OpenAPI schema is complete and valid, and the API holds up against it (schemathesis)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import schemathesis
from django.contrib.auth.models import User
from django.core.wsgi import get_wsgi_application
from django.test import Client
from django.urls import Resolver404, resolve
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.validation import validate_schema
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from .helpers import configure

SCHEMA_URL = "/api/modelslab/schema/"


def fetch_schema() -> dict[str, Any]:
    response = APIClient().get(SCHEMA_URL, {"format": "json"})
    assert response.status_code == 200
    return response.json()


@pytest.fixture
def schema() -> dict[str, Any]:
    GENERATOR_STATS.reset()
    document = fetch_schema()
    assert not GENERATOR_STATS, "drf-spectacular warned while generating the schema"
    return document


def test_schema_is_valid_openapi_with_only_this_api(schema):
    validate_schema(schema)

    assert sorted(schema["paths"]) == [
        "/api/modelslab/",
        "/api/modelslab/generations/",
        "/api/modelslab/generations/{id}/",
        "/api/modelslab/generations/{id}/regenerate/",
        "/api/modelslab/images/",
        "/api/modelslab/images/{id}/",
        "/api/modelslab/images/{id}/choose/",
        "/api/modelslab/v1/images/generations",
    ]
    assert schema["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "A DRF token (rest_framework.authtoken), as OpenAI clients send keys.",
    }


def _properties(schema: dict[str, Any]):
    for name, component in schema["components"]["schemas"].items():
        for prop, spec in component.get("properties", {}).items():
            yield f"{name}.{prop}", spec


def test_every_field_is_typed(schema):
    untyped = [
        name
        for name, spec in _properties(schema)
        if not ({"type", "$ref", "allOf", "oneOf", "anyOf", "enum"} & set(spec))
    ]

    assert untyped == []
    generation = schema["components"]["schemas"]["Generation"]["properties"]
    assert generation["images"]["items"] == {"$ref": "#/components/schemas/Image"}
    image = schema["components"]["schemas"]["Image"]["properties"]
    assert image["url"]["format"] == "uri"
    assert image["sha256"]["type"] == "string"


def test_every_operation_declares_its_errors(schema):
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            assert {"401", "403", "429"} <= codes, (method, path, codes)
            if "{id}" in path:
                assert "404" in codes, (method, path)
            if method == "post" and "{id}" not in path:
                assert "400" in codes, (method, path)
    openai_errors = schema["paths"]["/api/modelslab/v1/images/generations"]["post"]["responses"]
    for path in ("generations/", "v1/images/generations"):
        assert "413" in schema["paths"][f"/api/modelslab/{path}"]["post"]["responses"]
    for code in ("400", "401", "404", "413", "429", "502", "504"):
        body = openai_errors[code]["content"]["application/json"]["schema"]
        assert body == {"$ref": "#/components/schemas/OpenAIError"}


def test_schema_follows_the_prompt_length_setting(settings):
    configure(settings, MAX_PROMPT_LENGTH=77)

    request = fetch_schema()["components"]["schemas"]["GenerationCreateRequest"]

    assert request["properties"]["prompt"]["maxLength"] == 77
    assert request["properties"]["width"]["minimum"] == 256
    assert request["properties"]["width"]["maximum"] == 1024


# --- schemathesis and hostile inputs: no request gets a server error -------------------------

WEBHOOK_PATH = "/modelslab/webhook/{secret}/"
WEBHOOK_SECRET = "schema-fuzz-webhook-secret-0123456789"
#: Generated examples per operation and mode (positive: valid by the schema; negative: not).
EXAMPLES = 25
#: Integers no id or filter can hold (past 64 bits, or not an integer at all).
HUGE_INTEGERS = ["99999999999999999999999", "-99999999999999999999999", "9223372036854775808"]
#: Bodies no schema-driven generator sends; each must be refused with a 4xx.
HOSTILE_BODIES: list[tuple[str, bytes | str, str]] = [
    ("200 KB of brackets", "[" * 100_000 + "]" * 100_000, "application/json"),
    ("nested 40 deep", '{"prompt": ' + "[" * 40 + "]" * 40 + "}", "application/json"),
    ("over every body limit", '{"prompt": "' + "x" * (4 * 1024 * 1024) + '"}', "application/json"),
    ("not UTF-8", b'{"prompt": "\xff\xfe"}', "application/json"),
    ("a 5000-digit number", '{"prompt": "x", "n": 1' + "9" * 5000 + "}", "application/json"),
    ("NaN", '{"prompt": "x", "guidance": NaN}', "application/json"),
    ("a lone surrogate", '{"prompt": "\\ud800"}', "application/json"),
    ("an empty body", "", "application/json"),
    ("plain text", "prompt=x", "text/plain"),
]


def webhook_operation() -> dict[str, Any]:
    """The webhook, described for schemathesis (not published: ModelsLab calls it, not clients)."""
    payload = {
        "type": "object",
        "properties": {
            "status": {"type": "string"},
            "id": {"type": "integer"},
            "track_id": {"type": "string"},
            "output": {"type": "array", "items": {"type": "string"}},
            "meta": {"type": "object"},
            "message": {"type": "string"},
        },
    }
    outcome = {
        "type": "object",
        "properties": {"outcome": {"type": "string"}},
        "required": ["outcome"],
    }
    return {
        "post": {
            "operationId": "modelslab_webhook",
            "parameters": [
                {
                    "name": "secret",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                }
            ],
            "requestBody": {"required": True, "content": {"application/json": {"schema": payload}}},
            "responses": {
                "200": {
                    "description": "Recorded.",
                    "content": {"application/json": {"schema": outcome}},
                },
                "400": {"description": "Bad secret or unreadable body (recorded)."},
                "404": {"description": "Not a webhook URL."},
            },
        }
    }


@pytest.fixture
def seeded(emulator, transactional_db, settings) -> tuple[str, dict[str, int]]:
    """A staff token, and a finished request so detail and action paths find something."""
    settings.ALLOWED_HOSTS = ["*"]
    # MAX_IMAGE_BYTES small, so that the hostile "over every body limit" body stays small too.
    configure(settings, WEBHOOK_SECRETS=[WEBHOOK_SECRET], MAX_IMAGE_BYTES=1024 * 1024)
    user = User.objects.create_user("fuzzer", is_staff=True)
    client = APIClient()
    client.force_authenticate(user)
    created = client.post("/api/modelslab/generations/", {"prompt": "seed data", "width": 256})
    assert created.json()["status"] == "succeeded"
    ids = {"generations": created.json()["id"], "images": created.json()["images"][0]["id"]}
    return Token.objects.create(user=user).key, ids


def fuzz(operation: Any, check: Any, mode: GenerationMode) -> None:
    """Run ``check(case)`` on bounded, reproducible examples of one operation."""

    @hypothesis_settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        check(case)

    run()


def path_for(template: str, ids: dict[str, int], **values: str) -> str:
    """``template`` with a real id and the webhook secret, unless ``values`` gives others."""
    defaults = {"id": str(ids.get(template.split("/")[3], 1)), "secret": WEBHOOK_SECRET}
    for name, default in defaults.items():
        template = template.replace("{" + name + "}", values.get(name, default))
    return template


def hostile_inputs(
    document: dict[str, Any], ids: dict[str, int]
) -> Iterator[tuple[str, str, dict[str, Any], bool]]:
    """(label, method, test client arguments, must be a 4xx) for every operation: each huge
    integer in each integer parameter, each hostile body where the operation takes a body."""
    for template, operations in document["paths"].items():
        for method, operation in operations.items():
            label = f"{method.upper()} {template}"
            for parameter in operation.get("parameters", []):
                if parameter.get("schema", {}).get("type") != "integer":
                    continue
                name = parameter["name"]
                for value in HUGE_INTEGERS:
                    if parameter["in"] == "path":  # no such row: 404
                        path = path_for(template, ids, **{name: value})
                        yield f"{label} {name}={value}", method, {"path": path}, True
                    else:  # a filter refuses it; page_size is capped at 100
                        arguments = {"path": path_for(template, ids), "data": {name: value}}
                        yield f"{label} ?{name}={value}", method, arguments, False
            if "requestBody" not in operation:
                continue
            path = path_for(template, ids)
            optional = not operation["requestBody"].get("required", False)
            for name, body, content_type in HOSTILE_BODIES:
                arguments = {"path": path, "data": body, "content_type": content_type}
                refused = not (optional and body == "")  # an optional body may be empty
                yield f"{label} {name}", method, arguments, refused
            content_types = operation["requestBody"]["content"]
            if "multipart/form-data" in content_types:
                form = {"prompt": "x", "init_image": "A" * (3 * 1024 * 1024)}
                yield f"{label} a 3 MiB form field", method, {"path": path, "data": form}, True
            if "application/x-www-form-urlencoded" in content_types:
                body = "prompt=x&init_image=" + "A" * (3 * 1024 * 1024)
                form = {"data": body, "content_type": "application/x-www-form-urlencoded"}
                yield f"{label} a 3 MiB url-encoded form", method, {"path": path, **form}, True


def routed(path: str) -> bool:
    """Whether ``path`` reaches one of the API's views (not the project's 404 page)."""
    try:
        resolve(urlsplit(path).path)
    except Resolver404:
        return False
    return True


def in_the_endpoints_shape(path: str, response: Any) -> bool:
    """OpenAI's error shape on v1/, DRF's JSON on the rest of the API; the webhook's own."""
    if path.startswith("/modelslab/webhook/"):
        return response.status_code in (400, 404) or response.json().get("outcome") is not None
    if response["Content-Type"] != "application/json":
        return False
    if "/v1/" in path and response.status_code >= 400:
        return set(response.json().get("error", {})) == {"message", "type", "param", "code"}
    return True


def test_generated_and_hostile_inputs_get_no_server_error(seeded, record_property):
    """Every operation, the webhook too, through Django's WSGI app (emulator behind it).

    Schemathesis generates valid and invalid requests from the schema, and checks status
    codes, content types, headers and bodies against it, and that calls without credentials
    are refused. Two of its checks are left out. "Schema-valid data is accepted": the API
    rightly refuses some values a JSON schema cannot describe (a blank prompt, lone
    surrogates, an unknown model when ALLOWED_MODELS is set). "Invalid data is refused": a
    blank query value means "no filter" (DRF's rule for form input), the test sends a valid
    token whatever Authorization header was generated, and the webhook records any JSON
    object (a delivery is a hint, confirmed by fetch).

    Then hostile inputs no generator sends (HUGE_INTEGERS, HOSTILE_BODIES) go to every
    operation: bodies must be refused with a 4xx, and every answer must be in the
    endpoint's shape. ``make faults`` reports the figures (docs/reliability.md).
    """
    token, ids = seeded
    document = fetch_schema()
    document["paths"][WEBHOOK_PATH] = webhook_operation()
    api = schemathesis.openapi.from_dict(document)
    api.app = get_wsgi_application()
    auth = {"Authorization": f"Bearer {token}"}
    statuses: dict[str, set[int]] = {}
    failures: list[str] = []
    calls: Counter[str] = Counter()
    server_errors = 0

    for result in api.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"

        def check(case: Any, label: str = label) -> None:
            nonlocal server_errors
            calls[label] += 1
            parameters = case.path_parameters or {}
            positive = case.meta is None or case.meta.generation.mode.is_positive
            # Random ids and secrets rarely exist: aim half of the valid calls at real ones.
            if positive and calls[label] % 2:
                if "id" in parameters:
                    parameters["id"] = ids[case.path.split("/")[3]]
                if "secret" in parameters:
                    parameters["secret"] = WEBHOOK_SECRET
            try:
                response = case.call(headers=auth)
                server_errors += response.status_code >= 500
                if not routed(case.formatted_path):  # e.g. an id of "1.5": the project's 404
                    assert response.status_code == 404, response.status_code
                    return
                case.validate_response(
                    response,
                    excluded_checks=[positive_data_acceptance, negative_data_rejection],
                    headers=auth,
                    transport_kwargs={"headers": auth},
                )
            except (Exception, FailureGroup) as exc:  # keep going, report every failure
                failures.append(f"{label}: {str(exc)[:1000]}")
                return
            statuses.setdefault(label, set()).add(response.status_code)

        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(operation, check, mode)

    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}", raise_request_exception=False)
    hostile = 0
    for label, method, arguments, refused in hostile_inputs(document, ids):
        hostile += 1
        response = getattr(client, method)(**arguments)
        server_errors += response.status_code >= 500
        lowest = 400 if refused else 200
        if not (
            lowest <= response.status_code < 500
            and in_the_endpoints_shape(arguments["path"], response)
        ):
            failures.append(f"{label}: {response.status_code} {response.content[:200]!r}")

    tried = sum(calls.values()) + hostile
    record_property("bad_inputs_tried", tried)
    record_property("bad_inputs_5xx", server_errors)
    assert failures == [], "\n\n".join(failures)
    assert server_errors == 0
    assert len(statuses) == 11  # operations, the webhook included
    assert hostile == 79  # 67, plus the rendition parameter and PATCH images/<id>/
    for label, seen in statuses.items():
        assert any(200 <= code < 300 for code in seen), (label, seen)
