"""The admin lists requests and images and runs the pipeline from its actions and buttons."""

from __future__ import annotations

import html
import json
import re
import sqlite3
import threading
import time
from decimal import Decimal
from html.parser import HTMLParser

import httpx
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from django_modelslab import contention, pipeline
from django_modelslab.models import GeneratedImage, GenerationRequest
from django_modelslab.testing import Fault

from .conftest import TEST_API_KEY
from .helpers import (
    CHANGELIST,
    EDIT_PERMS,
    VIEW_PERMS,
    api_client,
    api_url,
    change_url,
    form_data,
    messages_of,
    new_request,
    run_action,
    sent_seeds,
    staff,
)

# transaction=True: on_commit callbacks fire at once, as in a project without ATOMIC_REQUESTS.
pytestmark = pytest.mark.django_db(transaction=True)

ADD = reverse("admin:django_modelslab_generationrequest_add")
STATUS = reverse("admin:django_modelslab_generationrequest_status")
IMAGES = reverse("admin:django_modelslab_generatedimage_changelist")
Status = GenerationRequest.Status
PROMPT = "a lighthouse"


def choose_url(image: GeneratedImage) -> str:
    return reverse("admin:django_modelslab_generatedimage_choose", args=[image.pk])


@pytest.fixture
def viewer(client) -> User:
    user = staff("viewer", VIEW_PERMS)
    client.force_login(user)
    return user


def test_generate_action_stores_images_and_pages_show_thumbnails(client, editor, emulator):
    request = new_request(PROMPT, seed=3, samples=2)

    response = client.post(
        CHANGELIST, {"action": "generate", "_selected_action": [request.pk]}, follow=True
    )

    assert messages_of(response) == ["1 request succeeded."]
    request.refresh_from_db()
    images = list(request.images.all())
    assert len(images) == 2 and all(image.thumbnail for image in images)
    changelist = client.get(CHANGELIST).content.decode()
    for image in images:
        # the list shows the small WebP and links to the full image; never loads the full one
        assert f'src="{image.thumbnail.url}"' in changelist
        assert f'href="{image.image.url}"' in changelist
        assert f'src="{image.image.url}"' not in changelist
    detail = client.get(change_url(request)).content.decode()
    for image in images:
        assert f'title="{image.sha256}"' in detail
        assert f'href="{image.image.url}"' in detail
    assert "256\u00d7256" in detail
    assert "modelslab-status--succeeded" in detail


def test_changelist_falls_back_to_the_image_when_there_is_no_thumbnail(client, editor):
    request = new_request(PROMPT, status=Status.SUCCEEDED)
    image = GeneratedImage.objects.create(
        request=request, image="modelslab/ab/abc.png", sha256="a" * 64, width=256, height=256,
        format="PNG", bytes=1000,
    )  # fmt: skip

    changelist = client.get(CHANGELIST).content.decode()

    assert f'src="{image.image.url}"' in changelist


def test_a_project_overrides_the_list_cells_with_templates(client, editor, tmp_path):
    """Thumbnails, the cost and the status badge are templates a project may override."""
    folder = tmp_path / "django_modelslab" / "admin"
    folder.mkdir(parents=True)
    for name in ("thumbnail", "cost", "status_badge"):
        (folder / f"{name}.html").write_text(f'<b class="site-{name}">{name}</b>')
    generation = new_request(PROMPT, status=Status.FAILED, error="broken", cost=Decimal("0.5"))
    GeneratedImage.objects.create(
        request=generation, image="modelslab/ab/abc.png", sha256="a" * 64, width=256,
        height=256, format="PNG", bytes=1000,
    )  # fmt: skip
    templates = [{**settings.TEMPLATES[0], "DIRS": [tmp_path]}]

    with override_settings(TEMPLATES=templates):
        changelist = client.get(CHANGELIST).content.decode()

    for name in ("thumbnail", "cost", "status_badge"):
        assert f'<b class="site-{name}">{name}</b>' in changelist


def test_the_api_key_appears_on_no_admin_page(client, editor, emulator):
    request = new_request(PROMPT, seed=5)
    run_action(client, "generate", request)
    failing = new_request(prompt="doomed")
    emulator.add_fault("text2img", Fault.error_200("Insufficient credits."))
    run_action(client, "generate", failing)
    image = GeneratedImage.objects.get()

    pages = [
        CHANGELIST,
        change_url(request),
        change_url(failing),
        IMAGES,
        reverse("admin:django_modelslab_generatedimage_change", args=[image.pk]),
        f"{STATUS}?id={request.pk}&id={failing.pk}",
    ]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200, url
        assert TEST_API_KEY not in response.content.decode(), url
    # the raw answers are there, in a collapsed section
    detail = client.get(change_url(request)).content.decode()
    request.refresh_from_db()
    assert request.provider_responses
    assert html.escape(json.dumps(request.provider_responses, indent=2, sort_keys=True)) in detail
    assert "collapse" in detail.split("Provider responses")[0].rsplit("<fieldset", 1)[1]


def test_failure_is_reported_with_its_reason(client, editor, emulator):
    emulator.add_fault("text2img", Fault.error_200("Insufficient credits."))
    request = new_request(PROMPT)

    response = client.post(
        CHANGELIST, {"action": "generate", "_selected_action": [request.pk]}, follow=True
    )

    assert messages_of(response) == [
        f"1 request failed: #{request.pk}: Insufficient credits. (HTTP 200)"
    ]
    detail = client.get(change_url(request)).content.decode()
    assert "modelslab-status--failed" in detail
    assert "Insufficient credits." in detail
    assert 'name="_generate"' in detail  # a failed request can be tried again


def test_regenerate_keeps_history_and_counts(client, editor, emulator):
    done = [new_request(PROMPT, seed=1), new_request(PROMPT, seed=2)]
    busy = new_request(PROMPT, status=Status.PROCESSING)
    ids = [obj.pk for obj in done]
    run_action(client, "generate", *done)

    response = client.post(
        CHANGELIST,
        {"action": "regenerate", "_selected_action": [*ids, busy.pk]},
        follow=True,
    )

    assert messages_of(response) == [
        "2 requests succeeded.",
        f"1 request skipped: it is still in progress (#{busy.pk}).",
    ]
    for obj in done:
        old, new = obj.images.order_by("attempt")
        assert (old.attempt, old.superseded) == (1, True)
        assert (new.attempt, new.superseded) == (2, False)
    detail = client.get(change_url(done[0])).content.decode()
    assert detail.count('class="modelslab-superseded"') == 1
    assert detail.count('class="modelslab-thumb"') == 2


def test_generate_skips_requests_that_already_have_images(client, editor, emulator):
    request = new_request(PROMPT, seed=4)
    run_action(client, "generate", request)

    response = client.post(
        CHANGELIST, {"action": "generate", "_selected_action": [request.pk]}, follow=True
    )

    assert messages_of(response) == [
        f"1 request skipped: it already has images (#{request.pk}); use Regenerate for new ones."
    ]
    assert request.images.count() == 1


def test_save_and_generate_from_the_add_form(client, editor, emulator):
    page = client.get(ADD).content.decode()
    assert 'name="_generate"' in page

    response = client.post(ADD, form_data(_generate="Save and generate"), follow=True)

    request = GenerationRequest.objects.get()
    assert response.redirect_chain[-1][0] == change_url(request)
    assert request.status == Status.SUCCEEDED
    assert request.requested_by == editor
    assert request.images.count() == 1
    assert "1 request succeeded." in messages_of(response)


def test_save_and_regenerate_from_the_change_form(client, editor, emulator):
    request = new_request(PROMPT, seed=9)
    run_action(client, "generate", request)
    page = client.get(change_url(request)).content.decode()
    assert 'name="_regenerate"' in page and 'name="_generate"' not in page

    response = client.post(
        change_url(request),
        form_data(prompt="a lighthouse at dusk", seed="9", _regenerate="Save and regenerate"),
        follow=True,
    )

    assert "1 request succeeded." in messages_of(response)
    request.refresh_from_db()
    assert request.prompt == "a lighthouse at dusk"
    assert [image.superseded for image in request.images.order_by("attempt")] == [True, False]


def inline_seeds(page: str) -> list[str]:
    """The seed column of the images inline, as shown."""
    return re.findall(r'<td class="field-seed">\s*<p>([^<]*)</p>', page)


def test_regenerate_from_the_change_form_draws_a_new_seed_unless_kept(client, editor, emulator):
    request = new_request(PROMPT, seed=9)
    run_action(client, "generate", request)
    assert 'name="_keep_seed"' in client.get(change_url(request)).content.decode()
    regenerate = {"_regenerate": "Save and regenerate"}

    client.post(change_url(request), form_data(seed="9", **regenerate))
    request.refresh_from_db()
    drawn = request.seed
    client.post(change_url(request), form_data(seed=str(drawn), _keep_seed="on", **regenerate))
    client.post(change_url(request), form_data(seed="1234", **regenerate))  # typed: sent

    request.refresh_from_db()
    assert drawn not in (None, 9)
    assert request.seed == 1234
    assert sent_seeds(emulator) == [9, drawn, drawn, 1234]
    seeds = [image.seed for image in request.images.order_by("attempt")]
    assert seeds == [9, drawn, drawn, 1234]  # each image keeps the seed that made it
    shown = inline_seeds(client.get(change_url(request)).content.decode())
    assert shown == [str(seed) for seed in (1234, drawn, drawn, 9)]  # newest attempt first


def test_regenerate_with_the_same_seed_action(client, editor, emulator):
    request = new_request(PROMPT, seed=5)
    run_action(client, "generate", request)

    kept = run_action(client, "regenerate_keep_seed", request)
    request.refresh_from_db()
    assert request.seed == 5
    run_action(client, "regenerate", request)

    assert messages_of(kept) == ["1 request succeeded."]
    request.refresh_from_db()
    assert request.seed != 5
    assert sent_seeds(emulator) == [5, 5, request.seed]


def test_an_unseeded_requests_images_show_the_seed_modelslab_used(client, editor, emulator):
    emulator.configure(mode="processing", minimal_fetch=True)  # the fetch answer has no meta
    request = new_request(PROMPT, samples=2)

    run_action(client, "generate", request)

    job = next(iter(emulator.jobs.values()))
    assert inline_seeds(client.get(change_url(request)).content.decode()) == [str(job.seed)] * 2
    assert f'<td class="field-seed">{job.seed}</td>' in client.get(IMAGES).content.decode()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"width": "300"}, "Use a multiple of 8 pixels, e.g. 296 or 304 (got 300)."),
        ({"height": "2048"}, "Use 256 to 1024 pixels (got 2048)."),
        ({"width": "128"}, "Use 256 to 1024 pixels (got 128)."),
        ({"samples": "5"}, "Ask for 1 to 4 images at a time (got 5)."),
        ({"samples": "0"}, "Ask for 1 to 4 images at a time (got 0)."),
    ],
)
def test_the_form_checks_sizes_and_samples(client, editor, fields, message):
    response = client.post(ADD, form_data(_generate="Save and generate", **fields))

    assert response.status_code == 200
    assert message in response.content.decode()
    assert not GenerationRequest.objects.exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("width", 2000),
        ("width", 250),
        ("height", 300),
        ("samples", 5),
        ("steps", 0),
        ("steps", 51),
        ("guidance", 0.5),
        ("guidance", 21),
        ("seed", -1),
        ("seed", 2**32),
    ],
)
def test_the_form_refuses_what_the_api_refuses_with_the_same_messages(
    client, editor, emulator, field, value
):
    api = api_client(editor).post(api_url("generation-list"), {"prompt": "x", field: value})
    form = client.post(ADD, form_data(_generate="Save and generate", **{field: str(value)}))

    assert api.status_code == 400
    assert form.status_code == 200
    assert form.context["adminform"].form.errors[field] == api.json()[field]
    assert not GenerationRequest.objects.exists()
    assert emulator.calls["text2img"] == 0


def test_an_action_leaves_a_stored_request_outside_the_limits_as_it_was(client, editor, emulator):
    request = new_request(PROMPT, steps=100)  # saved from code, past every form

    response = run_action(client, "generate", request)

    assert messages_of(response) == [
        f"1 request not started (#{request.pk}): Request #{request.pk}: steps: Ensure this "
        "value is less than or equal to 50. Use 1 to 50 steps (got 100)."
    ]
    request.refresh_from_db()
    assert request.status == Status.PENDING
    assert emulator.calls["text2img"] == 0


def test_the_form_refuses_extra_that_sets_what_the_pipeline_owns(client, editor, emulator):
    """A change right must not redirect the provider's results (webhook) or reuse a job."""
    request = new_request(PROMPT, seed=9)
    run_action(client, "generate", request)
    hijack = json.dumps({"webhook": "http://attacker.invalid/hook", "Track_ID": "1-1"})

    refused = client.post(
        change_url(request), form_data(seed="9", extra=hijack, _regenerate="Regenerate")
    )
    allowed = client.post(
        change_url(request),
        form_data(seed="9", extra='{"enhance_prompt": "yes"}', _regenerate="Regenerate"),
        follow=True,
    )

    assert refused.status_code == 200
    errors = refused.context["adminform"].form.errors["extra"]
    assert errors == [
        "Extra cannot set Track_ID, webhook: django-modelslab sets these itself. Use the "
        "request's own fields for the prompt, size, seed, model and input images."
    ]
    assert "1 request succeeded." in messages_of(allowed)
    bodies = [body for route, body in emulator.requests if route == "text2img"]
    assert len(bodies) == 2  # the first generation and the allowed regeneration only
    assert all("attacker" not in json.dumps(body) for body in bodies)
    assert bodies[-1]["enhance_prompt"] == "yes"
    request.refresh_from_db()
    assert request.extra == {"enhance_prompt": "yes"}


def test_without_the_permission_actions_and_buttons_are_hidden(client, emulator):
    client.force_login(staff("writer", EDIT_PERMS))
    request = new_request(PROMPT, seed=8)

    for url in (CHANGELIST, change_url(request), ADD):
        page = client.get(url).content.decode()
        assert 'value="generate"' not in page, url
        assert 'value="regenerate"' not in page, url
        assert 'name="_generate"' not in page, url
        assert 'name="_regenerate"' not in page, url


def test_without_the_permission_posts_are_refused(client, emulator):
    client.force_login(staff("writer", EDIT_PERMS))
    request = new_request(PROMPT, seed=8)
    other = new_request(prompt="done", status=Status.SUCCEEDED)
    image = GeneratedImage.objects.create(
        request=other, image="modelslab/ab/abc.png", sha256="a" * 64, width=256, height=256,
        format="PNG", bytes=1000,
    )  # fmt: skip

    action = client.post(
        CHANGELIST, {"action": "generate", "_selected_action": [request.pk]}, follow=True
    )
    button = client.post(change_url(request), form_data(_generate="Save and generate"))
    added = client.post(ADD, form_data(_generate="Save and generate"))
    chosen = client.post(choose_url(image))

    assert action.status_code == 200
    assert (button.status_code, added.status_code, chosen.status_code) == (403, 403, 403)
    request.refresh_from_db()
    image.refresh_from_db()
    assert (request.status, request.prompt, image.chosen) == (Status.PENDING, "a lighthouse", False)
    assert GenerationRequest.objects.count() == 2


def test_viewing_follows_the_view_permission(client, viewer, emulator):
    request = new_request(PROMPT, status=Status.SUCCEEDED)
    GeneratedImage.objects.create(
        request=request, image="modelslab/ab/abc.png", sha256="b" * 64, width=256, height=256,
        format="PNG", bytes=1000,
    )  # fmt: skip

    detail = client.get(change_url(request)).content.decode()

    assert "b" * 64 in detail  # the images inline
    assert "Mark as chosen" not in detail
    assert client.get(f"{STATUS}?id={request.pk}").status_code == 200
    client.force_login(staff("stranger", []))
    assert client.get(CHANGELIST).status_code == 403
    assert client.get(f"{STATUS}?id={request.pk}").status_code == 403


def test_status_endpoint_reports_what_the_polling_script_needs(client, viewer):
    queued = new_request(PROMPT, status=Status.QUEUED, eta=12.0)
    failed = new_request(PROMPT, status=Status.FAILED, error="Insufficient credits.")

    data = client.get(f"{STATUS}?id={queued.pk}&id={failed.pk}&id=nope").json()

    by_id = {item["id"]: item for item in data["requests"]}
    assert by_id[queued.pk] == {
        "id": queued.pk,
        "status": "queued",
        "label": "Queued",
        "active": True,
        "eta": 12.0,
        "eta_label": "about 12 s",
        "error": "",
        "images": 0,
    }
    assert by_id[failed.pk]["active"] is False
    assert by_id[failed.pk]["error"] == "Insufficient credits."
    page = client.get(CHANGELIST).content.decode()
    assert f'data-modelslab-url="{STATUS}"' in page
    assert "about 12 s" in page
    assert "django_modelslab/admin.js" in page


def test_mark_as_chosen(client, editor, emulator):
    request = new_request(PROMPT, seed=6, samples=2)
    run_action(client, "generate", request)
    first, second = request.images.order_by("position")
    assert client.get(choose_url(first)).status_code == 405

    response = client.post(choose_url(first), follow=True)

    assert response.redirect_chain[-1][0] == change_url(request)
    assert f"Image #{first.pk} is now the chosen image of request #{request.pk}." in (
        messages_of(response)
    )
    detail = response.content.decode()
    assert detail.count("★ Chosen") == 1
    assert detail.count("Mark as chosen") == 1  # only the other image offers it
    client.post(choose_url(second))
    assert list(request.images.filter(chosen=True)) == [second]


def test_the_image_page_offers_choose_only_with_the_permission(client, editor, emulator):
    request = new_request(PROMPT, seed=6)
    run_action(client, "generate", request)
    image = request.images.get()
    image_page = reverse("admin:django_modelslab_generatedimage_change", args=[image.pk])

    page = client.get(image_page).content.decode()
    assert f'action="{choose_url(image)}"' in page
    assert f'href="{change_url(request)}"' in page
    client.post(choose_url(image), {"next": image_page})
    assert f'action="{choose_url(image)}"' not in client.get(image_page).content.decode()
    client.force_login(staff("viewer", VIEW_PERMS))
    image.chosen = False
    image.save()
    assert f'action="{choose_url(image)}"' not in client.get(image_page).content.decode()


def test_choose_action_on_the_image_list(client, editor, emulator):
    request = new_request(PROMPT, seed=6, samples=2)
    run_action(client, "generate", request)
    first, second = request.images.order_by("position")

    both = client.post(
        IMAGES, {"action": "choose", "_selected_action": [first.pk, second.pk]}, follow=True
    )
    one = client.post(IMAGES, {"action": "choose", "_selected_action": [second.pk]}, follow=True)

    assert messages_of(both) == [f"Pick one image per request; nothing changed for #{request.pk}."]
    assert messages_of(one) == ["1 image marked as chosen."]
    assert list(request.images.filter(chosen=True)) == [second]


def test_image_list_filters_searches_and_links_back(client, editor):
    kite = new_request(prompt="a kite", model_id="flux", status=Status.SUCCEEDED)
    boat = new_request(prompt="a boat", model_id="sdxl", status=Status.SUCCEEDED)
    for n, request in enumerate((kite, boat)):
        GeneratedImage.objects.create(
            request=request, image=f"modelslab/{n}.webp", thumbnail=f"modelslab/thumbs/{n}.webp",
            sha256=str(n) * 64, width=256, height=256, format="WEBP" if n else "PNG", bytes=10,
        )  # fmt: skip

    searched = client.get(IMAGES, {"q": "kite"}).content.decode()
    by_model = client.get(IMAGES, {"request__model_id": "sdxl"}).content.decode()
    by_format = client.get(IMAGES, {"format": "PNG"}).content.decode()

    assert "a kite" in searched and "a boat" not in searched
    assert "a boat" in by_model and "a kite" not in by_model
    assert "a kite" in by_format and "a boat" not in by_format
    assert f'href="{change_url(kite)}"' in searched
    assert 'src="/media/modelslab/thumbs/0.webp"' in searched


class _Cells(HTMLParser):
    """The changelist table's header texts and rows of cell texts; notes any nested <a>."""

    def __init__(self) -> None:
        super().__init__()
        self.headers: dict[str, str] = {}  # column class -> header text
        self.rows: list[dict[str, str]] = []  # column class -> cell text
        self.nested_links = 0
        self._links = 0
        self._cell: tuple[str, str] | None = None  # ("th"/"td", column)
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.nested_links += self._links > 0
            self._links += 1
        classes = (dict(attrs).get("class") or "").split()
        column = next((c[len("field-") :] for c in classes if c.startswith("field-")), None)
        header = next((c[len("column-") :] for c in classes if c.startswith("column-")), None)
        if tag == "tr":
            self.rows.append({})
        if tag in ("th", "td") and (column or header):
            self._cell, self._text = ("td" if column else "th", column or header or ""), []

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._links -= 1
        if tag in ("th", "td") and self._cell is not None:
            kind, column = self._cell
            text = " ".join("".join(self._text).split())
            (self.rows[-1] if kind == "td" else self.headers)[column] = text
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._text.append(data)


def test_image_list_columns_read_right_and_links_do_not_nest(client, editor):
    request = new_request(prompt="a kite", model_id="flux-pro", status=Status.SUCCEEDED)
    GeneratedImage.objects.create(
        request=request, image="modelslab/k.png", thumbnail="modelslab/thumbs/k.webp",
        sha256="a" * 64, width=640, height=480, format="PNG", bytes=10,
    )  # fmt: skip

    page = _Cells()
    page.feed(client.get(IMAGES).content.decode())

    (row,) = [row for row in page.rows if row]
    cells = {page.headers[column]: text for column, text in row.items()}
    assert page.nested_links == 0
    assert cells["Model"] == "flux-pro"
    assert cells["Size"] == "640\u00d7480"
    assert "None" not in " ".join(cells.values())


def test_long_prompts_and_errors_are_cut_with_an_ellipsis(client, editor):
    prompt, error = "fox " * 50, "no " * 100
    request = new_request(prompt, status=Status.FAILED, error=error)
    GeneratedImage.objects.create(
        request=request, image="modelslab/f.png", sha256="f" * 64, width=8, height=8,
        format="PNG", bytes=10,
    )  # fmt: skip

    requests, images = _Cells(), _Cells()
    requests.feed(client.get(CHANGELIST).content.decode())
    images.feed(client.get(IMAGES).content.decode())

    assert str(request) == f"#{request.pk} {prompt[:59]}…"
    (row,) = [row for row in requests.rows if row]
    assert row["short_prompt"] == " ".join(prompt[:79].split()) + "…"
    assert error[:159] + "…" in client.get(CHANGELIST).content.decode()
    (row,) = [row for row in images.rows if row]
    assert row["prompt"] == " ".join(prompt[:59].split()) + "…"


def _rows(count: int) -> None:
    for n in range(count):
        request = new_request(prompt=f"row {n}", status=Status.SUCCEEDED, model_id="flux")
        for position in range(2):
            GeneratedImage.objects.create(
                request=request, image=f"modelslab/{n}-{position}.png",
                thumbnail=f"modelslab/thumbs/{n}-{position}.webp",
                sha256=f"{n:032d}{position:032d}", width=256, height=256, format="PNG",
                bytes=10, position=position,
            )  # fmt: skip


@pytest.mark.parametrize("url", [CHANGELIST, IMAGES])
def test_changelists_run_a_constant_number_of_queries(
    client, editor, django_assert_max_num_queries, url
):
    _rows(5)
    with CaptureQueriesContext(connection) as five:
        assert client.get(url).status_code == 200

    _rows(45)
    with django_assert_max_num_queries(len(five)):
        page = client.get(url).content.decode()

    assert page.count('class="modelslab-thumb"') == (100 if url == CHANGELIST else 50)


# --- a double click, on SQLite as startproject sets it up -------------------------------


@pytest.fixture
def startproject_sqlite():
    """SQLite as a new ``startproject`` site has it: deferred transactions, the 5 s default
    busy timeout (no OPTIONS). Connections opened meanwhile use it: the live server opens one
    per request. (The journal stays the suite's WAL; rollback journals fail the same way.)"""
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's locking")
    options = connections.settings[DEFAULT_DB_ALIAS]["OPTIONS"]
    saved = dict(options)
    options.clear()
    yield
    options.update(saved)


def test_a_double_click_on_save_and_regenerate_answers_no_500_and_pays_once(
    live_server, emulator, startproject_sqlite
):
    editor = staff("editor", [*EDIT_PERMS, "generate_images"])
    request = new_request(PROMPT, seed=9)
    pipeline.submit(request)
    emulator.configure(latency=0.5)  # the regeneration is still running at the second click
    session = Client()
    session.force_login(editor)
    cookies = {settings.SESSION_COOKIE_NAME: session.cookies[settings.SESSION_COOKIE_NAME].value}
    url = f"{live_server.url}{change_url(request)}"
    with httpx.Client(cookies=cookies) as http:
        page = http.get(url).text
        cookies.update(http.cookies)
    fields = dict(
        re.findall(r'name="(csrfmiddlewaretoken|_modelslab_shown)" value="([^"]+)"', page)
    )
    data = form_data(seed="9", _regenerate="Save and regenerate", **fields)
    clicks = threading.Barrier(2)
    answers: list[httpx.Response] = []

    def click() -> None:
        with httpx.Client(cookies=cookies, timeout=30) as http:
            clicks.wait()
            answers.append(http.post(url, data=data, headers={"Referer": url}))

    threads = [threading.Thread(target=click) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(answer.status_code for answer in answers) == [302, 302]
    assert emulator.calls["text2img"] == 2  # the first generation and one regeneration
    request.refresh_from_db()
    assert request.status == Status.SUCCEEDED, request.error
    assert [image.superseded for image in request.images.order_by("attempt")] == [True, False]
    # The second press saved nothing: the request keeps the seed its new image was made with.
    assert request.images.get(superseded=False).seed == request.seed != 9


def shown_field(url: str, client) -> str:
    """The page's "shown at" field, as a press of its buttons posts it."""
    page = client.get(url).content.decode()
    return re.search(r'name="_modelslab_shown" value="([^"]+)"', page).group(1)


def test_a_second_press_from_the_same_page_starts_nothing(client, editor, emulator):
    request = new_request(PROMPT, seed=9)
    run_action(client, "generate", request)
    url = change_url(request)
    press = form_data(seed="9", _regenerate="Regenerate", _modelslab_shown=shown_field(url, client))

    first = client.post(url, press, follow=True)
    again = client.post(url, press, follow=True)  # the same page, after the first finished
    edited = client.post(url, {**press, "prompt": "a lighthouse at noon"}, follow=True)

    assert "1 request succeeded." in messages_of(first)
    request.refresh_from_db()
    seed = request.seed
    not_saved = (
        f"Nothing was saved: this request was started again after the page was shown "
        f"(#{request.pk}). Its current state is below; make your changes again."
    )
    # The page's values are older than the row's: saving them would undo the regenerate's
    # new seed. Nothing is saved, nothing is started again.
    assert messages_of(again) == [not_saved]
    assert messages_of(edited) == [not_saved]
    request.refresh_from_db()
    assert (request.prompt, request.seed) == ("a red kite over hills", seed)
    assert request.images.get(superseded=False).seed == seed
    assert emulator.calls["text2img"] == 2
    # Pressed on a page shown after that, it regenerates.
    fresh = form_data(seed="9", _regenerate="Regenerate", _modelslab_shown=shown_field(url, client))
    assert "1 request succeeded." in messages_of(client.post(url, fresh, follow=True))
    assert emulator.calls["text2img"] == 3


def test_an_action_posted_twice_from_one_list_starts_each_request_once(client, editor, emulator):
    requests = [new_request(PROMPT, seed=1), new_request(PROMPT, seed=2)]
    run_action(client, "generate", *requests)
    action = {
        "action": "regenerate",
        "_selected_action": [obj.pk for obj in requests],
        "_modelslab_shown": shown_field(CHANGELIST, client),
    }

    first = client.post(CHANGELIST, action, follow=True)
    again = client.post(CHANGELIST, action, follow=True)

    assert messages_of(first) == ["2 requests succeeded."]
    ids = ", ".join(f"#{obj.pk}" for obj in reversed(requests))  # the list's order
    assert messages_of(again) == [
        f"2 requests not started again: they were started after this page was shown ({ids})."
        " Their status is below."
    ]
    assert emulator.calls["text2img"] == 4


def test_a_database_that_stays_locked_answers_a_page_not_a_500(
    client, editor, emulator, startproject_sqlite, monkeypatch
):
    request = new_request(PROMPT, seed=9)
    monkeypatch.setattr(contention, "LOCKED_RETRY_FOR", 0.5)
    connection.close()  # reopened without the suite's OPTIONS
    other = sqlite3.connect(connections.settings[DEFAULT_DB_ALIAS]["NAME"])
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock throughout
    try:
        response = client.post(change_url(request), form_data(prompt="a new prompt"))
    finally:
        other.rollback()
        other.close()

    assert response.status_code == 503
    page = response.content.decode()
    assert "The database stayed locked for 0.5 s; nothing was changed." in page
    assert "your edits are still in the form" in page
    request.refresh_from_db()
    assert request.prompt == "a lighthouse"


def attempt_rows(page: str) -> list[list[str]]:
    """The cells (text) of each row of the "Models tried" table."""
    table = re.search(r'<table class="modelslab-attempts">.*?</table>', page, re.S).group(0)
    rows = re.findall(r"<tr class=\"modelslab-try--\w+\">(.*?)</tr>", table, re.S)
    return [
        [
            html.unescape(re.sub(r"<[^>]+>", "", cell))
            for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        ]
        for row in rows
    ]


def test_models_tried_lists_every_try_of_every_attempt_with_the_providers_time(
    client, editor, emulator
):
    emulator.configure(models={"sdxl"})
    emulator.add_fault("download", Fault.corrupt())  # sdxl's job succeeds; its copy fails
    request = new_request(PROMPT, seed=7, model_id="gone", fallback_models=["sdxl"])
    run_action(client, "generate", request)
    time.sleep(1.0)  # the request sits failed until the editor retries it
    url = change_url(request)
    data = form_data(
        seed="7",
        model_id="gone",
        fallback_models="sdxl",
        _generate="Save and generate",
        _modelslab_shown=shown_field(url, client),
    )

    retried = client.post(url, data, follow=True)

    assert "1 request succeeded." in messages_of(retried)
    (job,) = emulator.jobs.values()
    job_time = f"{job.generation_time:.2f} s"
    rows = attempt_rows(client.get(url).content.decode())
    assert [row[:5] for row in rows] == [
        ["1", "gone", "failed", "—", rows[0][4]],
        ["1", "sdxl", "failed", job_time, rows[1][4]],
        ["2", "sdxl (same job, continued)", "succeeded", "—", rows[2][4]],
    ]
    assert "Model not found: gone" in rows[0][5]
    assert "Not a PNG, JPEG" in rows[1][5]
    assert float(rows[2][4].removesuffix(" s")) < 1.0  # not the time it sat failed


# --- the list's cells, built in Python while the package's templates are in use ---------------


def _cells() -> tuple[list[GenerationRequest], list[GeneratedImage]]:
    """Requests and images covering each branch of status_badge, thumbnail(s) and cost."""
    long_error = 'it said <b>"no"</b> & left ' + "x" * 200
    generations = [
        new_request(prompt='a "quoted" <prompt> & more', status=Status.PENDING),
        new_request(prompt="failed", status=Status.FAILED, error=long_error),
        new_request(prompt="refused", status=Status.REFUSED, error="unsafe prompt"),
        new_request(prompt="queued", status=Status.QUEUED, eta=12.4),
        new_request(prompt="paid", status=Status.SUCCEEDED, cost=Decimal("0.0047"),
                    cost_source="provider"),
        new_request(prompt="no source", status=Status.SUCCEEDED, cost=Decimal("4.2")),
    ]  # fmt: skip
    generations.append(
        new_request(prompt="cached", status=Status.SUCCEEDED, cost=Decimal("0"),
                    cached_from=generations[4])
    )  # fmt: skip
    # An id the thousand separator would change: the templates show it unlocalized.
    GenerationRequest.objects.filter(pk=generations[0].pk).update(id=123456)
    generations[0] = GenerationRequest.objects.get(pk=123456)
    images = [
        GeneratedImage.objects.create(
            request=generations[0],
            image=f"modelslab/{n}.png",
            thumbnail=f"modelslab/thumbs/{n}.webp" if n else "",
            sha256=f"{n:064d}",
            width=1024 + n,
            height=768,
            format="PNG",
            bytes=10,
            position=n,
        )
        for n in range(3)
    ]
    images.append(GeneratedImage(request=generations[0], image="", width=1, height=1, pk=999999))
    return generations, images


@override_settings(USE_THOUSAND_SEPARATOR=True)
def test_the_list_cells_built_in_python_are_the_templates_html():
    from django_modelslab.admin import html as cells

    generations, images = _cells()
    for generation in generations:
        for error in (True, False):
            context = {"poll_url": "/status/?a=1&b=2", "poll_interval": 2.5}
            built = cells.status_badge(generation, error=error, **context)
            shown = error and generation.status in (Status.FAILED, Status.REFUSED)
            rendered = cells.render(
                "status_badge", generation=generation, eta=cells.eta_label(generation),
                poll_url=context["poll_url"], poll=2.5, error=generation.error if shown else "",
            )  # fmt: skip
            assert built == rendered
        amount = None if generation.cost is None else cells.format_amount(generation.cost)
        rendered = cells.render("cost", generation=generation, amount=amount, unit="credits")
        assert cells.cost_html(generation) == rendered
    for image in images:
        for size, link in ((64, True), (128, False), (256, True)):
            rendered = cells.render(
                "thumbnail", image=image, size=size, link=link, dimensions=cells.dimensions(image)
            )
            assert cells.thumbnail_html(image, size, link=link) == rendered
    for shown in ([], images[:1], images):
        rendered = cells.render("thumbnails", images=[(i, cells.dimensions(i)) for i in shown])
        assert cells.thumbnails_html(shown) == rendered
    assert "of request 123456" in cells.thumbnail_html(images[0])
    assert 'data-modelslab-id="123456"' in cells.status_badge(generations[0], **context)


@pytest.mark.parametrize("url", [CHANGELIST, IMAGES])
def test_the_changelists_render_no_template_per_row(client, editor, url):
    """The badge, thumbnails, cost and checkbox of 50 rows come from Python, not from
    ~200 template renders (most of a page's time): the templates a page renders do not
    grow with its rows."""
    _rows(50)
    page = client.get(url)
    names = [template.name for template in page.templates]
    for name in (
        "django_modelslab/admin/status_badge.html",
        "django_modelslab/admin/thumbnails.html",
        "django_modelslab/admin/thumbnail.html",
        "django_modelslab/admin/cost.html",
        "django/forms/widgets/checkbox.html",
    ):
        assert name not in names
    assert page.content.decode().count('class="action-select"') == 50


@pytest.mark.parametrize("name", ["status_badge", "thumbnail", "thumbnails", "cost"])
def test_a_projects_own_list_template_is_rendered(client, editor, settings, tmp_path, name):
    folder = tmp_path / "django_modelslab" / "admin"
    folder.mkdir(parents=True)
    (folder / f"{name}.html").write_text(f"<i>project's {name}</i>")
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [tmp_path]}]
    _cells()
    page = client.get(CHANGELIST).content.decode()
    assert f"<i>project's {name}</i>" in page


def test_the_rows_checkbox_is_djangos():
    from django.contrib import admin

    generations, _images = _cells()
    model_admin = admin.site._registry[GenerationRequest]
    for generation in generations:
        django_own = admin.ModelAdmin.action_checkbox(model_admin, generation)
        assert model_admin.action_checkbox(generation) == django_own
