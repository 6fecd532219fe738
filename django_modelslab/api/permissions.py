"""Who may see and act on what: owners their own requests and images, staff everything."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework.permissions import BasePermission

from ..models import GeneratedImage, GenerationRequest


def sees_everything(user: Any) -> bool:
    return bool(user and user.is_authenticated and user.is_staff)


def visible_requests(user: Any) -> QuerySet[GenerationRequest]:
    """Requests ``user`` may see: their own; staff see all."""
    queryset = GenerationRequest.objects.all()
    return queryset if sees_everything(user) else queryset.filter(requested_by=user)


def visible_images(user: Any) -> QuerySet[GeneratedImage]:
    """Images of the requests ``user`` may see."""
    queryset = GeneratedImage.objects.all()
    return queryset if sees_everything(user) else queryset.filter(request__requested_by=user)


class IsOwnerOrStaff(BasePermission):
    """Object level: the request's (or image's request's) owner, or staff.

    Querysets are already narrowed by :func:`visible_requests` (others' objects answer 404);
    this keeps the rule if a subclass widens the queryset.
    """

    def has_object_permission(self, request: Any, view: Any, obj: Any) -> bool:
        if sees_everything(request.user):
            return True
        generation = obj.request if isinstance(obj, GeneratedImage) else obj
        return generation.requested_by_id == request.user.pk
