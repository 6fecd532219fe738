"""``manage.py verify_images``: reports missing and corrupt objects; ``--repair`` puts them back."""

from __future__ import annotations

import hashlib
import io
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from django_modelslab.models import GeneratedImage, GenerationRequest
from django_modelslab.storage import get_image_storage

pytest.register_assert_rewrite("tests.s3")
pytest_plugins = ["tests.s3"]

from .helpers import generated_image, run_command, stored_image, tiny_png  # noqa: E402
from .s3 import S3Case, use_s3  # noqa: E402

pytestmark = pytest.mark.django_db


@pytest.fixture
def request_() -> GenerationRequest:
    return GenerationRequest.objects.create(prompt="a lighthouse", seed=1)


def test_all_good(media: Path, request_: GenerationRequest) -> None:
    stored_image(request_, tiny_png(1), 0)
    stored_image(request_, tiny_png(1), 1)  # the same bytes: one object, read once
    stored_image(request_, tiny_png(2), 2)

    out, error = run_command("verify_images")

    assert error is None
    assert "Checked 3 image(s), 2 object(s)" in out
    assert "3 OK, 0 with problems" in out


def test_missing_and_corrupt_objects_are_reported_not_repaired(
    media: Path, request_: GenerationRequest
) -> None:
    fine = stored_image(request_, tiny_png(1), 0)
    gone = stored_image(request_, tiny_png(2), 1)
    bad = stored_image(request_, tiny_png(3), 2)
    (media / gone.image.name).unlink()
    (media / bad.image.name).write_bytes(b"not the bytes it was named after")

    out, error = run_command("verify_images")

    assert error is not None and "1 OK, 2 with problems" in error
    assert f"image {gone.pk} (request {request_.pk}): {gone.image.name}: missing" in out
    assert f"image {bad.pk} (request {request_.pk}): {bad.image.name}: corrupt" in out
    assert f"image {fine.pk} " not in out
    assert not (media / gone.image.name).exists()  # nothing recreated
    assert (media / bad.image.name).read_bytes() == b"not the bytes it was named after"
    assert GeneratedImage.objects.count() == 3  # nothing deleted


def test_row_that_disagrees_with_its_name(media: Path, request_: GenerationRequest) -> None:
    image = stored_image(request_, tiny_png(1))
    GeneratedImage.objects.filter(pk=image.pk).update(sha256="0" * 64, bytes=1)

    out, error = run_command("verify_images")

    assert error is not None
    assert f"row says {'0' * 64}" in out
    assert "row says 1" in out


def test_id_and_limit(media: Path, request_: GenerationRequest) -> None:
    first = stored_image(request_, tiny_png(1), 0)
    second = stored_image(request_, tiny_png(2), 1)
    (media / second.image.name).unlink()

    assert run_command("verify_images", "--id", str(first.pk))[1] is None
    assert run_command("verify_images", "--limit", "1")[1] is None  # lowest id first
    out, error = run_command("verify_images", "--id", str(second.pk))
    assert error is not None and "missing" in out
    out, error = run_command("verify_images", "--id", "999999")
    assert error is not None and "No image with id 999999" in out
    assert run_command("verify_images", "--limit", "0")[1] == "--limit must be at least 1"


def test_s3_objects_are_verified_in_the_bucket(
    s3: S3Case, settings, request_: GenerationRequest
) -> None:
    use_s3(settings, s3)
    fine = stored_image(request_, tiny_png(1), 0)
    gone = stored_image(request_, tiny_png(2), 1)
    bad = stored_image(request_, tiny_png(3), 2)
    bucket = s3.server.bucket
    s3.client.delete_object(Bucket=bucket, Key=f"{s3.location}/{gone.image.name}")
    s3.client.put_object(Bucket=bucket, Key=f"{s3.location}/{bad.image.name}", Body=b"x")

    out, error = run_command("verify_images")

    assert error is not None and "1 OK, 2 with problems" in error
    assert f"{gone.image.name}: missing" in out
    assert f"{bad.image.name}: corrupt" in out
    assert f"image {fine.pk} " not in out

    use_s3(settings, s3, secret_key="wrong")
    out, error = run_command("verify_images", "--id", str(fine.pk))
    assert error is not None
    assert f"{fine.image.name}: unreadable" in out
    assert "wrong" not in out.replace(f"{fine.image.name}", "")


# --- --repair -----------------------------------------------------------------------------


def stored_sha256(name: str) -> str | None:
    storage = get_image_storage()
    if not storage.exists(name):
        return None
    with storage.open(name, "rb") as file:
        return hashlib.sha256(file.read()).hexdigest()


def damage(image: GeneratedImage) -> None:
    """Corrupt the image in place and lose its thumbnail (whatever the storage)."""
    storage = get_image_storage()
    storage.delete(image.image.name)
    storage.save(image.image.name, io.BytesIO(b"bit rot"))
    storage.delete(image.thumbnail.name)
    assert stored_sha256(image.image.name) == hashlib.sha256(b"bit rot").hexdigest()


def check_repair(image: GeneratedImage) -> None:
    thumbnail_sha256 = stored_sha256(image.thumbnail.name)
    damage(image)
    assert "1 with problems" in (run_command("verify_images")[1] or "")

    out, error = run_command("verify_images", "--repair")

    assert error is None, out
    assert f"{image.image.name}: corrupt" in out  # reported, then repaired
    assert f"{image.image.name}: repaired from its source URL" in out
    assert f"thumbnail {image.thumbnail.name}: repaired (rendered again)" in out
    assert "0 OK, 1 repaired, 0 with problems" in out
    assert stored_sha256(image.image.name) == image.sha256
    assert stored_sha256(image.thumbnail.name) == thumbnail_sha256
    assert run_command("verify_images")[1] is None  # and it stays repaired


def test_repair_puts_good_bytes_back_on_the_filesystem(media: Path, emulator) -> None:
    image = generated_image("a kite", seed=3)
    assert (media / image.image.name).exists()

    check_repair(image)


def test_repair_puts_good_bytes_back_in_s3(s3: S3Case, settings, emulator) -> None:
    use_s3(settings, s3)
    image = generated_image("a kite", seed=3)
    key = f"{s3.location}/{image.image.name}"
    assert s3.client.head_object(Bucket=s3.server.bucket, Key=key)["ContentType"] == "image/png"

    check_repair(image)

    head = s3.client.head_object(Bucket=s3.server.bucket, Key=key)
    assert head["ContentType"] == "image/png"
    assert head["Metadata"]["sha256"] == image.sha256


def test_repair_without_good_bytes_reports_and_changes_nothing(media: Path, emulator) -> None:
    image = generated_image("a kite", seed=3)
    GeneratedImage.objects.filter(pk=image.pk).update(
        source_expires_at=timezone.now() - timedelta(minutes=1)
    )
    (media / image.image.name).write_bytes(b"bit rot")

    out, error = run_command("verify_images", "--repair")

    assert error is not None and "0 repaired, 1 with problems" in error
    assert f"{image.image.name}: not repaired: its source URL expired at" in out
    assert (media / image.image.name).read_bytes() == b"bit rot"
