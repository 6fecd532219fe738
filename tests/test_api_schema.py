"""The OpenAPI schema is complete and valid, and the API holds up against it (schemathesis)."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from django.contrib.auth.models import User
from django.core.wsgi import get_wsgi_application
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.validation import validate_schema
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

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
    for code in ("400", "401", "404", "429", "502", "504"):
        body = openai_errors[code]["content"]["application/json"]["schema"]
        assert body == {"$ref": "#/components/schemas/OpenAIError"}


def test_schema_follows_the_prompt_length_setting(settings):
    settings.MODELSLAB = {**settings.MODELSLAB, "MAX_PROMPT_LENGTH": 77}

    request = fetch_schema()["components"]["schemas"]["GenerationCreateRequest"]

    assert request["properties"]["prompt"]["maxLength"] == 77
    assert request["properties"]["width"]["minimum"] == 256
    assert request["properties"]["width"]["maximum"] == 1024


# --- schemathesis: generated requests never produce a server error --------------------------


@pytest.fixture
def token(emulator, transactional_db) -> str:
    """A user with a finished request, so detail and action paths have something to find."""
    user = User.objects.create_user("fuzzer", is_staff=True)
    client = APIClient()
    client.force_authenticate(user)
    created = client.post("/api/modelslab/generations/", {"prompt": "seed data", "width": 256})
    assert created.json()["status"] == "succeeded"
    return Token.objects.create(user=user).key, {"generations": created.json()["id"], "images": created.json()["images"][0]["id"]}


@pytest.fixture
def fuzz_settings(settings) -> None:
    # Any model id the emulator accepts; answers within a few seconds even when it is slow.
    settings.MODELSLAB = {**settings.MODELSLAB, "OPENAI_WAIT_TIMEOUT": 5.0}
    settings.ALLOWED_HOSTS = ["*"]


def test_no_server_errors_for_generated_requests(token, fuzz_settings):
    token, ids = token
    app = get_wsgi_application()
    api = schemathesis.openapi.from_wsgi(SCHEMA_URL + "?format=json", app)
    failures: list[str] = []
    calls = 0
    seen = []

    for operation in api.get_all_operations():
        operation = operation.ok()

        @hypothesis_settings(
            max_examples=12,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(case=operation.as_strategy())
        def run(case) -> None:
            nonlocal calls
            calls += 1
            if "id" in (case.path_parameters or {}) and calls % 2:
                case.path_parameters["id"] = ids[case.path.split("/")[3]]
            try:
                case.call_and_validate(headers={"Authorization": f"Bearer {token}"})
            except Exception as exc:
                failures.append(str(exc)[:1500])
            response = case.call(headers={"Authorization": f"Bearer {token}"})
            seen.append((case.method, case.path, response.status_code))
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} {case.body!r}: "
                    f"{response.status_code} {response.text[:300]}"
                )

        run()

    import collections; print(collections.Counter(seen))
    assert calls > 50
    assert failures == []
