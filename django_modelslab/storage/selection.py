"""Which storage holds the images: ``MODELSLAB["STORAGE"]``, looked up when first used.

The models and the system checks import this (and nothing heavier): it loads neither Pillow
nor boto3.
"""

from __future__ import annotations

import inspect
from typing import Any, cast

from django.conf import settings
from django.core.files.storage import Storage, storages
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.functional import LazyObject, empty

from ..conf import get_setting


def signs_urls(storage: Storage) -> bool:
    """Whether ``storage.url()`` takes ``expire`` (django-storages' S3: presigned links)."""
    try:
        return "expire" in inspect.signature(storage.url).parameters
    except (TypeError, ValueError):
        return False


def get_image_storage() -> Storage:
    """``storages[MODELSLAB["STORAGE"]]``, or ``storages["default"]`` when that alias is unset."""
    alias = get_setting("STORAGE")
    if alias in getattr(settings, "STORAGES", {}):
        return storages[alias]
    return storages["default"]


class ImageStorage(LazyObject):  # type: ignore[type-arg]  # not subscriptable at run time
    """Resolves :func:`get_image_storage` on first use (like ``default_storage``)."""

    def _setup(self) -> None:
        self._wrapped = get_image_storage()


image_storage: Any = ImageStorage()


def field_storage() -> Storage:
    """For ``FileField(storage=field_storage)``: migrations reference this, not a backend."""
    return cast(Storage, image_storage)  # the lazy object stands for one


@receiver(setting_changed)
def _reset_image_storage(*, setting: str, **kwargs: Any) -> None:
    if setting in ("STORAGES", "MODELSLAB", "MEDIA_ROOT", "MEDIA_URL"):
        image_storage._wrapped = empty
