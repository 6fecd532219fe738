"""Who may generate from Wagtail's admin: ``django_modelslab.generate_images`` plus Wagtail's
own permission to add images to the collection (its collection-based policy)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from wagtail.images import get_image_model
from wagtail.models import Collection
from wagtail.permissions import policy_registry

GENERATE_PERMISSION = "django_modelslab.generate_images"


def add_collections(user: Any) -> QuerySet[Collection]:
    """The collections ``user`` may add images to (Wagtail's policy for the image model)."""
    policy = policy_registry.get_by_type(get_image_model())
    return policy.collections_user_has_permission_for(user, "add")


def may_generate(user: Any, collection: Collection | None = None) -> bool:
    """Whether ``user`` may generate: into ``collection``, or into some collection."""
    if not user.is_active or not user.has_perm(GENERATE_PERMISSION):
        return False
    collections = add_collections(user)
    if collection is None:
        return collections.exists()
    return collections.filter(pk=collection.pk).exists()
