"""The Django admin for generation requests, their images and webhook deliveries (a face:
it calls the pipeline only).

Viewing follows Django's view permission; generating, regenerating and choosing an image need
``django_modelslab.generate_images``. Without it the actions and buttons are hidden and the
POST endpoints answer 403.

A project can subclass these and register its own, e.g. ``admin.site.unregister(
GenerationRequest)`` then ``admin.site.register(GenerationRequest, MyRequestAdmin)``.
"""

from django.contrib import admin

from ..models import GeneratedImage, GenerationRequest, WebhookDelivery
from .actions import GENERATE_PERMISSION
from .images import GeneratedImageAdmin
from .requests import GeneratedImageInline, GenerationRequestAdmin
from .webhooks import WebhookDeliveryAdmin

admin.site.register(GenerationRequest, GenerationRequestAdmin)
admin.site.register(GeneratedImage, GeneratedImageAdmin)
admin.site.register(WebhookDelivery, WebhookDeliveryAdmin)

__all__ = [
    "GENERATE_PERMISSION",
    "GeneratedImageAdmin",
    "GeneratedImageInline",
    "GenerationRequestAdmin",
    "WebhookDeliveryAdmin",
]
