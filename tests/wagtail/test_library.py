"""add_to_library: one library image per generated image, sharing our file when the storages
are one (else a byte copy), usable by Wagtail (renditions, tags, alt text); deleting it never
deletes a file a generation still uses, and prune_images keeps files library images name.

Runs with Wagtail's image model (tests.settings_wagtail) and with a custom one
(tests.settings_wagtail_custom): see the Makefile's test targets.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest
from django.conf import settings
from django.db import close_old_connections
from wagtail.images import get_image_model
from wagtail.models import Collection

from django_modelslab import pruning
from django_modelslab.contrib.wagtail import add_to_library
from django_modelslab.contrib.wagtail.models import LibraryImage
from django_modelslab.models import GeneratedImage
from django_modelslab.storage import get_image_storage
from tests.helpers import CAFS, generated_image, opened, sha256_hex

PROMPT = "a lighthouse on a cliff at dusk, oil painting, warm light over a calm sea"

pytestmark = pytest.mark.usefixtures("emulator", "media")


def files_under(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()}


def read(file) -> bytes:
    with file.storage.open(file.name, "rb") as handle:
        return handle.read()


@pytest.fixture
def other_storage(settings, media: Path) -> Path:
    """Our images on a storage of their own: Wagtail's (the default) is elsewhere."""
    location = media / "generated"
    settings.STORAGES = {
        **settings.STORAGES,
        "modelslab": {
            "BACKEND": CAFS,
            "OPTIONS": {"location": str(location), "base_url": "/generated/"},
        },
    }
    return location


@pytest.mark.django_db
def test_a_second_call_returns_the_same_library_image(owner):
    image = generated_image(PROMPT)
    first = add_to_library(image, user=owner)
    again = add_to_library(image)

    assert again.pk == first.pk
    assert get_image_model().objects.count() == 1
    link = LibraryImage.objects.get()
    assert (link.generated_image, link.image) == (image, first)
    # Both sides know each other: where a generation is used, where an image came from.
    assert GeneratedImage.objects.get(pk=image.pk).library_image.image == first
    assert get_image_model().objects.get().modelslab_link.generated_image.request.prompt == PROMPT


@pytest.mark.django_db
def test_the_sites_image_model_gets_the_generations_details(owner):
    image = generated_image(PROMPT)
    library = add_to_library(image, user=owner)

    expected_model = getattr(settings, "WAGTAILIMAGES_IMAGE_MODEL", "wagtailimages.Image")
    assert library._meta.label_lower == expected_model.lower()
    assert (library.width, library.height) == (image.width, image.height)
    assert library.title == PROMPT[:100]  # the whole prompt: it is shorter than a title
    assert image.alt_text and library.description == image.alt_text
    assert library.default_alt_text == image.alt_text  # what {% image %} puts in alt
    assert list(library.tags.names()) == ["ai-generated"]
    assert library.collection == Collection.get_first_root_node()
    assert library.uploaded_by_user == owner
    assert library.file_size == image.bytes


@pytest.mark.django_db
def test_a_long_prompt_is_cut_for_the_title_and_a_collection_can_be_chosen():
    prompt = "a very detailed " * 20 + "harbour"
    collection = Collection.get_first_root_node().add_child(name="Generated")
    library = add_to_library(generated_image(prompt), collection=collection)

    assert len(library.title) <= 100 and library.title.endswith("…")
    assert library.collection == collection


@pytest.mark.django_db
def test_the_same_storage_shares_the_file_no_copy(media: Path):
    image = generated_image(PROMPT)
    before = files_under(media)
    library = add_to_library(image)

    assert files_under(media) == before  # nothing written
    assert library.file.name == image.image.name
    data = read(image.image)
    assert read(library.file) == data
    assert library.file_hash == hashlib.sha1(data).hexdigest()  # Wagtail's hash


@pytest.mark.django_db
def test_another_storage_gets_the_bytes_as_they_are(media: Path, other_storage: Path):
    image = generated_image(PROMPT)
    assert Path(get_image_storage().path(image.image.name)).is_relative_to(other_storage)
    library = add_to_library(image)

    assert library.file.name != image.image.name
    assert library.file.name.startswith("original_images/modelslab-")
    assert Path(library.file.path).is_relative_to(media)
    data = read(library.file)
    assert sha256_hex(data) == image.sha256  # the same bytes: not re-encoded
    assert library.file_hash == hashlib.sha1(data).hexdigest()


@pytest.mark.django_db
def test_wagtail_renditions_work_on_the_library_image():
    image = generated_image(PROMPT)
    library = add_to_library(image)

    rendition = library.get_rendition("fill-64x48")
    assert (rendition.width, rendition.height) == (64, 48)
    assert opened(read(rendition.file)).size == (64, 48)


@pytest.mark.django_db(transaction=True)
def test_concurrent_calls_make_one_library_image():
    image = generated_image(PROMPT)
    barrier = threading.Barrier(4)
    results: list[int] = []
    errors: list[BaseException] = []

    def add() -> None:
        try:
            barrier.wait()
            results.append(add_to_library(GeneratedImage.objects.get(pk=image.pk)).pk)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            close_old_connections()

    threads = [threading.Thread(target=add) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors
    assert len(set(results)) == 1
    assert get_image_model().objects.count() == 1
    assert LibraryImage.objects.count() == 1


# --- deleting and pruning -------------------------------------------------------------------


@pytest.mark.django_db
def test_deleting_the_library_image_keeps_a_file_a_generation_uses(
    django_capture_on_commit_callbacks,
):
    image = generated_image(PROMPT)
    library = add_to_library(image)
    with django_capture_on_commit_callbacks(execute=True):
        library.delete()

    assert get_image_storage().exists(image.image.name)
    assert sha256_hex(read(GeneratedImage.objects.get(pk=image.pk).image)) == image.sha256
    assert not LibraryImage.objects.exists()


@pytest.mark.django_db
def test_a_file_nothing_else_uses_is_deleted_with_the_library_image(
    django_capture_on_commit_callbacks,
):
    image = generated_image(PROMPT)
    library = add_to_library(image)
    image.request.delete()  # the generation is gone: the library image is the last user
    assert get_image_storage().exists(library.file.name)

    with django_capture_on_commit_callbacks(execute=True):
        library.delete()
    assert not get_image_storage().exists(library.file.name)


@pytest.mark.django_db
def test_a_copy_is_deleted_with_its_library_image(
    other_storage, django_capture_on_commit_callbacks
):
    image = generated_image(PROMPT)
    library = add_to_library(image)
    copy = Path(library.file.path)
    with django_capture_on_commit_callbacks(execute=True):
        library.delete()

    assert not copy.exists()  # Wagtail's own clean-up, as for any image
    assert get_image_storage().exists(image.image.name)


@pytest.mark.django_db
def test_prune_keeps_a_file_a_library_image_still_names():
    image = generated_image(PROMPT)
    library = add_to_library(image)
    image.request.delete()  # no generation row names the file any more

    storage = get_image_storage()
    orphans = pruning.find_orphans(storage, prefix="modelslab/", grace=0, now=2**40)
    assert library.file.name not in {file.name for file in orphans.files}
    assert image.thumbnail.name in {file.name for file in orphans.files}  # still pruned


def test_the_app_listed_before_wagtail_images_is_a_system_check_error(monkeypatch):
    from django.apps import apps

    from django_modelslab.contrib.wagtail.apps import check_app_order

    assert check_app_order() == []
    monkeypatch.setattr(apps.get_app_config("modelslab_wagtail"), "deletion_guarded", False)
    assert [error.id for error in check_app_order()] == ["modelslab_wagtail.E001"]
