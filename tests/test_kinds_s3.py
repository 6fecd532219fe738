"""Input images on S3 (SeaweedFS): ModelsLab gets a presigned link and downloads the input."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.files.storage import storages

from django_modelslab import pipeline
from django_modelslab.models import GenerationRequest

from .helpers import configure, new_kind_request, pixels, png, stored_pixels

pytest.register_assert_rewrite("tests.s3")
pytest_plugins = ["tests.s3"]

from .s3 import S3Case, use_s3  # noqa: E402

Kind = GenerationRequest.Kind


@pytest.mark.django_db
def test_the_emulator_downloads_the_input_from_a_presigned_url(emulator, s3: S3Case, settings):
    use_s3(settings, s3)
    configure(settings, INPUT_URL_TTL=120)
    init = png((128, 96))
    request = new_kind_request(Kind.IMG2IMG, init=init, prompt="x", seed=1, strength=0.0)

    request = pipeline.run(pipeline.submit(request, enqueue=False).pk)

    assert request.status == GenerationRequest.Status.SUCCEEDED, request.error
    sent = emulator.requests[0][1]["init_image"]
    query = parse_qs(urlsplit(sent).query)
    assert urlsplit(sent).path.endswith(request.init_image.name)
    assert "Signature" in query  # presigned (this endpoint signs in the SigV2 query style)
    assert abs(int(query["Expires"][0]) - (time.time() + 120)) < 30  # INPUT_URL_TTL
    assert stored_pixels(request.images.get()).tobytes() == pixels(init).tobytes()
    # the bucket holds the input, by content, under inputs/
    assert storages["modelslab"].exists(request.init_image.name)
    assert request.init_image.name.startswith("modelslab/inputs/")
