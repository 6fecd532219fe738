"""Hooks into Wagtail's admin: Images → Generate, the chooser's Generate tab, Regenerate.

Wagtail offers no hook to add a tab to its image chooser or a button to its image edit page,
so the integration serves those two pages itself: subclasses of Wagtail's own views
(``ImageChooseView``, ``EditView``), at Wagtail's own URLs, registered ahead of Wagtail's
(``register_admin_urls`` with ``order=-1``: the first matching URL wins). Every URL name of
Wagtail's still reverses to the same address, so image fields, StreamField blocks and rich
text open the chooser with the tab; nothing of Wagtail is patched.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.urls import include, path, reverse
from django.utils.translation import gettext_lazy as _
from wagtail import hooks
from wagtail.admin.menu import Menu, MenuItem, SubmenuMenuItem
from wagtail.images import get_image_model
from wagtail.images.views.chooser import ImageChooserViewSet

from . import admin_urls, views
from .permissions import may_generate


class ChooserViewSet(ImageChooserViewSet):
    """Wagtail's image chooser views (never registered: only its choose view is served)."""

    choose_view_class = views.GenerateTabChooseView


@hooks.register("register_admin_urls", order=-1)
def register_admin_urls() -> list[Any]:
    # Named as Wagtail's chooser viewset, so the view's own links (results, chosen, upload)
    # reverse to Wagtail's URLs.
    chooser = ChooserViewSet(
        "wagtailimages_chooser", model=get_image_model(), url_prefix="images/chooser"
    )
    return [
        path("modelslab/", include(admin_urls, namespace="modelslab_wagtail")),
        path("images/chooser/", chooser.choose_view, name="modelslab_wagtail_chooser"),
        path(
            "images/<int:image_id>/",
            views.GenerateEditView.as_view(),
            name="modelslab_wagtail_image_edit",
        ),
    ]


class GenerateMenuItem(MenuItem):
    def is_shown(self, request: HttpRequest) -> bool:
        return may_generate(request.user)


@hooks.register("construct_main_menu")
def images_submenu(request: HttpRequest, menu_items: list[Any]) -> None:
    """For editors who may generate, Images becomes a submenu: the library, and Generate."""
    if not may_generate(request.user):
        return
    for index, item in enumerate(menu_items):
        if item.name == "images" and not isinstance(item, SubmenuMenuItem):
            menu = Menu(
                items=[
                    MenuItem(
                        _("Library"),
                        reverse("wagtailimages:index"),
                        name="images-library",
                        icon_name="image",
                        order=100,
                    ),
                    GenerateMenuItem(
                        _("Generate"),
                        reverse("modelslab_wagtail:generate"),
                        name="images-generate",
                        icon_name="image",
                        order=200,
                    ),
                ]
            )
            menu_items[index] = SubmenuMenuItem(
                item.label, menu, name="images", icon_name=item.icon_name, order=item.order
            )
            return
