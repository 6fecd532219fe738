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

#: Names living in modules that load Pillow or boto3, importable from here as they always
#: were: each loads its module on first access ("django_modelslab.storage.
#: ContentAddressedS3Storage" works in STORAGES; a filesystem project never imports boto3).
_ELSEWHERE = {
    "ContentAddressedS3Storage": ".s3",
    "s3_transfer_config": ".s3",
    "StoredImage": ".content",
    "image_metadata": ".content",
    "restore_file": ".content",
    "store_file": ".content",
    "FORMATS": "..imaging.verify",
    "ImageInfo": "..imaging.verify",
    "decode_image": "..imaging.verify",
    "inspect_image": "..imaging.verify",
}

__all__ = [
    "ContentAddressedFileSystemStorage",
    "ContentAddressedStorageMixin",
    "field_storage",
    "get_image_storage",
    "image_storage",
    "signs_urls",
]


def __getattr__(name: str) -> Any:
    if name in _ELSEWHERE:
        return getattr(import_module(_ELSEWHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
