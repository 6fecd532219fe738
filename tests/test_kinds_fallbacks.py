"""Kinds with fallbacks, safety and costs: the other kinds try models, are checked and priced."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest
from PIL import Image

from django_modelslab import costs
from django_modelslab.models import Charge, GenerationRequest

from .helpers import (
    configure,
    mask_png,
    new_kind_request,
    pixels,
    png,
    sent,
    stored_pixels,
    submit_and_run,
)

pytestmark = pytest.mark.django_db

Kind = GenerationRequest.Kind
Status = GenerationRequest.Status


def test_img2img_whose_first_model_is_unknown_falls_back_and_stores_real_pixels(emulator):
    emulator.configure(models={"sdxl"})
    init = png()
    request = new_kind_request(
        Kind.IMG2IMG, init=init, strength=0.0, model_id="no-such-model", fallback_models=["sdxl"]
    )

    request = submit_and_run(request)

    assert request.status == Status.SUCCEEDED, request.error
    assert request.produced_by == "sdxl"
    first, second = request.model_attempts
    assert (first["model_id"], first["outcome"]) == ("no-such-model", "failed")
    assert "Model not found: no-such-model" in first["error"]
    assert (second["model_id"], second["outcome"]) == ("sdxl", "succeeded")
    # Both tries went to the img2img route with the input, each its own job.
    bodies = sent(emulator, "img2img")
    assert [(b["model_id"], b["track_id"]) for b in bodies] == [
        ("no-such-model", f"{request.pk}-1"),
        ("sdxl", f"{request.pk}-1.1"),
    ]
    assert all(b["init_image"].startswith("data:image/png;base64,") for b in bodies)
    assert emulator.calls["text2img"] == 0
    image = request.images.get()
    assert (image.width, image.height) == (256, 192)
    assert stored_pixels(image).tobytes() == pixels(init).tobytes()  # strength 0: the input


def test_inpaint_falls_back_from_a_failed_job_and_sends_the_safety_flag(emulator):
    emulator.configure(failing_models={"flux": "failed"})
    init, box = png((256, 256)), (64, 64, 192, 160)
    request = new_kind_request(
        Kind.INPAINT,
        init=init,
        mask=mask_png((256, 256), box),
        model_id="flux",
        fallback_models=["sdxl"],
        safety_checker=False,
    )

    request = submit_and_run(request)

    assert request.status == Status.SUCCEEDED, request.error
    assert [b["model_id"] for b in sent(emulator, "inpaint")] == ["flux", "sdxl"]
    assert all(b["safety_checker"] == "no" for b in sent(emulator, "inpaint"))
    out, before = stored_pixels(request.images.get()), pixels(init)
    assert out.getpixel((0, 0)) == before.getpixel((0, 0))
    assert out.crop(box).tobytes() != before.crop(box).tobytes()


def test_upscale_falls_back_through_its_own_upscale_models(emulator, settings):
    configure(settings, FALLBACK_MODELS=["sdxl"])
    emulator.configure(failing_models={"RealESRGAN_x4plus": 503})
    init = png((100, 60))
    request = new_kind_request(
        Kind.UPSCALE,
        init=init,
        scale=2,
        prompt="",
        model_id="RealESRGAN_x4plus",
        fallback_models=["RealESRGAN_x2plus"],
    )

    request = submit_and_run(request)

    assert request.status == Status.SUCCEEDED, request.error
    assert request.produced_by == "RealESRGAN_x2plus"
    models = [b["model_id"] for b in sent(emulator, "upscale")]
    assert models[0] == "RealESRGAN_x4plus" and models[-1] == "RealESRGAN_x2plus"
    assert "sdxl" not in models  # FALLBACK_MODELS lists image models, not upscalers
    expected = pixels(init).resize((200, 120), Image.Resampling.LANCZOS)
    assert stored_pixels(request.images.get()).tobytes() == expected.tobytes()


def test_the_fallback_models_setting_is_not_tried_for_an_upscale(emulator, settings):
    configure(settings, FALLBACK_MODELS=["sdxl"])
    emulator.configure(models={"sdxl"})  # the default upscaler is unknown

    request = submit_and_run(new_kind_request(Kind.UPSCALE, init=png((64, 64)), prompt=""))

    assert request.status == Status.FAILED
    assert "Model not found: realesr-general-x4v3" in request.error
    assert [b["model_id"] for b in sent(emulator, "upscale")] == ["realesr-general-x4v3"]


def test_an_upscale_is_estimated_and_charged_for_one_image(emulator, settings):
    configure(settings, PRICES={"realesr-general-x4v3": "0.01", "*": "0.5"})
    request = new_kind_request(Kind.UPSCALE, init=png((64, 64)), prompt="", samples=4)
    assert request.samples == 1  # one output per input
    assert costs.estimate(request) == Decimal("0.01")  # DEFAULT_UPSCALE_MODEL's price, once

    request = submit_and_run(request)

    assert request.status == Status.SUCCEEDED, request.error
    charge = Charge.objects.get(request=request)
    assert (charge.model_id, charge.amount) == ("realesr-general-x4v3", Decimal("0.01"))
    assert request.cost == Decimal("0.01")


def test_a_v7_request_is_estimated_at_the_v7_default_models_price(settings):
    configure(settings, PRICES={"flux-2-pro": "0.05", "*": "0.001"})
    request = GenerationRequest(prompt="x", api_version="v7", samples=2)

    assert costs.estimate(request) == Decimal("0.10")


def test_an_img2img_job_the_safety_checker_blanks_ends_refused(emulator):
    request = submit_and_run(
        new_kind_request(Kind.IMG2IMG, init=png(), strength=0.0, prompt="emulator-nsfw fox")
    )

    assert request.status == Status.REFUSED
    assert "safety checker" in request.error
    assert request.images.count() == 0
    # the blank the emulator served has the input's size, as a real edit would
    job = next(iter(emulator.jobs.values()))
    blank = pixels(httpx.get(job.output_urls[0]).content)
    assert blank.size == (256, 192)
    assert blank.getextrema() == ((0, 0), (0, 0), (0, 0))
