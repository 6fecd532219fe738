"""img2img, inpaint, upscale and v7 from the admin and the REST API, checked by pixels."""

from __future__ import annotations

import base64
import html

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image
from rest_framework.test import APIClient

from django_modelslab.models import GeneratedImage, GenerationRequest

from .helpers import form_data as admin_form
from .helpers import generated_image, mask_png, pixels, png, stored_pixels

# transaction=True: on_commit callbacks fire at once, as in a project without ATOMIC_REQUESTS.
pytestmark = pytest.mark.django_db(transaction=True)

ADD = reverse("admin:django_modelslab_generationrequest_add")
GENERATIONS = reverse("modelslab-api:generation-list")
Kind = GenerationRequest.Kind
Status = GenerationRequest.Status
PROMPT = "a lighthouse"


def upload(data: bytes, name: str = "input.png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="image/png")


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def form_data(**fields) -> dict:
    """The admin form's post with the fields of the other kinds, 512 x 512 unless given."""
    kinds = {"api_version": "v6", "init_from": "", "strength": "", "scale": ""}
    return admin_form(**{"width": "512", "height": "512", **kinds, **fields})


def errors_of(response) -> dict[str, list[str]]:
    form = response.context["adminform"].form
    return {name: [str(e) for e in errs] for name, errs in form.errors.items()}


# --- admin ---------------------------------------------------------------------------------


def test_admin_img2img_from_an_upload_generates_from_the_input(client, editor, emulator):
    init = png((320, 200))
    data = form_data(kind="img2img", strength="0", init_upload=upload(init), _generate="1")

    response = client.post(ADD, data, follow=True)

    assert response.status_code == 200
    request = GenerationRequest.objects.get()
    assert request.status == Status.SUCCEEDED, request.error
    assert (request.kind, request.strength) == (Kind.IMG2IMG, 0.0)
    assert (request.width, request.height) == (320, 200)  # from the input, not the form's 512
    assert request.init_image.name.startswith("modelslab/inputs/")
    assert stored_pixels(request.images.get()).tobytes() == pixels(init).tobytes()
    page = response.content.decode()
    assert f'src="{request.init_image.url}"' in page  # the stored input is shown
    assert emulator.calls["img2img"] == 1


def test_admin_inpaint_needs_a_mask_and_says_so(client, editor, emulator):
    data = form_data(kind="inpaint", init_upload=upload(png()))

    response = client.post(ADD, data)

    assert response.status_code == 200
    assert errors_of(response) == {
        "mask_upload": ["Inpaint needs a mask image (white is repainted)."]
    }
    assert not GenerationRequest.objects.exists()


def test_admin_inpaint_with_a_mask(client, editor, emulator):
    init = png((256, 256))
    mask = mask_png((256, 256), (0, 0, 128, 256))
    data = form_data(
        kind="inpaint", init_upload=upload(init), mask_upload=upload(mask, "m.png"), _generate="1"
    )

    client.post(ADD, data)

    request = GenerationRequest.objects.get()
    assert request.status == Status.SUCCEEDED, request.error
    out = stored_pixels(request.images.get())
    assert out.crop((128, 0, 256, 256)).tobytes() == pixels(init).crop((128, 0, 256, 256)).tobytes()
    assert out.crop((0, 0, 128, 256)).tobytes() != pixels(init).crop((0, 0, 128, 256)).tobytes()


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"kind": "img2img"}, {"init_upload": ["Image to image needs an input image."]}),
        (
            {"kind": "img2img", "strength": "1.5", "init_upload": True},
            {"strength": ["Use 0 (keep the input) to 1 (ignore it)."]},
        ),
        ({"kind": "upscale", "scale": "5", "init_upload": True}, {"scale": ["Use 2 to 4."]}),
        (
            {"kind": "upscale", "api_version": "v7", "init_upload": True},
            {"kind": ["Upscale is not available on v7; use v6."]},
        ),
        ({"kind": "text2img", "scale": "2"}, {"scale": ["Scale applies to upscale only."]}),
        (
            {"kind": "img2img", "init_upload": b"not an image"},
            {"init_upload": ["Not a PNG, JPEG, WebP or GIF image"]},
        ),
    ],
)
def test_admin_form_errors_for_inputs(client, editor, fields, expected):
    if fields.get("init_upload") is True:
        fields["init_upload"] = upload(png())
    elif isinstance(fields.get("init_upload"), bytes):
        fields["init_upload"] = upload(fields["init_upload"])

    response = client.post(ADD, form_data(**fields))

    assert response.status_code == 200
    assert errors_of(response) == expected
    assert not GenerationRequest.objects.exists()


def test_admin_use_as_input_link_leads_to_an_upscale_of_that_image(client, editor, emulator):
    image = generated_image(PROMPT, seed=3)
    page = client.get(
        reverse("admin:django_modelslab_generatedimage_change", args=[image.pk])
    ).content.decode()
    link = html.unescape(page.split("Use as input", 1)[1]).split('href="')[2].split('"')[0]
    assert "kind=upscale" in link and f"init_from={image.pk}" in link

    form = client.get(link).content.decode()
    assert f'name="init_from" value="{image.pk}"' in form
    client.post(ADD, form_data(kind="upscale", init_from=str(image.pk), scale="2", _generate="1"))

    request = GenerationRequest.objects.exclude(pk=image.request_id).get()
    assert request.status == Status.SUCCEEDED, request.error
    assert request.init_from == image
    result = request.images.get()
    assert (result.width, result.height) == (512, 512)
    expected = stored_pixels(image).resize((512, 512), Image.Resampling.LANCZOS)
    assert stored_pixels(result).tobytes() == expected.tobytes()


# --- REST API ------------------------------------------------------------------------------


@pytest.fixture
def api(owner) -> APIClient:
    client = APIClient()
    client.force_authenticate(owner)
    return client


def test_api_img2img_with_a_data_url(api, emulator):
    init = png()

    response = api.post(
        GENERATIONS,
        {"prompt": "at night", "kind": "img2img", "init_image": data_url(init), "strength": 0},
        format="json",
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["status"], body["kind"], body["api_version"]) == ("succeeded", "img2img", "v6")
    assert (body["width"], body["height"], body["strength"]) == (256, 192, 0.0)
    request = GenerationRequest.objects.get()
    assert body["init_image"] == f"http://testserver{request.init_image.url}"
    assert stored_pixels(request.images.get()).tobytes() == pixels(init).tobytes()
    assert "base64" not in response.content.decode()


def test_api_upscale_with_a_multipart_upload(api, emulator):
    init = png((200, 100))

    response = api.post(
        GENERATIONS,
        {"prompt": "bigger", "kind": "upscale", "scale": "3", "init_image": upload(init)},
        format="multipart",
    )

    assert response.status_code == 201, response.json()
    image = response.json()["images"][0]
    assert (image["width"], image["height"]) == (600, 300)
    expected = pixels(init).resize((600, 300), Image.Resampling.LANCZOS)
    assert stored_pixels(GeneratedImage.objects.get(pk=image["id"])).tobytes() == expected.tobytes()


def test_api_init_image_id_uses_one_of_your_images_only(api, owner, emulator):
    mine = generated_image(PROMPT, seed=3, requested_by=owner)
    theirs = generated_image(PROMPT, seed=3, requested_by=User.objects.create_user("other"))

    ok = api.post(
        GENERATIONS,
        {"prompt": "again", "kind": "img2img", "init_image_id": mine.pk, "strength": 0.0},
        format="json",
    )
    refused = api.post(
        GENERATIONS, {"prompt": "x", "kind": "img2img", "init_image_id": theirs.pk}, format="json"
    )

    assert ok.status_code == 201, ok.json()
    assert ok.json()["init_from"] == mine.pk
    created = GenerationRequest.objects.get(pk=ok.json()["id"])
    assert stored_pixels(created.images.get()).tobytes() == stored_pixels(mine).tobytes()
    assert refused.status_code == 400
    assert refused.json() == {"init_image_id": ["No image with this id that you may use."]}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"kind": "img2img"}, {"init_image": ["Image to image needs an input image."]}),
        (
            {"kind": "inpaint", "init_image": "bm90IGFuIGltYWdl"},
            {"init_image": ["Not a PNG, JPEG, WebP or GIF image"]},
        ),
        (
            {"kind": "img2img", "init_image": "data:image/png,abc"},
            {"init_image": ["Only base64 data: URLs are accepted (data:image/png;base64,...)."]},
        ),
        (
            {"kind": "img2img", "init_image": 12},
            {
                "init_image": [
                    "Send an image file (multipart/form-data) or a data: URL "
                    "(data:image/png;base64,...)."
                ]
            },
        ),
        (
            {"kind": "img2img", "strength": 2, "image": True},
            {"strength": ["Ensure this value is less than or equal to 1.0."]},
        ),
        (
            {"kind": "upscale", "api_version": "v7", "image": True},
            {"kind": ["Upscale is not available on v7; use v6."]},
        ),
        (
            {"kind": "text2img", "image": True},
            {
                "init_image": [
                    "Only image to image, inpaint and upscale take an input image; set the kind."
                ]
            },
        ),
        (
            {"kind": "img2img", "image": True, "init_image_id": 1},
            {"init_image_id": ["Send init_image or init_image_id, not both."]},
        ),
    ],
)
def test_api_input_errors_a_client_can_act_on(api, emulator, body, expected):
    if body.pop("image", False):
        body["init_image"] = data_url(png())
    if "init_image_id" in body:
        body["init_image_id"] = generated_image(
            PROMPT, seed=3, requested_by=User.objects.get(username="owner")
        ).pk

    response = api.post(GENERATIONS, {"prompt": "x", **body}, format="json")

    assert response.status_code == 400
    assert response.json() == expected
    assert emulator.calls["img2img"] == emulator.calls["upscale"] == 0


def test_api_v7_image_to_image(api, emulator):
    response = api.post(
        GENERATIONS,
        {
            "prompt": "x",
            "kind": "img2img",
            "api_version": "v7",
            "model_id": "seedream-4",
            "init_image": data_url(png()),
        },
        format="json",
    )

    assert response.status_code == 201, response.json()
    assert response.json()["status"] == "succeeded"
    assert emulator.calls["v7_img2img"] == 1
    route, sent = emulator.requests[0]
    assert (route, sent["model_id"]) == ("v7_img2img", "seedream-4")
    assert emulator.request_headers[0][1]["key"] == "***"


def test_image_file_is_never_in_a_webhook_record_or_log(api, emulator, caplog):
    caplog.set_level("DEBUG")
    init = data_url(png())
    api.post(GENERATIONS, {"prompt": "x", "kind": "img2img", "init_image": init}, format="json")

    payload = init.split(",", 1)[1]
    assert payload[:200] not in caplog.text
    request = GenerationRequest.objects.get()
    assert payload[:200] not in str(request.provider_responses)
