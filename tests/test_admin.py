"""The admin lists requests and images and runs the pipeline from its actions."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from django_modelslab.models import GenerationRequest

from .conftest import TEST_API_KEY

# transaction=True: on_commit callbacks fire at once, as in a project without ATOMIC_REQUESTS.
pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = reverse("admin:django_modelslab_generationrequest_changelist")


@pytest.fixture
def editor(client) -> User:
    user = User.objects.create_user("editor", password="pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            codename__in=[
                "view_generationrequest",
                "add_generationrequest",
                "change_generationrequest",
                "view_generatedimage",
                "generate_images",
            ]
        )
    )
    client.force_login(user)
    return user


def test_generate_action_stores_images_and_pages_show_them(client, editor, emulator):
    request = GenerationRequest.objects.create(prompt="a lighthouse", seed=3, width=256, height=256)

    response = client.post(
        CHANGELIST, {"action": "generate", "_selected_action": [request.pk]}, follow=True
    )

    assert response.status_code == 200
    assert "1 request succeeded." in response.content.decode()
    request.refresh_from_db()
    image = request.images.get()
    changelist = client.get(CHANGELIST).content.decode()
    assert "a lighthouse" in changelist
    detail = client.get(
        reverse("admin:django_modelslab_generationrequest_change", args=[request.pk])
    ).content.decode()
    assert image.image.url in detail
    assert image.sha256 in detail
    images_page = client.get(reverse("admin:django_modelslab_generatedimage_changelist"))
    assert image.image.url in images_page.content.decode()
    for page in (changelist, detail):
        assert TEST_API_KEY not in page


def test_actions_are_hidden_without_the_permission(client, emulator):
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename="view_generationrequest"))
    client.force_login(user)
    GenerationRequest.objects.create(prompt="x")

    page = client.get(CHANGELIST).content.decode()

    assert 'value="generate"' not in page
    assert 'value="regenerate"' not in page


def test_failure_is_reported_to_the_editor(client, editor, emulator):
    from django_modelslab.testing import Fault

    emulator.add_fault("text2img", Fault.error_200("Insufficient credits."))
    request = GenerationRequest.objects.create(prompt="x", width=256, height=256)

    response = client.post(
        CHANGELIST, {"action": "generate", "_selected_action": [request.pk]}, follow=True
    )

    assert "Insufficient credits." in response.content.decode()
