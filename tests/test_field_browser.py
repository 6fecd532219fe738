"""GeneratedImageField's widget in headless Chromium: an editor generates a hero for an
article from the admin form, picks one, saves, and the public page shows it; then Choose
picks an existing image. The example project's articles app, against the emulator.

This module is also the URLconf of its tests: the example project's URLs plus /media/.
A screenshot of the Generate dialog goes to ``docs/images/`` with ``UPDATE_SCREENSHOTS=1``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.urls import re_path, reverse
from django.views.static import serve

from django_modelslab.models import GeneratedImage, GenerationRequest
from example_project.articles.models import Article
from example_project.urls import urlpatterns as example_urlpatterns

from .browser import log_in_as
from .helpers import generate, staff

urlpatterns = [
    *example_urlpatterns,
    re_path(r"^media/(?P<path>.*)$", serve, {"document_root": django_settings.MEDIA_ROOT}),
]

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls(__name__)]

EXAMPLE = Path(__file__).resolve().parent.parent / "example_project"
DOCS_IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"
ARTICLE_PERMS = ["add_article", "change_article", "view_article"]
HERO_DECODED = """() => {
    const img = document.querySelector("article img.hero, article img");
    return img !== null && img.complete && img.naturalWidth > 0;
}"""


def hero_on_public_page(page, live_server, article: Article) -> dict:
    page.goto(f"{live_server.url}{article.get_absolute_url()}")
    page.wait_for_function(HERO_DECODED)
    return page.eval_on_selector(
        "article img",
        "img => ({src: img.getAttribute('src'), alt: img.alt, width: img.naturalWidth,"
        " height: img.naturalHeight, srcset: img.getAttribute('srcset')})",
    )


def assert_shows_hero(shown: dict, image: GeneratedImage) -> None:
    """The page shows the image's 480x270 rendition (the template's spec), with its alt text."""
    rendition = image.renditions.get(spec="fill-480x270")
    assert (shown["src"], shown["width"], shown["height"]) == (rendition.file.url, 480, 270)
    assert shown["alt"] == image.alt_text != ""


def add_article(page, live_server, title: str) -> None:
    page.goto(f"{live_server.url}{reverse('admin:articles_article_add')}")
    page.fill("#id_title", title)
    page.fill("#id_body", f"{title}: the body.")


def save(page) -> Article:
    page.click("input[name=_save]")
    page.wait_for_selector("text=was added successfully")
    return Article.objects.latest("pk")


def test_editor_generates_a_hero_then_chooses_an_existing_one(
    page, live_server, emulator, settings
):
    # The tests' settings do not install example_project itself: find its home page.
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [EXAMPLE / "templates"]}]
    # view_generatedimage: Choose lists everyone's images, not only the editor's own.
    editor = staff("editor", [*ARTICLE_PERMS, "generate_images", "view_generatedimage"])
    log_in_as(page, live_server, editor)

    # Generate from the form: prompt, size, samples; two results; pick the second.
    add_article(page, live_server, "Trams of the city")
    page.wait_for_selector(".modelslab-field[data-loaded]")
    page.click(".modelslab-field-generate")
    dialog = page.locator(".modelslab-field-generate-dialog")
    assert dialog.is_visible()
    assert page.evaluate("document.activeElement.dataset.name") == "prompt"  # focus moved in
    dialog.locator("[data-name=prompt]").fill("a yellow tram in the rain, browser widget")
    dialog.locator("[data-name=size]").select_option("768x512")
    dialog.locator("[data-name=samples]").fill("2")
    dialog.locator(".modelslab-field-start").click()
    results = dialog.locator(".modelslab-field-result")
    results.nth(1).wait_for()
    assert results.count() == 2
    page.wait_for_function(
        "() => [...document.querySelectorAll('.modelslab-field-result img')]"
        ".every(img => img.complete && img.naturalWidth > 0)"
    )
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=DOCS_IMAGES / "field-generate.png")
    generation = GenerationRequest.objects.get(prompt="a yellow tram in the rain, browser widget")
    assert (generation.width, generation.height, generation.requested_by) == (768, 512, editor)
    picked = generation.images.get(position=1)
    results.nth(1).click()
    assert not dialog.is_visible()
    assert page.evaluate("document.activeElement.className").count("modelslab-field-generate")
    assert page.input_value("input[name=hero]") == str(picked.pk)
    assert page.locator(".modelslab-field-preview img").get_attribute("src") == (
        picked.thumbnail.url
    )
    article = save(page)
    assert article.hero == picked

    shown = hero_on_public_page(page, live_server, article)
    assert_shows_hero(shown, picked)
    assert "2x" not in shown["srcset"] and "1.6x" in shown["srcset"]  # 768 px wide: not 960

    # Choose an existing image on another article, searching by its prompt.
    existing = generate(
        "a lighthouse in fog, chosen in the browser", seed=9201, width=512, height=384
    ).images.get()
    add_article(page, live_server, "Lighthouses")
    page.click(".modelslab-field-choose")
    chooser = page.locator(".modelslab-field-choose-dialog")
    assert page.evaluate("document.activeElement.type") == "search"
    chooser.locator(".modelslab-field-q").fill("lighthouse in fog")
    page.wait_for_function(
        "() => document.querySelectorAll('.modelslab-field-choose-dialog button[data-id]')"
        ".length === 1"
    )
    assert chooser.locator(".modelslab-field-result").get_attribute("data-id") == str(existing.pk)
    chooser.locator(".modelslab-field-result").first.press("Enter")  # the keyboard picks too
    assert page.input_value("input[name=hero]") == str(existing.pk)
    article = save(page)
    assert article.hero == existing
    shown = hero_on_public_page(page, live_server, article)
    assert_shows_hero(shown, existing)

    # The home page links to the list, which links to both.
    page.goto(f"{live_server.url}/")
    page.click("a:text-is('Articles')")
    page.wait_for_url(f"{live_server.url}/articles/")
    assert page.locator("ul.articles a").all_inner_texts() == ["Lighthouses", "Trams of the city"]


def test_a_failed_generation_shows_its_error_in_the_widget(page, live_server, emulator):
    from django_modelslab.testing import Fault

    emulator.add_fault("text2img", Fault.error_200("Insufficient credits in the widget."))
    log_in_as(page, live_server, staff("editor", [*ARTICLE_PERMS, "generate_images"]))
    add_article(page, live_server, "Boats")
    page.wait_for_selector(".modelslab-field[data-loaded]")
    page.click(".modelslab-field-generate")
    page.fill(".modelslab-field-generate-dialog [data-name=prompt]", "a failing boat widget")
    page.click(".modelslab-field-start")
    error = page.locator(".modelslab-field-generate-dialog .modelslab-field-error")
    error.filter(has_text="Insufficient credits in the widget.").wait_for()
    assert page.locator(".modelslab-field-generate-dialog .modelslab-field-result").count() == 0
    page.keyboard.press("Escape")  # the dialog closes; focus back on Generate
    assert page.evaluate("document.activeElement.className").count("modelslab-field-generate")


def test_without_generate_images_there_is_no_generate_button(page, live_server, emulator):
    reader = staff("writer", ARTICLE_PERMS)
    log_in_as(page, live_server, reader)
    add_article(page, live_server, "Quiet")
    page.wait_for_selector(".modelslab-field[data-loaded]")
    assert page.locator(".modelslab-field-generate").count() == 0
    assert page.locator(".modelslab-field-choose").is_visible()

    # The endpoint refuses too, with the page's own CSRF token.
    status = page.evaluate(
        """async () => {
            const form = new FormData();
            form.append("prompt", "a forbidden browser widget");
            form.append("size", "512x512");
            const token = document.querySelector("input[name=csrfmiddlewaretoken]").value;
            const url = document.querySelector(".modelslab-field").dataset.generateUrl;
            const headers = {"X-CSRFToken": token};
            const response = await fetch(url, {method: "POST", body: form, headers});
            return response.status;
        }"""
    )
    assert status == 403
    assert not GenerationRequest.objects.exists()
