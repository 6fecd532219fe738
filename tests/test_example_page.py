"""The example project's studio page (plain HTML + JS) in headless Chromium, via the REST API.

This module is also the URLconf of its tests: the example project's URLs plus /media/.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.urls import re_path
from django.views.static import serve

from django_modelslab import pipeline
from django_modelslab.models import GenerationRequest
from django_modelslab.testing import Fault
from example_project.urls import urlpatterns as example_urlpatterns

from .helpers import configure

urlpatterns = [
    *example_urlpatterns,
    re_path(r"^media/(?P<path>.*)$", serve, {"document_root": django_settings.MEDIA_ROOT}),
]

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls(__name__)]

EXAMPLE = Path(__file__).resolve().parent.parent / "example_project"
DECODED = """() => {
    const images = [...document.querySelectorAll("#images img")];
    return images.length > 0 && images.every(img => img.complete && img.naturalWidth > 0);
}"""


@pytest.fixture
def studio(page, live_server, settings, django_user_model):
    """The page, signed in (a test client's session cookie; no login form)."""
    # The tests' settings do not install example_project: find its template and script.
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [EXAMPLE / "templates"]}]
    settings.STATICFILES_DIRS = [EXAMPLE / "static"]
    user = django_user_model.objects.create_user("artist")
    client = Client()
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME]
    page.context.add_cookies([{"name": cookie.key, "value": cookie.value, "url": live_server.url}])
    page.goto(f"{live_server.url}/studio/")
    return page


def generate_in_page(page, prompt: str, *, size: str = "256", samples: str = "1") -> None:
    page.fill("textarea[name=prompt]", prompt)
    page.select_option("select[name=size]", size)
    page.fill("input[name=samples]", samples)
    page.click("button[type=submit]")


def test_posts_a_prompt_and_shows_the_stored_images(studio, live_server, emulator):
    generate_in_page(studio, "a lighthouse at dusk", samples="2")

    studio.wait_for_function(DECODED)
    generation = GenerationRequest.objects.get()
    assert generation.prompt == "a lighthouse at dusk"
    assert generation.requested_by.username == "artist"
    assert (generation.width, generation.height, generation.samples) == (256, 256, 2)
    expected = [
        (f"{live_server.url}{image.image.url}", image.sha256)
        for image in generation.images.order_by("position")
    ]
    shown = studio.eval_on_selector_all(
        "#images img", "images => images.map(img => [img.src, img.dataset.sha256])"
    )
    assert [tuple(item) for item in shown] == expected
    widths = studio.eval_on_selector_all("#images img", "images => images.map(i => i.naturalWidth)")
    assert widths == [256, 256]
    assert studio.text_content("#status") == f"Request #{generation.pk}: succeeded"


def test_polls_until_a_worker_has_finished(studio, settings, emulator):
    """With a worker task backend the POST answers "queued"; the page polls for the result."""
    dummy = settings.TASKS["default"]["BACKEND"].replace("immediate.Immediate", "dummy.Dummy")
    settings.TASKS = {**settings.TASKS, "worker": {"BACKEND": dummy}}
    configure(settings, TASK_BACKEND="worker")

    generate_in_page(studio, "a slow kite")
    studio.wait_for_selector("#status:has-text('queued')")
    assert studio.locator("#images img").count() == 0
    pipeline.run(GenerationRequest.objects.get().pk)  # the worker

    studio.wait_for_function(DECODED)
    image = GenerationRequest.objects.get().images.get()
    assert studio.get_attribute("#images img", "data-sha256") == image.sha256


def test_shows_why_a_generation_failed(studio, emulator):
    emulator.add_fault("text2img", Fault.error_200("Insufficient credits."))

    generate_in_page(studio, "a boat")

    studio.wait_for_selector("#status.failed")
    assert "failed: Insufficient credits." in studio.text_content("#status")
    assert studio.locator("#images img").count() == 0


def test_shows_validation_errors(studio, emulator):
    studio.fill("input[name=samples]", "9")
    studio.evaluate("document.querySelector('input[name=samples]').removeAttribute('max')")

    generate_in_page(studio, "a boat", samples="9")

    studio.wait_for_selector("#status.failed")
    assert "samples: Ensure this value is less than or equal to 4." in studio.text_content(
        "#status"
    )
    assert not GenerationRequest.objects.exists()
