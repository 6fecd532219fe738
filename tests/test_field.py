"""GeneratedImageField: the model field (migrations, protected delete), its widget and the
admin endpoints behind Choose and Generate, through the admin with the test client.

The model is the example project's ``Article`` (``example_project.articles``, installed in
the tests' settings).
"""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.db import models
from django.test import TestCase
from django.urls import reverse

from django_modelslab.fields import GeneratedImageField, GeneratedImageWidget
from django_modelslab.models import GeneratedImage, GenerationRequest
from django_modelslab.testing import Fault
from example_project.articles.models import Article

from .helpers import generate, sent, staff, succeeded_request

pytestmark = pytest.mark.django_db

ADD = reverse("admin:articles_article_add")
PICKER = reverse("admin:django_modelslab_generatedimage_picker")
CONFIG = reverse("admin:django_modelslab_generatedimage_picker_config")
GENERATE = reverse("admin:django_modelslab_generatedimage_picker_generate")
ARTICLE_PERMS = ["add_article", "change_article", "view_article", "delete_article"]


def generation_url(pk: int) -> str:
    return reverse("admin:django_modelslab_generatedimage_picker_generation", args=[pk])


@pytest.fixture
def writer(client):
    """A staff user who may edit articles and generate, logged in to ``client``."""
    user = staff("writer", [*ARTICLE_PERMS, "generate_images"])
    client.force_login(user)
    return user


# --- the model field ------------------------------------------------------------------------


def test_defaults_protect_the_image_and_add_no_reverse_accessor():
    field = Article._meta.get_field("hero")
    assert field.remote_field.model is GeneratedImage
    assert field.remote_field.on_delete is models.PROTECT
    assert field.remote_field.related_name == "+"
    assert not hasattr(GeneratedImage, "article_set")


@pytest.mark.parametrize(
    ("kwargs", "written"),
    [
        ({}, {}),
        ({"null": True, "blank": True}, {"null": True, "blank": True}),
        (
            {"on_delete": models.SET_NULL, "null": True},
            {"on_delete": models.SET_NULL, "null": True},
        ),
        ({"related_name": "articles"}, {"related_name": "articles"}),
        ({"related_name": None}, {"related_name": None}),
    ],
)
def test_deconstructs_to_what_was_given(kwargs, written):
    field = GeneratedImageField(**kwargs)
    field.set_attributes_from_name("hero")
    _name, path, args, deconstructed = field.deconstruct()
    assert path == "django_modelslab.fields.GeneratedImageField"
    assert (args, deconstructed) == ([], written)
    rebuilt = GeneratedImageField(*args, **deconstructed)
    assert rebuilt.remote_field.on_delete is field.remote_field.on_delete
    assert rebuilt.remote_field.related_name == field.remote_field.related_name


def test_the_example_migration_is_up_to_date():
    out = io.StringIO()
    call_command("makemigrations", "articles", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


def test_model_forms_use_the_widget():
    from django import forms

    class ArticleForm(forms.ModelForm):
        class Meta:
            model = Article
            fields = ("title", "hero")

    assert isinstance(ArticleForm().fields["hero"].widget, GeneratedImageWidget)


# --- the widget in the admin's form ---------------------------------------------------------


def test_the_add_form_shows_choose_and_a_hidden_generate(client, writer):
    html = client.get(ADD).content.decode()
    assert 'class="modelslab-field"' in html
    assert 'id="id_hero_choose"' in html and 'for="id_hero_choose"' in html
    assert f'data-images-url="{PICKER}"' in html
    assert f'data-generate-url="{GENERATE}"' in html
    assert "django_modelslab/field.js" in html and "django_modelslab/field.css" in html
    assert "<script>" not in html.split('class="modelslab-field"')[1].split("</dialog>\n</div>")[0]


def test_the_change_form_shows_the_chosen_thumbnail(client, writer, emulator):
    image = generate("a field widget preview, a teapot", seed=9101).images.get()
    article = Article.objects.create(title="Teapots", hero=image)
    html = client.get(reverse("admin:articles_article_change", args=[article.pk])).content.decode()
    assert f'src="{image.thumbnail.url}"' in html
    assert f'value="{image.pk}"' in html


def test_saving_the_form_stores_the_picked_image(client, writer, emulator):
    image = generate("a field widget save, a kettle", seed=9102).images.get()
    response = client.post(ADD, {"title": "Kettles", "body": "", "hero": str(image.pk)})
    assert response.status_code == 302, response.content
    assert Article.objects.get(title="Kettles").hero == image


def test_config_says_who_may_generate(client, writer):
    assert client.get(CONFIG).json()["can_generate"] is True
    client.force_login(staff("reader", ARTICLE_PERMS))
    assert client.get(CONFIG).json()["can_generate"] is False


# --- Choose -----------------------------------------------------------------------------------


def test_choose_lists_own_images_searched_by_prompt_newest_first(client, writer):
    mine = succeeded_request(writer, prompt="an orange cat on a sofa", images=2)
    succeeded_request(writer, prompt="a grey dog", images=1)
    succeeded_request(staff("other", []), prompt="an orange cat, someone else's", images=1)

    data = client.get(PICKER, {"q": "ORANGE cat"}).json()
    ids = [image["id"] for image in data["results"]]
    assert sorted(ids) == sorted(mine.images.values_list("pk", flat=True))
    assert data["count"] == 2 and data["pages"] == 1
    first = data["results"][0]
    assert first["thumbnail"].endswith(".webp") and "orange cat" in first["prompt"]


def test_choose_shows_everyones_images_with_a_view_permission(client):
    succeeded_request(staff("painter", []), prompt="a blue whale picker", images=1)
    client.force_login(staff("viewer", ["view_generationrequest"]))
    assert client.get(PICKER, {"q": "blue whale picker"}).json()["count"] == 1
    client.force_login(staff("nobody", []))
    assert client.get(PICKER, {"q": "blue whale picker"}).json()["count"] == 0


def test_choose_is_paginated(client, writer):
    succeeded_request(writer, prompt="a paginated pear", images=30)
    first = client.get(PICKER, {"q": "paginated pear"}).json()
    second = client.get(PICKER, {"q": "paginated pear", "page": 2}).json()
    assert (len(first["results"]), len(second["results"]), first["pages"]) == (24, 6, 2)
    assert not {i["id"] for i in first["results"]} & {i["id"] for i in second["results"]}


def test_the_endpoints_are_for_the_admins_staff_only(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("visitor"))  # not staff
    assert client.get(PICKER).status_code == 302  # to the admin's login page
    client.logout()
    assert client.post(GENERATE, {"prompt": "x"}).status_code == 302


# --- Generate ---------------------------------------------------------------------------------


def test_generate_runs_a_generation_through_the_pipeline(client, writer, emulator):
    with TestCase.captureOnCommitCallbacks(execute=True):
        response = client.post(
            GENERATE,
            {
                "prompt": "a widget generation, a yellow tram",
                "model_id": "",
                "size": "768x512",
                "samples": "2",
                "seed": "9103",
            },
        )
    assert response.status_code == 201, response.content
    generation = GenerationRequest.objects.get(pk=response.json()["id"])
    assert (generation.width, generation.height, generation.samples) == (768, 512, 2)
    assert generation.requested_by == writer and generation.seed == 9103
    assert generation.model_id == "flux"  # the DEFAULT_MODEL

    data = client.get(generation_url(generation.pk)).json()
    assert data["status"] == "succeeded" and data["active"] is False
    assert sorted(image["id"] for image in data["images"]) == sorted(
        generation.images.values_list("pk", flat=True)
    )
    assert [body["prompt"] for body in sent(emulator)] == ["a widget generation, a yellow tram"]


def test_generate_needs_the_permission(client, emulator):
    client.force_login(staff("reader", ARTICLE_PERMS))
    response = client.post(GENERATE, {"prompt": "a forbidden widget generation", "size": "512x512"})
    assert response.status_code == 403
    assert "generate_images" in response.json()["detail"]
    assert not GenerationRequest.objects.filter(prompt__startswith="a forbidden").exists()
    assert emulator.requests == []


def test_generate_refuses_bad_input_with_the_models_rules(client, writer, emulator):
    response = client.post(GENERATE, {"prompt": "", "size": "13x13", "samples": "9"})
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert set(errors) == {"prompt", "size", "samples"}
    assert not GenerationRequest.objects.exists()


def test_a_failed_generation_reports_its_error(client, writer, emulator):
    emulator.add_fault("text2img", Fault.error_200("Insufficient credits for the widget."))
    with TestCase.captureOnCommitCallbacks(execute=True):
        response = client.post(GENERATE, {"prompt": "a failing widget kite", "size": "512x512"})
    data = client.get(generation_url(response.json()["id"])).json()
    assert data["status"] == "failed" and data["images"] == []
    assert "Insufficient credits for the widget." in data["error"]


def test_progress_is_only_shown_to_who_may_see_the_generation(client, writer):
    theirs = succeeded_request(staff("stranger", []), prompt="a private widget moth", images=1)
    assert client.get(generation_url(theirs.pk)).status_code == 404
    mine = succeeded_request(writer, prompt="my widget moth", images=1)
    assert client.get(generation_url(mine.pk)).json()["images"][0]["prompt"] == "my widget moth"


# --- protected delete -------------------------------------------------------------------------


@pytest.fixture
def deleter(client):
    user = staff(
        "deleter",
        [
            "view_generatedimage",
            "delete_generatedimage",
            "view_generationrequest",
            "delete_generationrequest",
            *ARTICLE_PERMS,
        ],
    )
    client.force_login(user)
    return user


def test_deleting_an_image_in_use_shows_the_objects_using_it(client, deleter):
    image = succeeded_request(deleter, prompt="a protected widget owl", images=1).images.get()
    article = Article.objects.create(title="Owls at night", hero=image)
    url = reverse("admin:django_modelslab_generatedimage_delete", args=[image.pk])

    page = client.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert "would require deleting the following protected related objects" in html
    assert "Owls at night" in html
    assert client.post(url, {"post": "yes"}).status_code == 200  # refused, page shown again
    assert GeneratedImage.objects.filter(pk=image.pk).exists()
    article.refresh_from_db()
    assert article.hero_id == image.pk

    # Without the permission to delete articles: Django's "Cannot delete" page names the type.
    deleter.user_permissions.remove(*deleter.user_permissions.filter(codename="delete_article"))
    client.force_login(type(deleter).objects.get(pk=deleter.pk))
    page = client.get(url)
    assert page.status_code == 200 and "Cannot delete generated image" in page.content.decode()
    assert GeneratedImage.objects.filter(pk=image.pk).exists()


def test_deleting_the_request_of_an_image_in_use_is_refused_too(client, deleter):
    generation = succeeded_request(deleter, prompt="a protected widget heron", images=2)
    Article.objects.create(title="Herons", hero=generation.images.first())
    url = reverse("admin:django_modelslab_generationrequest_delete", args=[generation.pk])

    html = client.get(url).content.decode()
    assert "would require deleting the following protected related objects" in html
    assert "Herons" in html
    client.post(url, {"post": "yes"})
    assert GenerationRequest.objects.filter(pk=generation.pk).exists()

    changelist = reverse("admin:django_modelslab_generationrequest_changelist")
    response = client.post(
        changelist,
        {"action": "delete_selected", "_selected_action": [generation.pk], "post": "yes"},
    )
    assert response.status_code == 200
    assert "Herons" in response.content.decode()
    assert GenerationRequest.objects.filter(pk=generation.pk).exists()


def test_an_unused_image_deletes(client, deleter):
    image = succeeded_request(deleter, prompt="an unused widget wren", images=1).images.get()
    url = reverse("admin:django_modelslab_generatedimage_delete", args=[image.pk])
    assert client.post(url, {"post": "yes"}).status_code == 302
    assert not GeneratedImage.objects.filter(pk=image.pk).exists()
