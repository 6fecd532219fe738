"""img2img, inpaint, upscale and v7 through the pipeline and the emulator, checked by pixels."""

from __future__ import annotations

import json
import re

import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.core.management.base import CommandError
from PIL import Image

from django_modelslab import inputs, kinds, pipeline
from django_modelslab.client import ModelsLabClient, elide_image_data, fetch_path, generate_path
from django_modelslab.exceptions import InputMissing, ModelsLabError, ProviderRejected
from django_modelslab.models import GenerationRequest
from django_modelslab.testing import Fault

from .conftest import TEST_API_KEY
from .helpers import (
    WEBHOOK_SECRET,
    configure,
    finished,
    mask_png,
    new_kind_request,
    pixels,
    png,
    stored_pixels,
    submit_and_run,
    wait_for,
)

pytestmark = pytest.mark.django_db

Kind = GenerationRequest.Kind
Status = GenerationRequest.Status


def test_a_missing_input_is_an_error_of_the_one_hierarchy():
    request = new_kind_request(Kind.INPAINT, init=png())
    with pytest.raises(InputMissing, match="Inpaint needs a mask image") as missing:
        kinds.input_images(request)
    assert isinstance(missing.value, ModelsLabError)
    assert kinds.InputMissing is InputMissing  # the old import path


# --- the client's routes --------------------------------------------------------------------


def test_each_kind_and_api_version_has_its_generate_and_fetch_route():
    assert generate_path("img2img") == "v6/images/img2img"
    assert generate_path("inpaint") == "v6/images/inpaint"
    assert generate_path("upscale") == "v6/image_editing/super_resolution"
    assert fetch_path("upscale") == "v6/image_editing/fetch/{id}"
    assert generate_path("text2img", "v7") == "v7/images/text-to-image"
    assert generate_path("img2img", "v7") == "v7/images/image-to-image"
    assert fetch_path("img2img", "v7") == "v7/images/fetch/{id}"
    with pytest.raises(ValueError, match="v7 has no 'upscale' endpoint"):
        generate_path("upscale", "v7")


def test_inline_image_data_is_elided_wherever_it_is_kept():
    data_url = "data:image/png;base64," + "A" * 5000
    shown = elide_image_data({"meta": {"init_image": data_url, "raw": "Q" * 5000, "ok": "x"}})

    assert shown["meta"]["init_image"].startswith("[data:image/png;base64, ")
    assert "elided" in shown["meta"]["raw"]
    assert shown["meta"]["ok"] == "x"


# --- image to image ------------------------------------------------------------------------


def test_img2img_with_strength_zero_returns_the_input_pixels(emulator):
    init = png()
    request = new_kind_request(Kind.IMG2IMG, init=init, strength=0.0)

    request = submit_and_run(request)

    assert request.status == Status.SUCCEEDED, request.error
    assert (request.width, request.height) == (256, 192)  # the output follows the input
    image = request.images.get()
    assert (image.width, image.height) == (256, 192)
    assert stored_pixels(image).tobytes() == pixels(init).tobytes()
    assert emulator.calls["img2img"] == 1 and emulator.calls["text2img"] == 0
    # the input is stored by content, under inputs/, and went inline (filesystem storage)
    assert request.init_image.name.startswith("modelslab/inputs/")
    sent = emulator.requests[-1][1]
    assert sent["init_image"].startswith("data:image/png;base64,")
    assert sent["strength"] == 0.0
    assert "width" not in sent and "height" not in sent
    # ... and is never kept verbatim: ModelsLab echoes it in meta
    kept = json.dumps(request.provider_responses)
    assert sent["init_image"] not in kept
    assert "elided" in kept
    assert TEST_API_KEY not in kept


def test_img2img_with_strength_one_returns_the_prompt_picture(emulator):
    init = png()
    request = submit_and_run(new_kind_request(Kind.IMG2IMG, init=init, strength=1.0))

    out = stored_pixels(request.images.get())
    assert out.size == (256, 192)
    assert out.tobytes() != pixels(init).tobytes()
    # half way: each pixel is between the input's and the full-strength output's
    half = submit_and_run(new_kind_request(Kind.IMG2IMG, init=init, strength=0.5))
    mid = stored_pixels(half.images.get())
    a, b, m = pixels(init).getpixel((3, 3)), out.getpixel((3, 3)), mid.getpixel((3, 3))
    assert all(min(x, y) - 1 <= z <= max(x, y) + 1 for x, y, z in zip(a, b, m, strict=True))


def test_a_generated_image_is_the_input_of_another_request(emulator):
    source = submit_and_run(new_kind_request(Kind.TEXT2IMG, width=256, height=256))
    image = source.images.get()
    request = GenerationRequest(kind=Kind.IMG2IMG, prompt="the same, at night", strength=0.0)
    kinds.set_inputs(request, init_from=image)
    request.save()

    request = submit_and_run(request)

    assert request.status == Status.SUCCEEDED, request.error
    assert request.init_from == image
    assert request.init_image.name == image.image.name  # no copy: the same stored key
    assert stored_pixels(request.images.get()).tobytes() == stored_pixels(image).tobytes()


def test_a_processing_img2img_job_is_polled_on_the_v6_images_fetch_route(emulator):
    emulator.mode = "processing"
    request = submit_and_run(new_kind_request(Kind.IMG2IMG, init=png(), strength=0.0))

    assert request.status == Status.SUCCEEDED, request.error
    assert emulator.calls["fetch"] >= 1


# --- inpaint -------------------------------------------------------------------------------


def test_inpaint_repaints_the_white_of_the_mask_and_keeps_the_rest(emulator):
    init = png((256, 256))
    box = (64, 64, 192, 160)
    request = submit_and_run(
        new_kind_request(Kind.INPAINT, init=init, mask=mask_png((256, 256), box))
    )

    assert request.status == Status.SUCCEEDED, request.error
    assert request.mask_image.name.startswith("modelslab/inputs/")
    out, before = stored_pixels(request.images.get()), pixels(init)
    inside = out.crop(box)
    assert inside.tobytes() != before.crop(box).tobytes()
    for x, y in [(0, 0), (255, 255), (10, 128), (200, 70), (63, 63), (192, 160)]:
        assert out.getpixel((x, y)) == before.getpixel((x, y)), (x, y)
    assert emulator.calls["inpaint"] == 1


# --- upscale -------------------------------------------------------------------------------


def test_upscale_doubles_the_dimensions_on_the_image_editing_routes(emulator):
    emulator.mode = "processing"
    init = png((200, 120))
    request = submit_and_run(new_kind_request(Kind.UPSCALE, init=init, scale=2, prompt=""))

    assert request.status == Status.SUCCEEDED, request.error
    assert request.model_id == "realesr-general-x4v3"  # DEFAULT_UPSCALE_MODEL
    assert (request.width, request.height) == (400, 240)
    image = request.images.get()
    assert (image.width, image.height) == (400, 240)
    expected = pixels(init).resize((400, 240), Image.Resampling.LANCZOS)
    assert stored_pixels(image).tobytes() == expected.tobytes()
    assert emulator.calls["upscale"] == 1
    assert emulator.calls["upscale_fetch"] >= 1 and emulator.calls["fetch"] == 0
    sent = emulator.requests[0][1]
    assert sent["scale"] == 2 and "prompt" not in sent and "samples" not in sent


# --- v7 ------------------------------------------------------------------------------------


def test_v7_request_goes_to_the_v7_routes_with_the_key_in_header_and_body(emulator):
    emulator.mode = "processing"
    request = submit_and_run(
        new_kind_request(Kind.TEXT2IMG, api_version="v7", width=256, height=256)
    )

    assert request.status == Status.SUCCEEDED, request.error
    assert request.model_id == "flux-2-pro"  # DEFAULT_V7_MODEL
    assert emulator.calls["v7_text2img"] == 1 and emulator.calls["text2img"] == 0
    assert emulator.calls["v7_fetch"] >= 1 and emulator.calls["fetch"] == 0
    v7_headers = [headers for route, headers in emulator.request_headers if route[:2] == "v7"]
    assert len(v7_headers) >= 2
    assert all(headers["key"] == "***" for headers in v7_headers)  # sent (masked in the record)
    assert all(body["key"] == "***" for _, body in emulator.requests)


def test_v7_image_to_image(emulator):
    init = png()
    request = submit_and_run(
        new_kind_request(Kind.IMG2IMG, api_version="v7", init=init, strength=0.0)
    )

    assert request.status == Status.SUCCEEDED, request.error
    assert emulator.calls["v7_img2img"] == 1
    assert stored_pixels(request.images.get()).tobytes() == pixels(init).tobytes()


def test_emulator_v7_refuses_a_request_without_any_key(emulator):
    with ModelsLabClient("", emulator.base_url, max_retries=0) as client:
        with pytest.raises(ProviderRejected, match=re.escape("The key field is required")):
            client.generate("text2img", {"prompt": "x", "model_id": "flux-2-pro"}, api_version="v7")
        # v6 keeps accepting an empty key (the emulator's default)
        assert client.text2img({"prompt": "x", "model_id": "flux"}).done


# --- bad inputs ----------------------------------------------------------------------------


def test_a_missing_stored_input_fails_the_request_with_a_reason_and_no_call(emulator):
    request = new_kind_request(Kind.IMG2IMG, init=png(), strength=0.3)
    GenerationRequest.objects.filter(pk=request.pk).update(init_image="modelslab/inputs/gone.png")

    request = submit_and_run(request)

    assert request.status == Status.FAILED
    assert "modelslab/inputs/gone.png" in request.error
    assert emulator.calls["img2img"] == 0
    assert request.track_id == ""  # nothing was sent: a retry may submit


def test_the_emulator_answers_laravel_style_errors_for_missing_inputs(emulator):
    with ModelsLabClient(TEST_API_KEY, emulator.base_url, max_retries=0) as client:
        with pytest.raises(ProviderRejected, match=re.escape("The init image field is required.")):
            client.generate("img2img", {"prompt": "x", "model_id": "flux"})
        with pytest.raises(ProviderRejected, match=re.escape("The mask image field is required.")):
            client.generate("inpaint", {"prompt": "x", "model_id": "flux", "init_image": "eA=="})
        with pytest.raises(ProviderRejected, match=re.escape("The init image must be an image.")):
            client.generate("upscale", {"init_image": "bm90IGFuIGltYWdl"})
        with pytest.raises(ProviderRejected, match=re.escape("host example.com not allowed")):
            client.generate("upscale", {"init_image": "https://example.com/a.png"})
        strength = re.escape("The strength must be between 0 and 1.")
        with pytest.raises(ProviderRejected, match=strength):
            client.generate(
                "img2img", {"prompt": "x", "model_id": "f", "init_image": "eA==", "strength": 2}
            )


def test_url_transport_needs_an_absolute_address(emulator, settings):
    configure(settings, INPUT_IMAGE_TRANSPORT="url")
    request = submit_and_run(new_kind_request(Kind.IMG2IMG, init=png()))

    assert request.status == Status.FAILED
    assert "PUBLIC_BASE_URL" in request.error

    configure(settings, PUBLIC_BASE_URL="http://127.0.0.1:9")
    assert inputs.provider_image(request.init_image.name) == (
        f"http://127.0.0.1:9/media/{request.init_image.name}"
    )


def test_uploaded_input_must_be_an_image():
    from django_modelslab.exceptions import InvalidImage

    with pytest.raises(InvalidImage):
        inputs.store_input(ContentFile(b"<html>no</html>", name="x.png"))
    with pytest.raises(InvalidImage, match="data: URL"):
        inputs.decode_data_url("data:image/png;base64,%%%")


# --- regenerate_images ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # the command runs requests on worker threads
def test_regenerating_an_img2img_request_sends_its_stored_input_again(emulator, capsys):
    init = png()
    request = submit_and_run(new_kind_request(Kind.IMG2IMG, init=init, strength=0.0))
    text = submit_and_run(new_kind_request(Kind.TEXT2IMG, width=256, height=256))
    emulator.reset()

    call_command("regenerate_images", "--kind", "img2img", "--yes")

    request.refresh_from_db()
    text.refresh_from_db()
    assert request.attempts == 2 and text.attempts == 1
    assert emulator.calls["img2img"] == 1 and emulator.calls["text2img"] == 0
    current = request.images.get(superseded=False)
    assert stored_pixels(current).tobytes() == pixels(init).tobytes()


def test_regenerate_images_refuses_an_unknown_kind():
    with pytest.raises(CommandError, match="invalid choice: 'outpaint'"):
        call_command("regenerate_images", "--kind", "outpaint")


def test_fault_routes_include_the_new_ones(emulator):
    emulator.add_fault("upscale", Fault.rate_limit(retry_after=0))
    request = submit_and_run(new_kind_request(Kind.UPSCALE, init=png((64, 64)), prompt=""))

    assert request.status == Status.SUCCEEDED, request.error
    assert emulator.calls["upscale"] == 2  # the 429 was retried: nothing was queued


# --- settings checks -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"INPUT_IMAGE_TRANSPORT": "ftp"}, ["django_modelslab.E040"]),
        ({"INPUT_IMAGE_TRANSPORT": "url"}, ["django_modelslab.E042"]),
        (  # W002: webhooks stay off without a secret; input links work
            {"INPUT_IMAGE_TRANSPORT": "url", "PUBLIC_BASE_URL": "https://example.com"},
            ["django_modelslab.W002"],
        ),
        ({"INPUT_IMAGE_TRANSPORT": "base64"}, []),
        ({"DEFAULT_UPSCALE_MODEL": ""}, ["django_modelslab.E041"]),
        ({"DEFAULT_V7_MODEL": None}, ["django_modelslab.E041"]),
        ({"INPUT_URL_TTL": 0}, ["django_modelslab.E003"]),
    ],
)
def test_kind_settings_are_checked(settings, overrides, expected):
    from django_modelslab.checks import check_settings

    configure(settings, **overrides)
    assert [message.id for message in check_settings()] == expected


@pytest.mark.django_db(transaction=True)
def test_an_img2img_finished_by_webhook_keeps_no_inline_image_in_the_delivery(
    settings, live_server, emulator
):
    from django_modelslab.models import WebhookDelivery

    configure(settings, PUBLIC_BASE_URL=live_server.url, WEBHOOK_SECRETS=[WEBHOOK_SECRET])
    emulator.mode, emulator.eta = "processing", 0.1
    request = new_kind_request(Kind.IMG2IMG, init=png((64, 64)), strength=0.0)

    pipeline.run(pipeline.submit(request, enqueue=False).pk)

    request = wait_for(lambda: finished(request))
    assert request.status == Status.SUCCEEDED, request.error
    assert emulator.calls["fetch"] >= 1  # the webhook's news was confirmed on the v6 route
    delivery = WebhookDelivery.objects.get()
    assert delivery.body["meta"]["init_image"].startswith("[data:image/png;base64, ")
