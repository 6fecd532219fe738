"""Wagtail with a custom image model (``tests.wagtail_images.CustomImage``)."""

from .settings_wagtail import *  # noqa: F403

WAGTAILIMAGES_IMAGE_MODEL = "wagtail_images.CustomImage"
