"""Deleting a library image deletes its file only when nothing else names it.

Wagtail deletes an image's file once the deletion commits
(``wagtail.images.signal_handlers.post_delete_file_cleanup``). A library image made by
``add_to_library`` may name a generated image's own content-addressed file, so the app
swaps that handler for :func:`delete_file_unless_shared`, which asks at commit time whether a
generation row (or another library image) still names the file, and calls Wagtail's handler
when none does.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete
from wagtail.images import get_image_model
from wagtail.images.signal_handlers import post_delete_file_cleanup

from .library import file_in_use

DISPATCH_UID = "modelslab_wagtail_delete_file_unless_shared"


def delete_file_unless_shared(sender: Any, instance: Any, **kwargs: Any) -> None:
    """``post_delete`` of the image model: Wagtail's file clean-up, unless shared."""
    name, storage = instance.file.name, instance.file.storage
    if not name:
        return

    def clean_up() -> None:
        if not file_in_use(name, storage):
            post_delete_file_cleanup(instance=instance, sender=sender, **kwargs)

    transaction.on_commit(clean_up)


def install() -> bool:
    """Swap Wagtail's file clean-up for ours; False when Wagtail's was not connected (the
    app is listed before ``wagtail.images``: a system check says so)."""
    image_model = get_image_model()
    swapped = post_delete.disconnect(post_delete_file_cleanup, sender=image_model)
    post_delete.connect(delete_file_unless_shared, sender=image_model, dispatch_uid=DISPATCH_UID)
    return bool(swapped)
