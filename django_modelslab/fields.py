"""``GeneratedImageField``: a site's own models point at a generated image (a face).

::

    from django_modelslab.fields import GeneratedImageField

    class Article(models.Model):
        hero = GeneratedImageField(null=True, blank=True)

A ``ForeignKey`` to :class:`~django_modelslab.models.GeneratedImage`, ``on_delete=PROTECT``
by default (an image in use cannot be deleted from under the page showing it) and
``related_name="+"`` unless given. Its form field shows the chosen image's thumbnail with
**Choose** and **Generate** buttons (:class:`GeneratedImageWidget`); their endpoints are admin
views of the generated images' admin (``admin/picker.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django import forms
from django.db import models
from django.urls import NoReverseMatch, reverse
from django.utils.translation import gettext_lazy as _

from .models import GeneratedImage

#: The model the field points at, as migrations write it.
TARGET = "django_modelslab.GeneratedImage"

#: Sizes the Generate form offers ("WxH"); each within ModelsLab's limits.
SIZES = ("512x512", "768x512", "512x768", "1024x576", "576x1024", "1024x1024")


class GeneratedImageWidget(forms.Widget):
    """A hidden input holding the image's id, its thumbnail, and Choose / Generate / Clear.

    The buttons need the admin's picker endpoints (``admin_site`` names the admin site's URL
    namespace). Generate shows only to users with ``generate_images``: the script asks the
    picker's config endpoint, which answers per user. No inline script or style (CSP).
    """

    template_name = "django_modelslab/widgets/generated_image.html"

    class Media:
        css = {"all": ("django_modelslab/field.css",)}
        js = ("django_modelslab/field.js",)

    def __init__(self, attrs: dict[str, Any] | None = None, admin_site: str = "admin") -> None:
        super().__init__(attrs)
        self.admin_site = admin_site

    def use_required_attribute(self, initial: Any) -> bool:
        return False  # a hidden input; the form field says what is required

    def id_for_label(self, id_: str) -> str:
        """The label points at the Choose button (the input itself is hidden)."""
        return f"{id_}_choose" if id_ else id_

    def urls(self) -> dict[str, str]:
        """The picker's endpoints, or {} when the admin's URLs are not included."""
        name = f"{self.admin_site}:django_modelslab_generatedimage_picker"
        try:
            return {
                "config": reverse(f"{name}_config"),
                "images": reverse(name),
                "generate": reverse(f"{name}_generate"),
                "generation": reverse(f"{name}_generation", args=[0]).replace("/0/", "/{id}/"),
            }
        except NoReverseMatch:
            return {}

    def get_context(self, name: str, value: Any, attrs: dict[str, Any] | None) -> dict[str, Any]:
        context = super().get_context(name, value, attrs)
        image = None
        if value not in (None, ""):
            pk = value.pk if isinstance(value, GeneratedImage) else value
            image = GeneratedImage.objects.select_related("request").filter(pk=pk).first()
        context["widget"].update(
            image=image,
            preview=(image.thumbnail.url if image.thumbnail else image.image.url)
            if image is not None and image.image
            else "",
            urls=self.urls(),
            sizes=SIZES,
            required=self.is_required,
        )
        return context

    def value_from_datadict(self, data: Any, files: Any, name: str) -> Any:
        return data.get(name) or None


class GeneratedImageFormField(forms.ModelChoiceField):
    """The form field: a generated image by id, shown with :class:`GeneratedImageWidget`."""

    widget = GeneratedImageWidget


class GeneratedImageField(models.ForeignKey):
    """A ForeignKey to :class:`GeneratedImage` that protects the image it uses."""

    description = _("A generated image")

    def __init__(
        self,
        on_delete: Any = models.PROTECT,
        *,
        related_name: str | None = "+",
        **kwargs: Any,
    ) -> None:
        kwargs.pop("to", None)  # always GeneratedImage (migrations pass it back)
        super().__init__(TARGET, on_delete, related_name=related_name, **kwargs)

    def deconstruct(self) -> tuple[str, str, Sequence[Any], dict[str, Any]]:
        name, _path, args, kwargs = super().deconstruct()
        kwargs.pop("to", None)
        if kwargs.get("on_delete") is models.PROTECT:
            del kwargs["on_delete"]
        if kwargs.get("related_name") == "+":
            del kwargs["related_name"]
        else:
            kwargs.setdefault("related_name", None)
        return name, "django_modelslab.fields.GeneratedImageField", args, kwargs

    def formfield(self, **kwargs: Any) -> Any:
        # The admin passes a widget only for raw_id_fields / autocomplete / radio fields.
        return super().formfield(
            **{"form_class": GeneratedImageFormField, "widget": GeneratedImageWidget, **kwargs}
        )
