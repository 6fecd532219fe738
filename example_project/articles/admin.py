from django.contrib import admin

from .models import Article


@admin.register(Article)
class ArticleAdmin(admin.ModelAdmin):
    """The hero's widget (Choose / Generate) comes with the field: nothing to configure."""

    list_display = ("title", "hero", "created_at")
    search_fields = ("title",)
