"""Safety end to end: safety_checker sent, NSFW flags stored, refusals, the moderation hook."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.core.management import call_command
from PIL import Image
from rest_framework.authtoken.models import Token

from django_modelslab import pipeline
from django_modelslab.client import parse_response
from django_modelslab.exceptions import PromptRejected
from django_modelslab.models import GeneratedImage, GenerationRequest
from django_modelslab.signals import request_failed, request_refused, request_succeeded
from django_modelslab.testing.emulator import NSFW_TRIGGER

from .helpers import (
    CHANGELIST,
    api_client,
    api_url,
    change_url,
    configure,
    form_data,
    generate,
    messages_of,
    new_request,
    sent,
    signals_sent,
)

# transaction=True: on_commit callbacks fire at once, as in a project without ATOMIC_REQUESTS.
pytestmark = pytest.mark.django_db(transaction=True)

Status = GenerationRequest.Status
PROMPT = "a lighthouse at dusk"
FORBIDDEN = "Prompts about dragons are not allowed here."
HOOK = "tests.test_safety.no_dragons"


def no_dragons(request: GenerationRequest) -> bool | str | None:
    """A moderation hook: a message refuses, False refuses with the default text."""
    if "dragon" in request.prompt.lower():
        return FORBIDDEN
    if "wyvern" in request.prompt.lower():
        return False
    if "basilisk" in request.prompt.lower():
        raise PromptRejected("Basilisks neither.")
    return None


@pytest.fixture
def moderated(settings) -> None:
    configure(settings, MODERATION_HOOK=HOOK)


@pytest.fixture
def events() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    signals = {"failed": request_failed, "refused": request_refused, "succeeded": request_succeeded}
    with signals_sent(signals) as seen:
        yield seen


def pixels(image: GeneratedImage) -> set[tuple[int, ...]]:
    data = (Path(django_settings.MEDIA_ROOT) / image.image.name).read_bytes()
    with Image.open(io.BytesIO(data)) as opened:
        return {color for _count, color in opened.convert("RGB").getcolors(1 << 20)}


# --- safety_checker and NSFW flags ----------------------------------------------------------


def test_safety_checker_is_sent_only_when_set(emulator, settings):
    generate(PROMPT, safety_checker=True)
    generate(PROMPT, safety_checker=False)
    generate(PROMPT)
    configure(settings, SAFETY_CHECKER=False)
    generate(PROMPT)
    generate(PROMPT, safety_checker=True)  # the request's choice wins over the setting

    assert [body.get("safety_checker") for body in sent(emulator)] == [
        "yes",
        "no",
        None,
        "no",
        "yes",
    ]


def test_nsfw_flags_are_stored_per_image(emulator):
    emulator.configure(nsfw_outputs=[1])

    request = generate(prompt=f"a beach {NSFW_TRIGGER}", samples=2, safety_checker=True, seed=3)

    assert request.status == Status.SUCCEEDED, request.error
    clean, flagged = request.images.order_by("position")
    assert (clean.nsfw, flagged.nsfw) == (False, True)
    assert pixels(flagged) == {(0, 0, 0)}  # ModelsLab's blank placeholder, kept for the record
    assert len(pixels(clean)) > 100
    # Without the trigger the flag is reported false.
    assert generate(PROMPT, seed=4).images.get().nsfw is False


@pytest.mark.parametrize(
    ("value", "flags"),
    [
        (True, (True, True)),
        (False, (False, False)),
        ([False, True], (False, True)),
        (["no", "yes"], (False, True)),
        ([True], (True,)),  # shorter than the outputs: the rest is unknown
        (None, ()),
        ("maybe", ()),
    ],
)
def test_the_client_reads_nsfw_flags_per_output(value, flags):
    body = {"status": "success", "id": 1, "output": ["https://x/a.png", "https://x/b.png"]}
    if value is not None:
        body["nsfw_content_detected"] = value

    response = parse_response(body, status_code=200, payload={})

    assert response.nsfw == flags


def test_emulator_model_knobs_over_its_control_api(emulator):
    def post(path: str, body: dict) -> httpx.Response:
        return httpx.post(f"{emulator.origin}/_emulator/{path}", json=body, timeout=5)

    ok = post("config", {"models": ["sdxl"], "failing_models": {"sdxl": 503}})
    assert ok.status_code == 200
    assert ok.json()["config"]["models"] == ["sdxl"]
    assert post("config", {"failing_models": {"sdxl": "broken"}}).status_code == 400
    assert post("config", {"models": "sdxl"}).status_code == 400

    text2img = f"{emulator.base_url}/v6/images/text2img"
    missing = httpx.post(text2img, json={"key": "k", "prompt": "x", "model_id": "flux"})
    down = httpx.post(text2img, json={"key": "k", "prompt": "x", "model_id": "sdxl"})
    assert (missing.status_code, missing.json()["message"]) == (404, "Model not found: flux")
    assert down.status_code == 503
    emulator.reset()
    assert emulator.models is None and emulator.failing_models == {}


def test_a_fully_blanked_job_is_refused_not_failed_and_not_retried(emulator, events):
    request = generate(
        prompt=f"a beach {NSFW_TRIGGER}", samples=2, safety_checker=True, fallback_models=["sdxl"]
    )

    assert request.status == Status.REFUSED
    assert request.is_finished
    assert "safety checker flagged all 2 images as NSFW" in request.error
    assert "(model flux)" in request.error
    assert not request.images.exists()  # blank placeholders are not copied
    assert emulator.calls["text2img"] == 1  # not retried on sdxl (FALLBACK_ON_SAFETY is off)
    assert emulator.calls["download"] == 0
    assert [(e["model_id"], e["outcome"]) for e in request.model_attempts] == [("flux", "refused")]
    assert request.provider_responses[-1]["body"]["nsfw_content_detected"] is True
    assert [name for name, _kwargs in events] == ["refused"]
    assert events[0][1]["request"].pk == request.pk
    assert isinstance(events[0][1]["error"], Exception)

    # Refused is not final: change the prompt and generate again.
    request.prompt = "a beach at noon"
    request.save()
    again = pipeline.submit(request)
    assert again.status == Status.SUCCEEDED, again.error
    assert again.error == ""


def test_fallback_on_safety_tries_the_next_model(emulator, settings):
    configure(settings, FALLBACK_ON_SAFETY=True)

    request = generate(prompt=f"a beach {NSFW_TRIGGER}", fallback_models=["sdxl"])

    # The emulator flags the prompt on every model, so both are refused.
    assert request.status == Status.REFUSED
    assert [body["model_id"] for body in sent(emulator)] == ["flux", "sdxl"]
    assert [(e["model_id"], e["outcome"]) for e in request.model_attempts] == [
        ("flux", "refused"),
        ("sdxl", "refused"),
    ]
    assert request.error.startswith("No model produced images (2 tried).")


def test_with_the_checker_off_flagged_images_are_kept_as_they_are(emulator):
    request = generate(prompt=f"a beach {NSFW_TRIGGER}", safety_checker=False)

    assert request.status == Status.SUCCEEDED, request.error
    image = request.images.get()
    assert image.nsfw is True
    assert len(pixels(image)) > 100  # not blanked


# --- the moderation hook --------------------------------------------------------------------


def test_moderation_refuses_before_any_call(emulator, moderated, events):
    request = generate(prompt="a red dragon", fallback_models=["sdxl"])

    assert request.status == Status.REFUSED
    assert request.error == FORBIDDEN
    assert request.attempts == 0
    assert sum(emulator.calls.values()) == 0
    assert [name for name, _kwargs in events] == ["refused"]
    assert events[0][1]["duration"] is None

    assert generate(prompt="a wyvern").error == "The prompt was refused by moderation."
    assert generate(prompt="a basilisk").error == "Basilisks neither."
    assert sum(emulator.calls.values()) == 0

    request.prompt = "a red kite"
    request.save()
    assert pipeline.submit(request).status == Status.SUCCEEDED


def test_moderation_runs_again_when_the_task_runs(emulator, settings):
    request = new_request("a dragon")
    pipeline.submit(request, enqueue=False)  # no hook yet: queued
    configure(settings, MODERATION_HOOK=HOOK)

    done = pipeline.run(request.pk)

    assert done.status == Status.REFUSED
    assert done.error == FORBIDDEN
    assert sum(emulator.calls.values()) == 0


def test_regenerating_a_refused_prompt_keeps_the_images(emulator, settings):
    request = generate(prompt="a dragon kite")
    assert request.status == Status.SUCCEEDED
    configure(settings, MODERATION_HOOK=HOOK)

    again = pipeline.regenerate(request)

    assert again.status == Status.REFUSED
    assert again.error == FORBIDDEN
    assert again.images.filter(superseded=False).count() == 1
    assert emulator.calls["text2img"] == 1


# --- faces ----------------------------------------------------------------------------------


def test_admin_shows_refusals_and_models_tried(client, editor, emulator, moderated):
    emulator.configure(models={"sdxl"})
    refused = new_request("a dragon")
    fell_back = new_request("a kite", fallback_models=["sdxl"])

    response = client.post(
        CHANGELIST,
        {"action": "generate", "_selected_action": [refused.pk, fell_back.pk]},
        follow=True,
    )

    assert messages_of(response) == [
        "1 request succeeded.",
        f"1 request refused: #{refused.pk}: {FORBIDDEN}",
    ]
    listing = client.get(CHANGELIST + "?status__exact=refused").content.decode()
    assert "modelslab-status--refused" in listing and "a dragon" in listing
    assert "a kite" not in listing
    detail = client.get(change_url(refused)).content.decode()
    assert FORBIDDEN in detail
    assert 'name="_generate"' in detail  # refused can be generated again
    detail = client.get(change_url(fell_back)).content.decode()
    assert '<div class="readonly modelslab-produced-by"><code>sdxl</code></div>' in detail
    assert "modelslab-attempts" in detail
    assert "Model not found: flux" in detail
    assert "modelslab-try--succeeded" in detail


def test_admin_form_takes_fallbacks_and_the_safety_checker(client, editor, emulator, settings):
    configure(settings, ALLOWED_MODELS=["flux", "sdxl", "sd3"])
    data = form_data(fallback_models="sdxl, sd3\nsdxl", safety_checker="true", _save="Save")

    response = client.post(reverse_add(), data)

    assert response.status_code == 302, response.content.decode()[:2000]
    request = GenerationRequest.objects.get()
    assert request.fallback_models == ["sdxl", "sd3"]
    assert request.safety_checker is True
    page = client.get(change_url(request)).content.decode()
    assert "sdxl\nsd3</textarea>" in page
    assert '<option value="true" selected>' in page

    bad = client.post(reverse_add(), form_data(fallback_models="sdxl, midjourney"))
    assert bad.status_code == 200
    assert "Unknown model(s) midjourney" in bad.content.decode()
    assert GenerationRequest.objects.count() == 1


def reverse_add() -> str:
    from django.urls import reverse

    return reverse("admin:django_modelslab_generationrequest_add")


def test_admin_image_inline_flags_nsfw(client, editor, emulator):
    emulator.configure(nsfw_outputs=[0])
    request = generate(prompt=f"a beach {NSFW_TRIGGER}", samples=2, safety_checker=False)

    detail = client.get(change_url(request)).content.decode()

    assert detail.count('class="modelslab-nsfw"') == 1


def test_api_takes_fallbacks_and_shows_outcomes(owner, emulator, settings):
    emulator.configure(models={"sdxl"})
    client = api_client(owner)

    response = client.post(
        api_url("generation-list"),
        {"prompt": "a kite", "fallback_models": ["sdxl"], "safety_checker": False},
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "succeeded"
    assert body["fallback_models"] == ["sdxl"]
    assert body["safety_checker"] is False
    assert body["produced_by"] == "sdxl"
    assert [(e["model_id"], e["outcome"]) for e in body["model_attempts"]] == [
        ("flux", "failed"),
        ("sdxl", "succeeded"),
    ]
    assert body["images"][0]["nsfw"] is False
    assert sent(emulator)[-1]["safety_checker"] == "no"

    configure(settings, ALLOWED_MODELS=["flux"])
    bad = client.post(api_url("generation-list"), {"prompt": "x", "fallback_models": ["sdxl"]})
    assert bad.status_code == 400
    assert "Unknown model(s) sdxl" in json.dumps(bad.json()["fallback_models"])
    bad = client.post(api_url("generation-list"), {"prompt": "x", "fallback_models": "flux"})
    assert bad.status_code == 400


def test_api_shows_a_moderation_refusal_and_regenerates_it(owner, emulator, moderated):
    client = api_client(owner)

    response = client.post(api_url("generation-list"), {"prompt": "a dragon"})

    assert response.status_code == 201  # final at once: refused
    body = response.json()
    assert (body["status"], body["finished"], body["error"]) == ("refused", True, FORBIDDEN)
    assert sum(emulator.calls.values()) == 0
    generation = GenerationRequest.objects.get(pk=body["id"])
    generation.prompt = "a kite"
    generation.save()
    again = client.post(api_url("generation-regenerate", body["id"]))
    assert again.status_code == 200
    assert again.json()["status"] == "succeeded"


def test_openai_endpoint_answers_content_policy_violation(live_server, emulator, moderated):
    user = User.objects.create_user("painter")
    token = Token.objects.create(user=user)
    with openai.OpenAI(
        base_url=f"{live_server.url}/api/modelslab/v1", api_key=token.key, timeout=20
    ) as sdk:
        with pytest.raises(openai.BadRequestError) as error:
            sdk.images.generate(prompt="a dragon", size="256x256")
        with pytest.raises(openai.BadRequestError) as blanked:
            sdk.images.generate(prompt=f"a beach {NSFW_TRIGGER}", size="256x256")

    assert error.value.status_code == 400
    assert error.value.code == "content_policy_violation"
    assert error.value.type == "invalid_request_error"
    assert error.value.body["message"] == FORBIDDEN
    assert blanked.value.code == "content_policy_violation"
    assert "safety checker" in blanked.value.message
    assert emulator.calls["text2img"] == 1  # only the second prompt reached ModelsLab


def test_command_counts_refusals_apart_from_failures(emulator, settings):
    ok = new_request("a kite")
    blank = new_request(f"a beach {NSFW_TRIGGER}")
    dragon = new_request("a dragon")
    configure(settings, MODERATION_HOOK=HOOK)
    out = io.StringIO()

    call_command("regenerate_images", stdout=out, stderr=out)  # exit 0: nothing failed

    text = out.getvalue()
    assert "Done: 2 refused, 1 succeeded." in text
    assert f"Refused (1): {FORBIDDEN} [#{dragon.pk}]" in text  # by moderation: no call
    assert "Refused (1): ModelsLab's safety checker flagged the image" in text
    assert f"[#{blank.pk}]" in text
    assert "Produced by: flux 1." in text
    ok.refresh_from_db()
    dragon.refresh_from_db()
    assert (ok.status, dragon.status) == (Status.SUCCEEDED, Status.REFUSED)
