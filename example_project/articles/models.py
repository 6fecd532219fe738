"""An article with a generated hero image: GeneratedImageField in a site's own model."""

from __future__ import annotations

from django.db import models
from django.urls import reverse

from django_modelslab.fields import GeneratedImageField


class Article(models.Model):
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    # PROTECT by default: the image cannot be deleted while this article uses it.
    hero = GeneratedImageField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("-created_at", "-pk")

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        return reverse("articles:detail", args=[self.pk])
