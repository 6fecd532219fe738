"""Alt text: filled when the pipeline stores an image (the prompt, cleaned, or the
ALT_TEXT_HOOK's), editable in the admin, and filled for existing rows by the migration."""

from __future__ import annotations

import logging

import pytest
from django.contrib.admin.sites import site
from django.core.checks import Error
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse

from django_modelslab.alttext import clean_alt_text
from django_modelslab.checks import check_settings
from django_modelslab.models import GeneratedImage

from .helpers import WEBHOOK_SECRET as SECRET
from .helpers import configure, generated_image, staff

PROMPT = "alt\ttext:  a heron\x07 standing\n in   reeds"


def test_cleaning_collapses_whitespace_drops_controls_and_cuts_on_a_word():
    assert clean_alt_text(" a\x00 b\u202e c\n\n d ") == "a b c d"
    long = "word " * 200
    cut = clean_alt_text(long, length=23)
    assert cut == "word word word word…" and len(cut) <= 23


@pytest.mark.django_db
def test_the_pipeline_fills_alt_text_from_the_prompt(emulator, media):
    image = generated_image(PROMPT, seed=801)
    assert image.alt_text == "alt text: a heron standing in reeds"


@pytest.mark.django_db
def test_the_hook_supplies_alt_text(emulator, media, settings):
    configure(settings, ALT_TEXT_HOOK="tests.hooks_alt_text.describe")
    image = generated_image(PROMPT, seed=802)
    assert image.alt_text == "A 256x256 PNG picture: alt text: a heron standing in reeds"


@pytest.mark.django_db
@pytest.mark.parametrize("hook", ["broken", "nothing"])
def test_a_failing_hook_is_logged_and_the_image_kept(emulator, media, settings, caplog, hook):
    configure(settings, ALT_TEXT_HOOK=f"tests.hooks_alt_text.{hook}", WEBHOOK_SECRETS=[SECRET])
    with caplog.at_level(logging.WARNING, logger="django_modelslab.alttext"):
        image = generated_image(PROMPT, seed=803 if hook == "broken" else 804)
    assert image.alt_text == "alt text: a heron standing in reeds"
    [record] = [r for r in caplog.records if r.name == "django_modelslab.alttext"]
    assert "ALT_TEXT_HOOK" in record.getMessage()
    assert SECRET not in record.getMessage()


def test_a_bad_hook_path_is_a_system_check_error(settings):
    configure(settings, ALT_TEXT_HOOK="tests.hooks_alt_text.missing")
    errors = [m for m in check_settings() if isinstance(m, Error)]
    assert [e.id for e in errors] == ["django_modelslab.E070"]
    assert "ALT_TEXT_HOOK" in errors[0].msg


@pytest.mark.django_db
def test_an_editor_changes_alt_text_in_the_admin(client, emulator, media):
    image = generated_image("alt text admin: a kestrel", seed=805)
    user = staff("alt-editor", ["view_generatedimage", "change_generatedimage"])
    client.force_login(user)
    url = reverse("admin:django_modelslab_generatedimage_change", args=[image.pk])

    page = client.get(url)
    assert b'name="alt_text"' in page.content
    response = client.post(url, {"alt_text": "  A kestrel hovering\x07 "})

    assert response.status_code == 302, response.content[:2000]
    image.refresh_from_db()
    assert image.alt_text == "A kestrel hovering"
    assert site._registry[GeneratedImage].get_readonly_fields(None)  # the rest stays read-only
    viewer = staff("alt-viewer", ["view_generatedimage"])
    client.force_login(viewer)
    assert b'name="alt_text"' not in client.get(url).content


@pytest.mark.django_db(transaction=True)
def test_the_migration_fills_alt_text_of_existing_images():
    executor = MigrationExecutor(connection)
    before = [("django_modelslab", "0008_parameter_limits")]
    after = [("django_modelslab", "0009_alt_text_renditions")]
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    Request = old.get_model("django_modelslab", "GenerationRequest")
    Image = old.get_model("django_modelslab", "GeneratedImage")
    generation = Request.objects.create(prompt="old\n\nrow:   a  barn owl", width=256, height=256)
    Image.objects.create(
        request=generation, image="k.png", sha256="0" * 64, width=1, height=1, format="PNG", bytes=1
    )

    executor = MigrationExecutor(connection)
    executor.migrate(after)
    new = executor.loader.project_state(after).apps

    assert new.get_model("django_modelslab", "GeneratedImage").objects.get().alt_text == (
        "old row: a barn owl"
    )
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
