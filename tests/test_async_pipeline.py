"""``pipeline.arun`` / ``aresume``: the same state machine driven on an event loop.

Real HTTP to the emulator through AsyncModelsLabClient; the database work runs in Django's
sync thread (``sync_to_async``), hence transactional tests.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.http import JsonResponse
from django.test import AsyncRequestFactory
from PIL import Image

from django_modelslab import pipeline
from django_modelslab.client import AsyncModelsLabClient
from django_modelslab.models import GenerationRequest
from django_modelslab.testing import Fault

from .helpers import configure, new_kind_request, new_request, solid_png

pytestmark = pytest.mark.django_db(transaction=True)

Status = GenerationRequest.Status


def on_loop(make: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``make()`` with asyncio.run, closing the sync thread's connection afterwards."""

    async def main() -> Any:
        try:
            return await make()
        finally:
            await sync_to_async(close_connection, thread_sensitive=True)()

    # A thread of its own: a session fixture (Playwright's sync API) may keep an event loop
    # running in this one, where asyncio.run() refuses to start.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()


def close_connection() -> None:
    connection.close()  # the calling thread's


def queued(**fields: Any) -> GenerationRequest:
    return pipeline.submit(new_request(**fields), enqueue=False)


def arun(request: GenerationRequest, **kwargs: Any) -> GenerationRequest:
    returned = on_loop(lambda: pipeline.arun(request.pk, **kwargs))
    assert returned.pk == request.pk
    request.refresh_from_db()
    return request


def test_arun_stores_the_images_as_run_does(emulator):
    request = arun(queued(seed=7, samples=2))

    assert request.status == Status.SUCCEEDED, request.error
    assert request.attempts == 1
    assert emulator.calls["text2img"] == 1
    images = list(request.images.order_by("position"))
    assert len(images) == 2
    for image in images:
        with image.image.open("rb") as file, Image.open(file) as got:
            served = Image.open(io.BytesIO(emulator.output_bytes(image.source_url)))
            assert got.tobytes() == served.tobytes()
    assert [entry["call"] for entry in request.provider_responses] == ["text2img"]


def test_arun_polls_a_processing_job_until_done(emulator):
    emulator.mode = "processing"
    emulator.pending_fetches = 2

    request = arun(queued(seed=3))

    assert request.status == Status.SUCCEEDED, request.error
    assert request.images.count() == 1
    assert emulator.calls["text2img"] == 1
    assert emulator.calls["fetch"] >= 3
    calls = [entry["call"] for entry in request.provider_responses]
    assert calls[0] == "text2img" and calls[-1] == "fetch"


def test_arun_records_a_provider_error_as_run_does(emulator):
    emulator.add_fault("text2img", Fault.error_200("Model not found: nope"))

    request = arun(queued(model_id="nope"))

    assert request.status == Status.FAILED
    assert "Model not found: nope" in request.error
    assert request.provider_responses[-1]["body"]["message"] == "Model not found: nope"
    assert request.images.count() == 0


def test_arun_falls_back_to_the_next_model(emulator):
    emulator.configure(models={"sdxl"})

    request = arun(queued(model_id="no-such-model", fallback_models=["sdxl"]))

    assert request.status == Status.SUCCEEDED, request.error
    assert request.produced_by == "sdxl"
    assert [(e["model_id"], e["outcome"]) for e in request.model_attempts] == [
        ("no-such-model", "failed"),
        ("sdxl", "succeeded"),
    ]
    assert emulator.calls["text2img"] == 2


def test_arun_img2img_sends_the_stored_input(emulator):
    init = solid_png((256, 192), (20, 140, 220))
    request = new_kind_request("img2img", init=init, prompt="a red fox", strength=0.0)

    request = arun(pipeline.submit(request, enqueue=False))

    assert request.status == Status.SUCCEEDED, request.error
    assert emulator.calls["img2img"] == 1 and emulator.calls["text2img"] == 0
    with request.images.get().image.open("rb") as file, Image.open(file) as got:
        assert got.convert("RGB").tobytes() == Image.open(io.BytesIO(init)).convert("RGB").tobytes()


def test_arun_twice_at_once_starts_one_provider_job(emulator):
    emulator.latency = 0.3  # both runs are in flight together
    request = queued(seed=9)

    async def both() -> list[GenerationRequest]:
        async with pipeline.build_async_client() as client:
            runs = (pipeline.arun(request.pk, client=client) for _ in range(2))
            return list(await asyncio.gather(*runs))

    on_loop(both)

    request.refresh_from_db()
    assert request.status == Status.SUCCEEDED, request.error
    assert emulator.calls["text2img"] == 1
    assert request.attempts == 1
    assert request.images.count() == 1


def test_aresume_finishes_a_job_the_webhook_announced(emulator, settings):
    emulator.mode = "processing"
    emulator.eta = 0.1
    emulator.pending_fetches = 0
    configure(
        settings, PUBLIC_BASE_URL="http://testserver", WEBHOOK_SECRETS=["s3cret-for-async-tests"]
    )
    request = arun(queued(seed=4))
    assert request.status == Status.PROCESSING  # left to the webhook

    async def later() -> GenerationRequest:
        await asyncio.sleep(0.3)  # past the job's eta
        return await pipeline.aresume(request.pk)

    on_loop(later)

    request.refresh_from_db()
    assert request.status == Status.SUCCEEDED, request.error
    assert request.images.count() == 1
    assert emulator.calls["text2img"] == 1


async def generate_now(request):  # the async view of docs/pipeline.md, as written there
    generation = await GenerationRequest.objects.acreate(prompt=request.GET["prompt"])
    generation = await sync_to_async(pipeline.submit)(generation, enqueue=False)
    generation = await pipeline.arun(generation.pk)
    return JsonResponse({"status": generation.status, "error": generation.error})


def test_the_documented_async_view_generates_in_the_request(emulator):
    request = AsyncRequestFactory().get("/generate", {"prompt": "a red fox"})

    response = on_loop(lambda: generate_now(request))

    assert json.loads(response.content) == {"status": "succeeded", "error": ""}
    generation = GenerationRequest.objects.get(prompt="a red fox")
    assert generation.images.count() == 1
    assert emulator.calls["text2img"] == 1


def test_an_async_client_passed_in_is_left_open(emulator):
    request = queued(seed=12)

    async def with_client() -> bool:
        client = AsyncModelsLabClient("test-key-5e1f0c9a-never-a-real-one", emulator.base_url)
        try:
            await pipeline.arun(request.pk, client=client)
            return client._http.is_closed
        finally:
            await client.aclose()

    assert on_loop(with_client) is False
    request.refresh_from_db()
    assert request.status == Status.SUCCEEDED, request.error
