"""The editors' admin in headless Chromium, against the live server and the emulator.

Screenshots of the changelist and of a request page are written to ``docs/images/`` when
``UPDATE_SCREENSHOTS=1`` is set (check them in when they change); otherwise to a tmp dir.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.urls import reverse

from django_modelslab import pipeline
from django_modelslab.models import GenerationRequest

from .browser import log_in, log_in_as
from .helpers import CHANGELIST, EDIT_PERMS, VIEW_PERMS, change_url, new_request, staff

# reset_sequences: ids start at 1, so the screenshots do not depend on the tests run before.
pytestmark = pytest.mark.django_db(transaction=True, reset_sequences=True)

DOCS_IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"
ADD = reverse("admin:django_modelslab_generationrequest_add")

ALL_DECODED = """selector => {
    const images = [...document.querySelectorAll(selector)];
    return images.length > 0 && images.every(img => img.complete && img.naturalWidth > 0);
}"""
NATURAL_WIDTHS = "images => images.map(img => img.naturalWidth)"


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        return DOCS_IMAGES
    return tmp_path


def decoded_widths(page, selector: str) -> list[int]:
    page.wait_for_function(ALL_DECODED, arg=selector)
    return page.eval_on_selector_all(selector, NATURAL_WIDTHS)


def test_editor_generates_chooses_and_regenerates(page, live_server, emulator, screenshots):
    staff("editor", [*EDIT_PERMS, "generate_images"], password="correct horse")
    for prompt, seed in (("a red kite over green hills", 11), ("a harbour at night", 12)):
        new_request(prompt, seed=seed)
    # Screenshots for the docs: a wide window, the admin's app sidebar folded away.
    page.set_viewport_size({"width": 1440, "height": 900})
    page.add_init_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")
    log_in(page, live_server, "editor", "correct horse")

    # Create a request and press Generate on the form.
    page.goto(f"{live_server.url}{ADD}")
    page.fill("#id_prompt", "a lighthouse on a cliff at dawn, watercolour")
    page.fill("#id_width", "384")
    page.fill("#id_height", "256")
    page.fill("#id_samples", "2")
    page.click("input[name=_generate]")
    page.wait_for_selector(".modelslab-status--succeeded")
    request = GenerationRequest.objects.get(prompt__startswith="a lighthouse")
    assert page.url == live_server.url + change_url(request)
    assert decoded_widths(page, ".modelslab-images img") == [256, 256]  # the WebP thumbnails
    assert page.locator(".messagelist").inner_text().count("1 request succeeded.") == 1

    # Mark the second image as chosen.
    page.locator("button.modelslab-choose").nth(1).click()
    page.wait_for_selector(".modelslab-chosen")
    chosen = request.images.get(chosen=True)
    assert chosen.position == 1

    # Generate the other two, then Regenerate the first, from the changelist.
    page.goto(f"{live_server.url}{CHANGELIST}")
    others = GenerationRequest.objects.exclude(pk=request.pk)
    for obj in others:
        page.check(f"input[name=_selected_action][value='{obj.pk}']")
    page.select_option("select[name=action]", "generate")
    page.click("button[name=index]")
    page.wait_for_selector("text=2 requests succeeded.")
    page.check(f"input[name=_selected_action][value='{request.pk}']")
    page.select_option("select[name=action]", "regenerate")
    page.click("button[name=index]")
    page.wait_for_selector("text=1 request succeeded.")
    widths = decoded_widths(page, "#result_list .modelslab-thumb img")
    assert len(widths) == 4 and all(widths)  # 2 + 1 + 1 current images, decoded
    page.screenshot(path=screenshots / "admin-changelist.png")

    # Both image sets are on the request; the first set is marked superseded.
    page.goto(live_server.url + change_url(request))
    assert len(decoded_widths(page, ".modelslab-images img")) == 4
    assert page.locator(".modelslab-superseded").count() == 2
    assert page.locator(".modelslab-chosen").count() == 1
    page.screenshot(path=screenshots / "admin-request.png", full_page=True)

    # Enter in a field saves the form; it does not press the first button on the page.
    page.press("#id_model_id", "Enter")
    page.wait_for_selector("text=was changed successfully")
    assert request.images.count() == 4


#: Notes what the page shows every 100 ms, kept in sessionStorage across the navigation.
RECORD_THE_WAIT = """() => window.setInterval(() => {
    const seen = JSON.parse(sessionStorage.getItem("seen") || "[]");
    const button = document.querySelector("input[name=_regenerate]");
    const progress = document.querySelector(".modelslab-progress");
    seen.push({
        status: document.querySelector(".modelslab-panel .modelslab-status").innerText,
        disabled: Boolean(button && button.disabled),
        progress: progress ? progress.innerText : "",
    });
    sessionStorage.setItem("seen", JSON.stringify(seen));
}, 100)"""


def queued(**fields) -> GenerationRequest:
    """A request as a task queue holds it before a worker picks it up."""
    request = GenerationRequest.objects.create(width=256, height=256, **fields)
    GenerationRequest.objects.filter(pk=request.pk).update(
        status=GenerationRequest.Status.QUEUED, eta=4
    )
    return request


def test_the_page_follows_a_queued_request_until_it_finishes(page, live_server, emulator):
    """The polling script: a worker finishes the job; the page shows it without a reload,
    and what the editor typed meanwhile stays."""
    editor = staff("editor", [*EDIT_PERMS, "generate_images"])
    request = queued(prompt="a paper boat")
    log_in_as(page, live_server, editor)
    page.clock.install()  # the page's timers run only when the test says so

    page.goto(live_server.url + change_url(request))
    assert page.locator(".modelslab-panel .modelslab-status").inner_text() == "Queued"
    assert page.locator(".modelslab-panel .modelslab-eta").inner_text() == "about 4 s"
    assert page.locator(".modelslab-images img").count() == 0
    assert page.locator("input[name=_generate], input[name=_regenerate]").count() == 0
    page.evaluate("window.sameDocument = true")
    page.fill("#id_negative_prompt", "blurry")  # an edit not saved yet

    pipeline.run(request.pk)  # the worker
    page.clock.run_for(2_100)  # one poll interval: the script asks, sees it done, swaps

    page.wait_for_selector(".modelslab-panel .modelslab-status--succeeded")
    assert decoded_widths(page, ".modelslab-images img") == [256]
    assert page.evaluate("window.sameDocument") is True  # not reloaded
    assert page.input_value("#id_negative_prompt") == "blurry"
    assert page.locator(".field-model_attempts_table td").first.inner_text() == "1"
    assert page.locator("input[name=_regenerate]").count() == 1  # the button for what is next


def test_the_list_follows_queued_requests_to_their_images_or_error(page, live_server, emulator):
    emulator.configure(models={"flux"})
    editor = staff("editor", [*EDIT_PERMS, "generate_images"])
    boat = queued(prompt="a paper boat", seed=3)
    kite = queued(prompt="a kite", model_id="no-such-model")
    log_in_as(page, live_server, editor)
    page.clock.install()

    page.goto(f"{live_server.url}{CHANGELIST}")
    page.evaluate("window.sameDocument = true")
    page.check(f"input[name=_selected_action][value='{kite.pk}']")
    assert page.locator("#result_list .modelslab-status--queued").count() == 2

    pipeline.run(boat.pk)
    pipeline.run(kite.pk)
    page.clock.run_for(2_100)

    boat_row = page.locator("#result_list tr", has=page.locator(f"[data-modelslab-id='{boat.pk}']"))
    kite_row = page.locator("#result_list tr", has=page.locator(f"[data-modelslab-id='{kite.pk}']"))
    kite_row.locator(".modelslab-status--failed").wait_for()
    boat_row.locator(".modelslab-status--succeeded").wait_for()
    assert (
        len(decoded_widths(page, f"#result_list tr:has([data-modelslab-id='{boat.pk}']) img")) == 1
    )
    assert (
        "Model not found: no-such-model" in kite_row.locator(".modelslab-status-error").inner_text()
    )
    assert page.evaluate("window.sameDocument") is True
    assert kite_row.locator("input[name=_selected_action]").is_checked()  # the selection stays


def test_a_double_click_posts_once_and_the_wait_shows_progress(page, live_server, emulator):
    """Inline generation (the default): the post takes seconds. The button is pressed once
    however fast the clicks, and the page says what is happening until the answer comes."""
    editor = staff("editor", [*EDIT_PERMS, "generate_images"])
    request = new_request("a quiet pond", seed=5)
    pipeline.submit(request)
    emulator.configure(latency=3.0)  # ModelsLab's answer takes a while
    log_in_as(page, live_server, editor)
    url = live_server.url + change_url(request)
    posts: list[str] = []
    page.on("request", lambda sent: posts.append(sent.url) if sent.method == "POST" else None)
    page.goto(url)
    page.evaluate(RECORD_THE_WAIT)

    page.dblclick("input[name=_regenerate]")

    page.wait_for_selector("text=1 request succeeded.", timeout=30_000)
    seen = page.evaluate("JSON.parse(sessionStorage.getItem('seen') || '[]')")
    assert posts == [url]
    # While the post was in flight: the button disabled, the time counted, and the status
    # followed from the server as it moved to processing.
    assert any(state["disabled"] for state in seen)
    assert any("Saving, then generating: 2 s." in state["progress"] for state in seen)
    assert "Processing" in {state["status"] for state in seen}
    assert emulator.calls["text2img"] == 2  # the first generation and one regeneration
    assert page.locator("input[name=_regenerate]").is_enabled()


def test_without_the_permission_there_is_nothing_to_press(page, live_server, emulator):
    request = new_request("a quiet pond", seed=5)
    pipeline.submit(request)
    log_in_as(page, live_server, staff("viewer", VIEW_PERMS))

    page.goto(f"{live_server.url}{CHANGELIST}")
    assert page.locator("#result_list").inner_text().count("a quiet pond") == 1
    assert all(decoded_widths(page, "#result_list .modelslab-thumb img"))
    assert page.locator("select[name=action] option[value=generate]").count() == 0
    assert page.locator("select[name=action] option[value=regenerate]").count() == 0

    page.goto(live_server.url + change_url(request))
    assert page.locator(".modelslab-panel .modelslab-status").inner_text() == "Succeeded"
    assert len(decoded_widths(page, ".modelslab-images img")) == 1
    assert page.locator("input[name=_generate], input[name=_regenerate]").count() == 0
    assert page.locator("button.modelslab-choose").count() == 0
