"""Wagtail's admin, through Django's test client: Images → Generate (start, progress, add to a
collection), the chooser's Generate tab (the picked result chosen as an upload is), Regenerate
from the image's edit page, and who sees none of it (no menu item, no tab, no button, 403).

The emulator runs the generations (inline tasks); tests/wagtail/test_admin_browser.py does the
same in Chromium.
"""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, TestCase
from django.urls import reverse
from wagtail.images import get_image_model
from wagtail.models import Collection

from django_modelslab.contrib.wagtail import add_to_library
from django_modelslab.models import GenerationRequest
from tests.helpers import generated_image, png

from .editors import editor

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("emulator", "media")]

GENERATE = reverse("modelslab_wagtail:generate")
START = reverse("modelslab_wagtail:generate_start")
ADD = reverse("modelslab_wagtail:add")
PICK = reverse("modelslab_wagtail:chooser_pick")
CHOOSER = reverse("wagtailimages_chooser:choose")
#: How Wagtail's modal posts (jQuery): a refusal is a 403, not the dashboard's redirect.
AJAX = {"HTTP_X_REQUESTED_WITH": "XMLHttpRequest"}


def denied(response) -> bool:
    """Wagtail's answer to PermissionDenied on an admin page: back to the dashboard, with its
    "you do not have permission" message."""
    return response.status_code == 302 and response["Location"] == reverse("wagtailadmin_home")


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def start(client: Client, collection: Collection, **fields) -> tuple[int, dict]:
    data = {"prompt": "a red tram at night", "size": "768x512", "samples": "2", **fields}
    body = {f"modelslab-{key}": value for key, value in data.items()}
    body["modelslab-collection"] = str(collection.pk)
    with TestCase.captureOnCommitCallbacks(execute=True):  # the task runs (inline tasks)
        response = client.post(START, body)
    if response.status_code != 201:
        return response.status_code, response.json()
    # Then its progress, as the page polls it.
    progress = client.get(reverse("modelslab_wagtail:generation", args=(response.json()["id"],)))
    return response.status_code, progress.json()


@pytest.fixture
def root() -> Collection:
    return Collection.get_first_root_node()


@pytest.fixture
def generated(root) -> Collection:
    return root.add_child(name="Generated")


def test_images_generate_starts_a_generation_and_adds_two_picks_to_a_collection(generated):
    user = editor("ed")
    client = client_for(user)
    page = client.get(GENERATE)
    assert page.status_code == 200
    assert b'data-modelslab-generate data-mode="library"' in page.content
    assert b"modelslab-negative_prompt" in page.content

    status, data = start(client, generated, negative_prompt="blurry", seed="77", model_id="flux")
    assert status == 201, data
    generation = GenerationRequest.objects.get(pk=data["id"])
    assert (generation.width, generation.height, generation.samples) == (768, 512, 2)
    assert (generation.negative_prompt, generation.seed, generation.requested_by) == (
        "blurry",
        77,
        user,
    )
    progress = client.get(reverse("modelslab_wagtail:generation", args=(generation.pk,))).json()
    assert progress["status"] == "succeeded" and len(progress["images"]) == 2

    ids = [str(image["id"]) for image in progress["images"]]
    response = client.post(ADD, {"image": ids, "collection": str(generated.pk)})
    assert response.status_code == 302
    assert response["Location"].endswith(f"?collection_id={generated.pk}")
    library = get_image_model().objects.filter(collection=generated).order_by("pk")
    assert [image.modelslab_link.generated_image_id for image in library] == [int(pk) for pk in ids]
    assert all(image.uploaded_by_user == user for image in library)
    # Adding again returns the same library images.
    client.post(ADD, {"image": ids, "collection": str(generated.pk)})
    assert get_image_model().objects.count() == 2


def test_a_bad_form_is_refused_and_nothing_is_saved(root):
    status, data = start(client_for(editor("ed")), root, prompt="", size="13x13")
    assert status == 400
    assert set(data["errors"]) == {"prompt", "size"}
    assert not GenerationRequest.objects.exists()


def test_the_chooser_has_a_generate_tab_whose_pick_is_chosen(root):
    user = editor("ed")
    client = client_for(user)
    html = client.get(CHOOSER).json()["html"]
    assert 'id="tab-modelslab-generate"' in html and 'id="tab-upload"' in html
    assert f'action="{PICK}"' in html

    _, data = start(client, root, samples="1")
    picked = data["images"][0]["id"]
    answer = client.post(PICK, {"image": str(picked), "collection": str(root.pk)}).json()
    image = get_image_model().objects.get()
    assert answer["step"] == "chosen"
    assert answer["result"]["id"] == str(image.pk)
    assert answer["result"]["title"] == "a red tram at night"
    assert image.modelslab_link.generated_image_id == picked

    # In rich text (select_format) the next step is Wagtail's format form.
    html = client.get(CHOOSER, {"select_format": "true"}).json()["html"]
    assert f'action="{PICK}?select_format=true"' in html
    answer = client.post(
        f"{PICK}?select_format=true", {"image": str(picked), "collection": str(root.pk)}
    ).json()
    assert answer["step"] == "select_format"
    assert get_image_model().objects.count() == 1


def test_another_editors_generation_cannot_be_picked(root):
    theirs = generated_image("someone else's picture")
    client = client_for(editor("ed"))
    response = client.post(PICK, {"image": str(theirs.pk), "collection": str(root.pk)}, **AJAX)
    assert response.status_code == 403
    assert not get_image_model().objects.exists()


def test_regenerate_from_the_edit_page_keeps_the_old_image(root):
    user = editor("ed")
    client = client_for(user)
    _, data = start(client, root, samples="1", seed="5")
    old = add_to_library(
        GenerationRequest.objects.get(pk=data["id"]).images.get(), collection=root, user=user
    )
    edit = client.get(reverse("wagtailimages:edit", args=(old.pk,)))
    regenerate = reverse("modelslab_wagtail:regenerate", args=(old.pk,))
    assert regenerate.encode() in edit.content
    assert b"a red tram at night" in client.get(regenerate).content

    with TestCase.captureOnCommitCallbacks(execute=True):
        response = client.post(regenerate)
    generation = GenerationRequest.objects.get(pk=data["id"])
    assert response.status_code == 302
    assert response["Location"] == f"{GENERATE}?generation={generation.pk}&collection={root.pk}"
    assert generation.status == "succeeded" and generation.seed != 5  # a new picture
    new = generation.images.get(superseded=False)
    old.refresh_from_db()  # the old image stays, on its (now superseded) generated image
    assert old.modelslab_link.generated_image.superseded
    assert old.file.storage.exists(old.file.name)
    # The new result is picked on Generate, as any other.
    page = client.get(response["Location"])
    assert f'data-follow="{generation.pk}"'.encode() in page.content
    progress = client.get(reverse("modelslab_wagtail:generation", args=(generation.pk,))).json()
    assert [image["id"] for image in progress["images"]] == [new.pk]
    client.post(ADD, {"image": [str(new.pk)], "collection": str(root.pk)})
    assert get_image_model().objects.count() == 2


def test_an_image_not_generated_has_no_regenerate(root):
    user = editor("ed")
    library = add_to_library(generated_image("a picture"), collection=root)
    library.modelslab_link.delete()
    client = client_for(user)
    regenerate = reverse("modelslab_wagtail:regenerate", args=(library.pk,))
    assert (
        regenerate.encode()
        not in client.get(reverse("wagtailimages:edit", args=(library.pk,))).content
    )
    assert denied(client.post(regenerate))


@pytest.mark.parametrize(
    "permissions",
    [
        {"generate": False},  # no generate_images
        {"image_actions": ("change", "choose")},  # may not add images anywhere
    ],
    ids=["without-generate_images", "without-image-add"],
)
def test_without_the_permissions_there_is_no_generate_anywhere(root, permissions):
    user = editor("ed", **permissions)
    client = client_for(user)
    library = add_to_library(generated_image("a picture", requested_by=user), collection=root)
    generation = library.modelslab_link.generated_image.request

    home = client.get(reverse("wagtailadmin_home")).content.decode()
    assert GENERATE not in home
    if "add" not in permissions.get("image_actions", ("add",)):
        assert client.get(CHOOSER).status_code == 200
    html = client.get(CHOOSER).json()["html"]
    assert "tab-modelslab-generate" not in html and PICK not in html
    edit = client.get(reverse("wagtailimages:edit", args=(library.pk,)))
    regenerate = reverse("modelslab_wagtail:regenerate", args=(library.pk,))
    assert edit.status_code == 200 and regenerate.encode() not in edit.content

    assert denied(client.get(GENERATE))
    status, _ = start(client, root)
    assert status == 403
    progress = client.get(reverse("modelslab_wagtail:generation", args=(generation.pk,)))
    assert progress.status_code == 403
    image = str(library.modelslab_link.generated_image_id)
    assert denied(client.post(ADD, {"image": [image], "collection": str(root.pk)}))
    assert (
        client.post(PICK, {"image": image, "collection": str(root.pk)}, **AJAX).status_code == 403
    )
    assert denied(client.get(regenerate))
    assert denied(client.post(regenerate))
    assert get_image_model().objects.count() == 1
    assert GenerationRequest.objects.count() == 1


def test_add_permission_is_per_collection(root, generated):
    # May add images in "Generated" only: not to the root collection.
    user = editor("ed", collection=generated)
    client = client_for(user)
    status, _ = start(client, root)
    assert status == 403
    status, data = start(client, generated, samples="1")
    assert status == 201
    image = str(data["images"][0]["id"])
    assert denied(client.post(ADD, {"image": [image], "collection": str(root.pk)}))
    assert not get_image_model().objects.exists()
    assert client.post(ADD, {"image": [image], "collection": str(generated.pk)}).status_code == 302
    assert get_image_model().objects.get().collection == generated
    form = client.get(GENERATE).content.decode()
    assert json.dumps(generated.name)[1:-1] in form and ">Root<" not in form


def replace_file(client: Client, image, data: bytes) -> None:
    """Upload a new file for ``image`` on Wagtail's edit page, as an editor does."""
    upload = SimpleUploadedFile("replacement.png", data, content_type="image/png")
    edit = reverse("wagtailimages:edit", args=(image.pk,))
    fields = {"title": image.title, "collection": str(image.collection_id), "file": upload}
    response = client.post(edit, fields)
    assert response.status_code == 302, response.content.decode()[:2000]
    image.refresh_from_db()


def test_replacing_the_file_keeps_the_file_a_generation_uses(root):
    user = editor("ed")
    client = client_for(user)
    generated = generated_image("a harbour crane replaced in the edit form", seed=4501)
    library = add_to_library(generated, collection=root, user=user)
    shared = library.file.name
    assert shared == generated.image.name

    replace_file(client, library, png((40, 30), (10, 200, 30)))
    assert library.file.name != shared
    assert library.file.storage.exists(shared)  # the generated image still has its file
    assert generated.image.storage.exists(generated.image.name)


def test_replacing_a_file_nothing_else_uses_deletes_it_as_wagtail_does(root):
    user = editor("ed")
    client = client_for(user)
    generated = generated_image("a harbour crane whose generation is gone", seed=4502)
    library = add_to_library(generated, collection=root, user=user)
    shared = library.file.name
    generated.request.delete()  # the library image is the file's last user

    replace_file(client, library, png((40, 30), (200, 10, 30)))
    assert not library.file.storage.exists(shared)
