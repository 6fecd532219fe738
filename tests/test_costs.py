"""Cost tracking: what each request cost (reported by the emulator, or from PRICES), the
signal that carries it, the settings checks, and the admin's cost column and totals page."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from django_modelslab import costs, pipeline
from django_modelslab.checks import check_settings
from django_modelslab.client import parse_response, reported_cost
from django_modelslab.models import Charge, GenerationRequest
from django_modelslab.signals import request_succeeded
from django_modelslab.testing.emulator import NSFW_TRIGGER

from .browser import log_in_as
from .helpers import (
    CHANGELIST,
    EDIT_PERMS,
    VIEW_PERMS,
    configure,
    messages_of,
    new_request,
    run_new,
    staff,
    succeeded_request,
)

pytestmark = pytest.mark.django_db(transaction=True)

Status = GenerationRequest.Status
Source = GenerationRequest.CostSource
COSTS = reverse("admin:django_modelslab_generationrequest_costs")


def run_succeeded(**fields: Any) -> GenerationRequest:
    request = run_new(**fields)
    assert request.status == Status.SUCCEEDED, request.error
    return request


# --- recording ------------------------------------------------------------------------------


def test_cost_reported_by_modelslab_is_recorded(emulator, settings):
    emulator.configure(report_cost="0.0047")
    configure(settings, PRICES={"*": "1"})  # a reported cost wins over the price table

    request = run_succeeded(samples=2)

    assert request.cost == Decimal("0.0094")
    assert request.cost_source == Source.PROVIDER


def test_without_a_reported_cost_the_price_table_prices_each_stored_image(emulator, settings):
    configure(settings, PRICES={"flux": 0.25, "*": "9"})

    flux = run_succeeded(samples=3)
    other = run_succeeded(model_id="sdxl", samples=1)

    assert (flux.cost, flux.cost_source) == (Decimal("0.75"), Source.PRICE_TABLE)
    assert (other.cost, other.cost_source) == (Decimal("9"), Source.PRICE_TABLE)


def test_without_either_the_cost_stays_unknown(emulator):
    request = run_succeeded()

    assert request.cost is None
    assert request.cost_source == ""


def test_a_cost_reported_while_processing_is_read_from_the_final_answer(emulator, settings):
    emulator.configure(mode="processing", eta=0.05, report_cost=0.5)

    request = run_succeeded()

    assert emulator.calls["fetch"] >= 1
    assert (request.cost, request.cost_source) == (Decimal("0.5"), Source.PROVIDER)


def test_regenerating_adds_to_the_cost_and_the_cache_costs_nothing(emulator, settings):
    configure(settings, PRICES={"*": "0.10"})
    first = run_succeeded(seed=5)
    twin = run_succeeded(seed=5)  # identical and seeded: served from the cache, no API call

    pipeline.regenerate(first, enqueue=False)
    pipeline.run(first.pk)
    first.refresh_from_db()

    assert emulator.calls["text2img"] == 2
    assert (first.cost, first.cost_source) == (Decimal("0.20"), Source.PRICE_TABLE)
    assert twin.cached_from_id == first.pk
    assert (twin.cost, twin.cost_source) == (Decimal("0"), "")


def test_request_succeeded_carries_the_attempts_cost(emulator, settings):
    emulator.configure(report_cost=0.3)
    seen: list[Any] = []

    def receiver(sender: Any, request: GenerationRequest, cost: Any, **kwargs: Any) -> None:
        seen.append(cost)

    request_succeeded.connect(receiver)
    try:
        first = run_succeeded(seed=9)
        pipeline.regenerate(first, enqueue=False)
        pipeline.run(first.pk)
        run_succeeded(seed=99, use_cache=True)
        run_succeeded(seed=99)  # cache hit
    finally:
        request_succeeded.disconnect(receiver)

    assert seen == [Decimal("0.3"), Decimal("0.3"), Decimal("0.3"), Decimal("0")]
    first.refresh_from_db()
    assert first.cost == Decimal("0.6")


# --- with fallbacks and safety ---------------------------------------------------------------


def test_the_model_that_produced_the_images_prices_them(emulator, settings):
    emulator.configure(failing_models={"flux": "failed"})
    configure(settings, PRICES={"flux": "1", "sdxl": "0.25"})

    request = run_succeeded(samples=2, fallback_models=["sdxl"])

    assert request.produced_by == "sdxl"
    assert (request.cost, request.cost_source) == (Decimal("0.50"), Source.PRICE_TABLE)


def test_a_refused_job_costs_only_what_modelslab_reported(emulator, settings):
    configure(settings, PRICES={"*": "1"}, FALLBACK_ON_SAFETY=True)
    nsfw = {"prompt": f"a beach {NSFW_TRIGGER}", "width": 256, "height": 256}

    unpriced = GenerationRequest.objects.create(**nsfw)
    pipeline.run(unpriced.pk)
    unpriced.refresh_from_db()
    emulator.configure(report_cost="0.2")
    reported = GenerationRequest.objects.create(**nsfw, samples=2, fallback_models=["sdxl"])
    pipeline.run(reported.pk)
    reported.refresh_from_db()

    assert unpriced.status == Status.REFUSED
    assert (unpriced.cost, unpriced.cost_source) == (None, "")  # PRICES is not applied
    assert reported.status == Status.REFUSED
    # Both models' jobs were refused; each reported 0.2 x 2 images.
    assert [e["outcome"] for e in reported.model_attempts] == ["refused", "refused"]
    assert (reported.cost, reported.cost_source) == (Decimal("0.8"), Source.PROVIDER)
    ledger = reported.charges.order_by("pk").values_list("model_id", "amount", "source")
    assert list(ledger) == [
        ("flux", Decimal("0.4"), Source.PROVIDER),
        ("sdxl", Decimal("0.4"), Source.PROVIDER),
    ]
    assert not unpriced.charges.exists()


def test_each_paid_job_adds_one_charge_and_the_cache_none(emulator, settings):
    configure(settings, PRICES={"*": "0.10"})
    alice = User.objects.create_user("alice")
    first = run_succeeded(seed=5, samples=2, requested_by=alice)
    twin = run_succeeded(seed=5, samples=2)  # served from the cache

    assert [(c.attempt, c.amount, c.user, c.model_id) for c in first.charges.all()] == [
        (1, Decimal("0.2"), alice, "flux")
    ]
    assert twin.cost == 0 and not twin.charges.exists()
    pipeline.submit(first)  # already succeeded: nothing new, nothing charged
    assert first.charges.count() == 1


def test_the_migration_puts_recorded_costs_in_the_ledger():
    from importlib import import_module

    from django.apps import apps

    alice = User.objects.create_user("alice")
    finished = timezone.now() - timedelta(days=2)
    paid = GenerationRequest.objects.create(
        prompt="a fox",
        requested_by=alice,
        model_id="flux",
        produced_by="sdxl",
        attempts=2,
        cost=Decimal("1.5"),
        cost_source=Source.PROVIDER,
        finished_at=finished,
    )
    GenerationRequest.objects.create(prompt="cached", cost=Decimal(0))  # the cache: no charge
    GenerationRequest.objects.create(prompt="unknown")

    import_module("django_modelslab.migrations.0003_charges").ledger_from_costs(apps, None)

    charge = Charge.objects.get()
    assert (charge.request, charge.user, charge.model_id, charge.attempt) == (
        paid,
        alice,
        "sdxl",
        2,
    )
    assert (charge.amount, charge.source, charge.created_at) == (
        Decimal("1.5"),
        Source.PROVIDER,
        finished,
    )


def test_a_prompt_refused_by_moderation_costs_nothing(emulator, settings):
    emulator.configure(report_cost="0.2")
    configure(settings, PRICES={"*": "1"}, MODERATION_HOOK="tests.test_safety.no_dragons")

    request = new_request("a dragon")
    request = pipeline.submit(request)

    assert request.status == Status.REFUSED
    assert (request.cost, request.cost_source) == (None, "")
    assert sum(emulator.calls.values()) == 0


@pytest.mark.parametrize(
    ("body", "cost"),
    [
        ({"cost": 0.0047}, Decimal("0.0047")),
        ({"credits_used": "2"}, Decimal("2")),
        ({"meta": {"credits": 1.5}}, Decimal("1.5")),
        ({"price": "0.010", "meta": {"cost": 7}}, Decimal("0.010")),
        ({"cost": "free"}, None),
        ({"cost": -1}, None),
        ({"cost": True}, None),
        ({"cost": "NaN"}, None),
        ({}, None),
    ],
)
def test_reported_cost_is_read_leniently(body, cost):
    assert reported_cost(body) == cost
    answer = {"status": "success", "id": 1, "output": ["https://x.r2.dev/a.png"], **body}
    assert parse_response(answer, status_code=200, payload={}).cost == cost


# --- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "check_id"),
    [
        ({"PRICES": ["flux"]}, "django_modelslab.E050"),
        ({"PRICES": {"flux": "cheap"}}, "django_modelslab.E050"),
        ({"PRICES": {"flux": -1}}, "django_modelslab.E050"),
        ({"PRICES": {"": 1}}, "django_modelslab.E050"),
        ({"DAILY_BUDGET": "lots", "PRICES": {"*": 1}}, "django_modelslab.E051"),
        ({"DAILY_BUDGET_PER_USER": -5, "PRICES": {"*": 1}}, "django_modelslab.E051"),
        ({"COST_UNIT": 3}, "django_modelslab.E052"),
        ({"DAILY_BUDGET": 5}, "django_modelslab.W050"),
    ],
)
def test_cost_settings_are_checked(settings, override, check_id):
    configure(settings, **override)

    assert [message.id for message in check_settings()] == [check_id]


def test_valid_cost_settings_pass_the_checks(settings):
    configure(
        settings,
        PRICES={"flux": "0.0047", "sdxl": 1, "*": Decimal("0.002")},
        DAILY_BUDGET="50",
        DAILY_BUDGET_PER_USER=5.5,
        COST_UNIT="USD",
    )

    assert check_settings() == []


# --- admin ----------------------------------------------------------------------------------


def make(
    user: User | None, model: str, cost: str | None, images: int = 1, *, when=None, **fields: Any
):
    """A finished request with ``images`` image rows and, when ``cost`` is given, the charge
    of its job, made ``when`` (default now)."""
    request = succeeded_request(
        user,
        images=images,
        model_id=model,
        cost=None if cost is None else Decimal(cost),
        cost_source=Source.PRICE_TABLE if cost is not None else "",
        attempts=1,
        **fields,
    )
    if cost is not None:
        charge(request, cost, when=when)
    return request


def charge(request: GenerationRequest, amount: str, *, when=None) -> Charge:
    """One more paid job of ``request`` in the ledger."""
    return Charge.objects.create(
        request=request,
        user=request.requested_by,
        model_id=request.produced_by or request.model_id,
        amount=Decimal(amount),
        source=Source.PRICE_TABLE,
        attempt=request.attempts,
        created_at=when or timezone.now(),
    )


def table(html: str, table_id: str) -> list[list[str]]:
    """The rows of one table of the costs page, as cell texts."""
    import re

    body = html.split(f'id="{table_id}"', 1)[1].split("</table>", 1)[0].split("<tbody>", 1)[1]
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)
    return [
        [
            re.sub(r"<[^>]+>", "", cell).strip()
            for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        ]
        for row in rows
    ]


def test_cost_column_and_detail_show_amount_and_source(client, settings):
    configure(settings, COST_UNIT="USD")
    client.force_login(staff("editor", VIEW_PERMS))
    request = make(None, "flux", "0.0094")

    changelist = client.get(CHANGELIST).content.decode()
    detail = client.get(
        reverse("admin:django_modelslab_generationrequest_change", args=[request.pk])
    ).content.decode()

    assert 'title="From the PRICES setting">0.0094 USD</span>' in changelist
    assert "0.0094 USD" in detail
    assert "From the PRICES setting" in detail


def test_costs_page_totals_the_charges_by_user_and_model(client):
    alice, bob = User.objects.create_user("alice"), User.objects.create_user("bob")
    make(alice, "flux", "1.50", images=2)
    make(alice, "sdxl", "0.25")
    regenerated = make(bob, "flux", "2", images=3)
    charge(regenerated, "0.5")  # a second paid job of the same request
    make(bob, "flux", None)  # succeeded, cost unknown
    make(None, "sdxl", "0.10", produced_by="flux")  # a fallback produced it
    client.force_login(staff("viewer", VIEW_PERMS))

    response = client.get(COSTS)
    html = response.content.decode()

    assert response.status_code == 200
    # paid jobs, requests, cost, unknown
    assert table(html, "modelslab-costs-users") == [
        ["bob", "2", "1", "2.50 credits", "1"],
        ["alice", "2", "2", "1.75 credits", "0"],
        ["(nobody)", "1", "1", "0.10 credits", "0"],
    ]
    assert table(html, "modelslab-costs-models") == [
        ["flux", "4", "3", "4.10 credits", "1"],
        ["sdxl", "1", "1", "0.25 credits", "0"],
    ]
    assert table(html, "modelslab-costs-total") == [["Total", "5", "4", "4.35 credits", "1"]]
    assert "All charges." in html


def test_costs_page_totals_a_period_by_when_jobs_were_paid(client):
    alice = User.objects.create_user("alice")
    today = costs.today()
    old = make(alice, "flux", "4", when=costs.midnight(today - timedelta(days=3)))
    charge(old, "1")  # regenerated today: only today's job counts today
    make(alice, "sdxl", "2", when=costs.midnight(today) - timedelta(seconds=1))  # yesterday
    client.force_login(staff("viewer", VIEW_PERMS))

    def total(**params: str) -> list[str]:
        response = client.get(COSTS, params)
        assert response.status_code == 200
        return table(response.content.decode(), "modelslab-costs-total")[0]

    day = today.isoformat()
    yesterday = (today - timedelta(days=1)).isoformat()
    assert total(since=day, until=day) == ["Total", "1", "1", "1.00 credits", "0"]
    assert total(since=yesterday, until=yesterday) == ["Total", "1", "1", "2.00 credits", "0"]
    assert total(since=yesterday) == ["Total", "2", "2", "3.00 credits", "0"]
    assert total(until=yesterday) == ["Total", "2", "2", "6.00 credits", "0"]
    assert total() == ["Total", "3", "2", "7.00 credits", "0"]
    assert total(since=day, model_id="sdxl") == ["Total", "0", "0", "0.00 credits", "0"]

    html = client.get(COSTS, {"since": day, "until": day, "model_id": "flux"}).content.decode()
    assert f"Charges from {day} to {day} (both included)." in html
    assert '<input type="hidden" name="model_id" value="flux">' in html
    assert "<strong>Today</strong>" in html
    assert f'href="?model_id=flux&amp;since={today.replace(day=1)}&amp;until={day}"' in html
    bad = client.get(COSTS, {"since": "last tuesday"}, follow=True)
    assert "since: 'last tuesday' is not a date (YYYY-MM-DD); ignored." in messages_of(bad)
    assert table(bad.content.decode(), "modelslab-costs-total")[0][3] == "7.00 credits"


def test_costs_page_follows_the_changelist_filters(client):
    alice = User.objects.create_user("alice")
    make(alice, "flux", "1")
    make(alice, "sdxl", "0.5")
    client.force_login(staff("viewer", VIEW_PERMS))

    changelist = client.get(CHANGELIST, {"model_id": "sdxl"}).content.decode()
    html = client.get(COSTS, {"model_id": "sdxl"}).content.decode()
    bad = client.get(COSTS, {"no_such_filter": "1"}, follow=True)

    assert f'href="{COSTS}?model_id=sdxl"' in changelist
    assert table(html, "modelslab-costs-total") == [["Total", "1", "1", "0.50 credits", "0"]]
    assert "Unknown filters were ignored." in messages_of(bad)
    assert table(bad.content.decode(), "modelslab-costs-total")[0][1] == "2"


def test_request_page_lists_its_charges_read_only(client, emulator, settings):
    configure(settings, PRICES={"flux": "0.5", "sdxl": "2"})
    emulator.configure(failing_models={"flux": "failed"})
    viewer = staff("viewer", VIEW_PERMS)
    request = run_succeeded(samples=2, fallback_models=["sdxl"], requested_by=viewer)
    emulator.configure(failing_models={})
    pipeline.regenerate(request, enqueue=False)
    pipeline.run(request.pk)
    client.force_login(viewer)

    html = client.get(
        reverse("admin:django_modelslab_generationrequest_change", args=[request.pk])
    ).content.decode()

    rows = list(Charge.objects.filter(request=request).order_by("pk"))
    assert [(c.attempt, c.model_id, c.amount, c.user) for c in rows] == [
        (1, "sdxl", Decimal("4"), viewer),
        (2, "flux", Decimal("1"), viewer),
    ]
    assert "Charges (one per paid job)" in html
    shown = table(html.replace('class="modelslab-charges"', 'id="charges"'), "charges")
    assert [row[1:] for row in shown] == [
        ["1", "sdxl", "4.00 credits", "From the PRICES setting", "viewer"],
        ["2", "flux", "1.00 credits", "From the PRICES setting", "viewer"],
    ]
    assert 'name="charges-' not in html  # read-only: not a formset


def test_costs_page_is_for_staff_with_view_permission(client):
    page_user = User.objects.create_user("member")
    client.force_login(page_user)
    assert client.get(COSTS).status_code == 302  # to the admin login

    client.force_login(staff("bare", []))
    assert client.get(COSTS).status_code == 403

    client.force_login(staff("editor", EDIT_PERMS))
    assert client.get(COSTS).status_code == 200


def test_costs_page_shows_today_against_the_budgets(client, settings):
    configure(settings, PRICES={"*": "1"}, DAILY_BUDGET="10", DAILY_BUDGET_PER_USER=None)
    viewer = staff("viewer", VIEW_PERMS)
    make(viewer, "flux", "3", finished_at=timezone.now())
    make(viewer, "flux", "5", when=costs.day_start() - timedelta(minutes=1))  # yesterday
    make(viewer, "flux", None, status=Status.QUEUED, samples=2)
    client.force_login(viewer)

    html = client.get(COSTS).content.decode()

    assert table(html, "modelslab-costs-today") == [
        ["Everyone", "3.00 credits", "2.00 credits", "10.00 credits"],
        ["viewer", "3.00 credits", "2.00 credits", "no limit"],
    ]


def test_costs_page_in_a_browser(page, live_server, settings):
    bob = User.objects.create_user("bob")
    make(bob, "flux", "1.25", images=2)
    log_in_as(page, live_server, staff("viewer", VIEW_PERMS))

    page.goto(f"{live_server.url}{CHANGELIST}")
    page.click("a.modelslab-costs-link")
    page.wait_for_url(f"{live_server.url}{COSTS}")

    assert page.locator("h1").inner_text() == "Generation costs"
    row = page.locator("#modelslab-costs-users tbody tr").first
    assert row.locator("td").all_inner_texts() == ["bob", "1", "1", "1.25 credits", "0"]
    page.click("text=Back to the list")
    page.wait_for_url(f"{live_server.url}{CHANGELIST}")
