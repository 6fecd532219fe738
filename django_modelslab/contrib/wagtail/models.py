"""The link between a generated image and the Wagtail library image made from it."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _
from wagtail.images import get_image_model_string

from django_modelslab.models import GeneratedImage


class LibraryImage(models.Model):
    """A generated image's place in Wagtail's image library: one library image per generated
    image (made by :func:`~django_modelslab.contrib.wagtail.add_to_library`), and one
    generation per library image.

    ``generated_image.library_image.image`` is where a generation is used;
    ``image.modelslab_link.generated_image.request`` is the prompt, model and seed a library
    image came from. Deleting either row deletes the link, never the other row.
    """

    generated_image = models.OneToOneField(
        GeneratedImage,
        on_delete=models.CASCADE,
        related_name="library_image",
        verbose_name=_("generated image"),
    )
    image = models.OneToOneField(
        get_image_model_string(),
        on_delete=models.CASCADE,
        related_name="modelslab_link",
        verbose_name=_("library image"),
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("library image")
        verbose_name_plural = _("library images")

    def __str__(self) -> str:
        return f"{self.generated_image} → image {self.image_id}"
