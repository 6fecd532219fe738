"""Renditions: specs read (and refused) clearly; made once, stored once, by content; never
larger than the original; on the filesystem, on S3 and under a race on PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from django.db import close_old_connections, connection
from PIL import Image

from django_modelslab.exceptions import InvalidRenditionSpec, ModelsLabError, StorageError
from django_modelslab.models import GeneratedImage, Rendition
from django_modelslab.specs import Plan, Spec, parse_spec

from .helpers import encoded, new_request, noise_png, opened, png, stored_image

postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="runs in the PostgreSQL pass (make test-pg: python -m tests.pgcluster)",
)

PROMPT = "renditions of a lighthouse at dusk"

# --- specs (pure) ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("fill-400x300", "fill-400x300"),
        ("width-640", "width-640"),
        ("height-480", "height-480"),
        ("max-800x600", "max-800x600"),
        ("fill-400x300|format-webp", "fill-400x300|format-webp"),
        ("fill-400x300 format-webp", "fill-400x300|format-webp"),  # Wagtail's tag style
        ("format-jpg|width-10", "width-10|format-jpeg"),
        ("  max-1x1  ", "max-1x1"),
    ],
)
def test_specs_read_to_one_canonical_form(text, canonical):
    assert str(parse_spec(text)) == canonical


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "is a string"),
        ("fill-400", "fill takes fill-WxH"),
        ("width-10x10", "width takes width-W"),
        ("fill-0x10", "fill takes fill-WxH"),
        ("fill-400x300|format-gif", "unknown format 'gif'"),
        ("crop-10x10", "unknown operation 'crop-10x10'"),
        ("fill-10x10|width-5", "two resize operations"),
        ("format-webp", "no size"),
        ("width-99999", "at most 10000 px"),
        ("width-x", "width takes width-W"),
    ],
)
def test_a_bad_spec_is_a_value_error_that_says_why(text, says):
    with pytest.raises(InvalidRenditionSpec, match=says) as caught:
        parse_spec(text)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, ModelsLabError)


def test_plans_never_upscale_and_fill_crops_the_centre():
    assert Spec("fill", 400, 300).plan(1000, 1000) == Plan(400, 300, (0, 125, 1000, 875))
    assert Spec("fill", 400, 300).plan(1600, 600) == Plan(400, 300, (400, 0, 1200, 600))
    # clamped: the asked aspect kept, as large as the original allows
    assert Spec("fill", 800, 600).plan(400, 400) == Plan(400, 300, (0, 50, 400, 350))
    assert Spec("width", 2000, None).plan(500, 250) == Plan(500, 250, (0, 0, 500, 250))
    assert Spec("height", None, 100).plan(500, 250) == Plan(200, 100, (0, 0, 500, 250))
    assert Spec("max", 100, 100).plan(500, 250) == Plan(100, 50, (0, 0, 500, 250))
    assert Spec("fill", 40, 30).scaled(2) == Spec("fill", 80, 60)


# --- made and stored (filesystem) -----------------------------------------------------------


def image_of(data: bytes, prompt: str = PROMPT) -> GeneratedImage:
    return stored_image(new_request(prompt), data)


@pytest.mark.django_db
def test_a_rendition_is_made_once_and_stored_under_its_hash(media):
    image = image_of(png((640, 480), (200, 30, 30)))

    rendition = image.get_rendition("fill-200x100")

    assert (rendition.width, rendition.height, rendition.format) == (200, 100, "PNG")
    assert rendition.file.name.startswith("modelslab/renditions/")
    assert rendition.file.name.endswith(f"{rendition.sha256}.png")
    data = (media / rendition.file.name).read_bytes()
    assert len(data) == rendition.bytes and opened(data).size == (200, 100)
    files = sorted(p for p in media.rglob("*") if p.is_file())

    again = GeneratedImage.objects.get(pk=image.pk).get_rendition("fill-200x100")

    assert again.pk == rendition.pk
    assert Rendition.objects.filter(image=image).count() == 1
    assert sorted(p for p in media.rglob("*") if p.is_file()) == files


@pytest.mark.django_db
def test_a_larger_spec_is_clamped_to_the_original_and_identical_bytes_are_one_file(media):
    image = image_of(png((300, 200), (10, 200, 30)))

    asked = image.get_rendition("width-300")
    larger = image.get_rendition("width-3000")
    shape = image.get_rendition("fill-600x400")  # same aspect as the original: the whole

    assert (larger.width, larger.height) == (300, 200)
    assert (shape.width, shape.height) == (300, 200)
    assert asked.file.name == larger.file.name == shape.file.name  # stored once
    assert Rendition.objects.filter(image=image).count() == 3


@pytest.mark.django_db
def test_formats_are_converted_and_avif_works_where_pillow_has_it(media):
    from PIL import features

    image = image_of(png((320, 240), (90, 90, 200)))

    webp = image.get_rendition("max-160x160|format-webp")
    jpeg = image.get_rendition("width-100|format-jpeg")

    assert (webp.format, webp.width, webp.height) == ("WEBP", 160, 120)
    assert webp.file.name.endswith(".webp")
    assert opened((media / webp.file.name).read_bytes()).format == "WEBP"
    assert jpeg.file.name.endswith(".jpg") and jpeg.format == "JPEG"
    if features.check("avif"):
        avif = image.get_rendition("width-80|format-avif")
        assert avif.file.name.endswith(".avif")
        assert opened((media / avif.file.name).read_bytes()).size == (80, 60)


@pytest.mark.django_db
def test_a_large_jpeg_is_decoded_at_reduced_scale(media):
    big = Image.effect_noise((2400, 1800), 50).convert("RGB")
    image = image_of(encoded(big, "JPEG", quality=70).getvalue())
    seen: list[tuple[int, int]] = []
    original_load = Image.Image.resize

    def resize(self, size, *args, **kwargs):
        seen.append(self.size)
        return original_load(self, size, *args, **kwargs)

    Image.Image.resize = resize  # type: ignore[method-assign]
    try:
        rendition = image.get_rendition("width-200")
    finally:
        Image.Image.resize = original_load  # type: ignore[method-assign]

    assert (rendition.width, rendition.height, rendition.format) == (200, 150, "JPEG")
    assert seen and max(seen)[0] <= 600  # draft(): decoded at 1/4 scale, not 2400 wide


@pytest.mark.django_db
def test_bad_specs_and_missing_originals_say_so_and_store_nothing(media):
    image = image_of(png((64, 48), (1, 2, 3)))
    with pytest.raises(InvalidRenditionSpec):
        image.get_rendition("fill-64")
    (media / image.image.name).unlink()
    with pytest.raises(StorageError, match="not stored"):
        image.get_rendition("width-32")
    assert not Rendition.objects.exists()


@pytest.mark.django_db
def test_prefetched_renditions_are_found_without_a_query(media, django_assert_num_queries):
    first = image_of(png((120, 90), (5, 5, 250)))
    first.get_rendition("width-60")
    image = GeneratedImage.objects.prefetch_renditions().get(pk=first.pk)
    with django_assert_num_queries(0):
        assert image.get_rendition("width-60").width == 60


# --- S3 ---------------------------------------------------------------------------------------

pytest.register_assert_rewrite("tests.s3")
pytest_plugins = ["tests.s3"]

from .s3 import STORAGE_BACKEND, S3Case  # noqa: E402


@pytest.mark.django_db
def test_renditions_on_s3_are_stored_once_with_their_content_type(s3: S3Case, settings):
    settings.STORAGES = {
        **settings.STORAGES,
        "modelslab": {"BACKEND": STORAGE_BACKEND, "OPTIONS": s3.options()},
    }
    image = image_of(noise_png(200))

    rendition = image.get_rendition("fill-100x50|format-webp")
    image.get_rendition("fill-100x50|format-webp")

    key = f"{s3.location}/{rendition.file.name}"
    stored = s3.keys()
    assert key in stored
    assert len([k for k in stored if "/renditions/" in k]) == 1
    head = s3.client.head_object(Bucket=s3.server.bucket, Key=key)
    assert head["ContentType"] == "image/webp"
    body = s3.client.get_object(Bucket=s3.server.bucket, Key=key)["Body"].read()
    assert opened(body).size == (100, 50) and len(body) == rendition.bytes


# --- two workers at once (PostgreSQL) ----------------------------------------------------------


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_two_workers_asking_at_once_make_one_row_and_one_file(media):
    image = image_of(noise_png(900))
    barrier = threading.Barrier(2)
    results: list[object] = []

    def ask() -> None:
        try:
            own = GeneratedImage.objects.get(pk=image.pk)
            barrier.wait()
            results.append(own.get_rendition("fill-300x200"))
        except BaseException as exc:  # reported below
            results.append(exc)
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert all(isinstance(r, Rendition) for r in results), results
    assert {r.pk for r in results} == {Rendition.objects.get(image=image).pk}  # type: ignore[attr-defined]
    files = [p for p in (media / "modelslab" / "renditions").rglob("*") if p.is_file()]
    assert len(files) == 1
    assert files[0].stat().st_size == results[0].bytes  # type: ignore[attr-defined]
