"""ContentAddressedS3Storage against a real S3 endpoint (SeaweedFS), through django-storages."""

from __future__ import annotations

import calendar
import io
import threading
import time
from collections import Counter
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from django.core.files.storage import storages
from PIL import Image

from django_modelslab import pipeline
from django_modelslab.conf import DEFAULTS
from django_modelslab.exceptions import InvalidImage, StorageError
from django_modelslab.imaging import verify
from django_modelslab.imaging.verify import inspect_image
from django_modelslab.models import GeneratedImage, GenerationRequest
from django_modelslab.storage.content import VerifiedImage, store_file
from django_modelslab.storage.s3 import s3_transfer_config

pytest.register_assert_rewrite("tests.s3")
pytest_plugins = ["tests.s3"]

from .helpers import configure, image_bytes, new_request, sha256_hex  # noqa: E402
from .s3 import S3Case, use_s3  # noqa: E402

Status = GenerationRequest.Status
CACHE_CONTROL = DEFAULTS["CACHE_CONTROL"]


class Calls:
    """S3 operations a storage's client sends (in this thread), counted by boto3 hooks."""

    def __init__(self, storage: Any) -> None:
        self.counts: Counter[str] = Counter()
        self.keys: list[tuple[str, str]] = []
        events = storage.connection.meta.client.meta.events
        events.register("before-call.s3", self._count)

    def _count(self, model: Any, params: dict[str, Any], **kwargs: Any) -> None:
        self.counts[model.name] += 1
        self.keys.append((model.name, params.get("Key", "")))


def object_key(s3: S3Case, name: str) -> str:
    return f"{s3.location}/{name}"


# --- the pipeline into the bucket -------------------------------------------------------


@pytest.mark.django_db
def test_pipeline_copies_outputs_into_the_bucket(emulator, s3: S3Case, settings) -> None:
    use_s3(settings, s3)
    request = new_request(seed=7, samples=2, model_id="flux")

    request = pipeline.run(request.pk)

    assert request.status == Status.SUCCEEDED, request.error
    images = list(request.images.order_by("position"))
    assert len(images) == 2
    for image in images:
        key = object_key(s3, image.image.name)
        body = s3.client.get_object(Bucket=s3.server.bucket, Key=key)["Body"].read()
        assert b"trainedAlgorithmicMedia" in body  # provenance XMP, inside the hash
        assert len(body) > len(emulator.output_bytes(image.source_url))
        assert sha256_hex(body) == image.sha256
        assert image.image.name == f"modelslab/{image.sha256[:2]}/{image.sha256}.png"
        assert image.bytes == len(body)
        head = s3.client.head_object(Bucket=s3.server.bucket, Key=key)
        assert head["ContentType"] == "image/png"
        assert head["CacheControl"] == CACHE_CONTROL
        assert head["Metadata"] == {
            "sha256": image.sha256,
            "request-id": str(request.pk),
            "model-id": "flux",
        }
        # What a page would do: url() is presigned, and the endpoint serves the bytes.
        url = image.image.url
        assert "Signature=" in url
        assert httpx.get(url).content == body


@pytest.mark.django_db
def test_cache_control_and_prompt_metadata_are_settings(emulator, s3: S3Case, settings) -> None:
    use_s3(settings, s3)
    configure(settings, CACHE_CONTROL="public, max-age=60", STORE_PROMPT_METADATA=True)
    prompt = "un renard roux dans la neige — ünïcode"
    request = pipeline.run(new_request(seed=7, prompt=prompt).pk)

    assert request.status == Status.SUCCEEDED, request.error
    image = request.images.get()
    head = s3.client.head_object(Bucket=s3.server.bucket, Key=object_key(s3, image.image.name))
    assert head["CacheControl"] == "public, max-age=60"
    assert head["Metadata"]["prompt"] == quote(prompt, safe=" ,.;:!?'()/_-")


def test_content_type_comes_from_the_bytes(s3: S3Case, settings) -> None:
    storage = use_s3(settings, s3, object_parameters={"ContentType": "text/html"})
    data = image_bytes("JPEG", seed=2)

    stored = store_file(io.BytesIO(data), storage=storage, metadata={"request-id": "9"})

    assert stored.key.endswith(".jpg")
    head = s3.client.head_object(Bucket=s3.server.bucket, Key=object_key(s3, stored.key))
    assert head["ContentType"] == "image/jpeg"
    assert head["Metadata"] == {"request-id": "9", "sha256": sha256_hex(data)}


# --- dedup and concurrency --------------------------------------------------------------


def test_storing_stored_bytes_uploads_nothing(s3: S3Case, settings) -> None:
    storage = use_s3(settings, s3)
    calls = Calls(storage)
    data = image_bytes(seed=3)

    first = store_file(io.BytesIO(data), storage=storage)
    assert first.uploaded
    assert calls.counts == {"HeadObject": 1, "PutObject": 1}

    calls.counts.clear()
    second = store_file(io.BytesIO(data), storage=storage)
    assert not second.uploaded
    assert second.key == first.key
    assert calls.counts == {"HeadObject": 1}  # one HEAD, no PUT

    calls.counts.clear()
    third = store_file(io.BytesIO(data), storage=storage, known=lambda key: key == first.key)
    assert not third.uploaded
    assert calls.counts == {}  # the database knew the key: S3 not asked at all
    assert s3.keys() == [object_key(s3, first.key)]


@pytest.mark.django_db
def test_pipeline_skips_s3_for_images_the_database_knows(emulator, s3: S3Case, settings) -> None:
    storage = use_s3(settings, s3)
    first = pipeline.run(new_request(seed=7, use_cache=False).pk)
    assert first.status == Status.SUCCEEDED, first.error
    calls = Calls(storage)

    second = pipeline.run(new_request(seed=7, use_cache=False).pk)  # same seed: same bytes

    assert second.status == Status.SUCCEEDED, second.error
    image = second.images.get()
    assert image.image.name == first.images.get().image.name
    image_key = object_key(s3, image.image.name)
    assert calls.counts["PutObject"] == 0
    assert [name for name, key in calls.keys if key == image_key] == []
    assert emulator.calls["text2img"] == 2


def test_two_threads_storing_the_same_bytes_leave_one_object(s3: S3Case, settings) -> None:
    storage = use_s3(settings, s3)
    data = image_bytes(seed=4)
    both_checked = threading.Barrier(2, timeout=5)
    puts: Counter[str] = Counter()
    results: list[Any] = []
    errors: list[BaseException] = []

    def after_head(**kwargs: Any) -> None:
        both_checked.wait()  # both HEADs have answered 404 before either PUT starts

    def after_put(http_response: Any, **kwargs: Any) -> None:
        puts[str(http_response.status_code)] += 1

    def worker() -> None:
        try:
            events = storage.connection.meta.client.meta.events  # this thread's client
            events.register("after-call.s3.HeadObject", after_head)
            events.register("after-call.s3.PutObject", after_put)
            results.append(store_file(io.BytesIO(data), storage=storage))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert errors == []
    assert sorted(result.uploaded for result in results) == [False, True]
    assert puts == {"200": 1, "412": 1}  # the conditional PUT refused the second writer
    key = object_key(s3, results[0].key)
    assert s3.keys() == [key]
    assert sha256_hex(
        s3.client.get_object(Bucket=s3.server.bucket, Key=key)["Body"].read()
    ) == sha256_hex(data)


def test_large_image_goes_up_in_parts(s3: S3Case, settings) -> None:
    config = s3_transfer_config(multipart_threshold=5 * 2**20)
    storage = use_s3(settings, s3, transfer_config=config)
    calls = Calls(storage)
    noise = Image.frombytes("RGB", (1400, 1400), bytes(range(256)) * 22968 + b"\x07" * 192)
    buffer = io.BytesIO()
    noise.save(buffer, "PNG", compress_level=0)
    data = buffer.getvalue()
    assert len(data) > 5 * 2**20

    stored = store_file(io.BytesIO(data), storage=storage)

    assert calls.counts["UploadPart"] == 2
    assert calls.counts["CompleteMultipartUpload"] == 1
    key = object_key(s3, stored.key)
    assert sha256_hex(
        s3.client.get_object(Bucket=s3.server.bucket, Key=key)["Body"].read()
    ) == sha256_hex(data)
    assert storage.digest(stored.key) == (sha256_hex(data), len(data))
    # Saved through the Storage API (as a FileField would): the name is kept, nothing sent.
    calls.counts.clear()
    content = VerifiedImage(io.BytesIO(data), stored.info, name="x.png")
    assert storage.save(stored.key, content) == stored.key
    assert calls.counts == {"HeadObject": 1}


# --- errors -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_wrong_credentials_fail_the_request_and_a_retry_copies_the_same_urls(
    emulator, s3: S3Case, settings, django_capture_on_commit_callbacks
) -> None:
    use_s3(settings, s3, secret_key="not-the-secret-key")
    request = pipeline.run(new_request(seed=7).pk)

    assert request.status == Status.FAILED
    assert "HeadObject operation: Forbidden" in request.error
    assert "check the storage credentials" in request.error
    assert "not-the-secret-key" not in request.error
    assert request.output_urls  # kept: a retry can still copy them
    assert not GeneratedImage.objects.filter(request=request).exists()
    assert s3.keys() == []  # nothing half-written

    use_s3(settings, s3)
    with django_capture_on_commit_callbacks(execute=True):
        pipeline.submit(request)
    request.refresh_from_db()

    assert request.status == Status.SUCCEEDED, request.error
    assert emulator.calls["text2img"] == 1  # the same outputs, copied on the retry
    assert object_key(s3, request.images.get().image.name) in s3.keys()  # noqa: SIM118


@pytest.mark.django_db
def test_missing_bucket_fails_the_request_with_the_reason(emulator, s3: S3Case, settings) -> None:
    use_s3(settings, s3, bucket_name="no-such-bucket-modelslab")
    request = pipeline.run(new_request(seed=7).pk)

    assert request.status == Status.FAILED
    assert "bucket 'no-such-bucket-modelslab'" in request.error
    assert "NoSuchBucket" in request.error
    assert request.output_urls


def test_unreachable_endpoint_is_a_storage_error(s3: S3Case, settings) -> None:
    storage = use_s3(settings, s3, endpoint_url="http://127.0.0.1:9")
    with pytest.raises(StorageError) as caught:
        store_file(io.BytesIO(image_bytes(seed=5)), storage=storage)
    assert "Could not connect" in str(caught.value)
    assert caught.value.key is not None and caught.value.key.endswith(".png")


# --- url() ------------------------------------------------------------------------------


def test_url_is_presigned_by_default_and_plain_with_a_custom_domain(s3: S3Case, settings) -> None:
    storage = use_s3(settings, s3)
    data = image_bytes(seed=6)
    stored = store_file(io.BytesIO(data), storage=storage)

    presigned = storage.url(stored.key)
    assert presigned.startswith(f"{s3.server.endpoint_url}/{s3.server.bucket}/{s3.location}/")
    assert httpx.get(presigned).content == data
    assert httpx.get(presigned.split("?")[0]).status_code == 403  # auth is enforced

    domain = use_s3(settings, s3, custom_domain="img.example.com", querystring_auth=False)
    assert domain.url(stored.key) == f"https://img.example.com/{s3.location}/{stored.key}"


def test_presigned_urls_stay_the_same_within_the_signing_window(
    s3: S3Case, settings, monkeypatch
) -> None:
    configure(settings, URL_SIGNING_WINDOW=600)
    storage = use_s3(settings, s3, querystring_expire=300)
    data = image_bytes(seed=8)
    key = store_file(io.BytesIO(data), storage=storage).key
    start = 1_900_000_200  # a window's start (a multiple of 600)
    now = [start + 10.0]
    monkeypatch.setattr(time, "time", lambda: now[0])

    first = storage.url(key)
    now[0] = start + 590.0  # later in the same window: the same URL
    assert storage.url(key) == first
    now[0] = start + 600.0  # the next window: a new one
    assert storage.url(key) != first
    # signed as of the window's start, valid for its length + querystring_expire
    query = parse_qs(urlsplit(first).query)
    assert query["X-Amz-Date"] == [time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(start))]
    assert query["X-Amz-Expires"] == [str(600 + 300)]
    # each call signs in its own thread, as in a server; a new storage object signs alike
    now[0] = start + 300.0
    other: list[str] = []
    thread = threading.Thread(target=lambda: other.append(storages["modelslab"].url(key)))
    thread.start()
    thread.join()
    assert other == [first]


def test_windowed_urls_are_accepted_by_s3_sigv2_and_sigv4(s3: S3Case, settings) -> None:
    from botocore.config import Config

    configure(settings, URL_SIGNING_WINDOW=3600)
    data = image_bytes(seed=9)
    for version, marker in ((None, "X-Amz-Signature"), ("s3", "Signature")):
        config = Config(s3={"addressing_style": "path"}, signature_version=version)
        storage = use_s3(settings, s3, client_config=config)
        key = store_file(io.BytesIO(data), storage=storage).key
        first = storage.url(key)
        time.sleep(1.1)  # a second later: botocore alone would sign anew
        assert storage.url(key) == first, version
        assert marker in parse_qs(urlsplit(first).query)
        assert httpx.get(first).content == data  # S3 accepts the earlier signing time
        tampered = first.replace(key, key.replace(".png", ".jpg"))
        assert httpx.get(tampered).status_code == 403  # still a real signature
        query = parse_qs(urlsplit(first).query)
        if version is None:  # SigV4: signed as of the window's start, valid window + expire
            signed_at = calendar.timegm(time.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ"))
            assert signed_at % 3600 == 0 and signed_at <= time.time()
            assert query["X-Amz-Expires"] == [str(3600 + 3600)]
        else:  # SigV2: Expires is absolute, the window's end + querystring_expire
            assert int(query["Expires"][0]) % 3600 == 0
            assert time.time() + 3600 < int(query["Expires"][0]) <= time.time() + 7200


def test_explicit_expiry_and_a_zero_window_sign_as_of_now(s3: S3Case, settings) -> None:
    storage = use_s3(settings, s3)
    key = store_file(io.BytesIO(image_bytes(seed=10)), storage=storage).key
    configure(settings, URL_SIGNING_WINDOW=3600)
    expires = int(parse_qs(urlsplit(storage.url(key, expire=120)).query)["Expires"][0])
    assert abs(expires - (time.time() + 120)) < 30  # input images: INPUT_URL_TTL from now

    configure(settings, URL_SIGNING_WINDOW=0)
    first = storage.url(key)
    time.sleep(1.1)
    assert storage.url(key) != first  # django-storages' own behaviour


# --- bounded validation of large images -------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])  # GIF, WebP: decoded whole
def test_large_images_are_checked_without_a_full_decode(fmt: str, monkeypatch) -> None:
    monkeypatch.setattr(verify, "FULL_DECODE_PIXELS", 0)
    data = image_bytes(fmt, seed=8, size=(200, 160))

    info = inspect_image(io.BytesIO(data), max_pixels=10**6)
    assert (info.format, info.width, info.height) == (fmt, 200, 160)

    with pytest.raises(InvalidImage):
        inspect_image(io.BytesIO(data[: len(data) * 2 // 3]), max_pixels=10**6)
