"""Wagtail editors for the admin tests: Wagtail's own permissions (admin access, page and
collection permissions through a group) plus, when asked, ``generate_images``."""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission, User
from wagtail.images import get_image_model
from wagtail.models import Collection, GroupCollectionPermission, GroupPagePermission, Page

IMAGE_ACTIONS = ("add", "change", "choose")


def image_permission(action: str) -> Permission:
    meta = get_image_model()._meta
    return Permission.objects.get(
        content_type__app_label=meta.app_label, codename=f"{action}_{meta.model_name}"
    )


def editor(
    username: str,
    *,
    generate: bool = True,
    image_actions: tuple[str, ...] = IMAGE_ACTIONS,
    collection: Collection | None = None,
    pages: bool = False,
) -> User:
    """A user who may use Wagtail's admin: images (``image_actions`` in ``collection``, the
    root by default), pages under the root when ``pages``, and generating when ``generate``."""
    user = User.objects.create_user(username)
    codenames = ["access_admin"] + (["generate_images"] if generate else [])
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    group = Group.objects.create(name=f"{username} editors")
    for action in image_actions:
        GroupCollectionPermission.objects.create(
            group=group,
            collection=collection or Collection.get_first_root_node(),
            permission=image_permission(action),
        )
    if pages:
        root = Page.get_first_root_node()
        for action in ("add", "change", "publish"):
            GroupPagePermission.objects.create(group=group, page=root, permission_type=action)
    user.groups.add(group)
    return user
