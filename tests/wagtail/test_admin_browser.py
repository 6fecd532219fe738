"""Wagtail's admin in headless Chromium, against the emulator: an editor edits a page, opens
its image chooser, generates on the Generate tab, picks a result and publishes; the published
page renders it with ``{% image page.image fill-400x300 %}``. Images → Generate adds two picked
results to a collection. Editors without ``generate_images`` see no Generate tab.

Screenshots for docs/wagtail.md go to ``docs/images/`` with ``UPDATE_SCREENSHOTS=1``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.urls import reverse
from wagtail.images import get_image_model
from wagtail.models import Collection, Page

from django_modelslab.models import GenerationRequest
from tests.browser import log_in_as
from tests.wagtail_pages.models import HeroPage

from .editors import editor

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("emulator", "media"),
]

DOCS_IMAGES = Path(__file__).resolve().parent.parent.parent / "docs" / "images"
RESULTS_DECODED = """() => {
    const images = [...document.querySelectorAll('.modelslab-generate__result img')];
    return images.length >= %d && images.every(img => img.complete && img.naturalWidth > 0);
}"""
HERO_DECODED = """() => {
    const img = document.querySelector("main img.hero");
    return img !== null && img.complete && img.naturalWidth > 0;
}"""


def screenshot(page, name: str) -> None:
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=DOCS_IMAGES / name)


def hero_page(title: str) -> HeroPage:
    home = Page.objects.get(depth=2)  # Wagtail's initial home page
    return home.add_child(instance=HeroPage(title=title, slug=title.lower().replace(" ", "-")))


def open_chooser(page, live_server, hero: HeroPage) -> None:
    page.goto(f"{live_server.url}{reverse('wagtailadmin_pages:edit', args=(hero.pk,))}")
    page.click("#id_image-chooser .unchosen button[data-chooser-action-choose]")
    page.wait_for_selector(".modal #tab-label-search")


def test_an_editor_generates_an_image_in_the_chooser_and_publishes_it(page, live_server):
    user = editor("editor", pages=True)
    hero = hero_page("Trams of the city")
    log_in_as(page, live_server, user)
    open_chooser(page, live_server, hero)

    page.click("#tab-label-modelslab-generate")
    tab = page.locator("#tab-modelslab-generate")
    tab.locator("#id_modelslab-prompt").fill("a yellow tram in the rain, wagtail chooser")
    tab.locator("#id_modelslab-size").select_option("768x512")
    tab.locator("#id_modelslab-samples").fill("2")
    tab.locator(".modelslab-generate__start").click()
    results = tab.locator(".modelslab-generate__result")
    results.nth(1).wait_for()
    page.wait_for_function(RESULTS_DECODED % 2)
    assert results.count() == 2
    screenshot(page, "wagtail-chooser-generate.png")

    generation = GenerationRequest.objects.get(prompt="a yellow tram in the rain, wagtail chooser")
    assert (generation.width, generation.height, generation.requested_by) == (768, 512, user)
    picked = generation.images.get(position=1)
    results.nth(1).click()
    page.wait_for_selector(".modal", state="detached")
    library = get_image_model().objects.get()
    assert library.modelslab_link.generated_image == picked
    assert page.input_value("#id_image") == str(library.pk)
    assert page.inner_text("#id_image-chooser [data-chooser-title]") == library.title

    # Publish (the footer's menu), then the public page.
    page.click("footer [data-w-dropdown-target='toggle']")
    page.click("button[name=action-publish]")
    page.wait_for_url(f"{live_server.url}/cms/pages/{hero.get_parent().pk}/")
    hero.refresh_from_db()
    assert hero.live and hero.image == library

    page.goto(f"{live_server.url}{hero.url}")
    page.wait_for_function(HERO_DECODED)
    shown = page.eval_on_selector(
        "main img.hero",
        "img => ({src: img.getAttribute('src'), alt: img.alt, width: img.naturalWidth,"
        " height: img.naturalHeight})",
    )
    rendition = library.get_rendition("fill-400x300")
    assert (shown["src"], shown["width"], shown["height"]) == (rendition.url, 400, 300)
    assert (rendition.width, rendition.height) == (400, 300)
    assert shown["alt"] == picked.alt_text != ""


def test_images_generate_adds_two_picked_results_to_a_collection(page, live_server):
    generated = Collection.get_first_root_node().add_child(name="Generated")
    user = editor("editor")
    log_in_as(page, live_server, user)
    page.goto(f"{live_server.url}{reverse('wagtailadmin_home')}")
    # The sidebar's Images is a submenu: the library and Generate.
    page.click("#wagtail-sidebar button:has-text('Images')")
    page.click("#wagtail-sidebar a:has-text('Generate')")
    page.wait_for_url(f"{live_server.url}{reverse('modelslab_wagtail:generate')}")

    page.fill("#id_modelslab-prompt", "a lighthouse in fog, wagtail library")
    page.fill("#id_modelslab-negative_prompt", "people")
    page.select_option("#id_modelslab-collection", str(generated.pk))
    page.fill("#id_modelslab-samples", "3")
    page.click(".modelslab-generate__start")
    results = page.locator(".modelslab-generate__result")
    results.nth(2).wait_for()
    page.wait_for_function(RESULTS_DECODED % 3)
    generation = GenerationRequest.objects.get(prompt="a lighthouse in fog, wagtail library")
    assert generation.negative_prompt == "people"
    results.nth(0).locator("input").check()
    results.nth(2).locator("input").check()
    screenshot(page, "wagtail-generate.png")
    page.click(".modelslab-generate__add-button")
    page.wait_for_selector("text=2 images added to Generated.")

    added = get_image_model().objects.filter(collection=generated).order_by("pk")
    assert [image.modelslab_link.generated_image.position for image in added] == [0, 2]
    assert all(image.uploaded_by_user == user for image in added)
    assert get_image_model().objects.count() == 2


def test_without_generate_images_the_chooser_has_no_generate_tab(page, live_server):
    hero = hero_page("Quiet")
    log_in_as(page, live_server, editor("writer", generate=False, pages=True))
    open_chooser(page, live_server, hero)
    assert page.locator("#tab-label-upload").is_visible()
    assert page.locator("#tab-label-modelslab-generate").count() == 0

    page.goto(f"{live_server.url}{reverse('wagtailadmin_home')}")
    page.click("#wagtail-sidebar a:has-text('Images')")  # a link, not a submenu
    page.wait_for_url(f"{live_server.url}{reverse('wagtailimages:index')}")
