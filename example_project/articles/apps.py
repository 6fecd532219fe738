from django.apps import AppConfig


class ArticlesConfig(AppConfig):
    """A small content app: articles whose hero is a generated image."""

    name = "example_project.articles"
    label = "articles"
    default_auto_field = "django.db.models.BigAutoField"
