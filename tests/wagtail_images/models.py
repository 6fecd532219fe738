"""A custom Wagtail image model, as sites make them: a field of their own."""

from django.db import models
from wagtail.images.models import AbstractImage, AbstractRendition


class CustomImage(AbstractImage):
    credit = models.CharField(max_length=200, blank=True)

    admin_form_fields = ("title", "file", "collection", "tags", "description", "credit")


class CustomRendition(AbstractRendition):
    image = models.ForeignKey(CustomImage, on_delete=models.CASCADE, related_name="renditions")

    class Meta:
        unique_together = (("image", "filter_spec", "focal_point_key"),)
