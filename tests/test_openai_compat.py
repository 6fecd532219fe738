"""The official ``openai`` package, with only base_url and api_key changed, against our server."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator

import httpx
import openai
import pytest
from django.contrib.auth.models import Permission, User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from django_modelslab.models import GenerationRequest
from django_modelslab.testing import Fault

from .conftest import TEST_API_KEY
from .helpers import configure

pytestmark = pytest.mark.django_db(transaction=True)

ENDPOINT = "/api/modelslab/v1/images/generations"


@pytest.fixture
def user() -> User:
    return User.objects.create_user("painter")


@pytest.fixture
def sdk(live_server, user) -> Iterator[openai.OpenAI]:
    token = Token.objects.create(user=user)
    with openai.OpenAI(
        base_url=f"{live_server.url}/api/modelslab/v1", api_key=token.key, timeout=20
    ) as client:  # closed: a kept-alive connection would outlive the live server
        yield client


def stored_hashes(generation: GenerationRequest) -> list[str]:
    """sha256 of each current image, read back from storage."""
    hashes = []
    for image in generation.images.filter(superseded=False).order_by("position"):
        with image.image.open("rb") as file:
            hashes.append(hashlib.sha256(file.read()).hexdigest())
    return hashes


def test_url_response_points_at_our_stored_images(sdk, live_server, user, emulator):
    result = sdk.images.generate(prompt="a red fox in snow", model="dall-e-3", size="256x256", n=2)

    generation = GenerationRequest.objects.get()
    assert generation.requested_by == user
    assert (generation.width, generation.height, generation.samples) == (256, 256, 2)
    assert generation.model_id == "flux"  # dall-e-3 maps to DEFAULT_MODEL
    assert len(result.data) == 2
    downloaded = []
    for item in result.data:
        assert item.url.startswith(f"{live_server.url}/media/modelslab/")
        assert item.revised_prompt == "a red fox in snow"
        assert item.b64_json is None
        downloaded.append(hashlib.sha256(httpx.get(item.url).content).hexdigest())
    assert downloaded == stored_hashes(generation)
    assert abs(result.created - generation.created_at.timestamp()) < 1


def test_b64_json_decodes_to_the_stored_image(sdk, emulator):
    result = sdk.images.generate(
        prompt="a lighthouse",
        size="256x320",
        response_format="b64_json",
        quality="hd",
        style="natural",
        user="end-user-42",
    )

    generation = GenerationRequest.objects.get()
    assert len(result.data) == 1
    assert result.data[0].url is None
    decoded = base64.b64decode(result.data[0].b64_json)
    assert [hashlib.sha256(decoded).hexdigest()] == stored_hashes(generation)
    assert decoded[:8] == b"\x89PNG\r\n\x1a\n"


def test_model_aliases_and_allowed_models(sdk, settings, emulator):
    configure(settings, MODEL_ALIASES={"gpt-image-1": "sdxl"}, ALLOWED_MODELS=["sdxl"])

    sdk.images.generate(prompt="x", model="gpt-image-1", size="256x256")
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.images.generate(prompt="x", model="dall-e-2", size="256x256")

    assert GenerationRequest.objects.get().model_id == "sdxl"
    assert emulator.requests[0][1]["model_id"] == "sdxl"
    assert missing.value.status_code == 404
    assert missing.value.code == "model_not_found"
    assert missing.value.body["param"] == "model"


def test_a_wrong_key_is_an_authentication_error(live_server, emulator):
    sdk = openai.OpenAI(base_url=f"{live_server.url}/api/modelslab/v1", api_key="sk-wrong")

    with sdk, pytest.raises(openai.AuthenticationError) as error:
        sdk.images.generate(prompt="x")

    assert error.value.status_code == 401
    assert error.value.code == "invalid_api_key"
    assert error.value.type == "invalid_request_error"
    assert emulator.calls["text2img"] == 0


@pytest.mark.parametrize(
    ("kwargs", "param", "text"),
    [
        ({"size": "1792x1024"}, "size", "256 to 1024"),
        ({"size": "big"}, "size", "WIDTHxHEIGHT"),
        ({"size": "260x256"}, "size", "multiple of 8"),
        ({"n": 5}, "n", "less than or equal to 4"),
        ({"response_format": "png"}, "response_format", "not a valid choice"),
        ({"prompt": ""}, "prompt", "may not be blank"),
        ({"extra_body": {"seed": 3}}, "seed", "Unrecognized request argument supplied: seed"),
    ],
)
def test_bad_requests_are_400_in_openai_shape(sdk, emulator, kwargs, param, text):
    kwargs = {"prompt": "x", **kwargs}

    with pytest.raises(openai.BadRequestError) as error:
        sdk.images.generate(**kwargs)

    assert error.value.status_code == 400
    assert error.value.param == param
    assert error.value.type == "invalid_request_error"
    assert text in error.value.message
    assert not GenerationRequest.objects.exists()


def test_provider_failure_is_502_and_not_retried(sdk, emulator):
    emulator.add_fault("text2img", Fault.error_200("Insufficient credits."), times=5)

    with pytest.raises(openai.InternalServerError) as error:
        sdk.images.generate(prompt="x", size="256x256")

    assert error.value.status_code == 502
    assert error.value.code == "generation_failed"
    assert error.value.type == "server_error"
    assert "Insufficient credits." in error.value.message
    assert TEST_API_KEY not in str(error.value.body)
    # x-should-retry: false — the SDK's automatic retries would pay again.
    assert emulator.calls["text2img"] == 1
    assert GenerationRequest.objects.get().status == GenerationRequest.Status.FAILED


def test_budget_refusal_is_insufficient_quota(sdk, settings, emulator):
    configure(settings, BUDGET_HOOK="tests.test_openai_compat.no_budget")

    with pytest.raises(openai.RateLimitError) as error:
        sdk.with_options(max_retries=0).images.generate(prompt="x")

    assert error.value.status_code == 429
    assert error.value.code == "insufficient_quota"
    assert error.value.body["message"] == "No images left this month."
    assert not GenerationRequest.objects.exists()


def no_budget(user, generation):
    return "No images left this month."


def test_generating_can_require_the_permission(sdk, settings, user, emulator):
    """API_REQUIRE_GENERATE_PERMISSION: the OpenAI endpoint needs generate_images too."""
    configure(settings, API_REQUIRE_GENERATE_PERMISSION=True)

    with pytest.raises(openai.PermissionDeniedError) as error:
        sdk.images.generate(prompt="x", size="256x256")
    user.user_permissions.add(Permission.objects.get(codename="generate_images"))
    allowed = sdk.images.generate(prompt="x", size="256x256")

    assert error.value.status_code == 403
    assert error.value.code == "permission_denied"
    assert "generate_images" in error.value.body["message"]
    assert len(allowed.data) == 1
    assert GenerationRequest.objects.count() == 1
    assert emulator.calls["text2img"] == 1


def test_idempotency_key_header_reuses_the_generation(sdk, emulator):
    headers = {"Idempotency-Key": "retry-me"}

    first = sdk.images.generate(prompt="a mill", size="256x256", extra_headers=headers)
    again = sdk.images.generate(prompt="a mill", size="256x256", extra_headers=headers)

    assert [item.url for item in again.data] == [item.url for item in first.data]
    assert GenerationRequest.objects.count() == 1
    assert emulator.calls["text2img"] == 1


def test_still_processing_is_504_pointing_at_the_request(user, settings, emulator):
    """With a worker backend that has not run yet, the view gives up after the timeout."""
    settings.TASKS = {
        **settings.TASKS,
        "idle": {
            "BACKEND": settings.TASKS["default"]["BACKEND"].replace(
                "immediate.Immediate", "dummy.Dummy"
            )
        },
    }
    configure(settings, TASK_BACKEND="idle", OPENAI_WAIT_TIMEOUT=0.2)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {Token.objects.create(user=user).key}")

    response = client.post(ENDPOINT, {"prompt": "x"}, format="json")

    assert response.status_code == 504
    error = response.json()["error"]
    assert error["code"] == "timeout"
    generation = GenerationRequest.objects.get()
    assert generation.status == GenerationRequest.Status.QUEUED
    assert response["Location"].endswith(f"/api/modelslab/generations/{generation.pk}/")
    assert response["x-should-retry"] == "false"
    assert emulator.calls["text2img"] == 0


def test_other_errors_keep_the_openai_shape(user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {Token.objects.create(user=user).key}")

    wrong_method = client.get(ENDPOINT)
    not_json = client.post(ENDPOINT, "prompt=x", content_type="application/x-www-form-urlencoded")
    broken_json = client.post(ENDPOINT, "{", content_type="application/json")
    not_an_object = client.post(ENDPOINT, [1], format="json")

    assert wrong_method.status_code == 405
    assert not_json.status_code == 415
    assert broken_json.status_code == 400
    assert not_an_object.status_code == 400
    for response in (wrong_method, not_json, broken_json, not_an_object):
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_deeply_nested_json_is_a_400_in_openai_shape(user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {Token.objects.create(user=user).key}")

    response = client.post(ENDPOINT, "[" * 100_000 + "]" * 100_000, content_type="application/json")

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "message": "JSON parse error - nested more than 32 levels deep",
            "type": "invalid_request_error",
            "param": None,
            "code": "parse_error",
        }
    }


def test_a_body_over_the_limit_is_413_in_openai_shape(sdk, user, emulator):
    """The body holds no images: its limit is Django's DATA_UPLOAD_MAX_MEMORY_SIZE, 2.5 MiB."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {sdk.api_key}")

    over_djangos_limit = client.post(
        ENDPOINT, {"prompt": "x", "user": "u" * (3 * 1024 * 1024)}, format="json"
    )
    with pytest.raises(openai.APIStatusError) as through_the_sdk:
        sdk.images.generate(prompt="a fox " * 500_000)

    assert over_djangos_limit.status_code == 413
    assert over_djangos_limit.json()["error"] == {
        "message": "The request body is larger than this endpoint accepts (2621440 bytes).",
        "type": "invalid_request_error",
        "param": None,
        "code": "request_too_large",
    }
    assert through_the_sdk.value.status_code == 413
    assert through_the_sdk.value.code == "request_too_large"
    assert not GenerationRequest.objects.exists()
    assert emulator.calls["text2img"] == 0
