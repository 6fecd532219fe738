"""The generated images' admin: a gallery with previews, filters, search by prompt, and
"Mark as chosen" (a button on the image's page, an action on the list)."""

from __future__ import annotations

from functools import partial
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
)
from django.template.defaultfilters import filesizeformat
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from .. import pipeline
from ..alttext import clean_alt_text
from ..contention import StillLocked, retry_when_locked
from ..models import GeneratedImage
from . import html, picker
from .actions import can_generate
from .scale import FormatFilter, ModelIdFilter, ScaleMixin


class GeneratedImageAdmin(ScaleMixin, admin.ModelAdmin):
    """A gallery of every stored image: previews, filters, search by prompt, choose."""

    change_form_template = "django_modelslab/admin/generatedimage/change_form.html"
    change_list_template = "django_modelslab/admin/generatedimage/change_list.html"
    list_display = (
        "preview",
        "id",
        "request_link",
        "prompt",
        "model_id_column",
        "dimensions",
        "format",
        "size",
        "seed",
        "chosen",
        "superseded",
        "created_at",
    )
    list_display_links = ("preview", "id")
    list_filter = (
        ("request__model_id", ModelIdFilter),
        ("format", FormatFilter),
        "created_at",
        "chosen",
        "superseded",
        "nsfw",
    )
    search_fields = ("request__prompt",)
    list_select_related = ("request",)
    list_per_page = 50
    #: Newest first, by the image's own date (the model's order follows the request's and
    #: sorts every row of a large table through a join).
    ordering = ("-created_at", "-pk")
    date_hierarchy = "created_at"
    actions = ("choose",)
    fields = (
        "large_preview",
        "request_link",
        "prompt",
        "full_image",
        "dimensions",
        "format",
        "size",
        "sha256",
        "seed",
        "attempt",
        "position",
        "chosen",
        "superseded",
        "nsfw",
        "source_url",
        "source_expires_at",
        "created_at",
        "use_as_input",
        "alt_text",
    )
    readonly_fields = tuple(name for name in fields if name != "alt_text")

    class Media:
        css = {"all": (html.STATIC_CSS,)}

    def get_urls(self) -> list:
        opts = self.model._meta
        name = f"{opts.app_label}_{opts.model_name}_picker"
        view = self.admin_site.admin_view
        return [
            # GeneratedImageField's widget (see admin/picker.py): before "<path:object_id>/".
            path("picker/", view(picker.images_view), name=name),
            path("picker/config/", view(picker.config_view), name=f"{name}_config"),
            path("picker/generate/", view(picker.generate_view), name=f"{name}_generate"),
            path(
                "picker/generations/<int:generation_id>/",
                view(picker.generation_view),
                name=f"{name}_generation",
            ),
            path(
                "<path:object_id>/choose/",
                self.admin_site.admin_view(self.choose_view),
                name=f"{opts.app_label}_{opts.model_name}_choose",
            ),
            *super().get_urls(),
        ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Images are records of what came back: only their alt text can be edited (and
        # "choose" changes which one is chosen), with Django's change permission.
        return super().has_change_permission(request, obj)

    def has_generate_permission(self, request: HttpRequest) -> bool:
        return can_generate(request)

    def save_model(
        self, request: HttpRequest, obj: GeneratedImage, form: Any, change: bool
    ) -> None:
        """Only the alt text is saved (cleaned as the pipeline cleans it)."""
        obj.alt_text = clean_alt_text(obj.alt_text)
        obj.save(update_fields=["alt_text"])

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: GeneratedImage | None = None,
    ) -> HttpResponse:
        image = context.get("original")
        context["modelslab_choose_url"] = (
            reverse("admin:django_modelslab_generatedimage_choose", args=[image.pk])
            if image is not None and not image.chosen and self.has_generate_permission(request)
            else ""
        )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def choose_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """``POST <id>/choose/``: make this image the chosen one of its request."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_generate_permission(request):
            raise PermissionDenied
        image = self.get_object(request, unquote(object_id))
        if image is None:
            raise Http404(gettext("No such image."))
        try:
            retry_when_locked(partial(pipeline.choose, image))
        except StillLocked as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(
                reverse("admin:django_modelslab_generationrequest_change", args=[image.request_id])
            )
        self.message_user(
            request,
            gettext("Image #%(image)s is now the chosen image of request #%(request)s.")
            % {"image": image.pk, "request": image.request_id},
            messages.SUCCESS,
        )
        target = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(
            target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            target = reverse(
                "admin:django_modelslab_generationrequest_change", args=[image.request_id]
            )
        return HttpResponseRedirect(target)

    @admin.action(
        description=_("Mark as the chosen image of its request"), permissions=["generate"]
    )
    def choose(self, request: HttpRequest, queryset: QuerySet[GeneratedImage]) -> None:
        by_request: dict[int, list[GeneratedImage]] = {}
        for image in queryset:
            by_request.setdefault(image.request_id, []).append(image)
        chosen = [pipeline.choose(images[0]) for images in by_request.values() if len(images) == 1]
        ambiguous = [pk for pk, images in by_request.items() if len(images) > 1]
        if chosen:
            self.message_user(
                request,
                ngettext("%d image marked as chosen.", "%d images marked as chosen.", len(chosen))
                % len(chosen),
                messages.SUCCESS,
            )
        if ambiguous:
            self.message_user(
                request,
                gettext("Pick one image per request; nothing changed for %(ids)s.")
                % {"ids": ", ".join(f"#{pk}" for pk in ambiguous)},
                messages.WARNING,
            )

    # --- columns --------------------------------------------------------------------------

    @admin.display(description=_("preview"))
    def preview(self, image: GeneratedImage) -> str:
        return html.thumbnail_html(image, 128, link=False)  # the cell links to the image's page

    @admin.display(description=_("preview"))
    def large_preview(self, image: GeneratedImage) -> str:
        return html.thumbnail_html(image, 256)

    @admin.display(description=_("use as input"))
    def use_as_input(self, image: GeneratedImage) -> str:
        """Links to a new request with this image as its input (the add form, pre-filled)."""
        add = reverse("admin:django_modelslab_generationrequest_add")
        links = [
            (
                f"{add}?{urlencode({'kind': kind, 'init_from': str(image.pk), 'prompt': prompt})}",
                label,
            )
            for kind, label, prompt in (
                ("img2img", gettext("Image to image"), image.request.prompt),
                ("upscale", gettext("Upscale"), image.request.prompt),
            )
        ]
        return format_html_join(" | ", '<a href="{}">{}</a>', links)

    @admin.display(description=_("full image"))
    def full_image(self, image: GeneratedImage) -> str:
        return format_html('<a href="{}">{}</a>', image.image.url, image.image.name)

    @admin.display(description=_("request"), ordering="request")
    def request_link(self, image: GeneratedImage) -> str:
        url = reverse("admin:django_modelslab_generationrequest_change", args=[image.request_id])
        return format_html('<a href="{}">#{}</a>', url, image.request_id)

    @admin.display(description=_("prompt"), ordering="request__prompt")
    def prompt(self, image: GeneratedImage) -> str:
        return image.request.prompt_preview(60)

    # Not ``model``: that name is ModelAdmin's own (the model class), set on every instance.
    @admin.display(description=_("model"), ordering="request__model_id")
    def model_id_column(self, image: GeneratedImage) -> str:
        return image.request.model_id

    @admin.display(description=_("size"))
    def dimensions(self, image: GeneratedImage) -> str:
        return html.dimensions(image)

    @admin.display(description=_("bytes"), ordering="bytes")
    def size(self, image: GeneratedImage) -> str:
        return filesizeformat(image.bytes)
