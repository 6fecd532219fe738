"""The REST API: what a frontend sees, who may see it, and what it refuses."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import random
import threading
import time
from datetime import timedelta

import httpx
import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import connection
from django.db.models import Q
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from PIL import Image
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from django_modelslab.models import Charge, GeneratedImage, GenerationRequest, IdempotencyKey
from django_modelslab.testing import Fault

from .conftest import TEST_API_KEY
from .helpers import api_client, api_url, configure, succeeded_request, with_perms

Status = GenerationRequest.Status


@pytest.fixture
def other(db) -> User:
    return User.objects.create_user("other")


@pytest.fixture
def staff(db) -> User:
    return User.objects.create_user("staff", is_staff=True)


@pytest.fixture(autouse=True)
def _fresh_throttle_cache():
    cache.clear()


# --- the whole way through ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_create_generates_and_answers_with_permanent_absolute_urls(owner, emulator):
    client = api_client(owner)

    response = client.post(
        api_url("generation-list"),
        {"prompt": "a lighthouse at dusk", "width": 256, "height": 320, "samples": 2, "seed": 7},
        format="json",
    )

    assert response.status_code == 201  # the inline task backend ran it: created and done
    body = response.json()
    generation = GenerationRequest.objects.get()
    assert body["id"] == generation.pk
    assert generation.requested_by == owner
    assert response["Location"] == body["links"]["self"]
    assert (
        body["links"]["self"] == f"http://testserver{api_url('generation-detail', generation.pk)}"
    )
    # The inline task backend ran the generation when the request was committed.
    assert body["status"] == "succeeded"
    assert body["finished"] is True
    assert (body["width"], body["height"], body["samples"], body["seed"]) == (256, 320, 2, 7)
    assert len(body["images"]) == 2
    for shown, stored in zip(body["images"], generation.images.order_by("position"), strict=True):
        assert shown["id"] == stored.pk
        assert shown["url"] == f"http://testserver{stored.image.url}"
        assert shown["thumbnail_url"] == f"http://testserver{stored.thumbnail.url}"
        assert shown["sha256"] == stored.sha256
        assert (shown["width"], shown["height"]) == (256, 320)
        assert shown["chosen"] is False
        assert shown["superseded"] is False
        with stored.image.open("rb") as file:
            assert hashlib.sha256(file.read()).hexdigest() == shown["sha256"]
    text = response.content.decode()
    assert emulator.origin not in text  # never ModelsLab's temporary URLs
    assert TEST_API_KEY not in text
    assert "source_url" not in text


@pytest.mark.django_db(transaction=True)
def test_a_long_rate_limit_fails_an_inline_run_at_once_saying_when(owner, emulator, settings):
    configure(settings, RETRY_BACKOFF_MAX=30.0, MAX_RETRIES=1)
    emulator.add_fault("text2img", Fault.rate_limit(retry_after=9999))
    client = api_client(owner)

    started = time.monotonic()
    response = client.post(api_url("generation-list"), {"prompt": "a kite"}, format="json")
    elapsed = time.monotonic() - started

    body = response.json()
    assert body["status"] == "failed"
    assert "ModelsLab asks to wait 9999 s; try again after " in body["error"]
    assert emulator.calls["text2img"] == 1  # not waited out (30 s, the cap) and sent again
    assert elapsed < 20  # generous: the fault answers at once
    # Nothing lost: asked again once the limit has cleared, the same request succeeds.
    again = client.post(body["links"]["regenerate"])
    assert again.json()["status"] == "succeeded"
    assert again.json()["id"] == body["id"]


@pytest.mark.django_db(transaction=True)
def test_regenerate_keeps_earlier_images_as_superseded(owner, emulator):
    client = api_client(owner)
    created = client.post(
        api_url("generation-list"), {"prompt": "a kite", "width": 256}, format="json"
    )
    first_image = created.json()["images"][0]

    response = client.post(created.json()["links"]["regenerate"])

    assert response.status_code == 200  # done at once (inline task backend)
    images = response.json()["images"]
    assert [image["superseded"] for image in images] == [True, False]
    assert images[0]["id"] == first_image["id"]
    assert emulator.calls["text2img"] == 2


@pytest.mark.django_db(transaction=True)
def test_regenerate_draws_a_new_seed_unless_the_body_keeps_it(owner, emulator):
    client = api_client(owner)
    body = {"prompt": "a kite", "width": 256, "height": 256, "seed": 42}
    created = client.post(api_url("generation-list"), body, format="json").json()
    regenerate = created["links"]["regenerate"]

    new = client.post(regenerate).json()  # no body: a new seed, a new picture
    kept = client.post(regenerate, {"keep_seed": True}, format="json")
    refused = client.post(regenerate, {"keep_seed": "perhaps"}, format="json")

    seed = new["seed"]
    assert seed not in (None, 42)
    assert new["images"][0]["sha256"] != new["images"][1]["sha256"]
    assert kept.status_code == 200  # done inline: the finished request
    assert kept.json()["seed"] == seed
    assert [image["seed"] for image in kept.json()["images"]] == [42, seed, seed]
    assert refused.status_code == 400
    assert list(refused.json()) == ["keep_seed"]
    sent = [body["seed"] for route, body in emulator.requests if route == "text2img"]
    assert sent == [42, seed, seed]  # keep_seed repeats the job: sent and paid again


@pytest.mark.django_db(transaction=True)
def test_an_unseeded_requests_images_show_the_seed_modelslab_used(owner, emulator):
    emulator.configure(mode="processing", minimal_fetch=True)  # the fetch answer has no meta

    created = api_client(owner).post(
        api_url("generation-list"), {"prompt": "a kite", "width": 256, "height": 256}, format="json"
    )

    generation = created.json()
    assert generation["status"] == "succeeded", generation["error"]
    assert generation["seed"] is None  # what was asked: ModelsLab picks
    job = next(iter(emulator.jobs.values()))
    assert [image["seed"] for image in generation["images"]] == [job.seed]


@pytest.mark.django_db
def test_regenerate_while_in_progress_is_a_conflict(owner):
    generation = succeeded_request(owner, status=Status.PROCESSING, images=0)

    response = api_client(owner).post(api_url("generation-regenerate", generation.pk))

    assert response.status_code == 409
    assert "processing" in response.json()["detail"]
    generation.refresh_from_db()
    assert generation.status == Status.PROCESSING


@pytest.mark.django_db
def test_choose_marks_one_image_and_unmarks_the_rest(owner):
    generation = succeeded_request(owner, images=3)
    first, second, _ = generation.images.order_by("position")
    client = api_client(owner)
    client.post(api_url("image-choose", first.pk))

    response = client.post(api_url("image-choose", second.pk))

    assert response.status_code == 200
    assert response.json()["chosen"] is True
    detail = client.get(api_url("generation-detail", generation.pk)).json()
    assert [image["chosen"] for image in detail["images"]] == [False, True, False]


# --- who may do what ----------------------------------------------------------------------

#: staff: is_staff and no permission; viewer: view_generationrequest; generator: that and
#: generate_images; superuser: every permission.
ACTORS = ("anonymous", "owner", "other", "staff", "viewer", "generator", "superuser")


def _actor(name: str, owner: User, other: User, staff: User) -> User | None:
    users = {"anonymous": None, "owner": owner, "other": other, "staff": staff}
    if name in users:
        return users[name]
    if name == "viewer":
        return with_perms("viewer", "view_generationrequest")
    if name == "generator":
        return with_perms("generator", "view_generationrequest", "generate_images")
    return User.objects.create_superuser("root")


def _call(client: APIClient, endpoint: str, generation: GenerationRequest):
    image = generation.images.first()
    calls = {
        "list generations": lambda: client.get(api_url("generation-list")),
        "create generation": lambda: client.post(
            api_url("generation-list"), {"prompt": "x"}, format="json"
        ),
        "get generation": lambda: client.get(api_url("generation-detail", generation.pk)),
        "regenerate": lambda: client.post(api_url("generation-regenerate", generation.pk)),
        "list images": lambda: client.get(api_url("image-list")),
        "get image": lambda: client.get(api_url("image-detail", image.pk)),
        "choose image": lambda: client.post(api_url("image-choose", image.pk)),
        "edit alt text": lambda: client.patch(
            api_url("image-detail", image.pk), {"alt_text": "edited"}, format="json"
        ),
    }
    return calls[endpoint]()


#: Expected status per endpoint for each of ACTORS, in order.
MATRIX = {
    "list generations": (401, 200, 200, 200, 200, 200, 200),
    "create generation": (401, 202, 202, 202, 202, 202, 202),
    "get generation": (401, 200, 404, 404, 200, 200, 200),
    "regenerate": (401, 202, 404, 404, 403, 202, 202),
    "list images": (401, 200, 200, 200, 200, 200, 200),
    "get image": (401, 200, 404, 404, 200, 200, 200),
    "choose image": (401, 200, 404, 404, 403, 200, 200),
    "edit alt text": (401, 200, 404, 404, 403, 200, 200),
}
#: Who sees the owner's request in the lists.
SEES_OWNERS = ("owner", "viewer", "generator", "superuser")


@pytest.mark.django_db
@pytest.mark.parametrize("endpoint", MATRIX)
@pytest.mark.parametrize("actor", ACTORS)
def test_permission_matrix(endpoint, actor, owner, other, staff):
    generation = succeeded_request(owner)
    user = _actor(actor, owner, other, staff)

    response = _call(api_client(user), endpoint, generation)

    assert response.status_code == MATRIX[endpoint][ACTORS.index(actor)]
    if actor == "anonymous":
        assert response["WWW-Authenticate"] == "Bearer"
    elif endpoint.startswith("list"):
        ids = [item["id"] for item in response.json()["results"]]
        mine = generation.pk if endpoint == "list generations" else generation.images.first().pk
        assert (mine in ids) == (actor in SEES_OWNERS)
    generation.refresh_from_db()
    if endpoint == "regenerate" and response.status_code != 202:
        assert generation.status == Status.SUCCEEDED  # untouched
        assert not generation.images.filter(superseded=True).exists()
    if endpoint == "choose image" and response.status_code != 200:
        assert not generation.images.filter(chosen=True).exists()
    if endpoint == "edit alt text":
        edited = generation.images.filter(alt_text="edited").exists()
        assert edited == (response.status_code == 200)


@pytest.mark.django_db(transaction=True)
def test_is_staff_alone_cannot_spend_other_users_credits(owner, staff, emulator):
    """A staff user with no permission neither sees nor regenerates (pays for) others' work."""
    mine = api_client(owner).post(api_url("generation-list"), {"prompt": "a fox"}, format="json")
    generation = GenerationRequest.objects.get(pk=mine.json()["id"])
    image = generation.images.get()
    charges = Charge.objects.count()
    client = api_client(staff)

    listed = client.get(api_url("generation-list")).json()["results"]
    images = client.get(api_url("image-list")).json()["results"]
    regenerated = client.post(api_url("generation-regenerate", generation.pk))
    chosen = client.post(api_url("image-choose", image.pk))

    assert emulator.calls["text2img"] == 1  # the owner's own generation only
    assert (regenerated.status_code, chosen.status_code) == (404, 404)
    assert (listed, images) == ([], [])
    assert Charge.objects.count() == charges
    assert not generation.images.filter(Q(superseded=True) | Q(chosen=True)).exists()


@pytest.mark.django_db
def test_a_viewer_may_look_but_not_act(owner):
    """view_generationrequest shows others' requests; acting on them needs generate_images."""
    generation = succeeded_request(owner)
    client = api_client(with_perms("viewer", "view_generationrequest"))

    regenerated = client.post(api_url("generation-regenerate", generation.pk))
    chosen = client.post(api_url("image-choose", generation.images.first().pk))

    assert client.get(api_url("generation-detail", generation.pk)).status_code == 200
    assert regenerated.status_code == chosen.status_code == 403
    assert "generate_images" in regenerated.json()["detail"]


@pytest.mark.django_db
def test_generating_can_require_the_permission(owner, settings):
    """API_REQUIRE_GENERATE_PERMISSION: creating and regenerating need generate_images."""
    configure(settings, API_REQUIRE_GENERATE_PERMISSION=True)
    generation = succeeded_request(owner)
    client = api_client(owner)

    created = client.post(api_url("generation-list"), {"prompt": "x"}, format="json")
    regenerated = client.post(api_url("generation-regenerate", generation.pk))
    chosen = client.post(api_url("image-choose", generation.images.first().pk))  # costs nothing
    listed = client.get(api_url("generation-list"))

    assert (created.status_code, regenerated.status_code) == (403, 403)
    assert "generate_images" in created.json()["detail"]
    assert (chosen.status_code, listed.status_code) == (200, 200)
    assert GenerationRequest.objects.count() == 1
    permitted = api_client(with_perms("maker", "generate_images"))
    assert permitted.post(api_url("generation-list"), {"prompt": "x"}).status_code == 202


@pytest.mark.django_db
def test_session_and_token_keywords_authenticate_too(client, owner):
    succeeded_request(owner)
    client.force_login(owner)
    assert client.get(api_url("generation-list")).status_code == 200

    token = Token.objects.create(user=owner)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert api.get(api_url("generation-list")).status_code == 200
    api.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    assert api.get(api_url("generation-list")).status_code == 401


@pytest.mark.django_db
def test_session_posts_need_the_csrf_token(owner):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(owner)

    response = client.post(api_url("generation-list"), {"prompt": "x"}, format="json")

    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


# --- the cache ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_cache_hit_does_not_link_to_another_users_request(owner, other, emulator):
    """Bob's identical seeded request reuses alice's images but is not told her request."""
    body = {"prompt": "a quiet harbour", "width": 256, "height": 256, "seed": 11}
    alice = api_client(owner)
    first = alice.post(api_url("generation-list"), body, format="json").json()
    again = alice.post(api_url("generation-list"), body, format="json").json()
    bob = api_client(other)

    bobs = bob.post(api_url("generation-list"), body, format="json")
    shown = [
        bob.get(api_url("generation-detail", bobs.json()["id"])).json(),
        bob.get(api_url("generation-list")).json()["results"][0],
    ]

    assert emulator.calls["text2img"] == 1  # the images were shared
    assert bobs.json()["images"][0]["sha256"] == first["images"][0]["sha256"]
    assert GenerationRequest.objects.get(pk=bobs.json()["id"]).cached_from_id == again["id"]
    assert [bobs.json()["cached_from"], *(item["cached_from"] for item in shown)] == [None] * 3
    assert f"/generations/{again['id']}/" not in bobs.content.decode()
    # Alice is shown her own source; whoever may see every request is shown bob's.
    assert again["cached_from"] == first["id"]
    viewer = api_client(with_perms("viewer", "view_generationrequest"))
    detail = viewer.get(api_url("generation-detail", bobs.json()["id"])).json()
    assert detail["cached_from"] == again["id"]


# --- validation ---------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({}, "prompt", "This field is required."),
        ({"prompt": "   "}, "prompt", "may not be blank"),
        ({"prompt": "x" * 2001}, "prompt", "no more than 2000 characters"),
        ({"prompt": "x", "negative_prompt": "x" * 2001}, "negative_prompt", "2000"),
        ({"prompt": "x", "width": 248}, "width", "greater than or equal to 256"),
        ({"prompt": "x", "height": 1032}, "height", "less than or equal to 1024"),
        ({"prompt": "x", "width": 300}, "width", "multiple of 8"),
        ({"prompt": "x", "width": "wide"}, "width", "valid integer"),
        ({"prompt": "x", "samples": 0}, "samples", "greater than or equal to 1"),
        ({"prompt": "x", "samples": 5}, "samples", "less than or equal to 4"),
        ({"prompt": "x", "steps": 51}, "steps", "less than or equal to 50"),
        ({"prompt": "x", "guidance": 0.5}, "guidance", "greater than or equal to 1"),
        ({"prompt": "x", "seed": -1}, "seed", "greater than or equal to 0"),
        ({"prompt": "x", "webhook": "http://evil.invalid"}, "webhook", "sets this parameter"),
        ({"prompt": "x", "track_id": "1-1"}, "track_id", "sets this parameter itself"),
        ({"prompt": "x", "Key": "theirs"}, "Key", "sets this parameter itself"),
        ({"prompt": "x", "extra": {"webhook": "http://evil.invalid"}}, "extra", "Unknown field."),
        ({"prompt": "x", "status": "succeeded"}, "status", "Unknown field."),
        ({"prompt": "x\x00y"}, "prompt", "Null characters are not allowed."),
    ],
)
def test_invalid_bodies_get_clear_400s(owner, body, field, message):
    response = api_client(owner).post(api_url("generation-list"), body, format="json")

    assert response.status_code == 400
    assert message in " ".join(response.json()[field])
    assert not GenerationRequest.objects.exists()


@pytest.mark.django_db
def test_a_body_that_is_not_an_object_is_refused(owner):
    response = api_client(owner).post(api_url("generation-list"), ["prompt"], format="json")

    assert response.status_code == 400
    assert "non_field_errors" in response.json()


@pytest.mark.django_db
def test_prompt_length_and_models_follow_the_settings(owner, settings):
    configure(settings, MAX_PROMPT_LENGTH=10, ALLOWED_MODELS=["sdxl"])
    client = api_client(owner)

    too_long = client.post(api_url("generation-list"), {"prompt": "x" * 11}, format="json")
    unknown = client.post(
        api_url("generation-list"), {"prompt": "x", "model_id": "flux"}, format="json"
    )
    known = client.post(
        api_url("generation-list"), {"prompt": "x", "model_id": "sdxl"}, format="json"
    )
    default = client.post(api_url("generation-list"), {"prompt": "x"}, format="json")

    assert too_long.status_code == 400
    assert "no more than 10 characters" in too_long.json()["prompt"][0]
    assert unknown.status_code == 400
    assert unknown.json()["model_id"] == ["Unknown model 'flux'; allowed: sdxl."]
    assert (known.status_code, known.json()["model_id"]) == (202, "sdxl")
    assert default.status_code == 202  # blank: DEFAULT_MODEL, the project's own choice


# --- idempotency ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_idempotency_key_replays_the_original_request(owner):
    client = api_client(owner)
    body = {"prompt": "a boat", "samples": 2}

    first = client.post(api_url("generation-list"), body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    again = client.post(
        api_url("generation-list"), {"samples": 2, "prompt": "a boat"}, format="json",
        HTTP_IDEMPOTENCY_KEY="k-1",
    )  # fmt: skip

    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again["Idempotent-Replayed"] == "true"
    assert not first.has_header("Idempotent-Replayed")
    assert GenerationRequest.objects.count() == 1
    assert IdempotencyKey.objects.get().request_id == first.json()["id"]


@pytest.mark.django_db
def test_idempotency_key_with_another_body_is_422(owner):
    client = api_client(owner)
    client.post(
        api_url("generation-list"), {"prompt": "a"}, format="json", HTTP_IDEMPOTENCY_KEY="k"
    )

    response = client.post(
        api_url("generation-list"), {"prompt": "b"}, format="json", HTTP_IDEMPOTENCY_KEY="k"
    )

    assert response.status_code == 422
    assert "different request body" in response.json()["detail"]
    assert GenerationRequest.objects.count() == 1


@pytest.mark.django_db
def test_idempotency_keys_are_scoped_to_the_user(owner, other):
    body = {"prompt": "same"}
    mine = api_client(owner).post(api_url("generation-list"), body, HTTP_IDEMPOTENCY_KEY="k")
    theirs = api_client(other).post(api_url("generation-list"), body, HTTP_IDEMPOTENCY_KEY="k")

    assert mine.status_code == theirs.status_code == 202
    assert mine.json()["id"] != theirs.json()["id"]
    assert GenerationRequest.objects.get(pk=theirs.json()["id"]).requested_by == other


@pytest.mark.django_db(transaction=True)
def test_idempotency_keys_are_scoped_to_the_endpoint(owner, emulator):
    """One key and body on the OpenAI endpoint, then on generations/: two calls, two requests."""
    client = api_client(owner)
    body = {"prompt": "a boat"}

    openai = client.post(api_url("openai-images"), body, format="json", HTTP_IDEMPOTENCY_KEY="k")
    native = client.post(api_url("generation-list"), body, format="json", HTTP_IDEMPOTENCY_KEY="k")
    again = client.post(api_url("generation-list"), body, format="json", HTTP_IDEMPOTENCY_KEY="k")

    assert (openai.status_code, native.status_code) == (200, 201)
    assert not native.has_header("Idempotent-Replayed")
    assert again["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == native.json()["id"]
    assert GenerationRequest.objects.count() == 2
    assert emulator.calls["text2img"] == 2
    scopes = dict(IdempotencyKey.objects.values_list("endpoint", "request_id"))
    assert scopes["generations"] == native.json()["id"]
    assert scopes["v1/images/generations"] != native.json()["id"]


@pytest.mark.django_db
def test_a_key_recorded_before_scoping_still_replays(owner):
    """A key stored before keys had an endpoint (blank) still protects a retry of its call."""
    client = api_client(owner)
    first = client.post(api_url("generation-list"), {"prompt": "x"}, HTTP_IDEMPOTENCY_KEY="old")
    IdempotencyKey.objects.update(endpoint="")  # as the migration leaves earlier rows

    retry = client.post(api_url("generation-list"), {"prompt": "x"}, HTTP_IDEMPOTENCY_KEY="old")

    assert retry["Idempotent-Replayed"] == "true"
    assert retry.json()["id"] == first.json()["id"]
    assert GenerationRequest.objects.count() == 1


@pytest.mark.django_db
def test_an_overlong_idempotency_key_is_refused(owner):
    response = api_client(owner).post(
        api_url("generation-list"), {"prompt": "x"}, format="json", HTTP_IDEMPOTENCY_KEY="k" * 256
    )

    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()


# --- lists ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_list_is_newest_first_paginated_and_filtered(owner):
    old = succeeded_request(owner, images=0, model_id="sdxl")
    GenerationRequest.objects.filter(pk=old.pk).update(
        created_at=timezone.now() - timedelta(days=3)
    )
    failed = succeeded_request(owner, images=0, status=Status.FAILED)
    newest = succeeded_request(owner, images=0)
    client = api_client(owner)

    def ids(**params: object) -> list[int]:
        response = client.get(api_url("generation-list"), params)
        assert response.status_code == 200, response.json()
        return [item["id"] for item in response.json()["results"]]

    assert ids() == [newest.pk, failed.pk, old.pk]
    assert ids(status="failed") == [failed.pk]
    assert ids(model="sdxl") == [old.pk]
    yesterday = (timezone.now() - timedelta(days=1)).date().isoformat()
    assert ids(created_after=yesterday) == [newest.pk, failed.pk]
    assert ids(created_before=yesterday) == [old.pk]
    page = client.get(api_url("generation-list"), {"page_size": 2, "page": 2}).json()
    assert page["count"] == 3
    assert [item["id"] for item in page["results"]] == [old.pk]
    assert page["previous"].startswith("http://testserver/")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "done"}, "status"),
        ({"created_after": "last tuesday"}, "created_after"),
        ({"created_before": "2024-13-45"}, "created_before"),
    ],
)
def test_bad_filters_are_400(owner, params, field):
    response = api_client(owner).get(api_url("generation-list"), params)

    assert response.status_code == 400
    assert field in response.json()


@pytest.mark.django_db
def test_image_list_filters(owner):
    generation = succeeded_request(owner, images=2)
    succeeded_request(owner, images=1)
    chosen = generation.images.first()
    GeneratedImage.objects.filter(pk=chosen.pk).update(chosen=True)
    client = api_client(owner)

    by_request = client.get(api_url("image-list"), {"request": generation.pk}).json()["results"]
    only_chosen = client.get(api_url("image-list"), {"chosen": "true"}).json()["results"]

    assert sorted(image["id"] for image in by_request) == sorted(
        generation.images.values_list("pk", flat=True)
    )
    assert [image["id"] for image in only_chosen] == [chosen.pk]
    assert client.get(api_url("image-list"), {"request": "x"}).status_code == 400


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["generation-list", "image-list"])
def test_lists_run_a_constant_number_of_queries(owner, name, django_assert_num_queries):
    client = api_client(owner)
    succeeded_request(owner, images=2)
    with CaptureQueriesContext(connection) as few:
        assert client.get(api_url(name)).status_code == 200
    for _ in range(9):
        succeeded_request(owner, images=3)

    with django_assert_num_queries(len(few.captured_queries)):
        response = client.get(api_url(name))

    assert response.json()["count"] == (10 if name == "generation-list" else 29)


# --- throttling and the budget hook -----------------------------------------------------------


@pytest.mark.django_db
def test_generate_scope_throttles_only_generating_calls(owner, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"modelslab_generate": "2/hour"},
    }
    client = api_client(owner)

    codes = [client.post(api_url("generation-list"), {"prompt": "x"}).status_code for _ in range(3)]

    assert codes == [202, 202, 429]
    assert client.get(api_url("generation-list")).status_code == 200


@pytest.mark.django_db
def test_read_scope_throttles_everything(owner, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"modelslab": "2/min"},
    }
    client = api_client(owner)

    codes = [client.get(api_url("image-list")).status_code for _ in range(3)]

    assert codes == [200, 200, 429]
    assert "Retry-After" in client.get(api_url("generation-list"))


def allow_one_request_each(user, generation):
    """A budget hook: one generation per user, ever."""
    if GenerationRequest.objects.filter(requested_by=user).exists():
        return f"{user.username} has used up this month's images."
    return None


@pytest.mark.django_db
def test_budget_hook_refuses_with_429(owner, settings):
    configure(settings, BUDGET_HOOK="tests.test_api.allow_one_request_each")
    client = api_client(owner)

    first = client.post(api_url("generation-list"), {"prompt": "x"})
    second = client.post(api_url("generation-list"), {"prompt": "y"})
    regenerate = client.post(api_url("generation-regenerate", first.json()["id"]))

    assert first.status_code == 202
    assert second.status_code == 429
    assert second.json() == {"detail": "owner has used up this month's images."}
    assert regenerate.status_code == 429
    assert GenerationRequest.objects.count() == 1


def refuse_by_raising(user, generation):
    """A budget hook that raises instead of returning (under the API error's former name)."""
    from django_modelslab.api.exceptions import BudgetExceeded

    raise BudgetExceeded("No images on Sundays.")


@pytest.mark.django_db
def test_a_budget_hook_may_raise_the_apis_429(owner, settings):
    from django_modelslab.api.exceptions import BudgetExceeded, OverBudget
    from django_modelslab.exceptions import BudgetExceeded as PipelineBudgetExceeded

    configure(settings, BUDGET_HOOK="tests.test_api.refuse_by_raising")

    answer = api_client(owner).post(api_url("generation-list"), {"prompt": "x"})

    assert (answer.status_code, answer.json()) == (429, {"detail": "No images on Sundays."})
    assert BudgetExceeded is OverBudget  # the old name still works
    assert OverBudget is not PipelineBudgetExceeded  # no longer two errors of one name
    assert GenerationRequest.objects.count() == 0


# --- settings checks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "check_id"),
    [
        ({"ALLOWED_MODELS": "flux"}, "django_modelslab.E020"),
        ({"ALLOWED_MODELS": ["flux", 3]}, "django_modelslab.E020"),
        ({"MODEL_ALIASES": ["dall-e-3"]}, "django_modelslab.E021"),
        ({"BUDGET_HOOK": "tests.test_api.no_such_hook"}, "django_modelslab.E022"),
        ({"BUDGET_HOOK": "tests.test_api.ACTORS"}, "django_modelslab.E022"),
        ({"OPENAI_WAIT_TIMEOUT": 0}, "django_modelslab.E003"),
        ({"API_REQUIRE_GENERATE_PERMISSION": "yes"}, "django_modelslab.E023"),
        ({"API_REQUIRE_GENERATE_PERMISSION": None}, "django_modelslab.E023"),
    ],
)
def test_api_settings_are_checked(settings, override, check_id):
    from django_modelslab.checks import check_settings

    configure(settings, **override)

    assert check_id in [message.id for message in check_settings()]


def test_valid_api_settings_pass_the_checks(settings):
    from django_modelslab.checks import check_settings

    configure(
        settings,
        ALLOWED_MODELS=["flux"],
        MODEL_ALIASES={"dall-e-3": "flux"},
        BUDGET_HOOK="tests.test_api.allow_one_request_each",
        API_REQUIRE_GENERATE_PERMISSION=True,
    )

    assert check_settings() == []


def test_stored_image_urls_are_served(live_server, owner, emulator, transactional_db):
    """The absolute URLs the API gives are real: the live server serves the stored bytes."""
    token = Token.objects.create(user=owner)
    base = f"{live_server.url}/api/modelslab"
    headers = {"Authorization": f"Bearer {token.key}"}

    created = httpx.post(
        f"{base}/generations/", json={"prompt": "a bell", "width": 256}, headers=headers
    )
    image = created.json()["images"][0]
    served = httpx.get(image["url"])
    thumbnail = httpx.get(image["thumbnail_url"])

    assert created.status_code == 201
    assert image["url"].startswith(f"{live_server.url}/media/")
    assert hashlib.sha256(served.content).hexdigest() == image["sha256"]
    assert thumbnail.status_code == 200
    assert thumbnail.content[:4] == b"RIFF"  # WebP


# --- the idempotency race (PostgreSQL: real concurrent transactions) ---------------------------

RACE = threading.Barrier(2, timeout=10)


def wait_for_the_other_call(user, generation):
    """A budget hook that holds each call until both have looked the key up and missed it."""
    RACE.wait()


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="runs in the PostgreSQL pass (make test-pg: python -m tests.pgcluster)",
)
@pytest.mark.django_db(transaction=True)
def test_two_racing_calls_with_one_key_make_one_request(owner, settings):
    configure(settings, BUDGET_HOOK="tests.test_api.wait_for_the_other_call", TASK_BACKEND="idle")
    dummy = settings.TASKS["default"]["BACKEND"].replace("immediate.Immediate", "dummy.Dummy")
    settings.TASKS = {**settings.TASKS, "idle": {"BACKEND": dummy}}
    RACE.reset()
    token = Token.objects.create(user=owner).key
    answers: list = []

    def post() -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        try:
            answers.append(
                client.post(
                    api_url("generation-list"), {"prompt": "x"}, HTTP_IDEMPOTENCY_KEY="race"
                )
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)

    assert [answer.status_code for answer in answers] == [202, 202]
    assert answers[0].json()["id"] == answers[1].json()["id"]
    assert sorted(answer.has_header("Idempotent-Replayed") for answer in answers) == [False, True]
    assert GenerationRequest.objects.count() == 1
    assert IdempotencyKey.objects.count() == 1


@pytest.mark.django_db
def test_date_filters_accept_any_iso_offset(owner):
    """Found by schemathesis on PostgreSQL, which refuses offsets beyond ±15:59."""
    succeeded_request(owner, images=0)
    client = api_client(owner)

    far_offset = client.get(
        api_url("generation-list"), {"created_before": "2999-01-05T17:18:19-23:59"}
    )
    too_early = client.get(
        api_url("generation-list"), {"created_after": "0001-01-01T00:00:00+01:00"}
    )

    assert far_offset.status_code == 200
    assert far_offset.json()["count"] == 1
    assert too_early.status_code == 400


# --- odd input: deep nesting, huge numbers, large bodies ---------------------------------------

#: 200 KB of brackets: json.loads alone ends in a RecursionError.
BRACKETS = "[" * 100_000 + "]" * 100_000
HUGE = 10**23


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body", [BRACKETS, '{"prompt": ' + nested(40) + "}", '{"prompt": ' + nested(960) + "}"]
)
def test_deeply_nested_json_is_a_400(owner, body):
    response = api_client(owner).post(
        api_url("generation-list"), body, content_type="application/json"
    )

    assert response.status_code == 400
    assert response.json() == {"detail": "JSON parse error - nested more than 32 levels deep"}
    assert not GenerationRequest.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('{"\\ud800": 1, "prompt": "x"}', "a string holds a lone surrogate"),
        ('{"prompt": "x", "guidance": 1e999}', "inf is not a JSON number"),
    ],
)
def test_json_that_cannot_be_sent_back_is_a_400(owner, body, reason):
    """A lone surrogate in a key ended in a 500 when the "Unknown field" answer was rendered."""
    response = api_client(owner).post(
        api_url("generation-list"), body, content_type="application/json"
    )

    assert response.status_code == 400
    assert response.json()["detail"].startswith(f"JSON parse error - {reason}")


@pytest.mark.django_db
def test_out_of_range_ids_are_400_in_filters_and_bodies_and_404_in_paths(owner):
    generation = succeeded_request(owner, images=1)
    client = api_client(owner)

    as_filter = client.get(api_url("image-list"), {"request": HUGE})
    in_body = client.post(
        api_url("generation-list"),
        {"prompt": "x", "kind": "img2img", "init_image_id": HUGE},
        format="json",
    )
    paths = [
        client.get(api_url("generation-detail", HUGE)),
        client.post(api_url("generation-regenerate", HUGE)),
        client.get(api_url("image-detail", HUGE)),
        client.post(api_url("image-choose", HUGE)),
    ]

    assert as_filter.status_code == 400
    assert "less than or equal to 9223372036854775807" in as_filter.json()["request"][0]
    assert in_body.status_code == 400
    assert "less than or equal to" in in_body.json()["init_image_id"][0]
    assert [answer.status_code for answer in paths] == [404] * 4
    assert GenerationRequest.objects.get() == generation


@pytest.mark.django_db
def test_a_json_body_over_the_limit_is_413_before_it_is_read(owner, settings):
    """Two data: URLs of MAX_IMAGE_BYTES plus room for the text, when over Django's 2.5 MiB."""
    configure(settings, MAX_IMAGE_BYTES=1024 * 1024)
    limit = 2 * (4 * -(-1024 * 1024 // 3) + 23) + 2 * 2000 * 12 + 64 * 1024
    assert limit > django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    client = api_client(owner)
    body = json.dumps({"prompt": "x", "kind": "img2img", "init_image": "A" * limit})

    response = client.post(api_url("generation-list"), body, content_type="application/json")

    assert response.status_code == 413
    assert response.json() == {
        "detail": f"The request body is larger than this endpoint accepts ({limit} bytes)."
    }
    assert not GenerationRequest.objects.exists()


@pytest.mark.django_db
def test_a_form_field_over_djangos_limit_is_413(owner):
    """Multipart keeps DATA_UPLOAD_MAX_MEMORY_SIZE for fields; files are the way for images."""
    response = api_client(owner).post(
        api_url("generation-list"),
        {"prompt": "x", "kind": "img2img", "init_image": "A" * (3 * 1024 * 1024)},
        format="multipart",
    )

    assert response.status_code == 413
    assert "send input images as file parts" in response.json()["detail"]
    assert not GenerationRequest.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_data_url_image_larger_than_djangos_body_limit_is_accepted(owner, emulator):
    """MAX_IMAGE_BYTES is the limit for data: inputs, not DATA_UPLOAD_MAX_MEMORY_SIZE."""
    noise = Image.frombytes("RGB", (1024, 768), random.Random(5).randbytes(1024 * 768 * 3))
    buffer = io.BytesIO()
    noise.save(buffer, "PNG", compress_level=0)
    init = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    body = json.dumps({"prompt": "x", "kind": "img2img", "init_image": init, "strength": 0.5})
    assert len(body) > django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE

    response = api_client(owner).post(
        api_url("generation-list"), body, content_type="application/json"
    )

    assert response.status_code == 201, response.content[:300]
    generation = GenerationRequest.objects.get()
    assert generation.status == Status.SUCCEEDED, generation.error
    with generation.init_image.open("rb") as file:
        assert file.read() == buffer.getvalue()


# --- what DRF users expect: all errors at once, forms, a root, 201 when done ----------------

FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def worker(settings) -> None:
    """A worker task backend that has not run yet: a created request stays queued."""
    dummy = settings.TASKS["default"]["BACKEND"].replace("immediate.Immediate", "dummy.Dummy")
    settings.TASKS = {**settings.TASKS, "worker": {"BACKEND": dummy}}
    configure(settings, TASK_BACKEND="worker")


@pytest.mark.django_db
def test_unknown_fields_are_reported_with_every_other_error(owner):
    body = {"prompt": " ", "width": 300, "samples": 9, "colour": "red", "webhook": "http://x"}

    response = api_client(owner).post(api_url("generation-list"), body, format="json")

    assert response.status_code == 400
    errors = response.json()
    assert list(errors)[:2] == ["colour", "webhook"]  # unknown fields first (OpenAI's param)
    assert errors["colour"] == ["Unknown field."]
    assert "sets this parameter itself" in errors["webhook"][0]
    assert set(errors) == {"colour", "webhook", "prompt", "width", "samples"}
    assert not GenerationRequest.objects.exists()


@pytest.mark.django_db
def test_unknown_fields_are_reported_with_the_bodys_own_errors(owner):
    """The checks across fields (an img2img needs an input image) are reported too."""
    body = {"prompt": "x", "kind": "img2img", "colour": "red"}

    response = api_client(owner).post(api_url("generation-list"), body, format="json")

    assert response.status_code == 400
    assert response.json()["colour"] == ["Unknown field."]
    assert "init_image" in response.json()


@pytest.mark.django_db(transaction=True)
def test_regenerate_refuses_unknown_fields_and_changes_nothing(owner, emulator):
    client = api_client(owner)
    created = client.post(api_url("generation-list"), {"prompt": "a kite", "width": 256}).json()

    response = client.post(
        created["links"]["regenerate"], {"prompt": "changed", "keep_seed": "maybe"}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {
        "prompt": ["Unknown field."],
        "keep_seed": ["Must be a valid boolean."],
    }
    generation = GenerationRequest.objects.get()
    assert (generation.prompt, generation.attempts) == ("a kite", 1)
    assert not generation.images.filter(superseded=True).exists()
    assert emulator.calls["text2img"] == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("body", "same_seed"),
    [
        pytest.param({"keep_seed": True}, True, id="keep_seed"),
        pytest.param({}, False, id="default"),
    ],
)
def test_regenerate_passes_keep_seed_to_the_pipeline(owner, emulator, body, same_seed):
    client = api_client(owner)
    created = client.post(api_url("generation-list"), {"prompt": "a kite", "seed": 7}).json()

    response = client.post(created["links"]["regenerate"], body, format="json")

    assert response.status_code == 200
    newest = [image for image in response.json()["images"] if not image["superseded"]]
    assert (newest[0]["seed"] == 7) is same_seed


@pytest.mark.django_db
def test_the_api_root_links_to_every_endpoint(owner):
    anonymous = APIClient().get("/api/modelslab/")

    response = api_client(owner).get("/api/modelslab/")

    assert anonymous.status_code == 401
    assert response.status_code == 200
    assert response.json() == {
        "generations": f"http://testserver{api_url('generation-list')}",
        "images": f"http://testserver{api_url('image-list')}",
        "openai_images": f"http://testserver{api_url('openai-images')}",
        "schema": f"http://testserver{api_url('schema')}",
    }
    assert api_url("api-root") == "/api/modelslab/"


@pytest.mark.django_db(transaction=True)
def test_a_form_encoded_create_is_accepted(owner, emulator):
    """A boolean left out of a form takes its default (DRF would read an unticked box)."""
    body = "prompt=a+kite&width=256&samples=2&seed=7&fallback_models=sdxl&fallback_models=sd3"

    response = api_client(owner).post(api_url("generation-list"), body, content_type=FORM)

    assert response.status_code == 201, response.json()
    created = response.json()
    assert (created["prompt"], created["width"], created["samples"]) == ("a kite", 256, 2)
    assert created["fallback_models"] == ["sdxl", "sd3"]
    assert created["use_cache"] is True
    assert len(created["images"]) == 2


@pytest.mark.django_db
def test_a_form_keyed_twice_with_other_values_is_another_body(owner):
    """An Idempotency-Key's body hash counts every value of a repeated form field."""
    client = api_client(owner)
    first = client.post(
        api_url("generation-list"),
        "prompt=x&fallback_models=a&fallback_models=b",
        content_type=FORM,
        HTTP_IDEMPOTENCY_KEY="form",
    )
    other = client.post(
        api_url("generation-list"),
        "prompt=x&fallback_models=c&fallback_models=b",
        content_type=FORM,
        HTTP_IDEMPOTENCY_KEY="form",
    )

    assert first.status_code == 202  # queued: the task runs once the transaction commits
    assert other.status_code == 422


@pytest.mark.django_db
def test_form_limits_answer_in_the_apis_shape(owner, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 5
    client = api_client(owner)
    large = "prompt=x&kind=img2img&init_image=" + "A" * (3 * 1024 * 1024)

    too_large = client.post(api_url("generation-list"), large, content_type=FORM)
    too_many = client.post(api_url("generation-list"), "&".join(["a=1"] * 6), content_type=FORM)

    assert too_large.status_code == 413
    assert "DATA_UPLOAD_MAX_MEMORY_SIZE" in too_large.json()["detail"]
    assert too_many.status_code == 400
    assert too_many.json()["detail"].startswith("Form parse error - The number of GET/POST")
    assert not GenerationRequest.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_create_answers_201_with_the_finished_request_when_done(owner, emulator):
    response = api_client(owner).post(
        api_url("generation-list"), {"prompt": "a kite"}, format="json"
    )

    assert response.status_code == 201
    assert response["Location"] == response.json()["links"]["self"]
    assert (response.json()["status"], response.json()["finished"]) == ("succeeded", True)


@pytest.mark.django_db(transaction=True)
def test_create_and_regenerate_answer_202_when_queued(owner, emulator, worker):
    client = api_client(owner)
    created = client.post(api_url("generation-list"), {"prompt": "a kite"}, format="json")
    GenerationRequest.objects.update(status=Status.FAILED)  # as if the worker had given up

    regenerated = client.post(created.json()["links"]["regenerate"])

    for response in (created, regenerated):
        assert response.status_code == 202
        assert response["Location"] == response.json()["links"]["self"]
        assert (response.json()["status"], response.json()["finished"]) == ("queued", False)
    assert sum(emulator.calls.values()) == 0


@pytest.mark.django_db(transaction=True)
def test_a_replay_answers_with_the_original_status(owner, emulator, worker):
    """Queued (202) when first sent: a replay after the worker finished is still a 202."""
    from django_modelslab import pipeline

    client = api_client(owner)
    key = {"HTTP_IDEMPOTENCY_KEY": "once"}
    first = client.post(api_url("generation-list"), {"prompt": "a boat"}, format="json", **key)
    pipeline.run(first.json()["id"])  # what the worker does

    again = client.post(api_url("generation-list"), {"prompt": "a boat"}, format="json", **key)

    assert first.status_code == again.status_code == 202
    assert again["Idempotent-Replayed"] == "true"
    assert again.json()["status"] == "succeeded"  # the request as it is now
    assert IdempotencyKey.objects.get().response_status == 202


@pytest.mark.django_db(transaction=True)
def test_a_replay_of_a_finished_create_is_a_201(owner, emulator):
    client = api_client(owner)
    key = {"HTTP_IDEMPOTENCY_KEY": "once"}

    first = client.post(api_url("generation-list"), {"prompt": "a boat"}, format="json", **key)
    again = client.post(api_url("generation-list"), {"prompt": "a boat"}, format="json", **key)

    assert first.status_code == again.status_code == 201
    assert again["Idempotent-Replayed"] == "true"
    assert emulator.calls["text2img"] == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("status", "shown"),
    [(Status.PROCESSING, 12.5), (Status.SUCCEEDED, None), (Status.FAILED, None)],
)
def test_eta_is_cleared_once_the_request_is_final(owner, status, shown):
    generation = succeeded_request(owner, status=status, eta=12.5, images=0)

    body = api_client(owner).get(api_url("generation-detail", generation.pk)).json()

    assert body["eta"] == shown
