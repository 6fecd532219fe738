"""Daily budgets refuse new work before anything is queued or sent, with a clear message in
every face: the pipeline, the admin, the REST API, the OpenAI endpoint and the command."""

from __future__ import annotations

import io
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from django_modelslab import costs, pipeline
from django_modelslab.exceptions import BudgetExceeded
from django_modelslab.models import Charge, GenerationRequest
from django_modelslab.testing.emulator import NSFW_TRIGGER

from .helpers import (
    EDIT_PERMS,
    api_client,
    api_url,
    configure,
    messages_of,
    new_request,
    run_action,
    staff,
)

pytestmark = pytest.mark.django_db(transaction=True)

Status = GenerationRequest.Status
ZONE = django_settings.TIME_ZONE


@pytest.fixture
def alice() -> User:
    return User.objects.create_user("alice")


@pytest.fixture
def budget(settings, emulator):
    """One credit per image, and a helper to set the budgets."""

    def set_budgets(**values: Any) -> None:
        configure(settings, PRICES={"*": "1"}, **values)

    set_budgets()
    return set_budgets


def new(user: User | None, **fields: Any) -> GenerationRequest:
    return new_request(**{"prompt": "a red fox", "requested_by": user, **fields})


def spent(user: User | None, amount: str, *, when=None, **fields: Any) -> GenerationRequest:
    """A request that succeeded (``when``, default now) having cost ``amount``: its charge."""
    when = when or timezone.now()
    request = new(
        user,
        status=Status.SUCCEEDED,
        cost=Decimal(amount),
        cost_source=GenerationRequest.CostSource.PRICE_TABLE,
        finished_at=when,
        attempts=1,
        **fields,
    )
    Charge.objects.create(
        request=request,
        user=user,
        model_id="flux",
        amount=Decimal(amount),
        source=GenerationRequest.CostSource.PRICE_TABLE,
        attempt=1,
        created_at=when,
    )
    return request


def test_per_user_budget_refuses_the_next_request_without_calling_modelslab(
    alice, budget, emulator
):
    budget(DAILY_BUDGET_PER_USER="5")
    spent(alice, "4.20")
    request = new(alice, samples=2)

    with pytest.raises(BudgetExceeded) as refused:
        pipeline.submit(request)

    assert str(refused.value) == (
        "Daily budget for alice reached: 4.20 of 5.00 credits spent or queued today; "
        f"this request would cost 2.00. It resets at midnight ({ZONE})."
    )
    assert refused.value.scope == "user"
    assert refused.value.spent == Decimal("4.20")
    request.refresh_from_db()
    assert request.status == Status.PENDING  # kept, nothing queued
    assert emulator.calls["text2img"] == 0


def test_refused_when_the_estimate_would_cross_the_budget(alice, budget, emulator):
    budget(DAILY_BUDGET_PER_USER="5")
    spent(alice, "4")
    first = pipeline.submit(new(alice))  # 4 + 1 = 5: allowed, and it runs (inline tasks)
    first.refresh_from_db()

    with pytest.raises(BudgetExceeded, match=r"5\.00 of 5\.00 credits"):
        pipeline.submit(new(alice))

    assert first.status == Status.SUCCEEDED and first.cost == Decimal("1")
    assert emulator.calls["text2img"] == 1
    assert costs.spent_today(alice) == Decimal("5")


def test_queued_requests_count_their_estimate(alice, budget, emulator):
    budget(DAILY_BUDGET_PER_USER="3")
    pipeline.submit(new(alice, samples=2), enqueue=False)  # queued, not run: 2 committed

    with pytest.raises(BudgetExceeded, match=r"2\.00 of 3\.00 credits spent or queued"):
        pipeline.submit(new(alice, samples=2), enqueue=False)

    assert emulator.calls["text2img"] == 0


def test_other_users_and_yesterday_do_not_count(alice, budget, emulator):
    budget(DAILY_BUDGET_PER_USER="2")
    bob = User.objects.create_user("bob")
    spent(bob, "50")
    spent(alice, "50", when=costs.day_start() - timedelta(minutes=1))

    request = pipeline.submit(new(alice, samples=2))

    assert request.status == Status.SUCCEEDED
    assert emulator.calls["text2img"] == 1


def test_a_regenerated_old_request_counts_only_todays_job(alice, budget, emulator):
    budget(DAILY_BUDGET_PER_USER="3")
    old = spent(alice, "50", when=costs.day_start() - timedelta(days=2))

    again = pipeline.regenerate(old)  # 1 credit today; its cost is now 51 in all

    assert again.status == Status.SUCCEEDED, again.error
    assert again.cost == Decimal("51")
    assert costs.spent_today(alice) == Decimal("1")
    assert costs.spent_today() == Decimal("1")
    assert [c.amount for c in again.charges.order_by("pk")] == [Decimal("50"), Decimal("1")]
    second = pipeline.submit(new(alice, samples=2))  # 1 + 2 = 3: still within the budget
    assert second.status == Status.SUCCEEDED, second.error
    with pytest.raises(BudgetExceeded, match=r"3\.00 of 3\.00 credits"):
        pipeline.submit(new(alice))


def test_charges_count_for_who_asked_when_the_job_was_paid(alice, budget, emulator):
    budget(DAILY_BUDGET_PER_USER="1")
    bob = User.objects.create_user("bob")
    request = pipeline.submit(new(alice))  # alice's job: 1 credit
    request.requested_by = bob  # handed over afterwards
    request.save()

    assert costs.spent_today(alice) == Decimal("1")
    assert costs.spent_today(bob) == Decimal("0")
    with pytest.raises(BudgetExceeded):
        pipeline.submit(new(alice))
    assert pipeline.submit(new(bob)).status == Status.SUCCEEDED


def test_global_budget_counts_everyone(alice, budget, emulator):
    budget(DAILY_BUDGET="3")
    spent(User.objects.create_user("bob"), "2.5")
    spent(None, "0.5")

    with pytest.raises(BudgetExceeded) as refused:
        pipeline.submit(new(alice))

    assert str(refused.value).startswith(
        "Daily budget for everyone reached: 3.00 of 3.00 credits spent or queued today"
    )
    assert refused.value.scope == "global"
    assert emulator.calls["text2img"] == 0


def test_provider_reported_costs_count_without_prices(alice, settings, emulator):
    configure(settings, DAILY_BUDGET_PER_USER="0.5")
    emulator.configure(report_cost=0.5)

    first = pipeline.submit(new(alice))  # no price: estimated at 0, allowed
    with pytest.raises(BudgetExceeded, match=r"0\.50 of 0\.50 credits"):
        pipeline.submit(new(alice))

    first.refresh_from_db()
    assert first.cost == Decimal("0.5")
    assert emulator.calls["text2img"] == 1


def test_regenerate_is_refused_and_nothing_changes(alice, budget, emulator):
    budget(DAILY_BUDGET_PER_USER="1")
    request = pipeline.submit(new(alice))
    images = list(request.images.values_list("pk", "superseded"))

    with pytest.raises(BudgetExceeded):
        pipeline.regenerate(request)

    request.refresh_from_db()
    assert request.status == Status.SUCCEEDED
    assert list(request.images.values_list("pk", "superseded")) == images
    assert emulator.calls["text2img"] == 1


def test_cache_hits_and_continued_jobs_are_not_refused(alice, budget, emulator):
    budget(DAILY_BUDGET_PER_USER="1")
    original = pipeline.submit(new(alice, seed=4))
    assert original.status == Status.SUCCEEDED  # budget now used up

    twin = pipeline.submit(new(alice, seed=4))  # same parameters and seed: the cache

    assert twin.status == Status.SUCCEEDED and twin.cached_from_id == original.pk
    assert emulator.calls["text2img"] == 1


# --- the faces ------------------------------------------------------------------------------


def test_admin_actions_show_the_refusal_and_queue_nothing(client, budget, emulator):
    budget(DAILY_BUDGET_PER_USER="1")
    editor = staff("editor", [*EDIT_PERMS, "generate_images"])
    client.force_login(editor)
    done = pipeline.submit(new(editor))
    waiting = new(editor)

    generate = run_action(client, "generate", waiting)
    regenerate = run_action(client, "regenerate", done)

    reason = (
        "Daily budget for editor reached: 1.00 of 1.00 credits spent or queued today; "
        f"this request would cost 1.00. It resets at midnight ({ZONE})."
    )
    assert messages_of(generate) == [f"1 request not started (#{waiting.pk}): {reason}"]
    assert messages_of(regenerate) == [f"1 request not started (#{done.pk}): {reason}"]
    assert [message.level_tag for message in generate.context["messages"]] == ["error"]
    waiting.refresh_from_db()
    assert waiting.status == Status.PENDING
    assert emulator.calls["text2img"] == 1


def test_api_answers_429_and_creates_nothing(alice, budget, emulator):
    budget(DAILY_BUDGET_PER_USER="2")
    client = api_client(alice)
    first = client.post(api_url("generation-list"), {"prompt": "x", "samples": 2})

    second = client.post(api_url("generation-list"), {"prompt": "y"})
    again = client.post(api_url("generation-regenerate", first.json()["id"]))

    assert first.status_code == 201
    assert first.json()["cost"] == "2.000000"
    assert first.json()["cost_source"] == "price_table"
    assert second.status_code == 429
    assert second.json() == {
        "detail": "Daily budget for alice reached: 2.00 of 2.00 credits spent or queued "
        f"today; this request would cost 1.00. It resets at midnight ({ZONE})."
    }
    assert again.status_code == 429
    assert "would cost 2.00" in again.json()["detail"]
    assert GenerationRequest.objects.count() == 1
    assert emulator.calls["text2img"] == 1


def test_openai_endpoint_answers_insufficient_quota(alice, budget, emulator):
    budget(DAILY_BUDGET="0")
    client = api_client(alice)

    response = client.post(api_url("openai-images"), {"prompt": "a fox", "size": "256x256"})

    assert response.status_code == 429
    assert response["x-should-retry"] == "false"
    assert response.json() == {
        "error": {
            "message": "Daily budget for everyone reached: 0.00 of 0.00 credits spent or "
            "queued today; this request would cost 1.00. It resets at midnight "
            f"({ZONE}).",
            "type": "insufficient_quota",
            "param": None,
            "code": "insufficient_quota",
        }
    }
    assert emulator.calls["text2img"] == 0


def test_command_reports_skipped_requests_and_exits_non_zero(alice, budget, emulator):
    made = [pipeline.submit(new(alice, prompt=f"fox {n}")) for n in range(5)]
    # That was yesterday's spending: today starts with a clean slate.
    Charge.objects.update(created_at=costs.day_start() - timedelta(hours=1))
    budget(DAILY_BUDGET="3")
    out = io.StringIO()

    with pytest.raises(CommandError, match=r"^2 request\(s\) skipped: daily budget reached\.$"):
        call_command("regenerate_images", "--yes", stdout=out, stderr=out)

    text = out.getvalue()
    assert emulator.calls["text2img"] == 5 + 3
    assert "Done: 2 skipped (budget), 3 succeeded." in text
    assert "Cost: 3.00 credits." in text
    skipped = made[3:]  # in id order: the first three fitted the budget
    ids = ", ".join(f"#{request.pk}" for request in skipped)
    assert (
        "Skipped (budget) (2): left as they were, nothing sent. Daily budget for everyone " in text
    )
    assert f"[{ids}]" in text
    for request in skipped:
        request.refresh_from_db()
        assert request.status == Status.SUCCEEDED and request.cost == Decimal("1")
        assert request.images.filter(superseded=False).count() == 1


def test_command_shows_refusals_budget_skips_and_the_cost(alice, budget, emulator):
    # Every job reports one credit per image, as PRICES estimates: the budget's count is the
    # same whether a job is still running or done, so which request is skipped is certain.
    emulator.configure(report_cost=1)
    blank = new(alice, prompt=f"a beach {NSFW_TRIGGER}")
    kite = new(alice, prompt="a kite")
    late = new(alice, prompt="a late kite")
    budget(DAILY_BUDGET="2")
    out = io.StringIO()

    with pytest.raises(CommandError, match=r"^1 request\(s\) skipped: daily budget reached\.$"):
        call_command("regenerate_images", "--yes", stdout=out, stderr=out)

    text = out.getvalue()
    assert "Done: 1 refused, 1 skipped (budget), 1 succeeded." in text
    assert "Cost: 2.00 credits." in text  # the refused job's reported cost counts
    assert "Refused (1): ModelsLab's safety checker flagged the image" in text
    assert f"[#{blank.pk}]" in text
    assert "Skipped (budget) (1): left as they were, nothing sent." in text
    assert f"[#{late.pk}]" in text
    assert "Produced by: flux 1." in text
    assert emulator.calls["text2img"] == 2
    for request, status in ((blank, Status.REFUSED), (kite, Status.SUCCEEDED)):
        request.refresh_from_db()
        assert (request.status, request.cost) == (status, Decimal("1"))
    late.refresh_from_db()
    assert (late.status, late.cost) == (Status.PENDING, None)
