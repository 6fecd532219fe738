import django.db.models.deletion
from django.db import migrations, models
from wagtail.images import get_image_model_string


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("django_modelslab", "0009_alt_text_renditions"),
        # The site's image model (WAGTAILIMAGES_IMAGE_MODEL), Wagtail's own by default.
        migrations.swappable_dependency(get_image_model_string()),
    ]

    operations = [
        migrations.CreateModel(
            name="LibraryImage",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "generated_image",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="library_image",
                        to="django_modelslab.generatedimage",
                        verbose_name="generated image",
                    ),
                ),
                (
                    "image",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="modelslab_link",
                        to=get_image_model_string(),
                        verbose_name="library image",
                    ),
                ),
            ],
            options={
                "verbose_name": "library image",
                "verbose_name_plural": "library images",
            },
        ),
    ]
