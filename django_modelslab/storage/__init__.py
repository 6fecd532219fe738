"""Content-addressed image storage.

This package is the storage the settings select (:mod:`.selection`: what the models' file
fields use) and the filesystem backend (:mod:`.filesystem`); importing it loads neither
Pillow nor boto3. :mod:`.content` holds the content keys and :func:`~.content.store_file`
(Pillow, through :mod:`django_modelslab.imaging`); :mod:`.s3` the S3 backend (boto3).
"""

from importlib import import_module
from typing import Any

from .base import ContentAddressedStorageMixin
from .filesystem import ContentAddressedFileSystemStorage
from .selection import field_storage, get_image_storage, image_storage, signs_urls

#: The S3 backend, importable from here as documented ("django_modelslab.storage.
#: ContentAddressedS3Storage" in STORAGES): loaded on first access, so a filesystem project
#: never imports boto3.
_S3_NAMES = ("ContentAddressedS3Storage", "s3_transfer_config")

__all__ = [
    "ContentAddressedFileSystemStorage",
    "ContentAddressedStorageMixin",
    "field_storage",
    "get_image_storage",
    "image_storage",
    "signs_urls",
]


def __getattr__(name: str) -> Any:
    if name in _S3_NAMES:
        return getattr(import_module(".s3", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
