"""``add_to_library``: a generated image as an ordinary Wagtail library image.

The library image is made once per generated image (a :class:`~.models.LibraryImage` row
links the two, unique on both sides). When Wagtail's image storage and ours keep their files
in the same place, the library image names the generated image's own content-addressed file
(no second copy); otherwise the bytes are copied as they are (no re-encoding).
"""

from __future__ import annotations

import os
from pathlib import PurePosixPath
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage
from django.db import IntegrityError, models, transaction
from django.utils.text import Truncator
from wagtail.images import get_image_model
from wagtail.models import Collection
from wagtail.search import index as search_index
from wagtail.utils.file import hash_filelike

from django_modelslab.models import GeneratedImage

from .models import LibraryImage

#: The tag every library image made from a generation carries.
TAG = "ai-generated"
#: Longest title taken from the prompt (the whole prompt stays on the generation).
TITLE_LENGTH = 100
#: Where an image model keeps its alt text: Wagtail's own (5.x and later: ``description``),
#: then the names custom image models commonly use.
ALT_TEXT_FIELDS = ("description", "alt_text", "alt")


def add_to_library(
    generated_image: GeneratedImage,
    collection: Collection | None = None,
    user: AbstractBaseUser | None = None,
) -> Any:
    """The Wagtail library image of ``generated_image``, made on the first call.

    A second call (or a concurrent one) returns the same image; ``collection`` (default: the
    root collection) and ``user`` (``uploaded_by_user``) only apply when it is made. The image
    is tagged ``ai-generated``, titled from the prompt, and given the generation's alt text
    where the image model has a field for it.
    """
    found = library_image_of(generated_image)
    if found is not None:
        return found
    image_model = get_image_model()
    target = image_model._meta.get_field("file").storage
    shared = same_storage(target, generated_image.image.storage)
    fields = _fields(image_model, generated_image, collection, user)
    copied = ""
    with generated_image.image.storage.open(str(generated_image.image.name), "rb") as source:
        fields["file_hash"] = hash_filelike(source)
        if shared:
            fields["file"] = generated_image.image.name
        else:
            source.seek(0)
            field = image_model._meta.get_field("file")
            name = field.generate_filename(image_model(**fields), _copy_name(generated_image))
            copied = fields["file"] = target.save(name, File(source), max_length=field.max_length)
    image = image_model(**fields)
    try:
        with transaction.atomic():
            image.save()
            image.tags.add(TAG)
            LibraryImage.objects.create(generated_image=generated_image, image=image)
    except IntegrityError:
        # Made meanwhile by another call: keep that one, drop our copy (its name is ours).
        if copied:
            target.delete(copied)
        found = library_image_of(generated_image)
        if found is None:
            raise
        return found
    search_index.insert_or_update_object(image)  # with its tag, as Wagtail's own form does
    return image


def library_image_of(generated_image: GeneratedImage) -> Any | None:
    """The library image made from ``generated_image``, if any."""
    link = (
        LibraryImage.objects.select_related("image")
        .filter(generated_image_id=generated_image.pk)
        .first()
    )
    return link.image if link is not None else None


def same_storage(a: Storage, b: Storage) -> bool:
    """Whether a name means the same file in ``a`` and ``b`` (same directory, same bucket).

    Two storages configured alike count as one, whatever their classes (Wagtail's
    ``FileSystemStorage`` and our content-addressed subclass on ``MEDIA_ROOT``).
    """
    if a is b:
        return True
    if isinstance(a, FileSystemStorage) and isinstance(b, FileSystemStorage):
        return os.path.realpath(a.location) == os.path.realpath(b.location)
    if hasattr(a, "bucket_name") and hasattr(b, "bucket_name"):  # S3 and its kin
        keys = ("bucket_name", "location", "endpoint_url")
        return all(getattr(a, key, None) == getattr(b, key, None) for key in keys)
    return type(a) is type(b) and a.deconstruct() == b.deconstruct()  # type: ignore[attr-defined]


def file_in_use(name: str, storage: Storage, *, besides: Any = None) -> bool:
    """Whether a generation row, or a library image (other than ``besides``), names the file
    ``name`` of ``storage``."""
    image_model = get_image_model()
    images = image_model._default_manager.filter(file=name)
    if besides is not None:
        images = images.exclude(pk=besides.pk)
    if images.exists():
        return True
    ours = GeneratedImage._meta.get_field("image").storage
    if not same_storage(storage, ours):
        return False
    return GeneratedImage.objects.filter(models.Q(image=name) | models.Q(thumbnail=name)).exists()


def _fields(
    image_model: type[models.Model],
    generated_image: GeneratedImage,
    collection: Collection | None,
    user: AbstractBaseUser | None,
) -> dict[str, Any]:
    prompt = " ".join(generated_image.request.prompt.split())
    title = Truncator(prompt).chars(TITLE_LENGTH) or f"Generated image {generated_image.pk}"
    fields: dict[str, Any] = {
        "title": title,
        "width": generated_image.width,
        "height": generated_image.height,
        "file_size": generated_image.bytes,
        "collection": collection or Collection.get_first_root_node(),
        "uploaded_by_user": user,
    }
    names = {field.name: field for field in image_model._meta.concrete_fields}
    alt_field = next((names[name] for name in ALT_TEXT_FIELDS if name in names), None)
    if alt_field is not None and generated_image.alt_text:
        limit = alt_field.max_length or len(generated_image.alt_text)
        fields[alt_field.name] = Truncator(generated_image.alt_text).chars(limit)
    return fields


def _copy_name(generated_image: GeneratedImage) -> str:
    """``modelslab-<sha256 prefix>.<ext>``: what Wagtail's upload path is made from."""
    suffix = PurePosixPath(str(generated_image.image.name)).suffix
    return f"modelslab-{generated_image.sha256[:16]}{suffix}"
