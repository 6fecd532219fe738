"""The pipeline end to end: real HTTP to the emulator, real files in MEDIA_ROOT."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.urls import reverse
from PIL import Image as PILImage

from django_modelslab import pipeline
from django_modelslab.exceptions import InvalidParameters
from django_modelslab.models import GeneratedImage, GenerationRequest
from django_modelslab.testing import Fault

from .conftest import TEST_API_KEY
from .helpers import api_client, api_url, configure, generate, new_request, sent_seeds

pytestmark = pytest.mark.django_db

Status = GenerationRequest.Status


def media_path(image: GeneratedImage) -> Path:
    return Path(django_settings.MEDIA_ROOT) / image.image.name


def test_prompt_becomes_permanent_content_addressed_images(emulator):
    request = generate(seed=11, samples=2)

    assert request.status == Status.SUCCEEDED, request.error
    assert request.model_id == "flux"
    assert request.attempts == 1
    images = list(request.images.order_by("position"))
    assert len(images) == 2
    for image in images:
        served = emulator.output_bytes(image.source_url)
        on_disk = media_path(image).read_bytes()
        digest = hashlib.sha256(on_disk).hexdigest()
        # ModelsLab's pixels, plus the provenance XMP written before hashing (provenance.md)
        assert b"trainedAlgorithmicMedia" in on_disk
        with PILImage.open(io.BytesIO(on_disk)) as got, PILImage.open(io.BytesIO(served)) as sent:
            assert got.tobytes() == sent.tobytes()
        assert image.sha256 == digest
        assert image.image.name == f"modelslab/{digest[:2]}/{digest}.png"
        assert (image.width, image.height, image.format, image.bytes) == (
            256,
            256,
            "PNG",
            len(on_disk),
        )
        assert image.source_expires_at > request.finished_at
    assert images[0].sha256 != images[1].sha256
    assert emulator.calls["text2img"] == 1


def test_each_image_gets_a_small_content_addressed_thumbnail(emulator, settings):
    configure(settings, THUMBNAIL_SIZE=64)
    request = generate(seed=12, width=512, height=256)

    image = request.images.get()
    data = (Path(django_settings.MEDIA_ROOT) / image.thumbnail.name).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    assert image.thumbnail.name == f"modelslab/thumbs/{digest[:2]}/{digest}.webp"
    with PILImage.open(io.BytesIO(data)) as thumb:
        assert (thumb.format, thumb.size) == ("WEBP", (64, 32))
    assert str(image) == f"{image.sha256[:12]}.png 512×256"  # noqa: RUF001 (short, for admin inlines)


def test_choose_marks_one_image_per_request(emulator):
    request = generate(seed=14, samples=3)
    first, second, _ = request.images.order_by("position")

    pipeline.choose(first)
    pipeline.choose(second)

    assert list(request.images.filter(chosen=True)) == [second]


def test_processing_job_is_polled_until_done(emulator):
    emulator.mode = "processing"
    emulator.pending_fetches = 2

    request = generate(seed=3)

    assert request.status == Status.SUCCEEDED, request.error
    assert request.images.count() == 1
    assert emulator.calls["text2img"] == 1
    assert emulator.calls["fetch"] >= 3
    assert request.provider_id
    assert request.eta is not None
    calls = [entry["call"] for entry in request.provider_responses]
    assert calls[0] == "text2img" and calls[-1] == "fetch"
    assert request.provider_responses[0]["body"]["status"] == "processing"


def test_an_edit_made_while_the_job_runs_is_not_overwritten(emulator):
    emulator.mode = "processing"
    request = new_request(seed=4)
    pipeline.submit(request, enqueue=False)

    def editor_saves_meanwhile(seconds: float) -> None:  # the run is polling its job
        GenerationRequest.objects.filter(pk=request.pk).update(negative_prompt="blurry")

    pipeline.run(request.pk, sleep=editor_saves_meanwhile)

    request.refresh_from_db()
    assert request.status == Status.SUCCEEDED, request.error
    assert request.negative_prompt == "blurry"
    assert request.images.count() == 1


def test_same_bytes_are_stored_once(emulator, settings):
    configure(settings, CACHE=False)
    first = generate(seed=5)
    stored = media_path(first.images.get())
    inode, mtime = stored.stat().st_ino, stored.stat().st_mtime_ns

    second = generate(seed=5)

    assert emulator.calls["text2img"] == 2  # cache off: the provider was called again
    assert second.images.get().image.name == first.images.get().image.name
    assert (stored.stat().st_ino, stored.stat().st_mtime_ns) == (inode, mtime)
    assert len(list(stored.parent.iterdir())) == 1


def test_identical_seeded_request_is_never_paid_for_twice(emulator):
    first = generate(seed=21, samples=2)
    second = generate(seed=21, samples=2)

    assert second.status == Status.SUCCEEDED
    assert emulator.calls["text2img"] == 1
    assert second.cached_from == first
    assert sorted(i.image.name for i in second.images.all()) == sorted(
        i.image.name for i in first.images.all()
    )


def test_a_cached_source_whose_file_is_gone_is_no_hit(emulator):
    first = generate(seed=23)
    lost = media_path(first.images.get())
    lost.unlink()

    second = generate(seed=23)

    assert second.status == Status.SUCCEEDED, second.error
    assert emulator.calls["text2img"] == 2  # the provider was called: a normal miss
    assert second.cached_from is None
    assert second.images.get().image.name == first.images.get().image.name  # same bytes...
    assert lost.exists()  # ...stored again, so the first request's image is back too

    third = generate(seed=23)
    assert third.cached_from == second  # files present: a hit again
    assert emulator.calls["text2img"] == 2


def test_unseeded_requests_are_not_cached(emulator):
    generate()
    second = generate()

    assert emulator.calls["text2img"] == 2
    assert second.cached_from is None
    assert second.images.get().seed is not None  # the seed ModelsLab picked is recorded


def test_run_twice_submits_one_provider_job(emulator):
    request = new_request(seed=8)

    pipeline.run(request.pk)
    again = pipeline.run(request.pk)

    assert again.status == Status.SUCCEEDED
    assert again.attempts == 1
    assert emulator.calls["text2img"] == 1
    assert again.images.count() == 1


def test_submit_is_idempotent_while_queued(emulator, django_capture_on_commit_callbacks):
    request = new_request(seed=9)
    with django_capture_on_commit_callbacks() as callbacks:
        pipeline.submit(request)
        pipeline.submit(request)
    assert len(callbacks) == 1  # one enqueue (it also sends request_submitted)
    callbacks[0]()
    assert emulator.calls["text2img"] == 1


def test_regenerate_keeps_history_and_bypasses_cache(emulator, django_capture_on_commit_callbacks):
    request = generate(seed=13)
    first_image = request.images.get()

    with django_capture_on_commit_callbacks(execute=True):
        pipeline.regenerate(request)
    request.refresh_from_db()

    assert request.status == Status.SUCCEEDED
    assert emulator.calls["text2img"] == 2
    assert request.attempts == 2
    first_image.refresh_from_db()
    assert first_image.superseded
    assert media_path(first_image).exists()
    current = request.images.get(superseded=False)
    assert current.attempt == 2


def test_regenerate_draws_a_new_seed_for_a_new_picture(
    emulator, django_capture_on_commit_callbacks
):
    request = generate(seed=13)
    first = request.images.get()

    with django_capture_on_commit_callbacks(execute=True):
        pipeline.regenerate(request)
    request.refresh_from_db()

    assert request.status == Status.SUCCEEDED, request.error
    current = request.images.get(superseded=False)
    first.refresh_from_db()
    assert first.seed == 13  # the old seed stays with the old image
    assert request.seed not in (None, 13)  # the request now says what made its images
    assert current.seed == request.seed
    assert sent_seeds(emulator) == [13, request.seed]
    assert current.sha256 != first.sha256  # a new picture, not the same bytes paid twice
    assert request.use_cache  # regenerating does not turn the cache off


def test_regenerate_keep_seed_repeats_the_job_and_pays_again(
    emulator, django_capture_on_commit_callbacks
):
    request = generate(seed=13)
    twin = generate(seed=13)
    assert twin.cached_from == request  # identical and seeded: served from the cache

    with django_capture_on_commit_callbacks(execute=True):
        pipeline.regenerate(request, keep_seed=True)
    request.refresh_from_db()

    assert request.status == Status.SUCCEEDED, request.error
    assert request.seed == 13
    assert sent_seeds(emulator) == [13, 13]  # the cache (the twin) was not asked: paid again
    assert request.cached_from is None
    old, new = request.images.order_by("attempt")
    assert (old.seed, new.seed) == (13, 13)
    assert new.sha256 == old.sha256  # the same job repeated: the same picture


def test_an_unseeded_request_regenerates_with_a_seed_modelslab_picks(
    emulator, django_capture_on_commit_callbacks
):
    request = generate()

    with django_capture_on_commit_callbacks(execute=True):
        pipeline.regenerate(request, keep_seed=True)  # no seed to keep
    request.refresh_from_db()

    assert request.seed is None
    assert sent_seeds(emulator) == [None, None]
    old, new = request.images.order_by("attempt")
    jobs = sorted(emulator.jobs.values(), key=lambda job: int(job.id))
    assert (old.seed, new.seed) == (jobs[0].seed, jobs[1].seed)


def test_after_a_regenerate_the_next_ordinary_submit_uses_the_cache(
    emulator, django_capture_on_commit_callbacks
):
    request = generate(seed=21)
    emulator.add_fault("text2img", Fault.failed("GPU fell over."))
    with django_capture_on_commit_callbacks(execute=True):
        pipeline.regenerate(request)  # bypasses the cache for its own attempt only
    request.refresh_from_db()
    assert request.status == Status.FAILED
    twin = generate(seed=request.seed)  # the same parameters
    calls = emulator.calls["text2img"]

    retried = generate_again(request, django_capture_on_commit_callbacks)

    assert retried.status == Status.SUCCEEDED, retried.error
    assert retried.cached_from == twin
    assert emulator.calls["text2img"] == calls  # served from the cache: nothing paid
    assert (retried.use_cache, retried.bypass_cache) == (True, False)


def test_the_seed_modelslab_used_is_recorded_when_the_fetch_answer_omits_it(emulator):
    """A real fetch answer may be minimal (no ``meta``): the generate answer said the seed."""
    emulator.configure(mode="processing", minimal_fetch=True)

    request = generate(samples=2)

    assert request.status == Status.SUCCEEDED, request.error
    assert "meta" not in request.provider_responses[-1]["body"]
    job = emulator.jobs[request.provider_id]
    assert [image.seed for image in request.images.all()] == [job.seed, job.seed]


def test_a_retried_copy_records_the_seed_of_its_job(emulator, django_capture_on_commit_callbacks):
    emulator.add_fault("download", Fault.cut_download(after_bytes=100))
    request = generate()
    assert request.status == Status.FAILED

    retried = generate_again(request, django_capture_on_commit_callbacks)

    assert retried.status == Status.SUCCEEDED, retried.error
    assert emulator.calls["text2img"] == 1
    assert retried.images.get().seed == emulator.jobs[retried.provider_id].seed


def test_provider_error_is_recorded_with_raw_response(emulator):
    emulator.add_fault("text2img", Fault.error_200("Model not found: nope"))

    request = generate(model_id="nope")

    assert request.status == Status.FAILED
    assert "Model not found: nope" in request.error
    assert request.provider_responses[-1]["body"]["message"] == "Model not found: nope"
    assert request.images.count() == 0


def test_failed_job_reports_the_providers_reason(emulator):
    emulator.add_fault("text2img", Fault.failed("NSFW content detected"))

    request = generate(seed=1)

    assert request.status == Status.FAILED
    assert "NSFW content detected" in request.error
    assert request.provider_id == ""  # the job is over: a retry starts a new one


def test_lost_answer_is_not_resubmitted(emulator, settings):
    configure(settings, TIMEOUT=0.3)
    emulator.add_fault("text2img", Fault.delay(1.0))

    request = generate(seed=2)

    assert request.status == Status.FAILED
    assert "may have" in request.error
    assert emulator.calls["text2img"] == 1


def test_copy_failure_keeps_urls_and_retry_copies_without_a_new_job(
    emulator, django_capture_on_commit_callbacks
):
    emulator.add_fault("download", Fault.cut_download(after_bytes=100))

    request = generate(seed=4)

    assert request.status == Status.FAILED
    assert request.output_urls
    assert request.error

    retried = generate_again(request, django_capture_on_commit_callbacks)

    assert retried.status == Status.SUCCEEDED, retried.error
    assert emulator.calls["text2img"] == 1
    assert retried.images.get().source_url == request.output_urls[0]


def test_max_wait_fails_with_a_reason_and_retry_polls_the_same_job(
    emulator, django_capture_on_commit_callbacks, settings
):
    configure(settings, MAX_WAIT=0.5)
    emulator.mode = "processing"
    emulator.add_fault("text2img", Fault.never_finish())

    request = generate(seed=6)

    assert request.status == Status.FAILED
    assert "MAX_WAIT" in request.error
    assert request.provider_id

    retried = generate_again(request, django_capture_on_commit_callbacks)
    assert retried.status == Status.FAILED
    assert emulator.calls["text2img"] == 1  # polled again, never resubmitted


def test_api_key_is_never_stored(emulator):
    emulator.add_fault("text2img", Fault.http_error(status=401, message="Invalid API key"))
    failed = generate(seed=30)
    succeeded = generate(seed=31)

    for request in (failed, succeeded):
        assert TEST_API_KEY not in str(request.provider_responses)
        assert TEST_API_KEY not in request.error
    assert emulator.requests, "the emulator saw the calls"


def generate_again(request, django_capture_on_commit_callbacks) -> GenerationRequest:
    with django_capture_on_commit_callbacks(execute=True):
        pipeline.submit(request)
    request.refresh_from_db()
    return request


def test_kind_without_its_input_image_fails_with_a_reason_before_any_call(emulator):
    request = new_request(kind=GenerationRequest.Kind.UPSCALE)

    pipeline.run(request.pk)

    request.refresh_from_db()
    assert request.status == Status.FAILED
    assert "Upscale needs an input image" in request.error
    assert emulator.calls["upscale"] == 0
    assert request.track_id == ""


# --- ModelsLab's limits, from code too ----------------------------------------------------


def test_submit_refuses_a_size_modelslab_does_not_draw_before_anything_is_saved(emulator):
    request = GenerationRequest(prompt="a wide fox", width=2000, height=256)

    with pytest.raises(InvalidParameters) as caught:
        pipeline.submit(request)

    assert isinstance(caught.value, ValueError)
    assert caught.value.errors == {
        "width": [
            "Ensure this value is less than or equal to 1024. Use 256 to 1024 pixels (got 2000)."
        ]
    }
    assert str(caught.value) == f"width: {caught.value.errors['width'][0]}"
    assert not GenerationRequest.objects.exists()
    assert emulator.calls["text2img"] == 0


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"steps": 100}, "steps"),
        ({"guidance": 0.5}, "guidance"),
        ({"samples": 9}, "samples"),
        ({"seed": -1}, "seed"),
        ({"height": 300}, "height"),
    ],
)
def test_a_stored_request_outside_the_limits_is_neither_queued_nor_regenerated(
    emulator, fields, field
):
    request = generate(seed=7)
    GenerationRequest.objects.filter(pk=request.pk).update(status=Status.FAILED, **fields)
    request.refresh_from_db()

    for start in (pipeline.submit, pipeline.regenerate):
        with pytest.raises(
            InvalidParameters, match=rf"^Request #{request.pk}: {field}: "
        ) as caught:
            start(request)
        assert list(caught.value.errors) == [field]

    request.refresh_from_db()
    assert request.status == Status.FAILED
    assert not request.images.filter(superseded=True).exists()
    assert emulator.calls["text2img"] == 1


def test_kinds_that_take_the_inputs_size_have_no_size_limit(emulator):
    request = new_request(kind=GenerationRequest.Kind.UPSCALE, width=2400, height=1203, scale=4)

    assert request.parameter_errors() == {}
    request.kind = GenerationRequest.Kind.TEXT2IMG
    assert set(request.parameter_errors()) == {"width", "height"}


# --- figures a column cannot hold ----------------------------------------------------------

HUGE_ID = "9" * 100  # more than provider_id's 64 characters


@pytest.mark.parametrize(
    ("answer", "kept"),
    [
        ({"cost": 5_000_000}, ("cost", 5_000_000)),  # past max_digits=12, decimal_places=6
        ({"cost": "1e30"}, ("cost", "1e30")),
        ({"cost": -3}, ("cost", -3)),
        ({"cost": float("nan")}, ("cost", "NaN")),  # JSON's non-standard NaN, kept as text
        ({"meta": {"seed": 1e30}}, ("seed", 1e30)),  # past a BigIntegerField
        ({"meta": {"seed": float("inf")}}, ("seed", "Infinity")),
        ({"eta": float("inf")}, ("eta", "Infinity")),
        ({"eta": 1e30}, ("eta", 1e30)),
        ({"id": HUGE_ID}, ("id", HUGE_ID)),
    ],
    ids=lambda value: str(value)[:24],
)
def test_a_figure_no_column_holds_is_unknown_and_the_paid_job_is_stored(
    emulator, admin_client, caplog, answer, kept
):
    """Out-of-range provider numbers: images stored, figure None, warning, raw answer kept,
    and every page that shows the row still answers."""
    owner = User.objects.create_user("owner")
    emulator.configure(answer_fields=answer)
    request = new_request(requested_by=owner)  # no seed of its own: the image's is ModelsLab's

    pipeline.run(request.pk)

    request.refresh_from_db()
    assert request.status == Status.SUCCEEDED, request.error
    image = request.images.get()
    assert media_path(image).is_file()
    assert (request.cost, request.charges.count(), request.eta) == (None, 0, None)
    assert (image.seed is None) == ("meta" in answer)
    assert request.provider_id == ("" if "id" in answer else request.provider_id)
    name, value = kept
    body = request.provider_responses[-1]["body"]
    stored = (body["meta"] if name == "seed" else body)[name]
    # PostgreSQL's jsonb keeps 1e30 as the decimal 1000...0, read back as an int.
    assert stored == value or (isinstance(value, float) and float(stored) == value)
    assert "cannot be stored" in caplog.text or "more than the cost columns hold" in caplog.text

    rest = api_client(owner)
    for page in (
        rest.get(api_url("generation-list")),
        rest.get(api_url("generation-detail", request.pk)),
        admin_client.get(reverse("admin:django_modelslab_generationrequest_changelist")),
        admin_client.get(
            reverse("admin:django_modelslab_generationrequest_change", args=[request.pk])
        ),
    ):
        assert page.status_code == 200


def test_a_price_or_a_running_total_past_the_column_is_unknown(
    emulator, settings, caplog, django_capture_on_commit_callbacks
):
    configure(settings, PRICES={"*": 5_000_000})
    # Seeds no other test stores (test_signals counts first uploads of seeds 41 and 42).
    priced = new_request(seed=6141)
    pipeline.run(priced.pk)
    priced.refresh_from_db()
    assert (priced.status, priced.cost, priced.charges.count()) == (Status.SUCCEEDED, None, 0)

    configure(settings, PRICES={"*": 600_000})
    request = new_request(seed=6142, use_cache=False)
    pipeline.run(request.pk)
    request.refresh_from_db()
    assert request.cost == 600_000
    with django_capture_on_commit_callbacks(execute=True):
        pipeline.regenerate(request)  # a second job: 1,200,000 in all, past the column

    request.refresh_from_db()
    assert request.status == Status.SUCCEEDED, request.error
    assert request.images.count() == 2
    assert (request.cost, request.charges.count()) == (600_000, 1)
    assert "more than the cost columns hold" in caplog.text
