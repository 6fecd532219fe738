"""Who may see and act on what, by Django's permissions (``is_staff`` alone grants nothing).

- Owners see their own requests and images, regenerate them and choose among their images.
- ``view_generationrequest`` shows everyone's requests and images.
- Regenerating or choosing on someone else's request needs ``generate_images`` too.
- With ``API_REQUIRE_GENERATE_PERMISSION``, creating and regenerating (even one's own) need
  ``generate_images``.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.utils.translation import gettext_lazy as _
from rest_framework.permissions import SAFE_METHODS, BasePermission

from ..conf import get_setting
from ..models import GeneratedImage, GenerationRequest

VIEW_PERMISSION = "django_modelslab.view_generationrequest"
GENERATE_PERMISSION = "django_modelslab.generate_images"


def _has(user: Any, permission: str) -> bool:
    return bool(user and user.is_authenticated and user.has_perm(permission))


def sees_everything(user: Any) -> bool:
    """Whether ``user`` may see every user's requests and images (``view_generationrequest``)."""
    return _has(user, VIEW_PERMISSION)


def may_generate(user: Any) -> bool:
    """Whether ``user`` holds ``generate_images``."""
    return _has(user, GENERATE_PERMISSION)


def generating_needs_permission() -> bool:
    """Whether API_REQUIRE_GENERATE_PERMISSION asks ``generate_images`` of every generation."""
    return get_setting("API_REQUIRE_GENERATE_PERMISSION") is True


def visible_requests(user: Any) -> QuerySet[GenerationRequest]:
    """Requests ``user`` may see: their own; with ``view_generationrequest``, all."""
    queryset = GenerationRequest.objects.all()
    return queryset if sees_everything(user) else queryset.filter(requested_by=user)


def visible_images(user: Any) -> QuerySet[GeneratedImage]:
    """Images of the requests ``user`` may see."""
    queryset = GeneratedImage.objects.all()
    return queryset if sees_everything(user) else queryset.filter(request__requested_by=user)


class CanGenerate(BasePermission):
    """View level: the view's generating actions need ``generate_images`` when the
    API_REQUIRE_GENERATE_PERMISSION setting says so (default: any authenticated user)."""

    message = _("Starting a generation needs the django_modelslab.generate_images permission.")

    def has_permission(self, request: Any, view: Any) -> bool:
        generating = getattr(view, "generating_actions", None)
        if generating is not None and getattr(view, "action", None) not in generating:
            return True
        return not generating_needs_permission() or may_generate(request.user)


class IsOwnerOrPermitted(BasePermission):
    """Object level: the request's (or image's request's) owner; otherwise reading needs
    ``view_generationrequest`` and acting (regenerate, choose) ``generate_images`` too.

    Querysets are already narrowed by :func:`visible_requests` (others' objects answer 404
    to a user who may not see them); this keeps the rule if a subclass widens the queryset,
    and answers 403 to a viewer who may see but not act.
    """

    message = _(
        "Acting on another user's request needs the django_modelslab.generate_images permission."
    )

    def has_object_permission(self, request: Any, view: Any, obj: Any) -> bool:
        generation = obj.request if isinstance(obj, GeneratedImage) else obj
        if request.user.is_authenticated and generation.requested_by_id == request.user.pk:
            return True
        if not sees_everything(request.user):
            return False
        return request.method in SAFE_METHODS or may_generate(request.user)


#: The earlier name, kept for imports.
IsOwnerOrStaff = IsOwnerOrPermitted
