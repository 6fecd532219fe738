"""``manage.py copy_images --from ALIAS``: a site's files moved to a new storage (files to a
real S3 endpoint), after which ``verify_images`` is clean and cached repeats hit again."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.storage import storages
from django.core.management import CommandError, call_command

from django_modelslab import pipeline
from django_modelslab.models import GenerationRequest

pytest.register_assert_rewrite("tests.s3")
pytest_plugins = ["tests.s3"]

from .helpers import CAFS, generated_image, new_kind_request, run_command, stored_image, tiny_png  # noqa: E402
from .s3 import STORAGE_BACKEND, S3Case  # noqa: E402

# MEDIA_ROOT is a fresh directory, holding the "modelslab" storage's files.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("media")]


def move_to_s3(settings, s3: S3Case, old: Path) -> None:
    """What a site does: the bucket becomes the configured storage, the old files an alias."""
    settings.STORAGES = {
        **settings.STORAGES,
        "old-files": {"BACKEND": CAFS, "OPTIONS": {"location": str(old)}},
        "modelslab": {"BACKEND": STORAGE_BACKEND, "OPTIONS": s3.options()},
    }


def test_files_moved_to_s3_verify_clean_and_cached_repeats_hit(
    s3: S3Case, settings, emulator
) -> None:
    media = Path(settings.MEDIA_ROOT)
    image = generated_image("a kite", seed=3)  # seeded: a repeat is a cache hit
    upload = new_kind_request("img2img", init=tiny_png(9), prompt="x", seed=1)
    names = sorted([image.image.name, image.thumbnail.name, upload.init_image.name])
    assert all((media / name).exists() for name in names)
    move_to_s3(settings, s3, media)
    assert (
        run_command("verify_images")[1] is not None
    )  # the bucket is empty: every row is a problem

    out, error = run_command("copy_images", "--from", "old-files", "--dry-run")
    assert error is None and "3 file(s) would be copied, 0 already there" in out
    assert s3.keys() == []

    out, error = run_command("copy_images", "--from", "old-files")

    assert error is None, out
    assert "Copied 3 file(s)" in out and "0 not copied" in out
    assert s3.keys() == [f"{s3.location}/{name}" for name in names]
    bucket = storages["modelslab"]
    for name in names:
        with bucket.open(name, "rb") as copied:
            assert copied.read() == (media / name).read_bytes()
    head = s3.client.head_object(Bucket=s3.server.bucket, Key=f"{s3.location}/{image.image.name}")
    assert head["ContentType"] == "image/png"
    assert head["Metadata"]["sha256"] == image.sha256
    assert head["Metadata"]["request-id"] == str(image.request_id)

    out, error = run_command("verify_images")
    assert error is None and "0 with problems" in out

    calls = emulator.calls["text2img"]
    repeat = GenerationRequest.objects.create(prompt="a kite", width=256, height=256, seed=3)
    repeat = pipeline.run(pipeline.submit(repeat, enqueue=False).pk)
    assert repeat.cached_from_id == image.request_id  # a hit again: the files are in the bucket
    assert emulator.calls["text2img"] == calls

    out, error = run_command("copy_images", "--from", "old-files")  # again: nothing left to copy
    assert error is None and "Copied 0 file(s)" in out and "3 already there" in out


def test_missing_or_corrupt_old_files_are_reported_and_not_copied(s3: S3Case, settings) -> None:
    media = Path(settings.MEDIA_ROOT)
    request = GenerationRequest.objects.create(prompt="a lighthouse", seed=1)
    good, lost, rotten = (stored_image(request, tiny_png(seed), seed) for seed in (1, 2, 3))
    (media / lost.image.name).unlink()
    (media / rotten.image.name).write_bytes(tiny_png(4))
    move_to_s3(settings, s3, media)

    out, error = run_command("copy_images", "--from", "old-files")

    assert error is not None and "Copied 1 file(s)" in error and "2 not copied" in error
    assert f"{lost.image.name}: missing from the old storage" in out
    assert f"{rotten.image.name}: not copied: These bytes hash to" in out
    assert s3.keys() == [f"{s3.location}/{good.image.name}"]


def test_the_alias_must_be_another_configured_storage() -> None:
    with pytest.raises(CommandError, match=r"no such alias.*modelslab"):
        call_command("copy_images", "--from", "nope")
    with pytest.raises(CommandError, match="the configured storage"):
        call_command("copy_images", "--from", "modelslab")


def test_between_two_filesystem_storages_each_file_is_listed_at_verbosity_2(
    settings, tmp_path: Path
) -> None:
    media = Path(settings.MEDIA_ROOT)
    request = GenerationRequest.objects.create(prompt="a lighthouse", seed=1)
    image = stored_image(request, tiny_png(5))
    target = tmp_path / "new"
    settings.STORAGES = {
        **settings.STORAGES,
        "old-files": {"BACKEND": CAFS, "OPTIONS": {"location": str(media)}},
        "modelslab": {"BACKEND": CAFS, "OPTIONS": {"location": str(target)}},
    }

    out, error = run_command("copy_images", "--from", "old-files", "-v", "2")

    assert error is None, out
    assert f"{image.image.name}: copied" in out
    assert (target / image.image.name).read_bytes() == tiny_png(5)
