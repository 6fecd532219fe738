"""What each generation cost, the ledger of charges, totals, and the daily budgets.

Every paid provider job adds one :class:`~django_modelslab.models.Charge` row, written in
the transaction that records the job's outcome: the amount ModelsLab reported in its answer
(``source="provider"``), else the ``PRICES`` setting's price per image times the images
stored (``"price_table"``). A job whose cost is unknown (no reported cost, no price) adds
no row. ``GenerationRequest.cost`` is the running total of a request's charges; reusing an
identical request's images from the cache costs 0 and adds no row.

Budgets count a day in the project's ``TIME_ZONE``: the charges made today, plus the
estimate (price x images) of requests still queued or running. :func:`check_budget` is
called by :func:`django_modelslab.pipeline.submit` and
:func:`~django_modelslab.pipeline.regenerate` before anything is queued or sent.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from datetime import time as clock
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, NullIf
from django.utils import timezone

from . import kinds
from .amounts import MAX_AMOUNT, QUANTUM, format_amount, parse_amount
from .client import ProviderResponse, reported_cost
from .conf import get_setting
from .exceptions import BudgetExceeded
from .fallbacks import current_model
from .models import Charge, GenerationRequest

__all__ = [
    "CACHED",
    "CostRow",
    "JobCost",
    "charge_for",
    "check_budget",
    "committed",
    "day_start",
    "estimate",
    "estimated_model",
    "known_estimate",
    "midnight",
    "price_of",
    "record",
    "record_unpaid_job",
    "spent",
    "spent_today",
    "today",
    "totals",
]

logger = logging.getLogger("django_modelslab.costs")

Status = GenerationRequest.Status
Source = GenerationRequest.CostSource
ZERO = Decimal(0)
IN_FLIGHT = (Status.QUEUED, Status.PROCESSING)


@dataclass(frozen=True)
class JobCost:
    """What one job cost: ``amount`` None when unknown; ``source`` a CostSource, or "" when
    nothing was paid (the cache)."""

    amount: Decimal | None
    source: str = ""


#: A result reused from the cache: no API call, nothing to pay.
CACHED = JobCost(ZERO)


# --- recording ----------------------------------------------------------------------------


def price_of(model_id: str) -> Decimal | None:
    """``PRICES[model_id]``, else ``PRICES["*"]``, else None (also for an invalid value)."""
    prices = get_setting("PRICES")
    if not isinstance(prices, dict):
        return None
    model_id = model_id or get_setting("DEFAULT_MODEL")
    value = prices.get(model_id, prices.get("*"))
    return parse_amount(value)


def charge_for(generation: GenerationRequest, response: ProviderResponse | None) -> JobCost:
    """The cost of the attempt whose outputs ``generation.output_urls`` holds.

    ``response`` None means the outputs came from an earlier attempt's answer (its copy
    failed): that answer is read back from ``provider_responses``.
    """
    reported = response.cost if response is not None else _last_reported_cost(generation)
    if reported is not None:
        return JobCost(reported, Source.PROVIDER)
    price = price_of(generation.produced_by or generation.model_id)
    if price is None:
        return JobCost(None)
    amount = price * len(generation.output_urls)
    if not _fits(generation, amount):
        return JobCost(None)
    return JobCost(amount, Source.PRICE_TABLE)


def record(generation: GenerationRequest, cost: JobCost, *, model_id: str) -> Charge | None:
    """Add ``cost`` to ``generation.cost`` (unsaved) and write the job's ledger row.

    Call it inside the transaction that records the job's outcome, so the row and the
    outcome are saved together. An unknown amount changes nothing; a cost without a source
    (the cache) sets ``cost`` but is no charge.
    """
    if cost.amount is None or not _fits(generation, cost.amount):
        return None
    amount = cost.amount.quantize(QUANTUM)
    generation.cost = ((generation.cost or ZERO) + amount).quantize(QUANTUM)
    if not cost.source:
        return None
    generation.cost_source = cost.source
    return Charge.objects.create(
        request=generation,
        user_id=generation.requested_by_id,
        model_id=model_id,
        amount=amount,
        source=cost.source,
        attempt=generation.attempts,
    )


def record_unpaid_job(generation: GenerationRequest, reported: Decimal | None) -> None:
    """Charge what ModelsLab reported for a job that stored nothing (safety refusal, failure).

    Nothing without a reported cost: a refused or failed job is not priced from PRICES.
    Once per job: the job (its ``track_id``) is dropped from the row in the same
    transaction, so a webhook and a poller that both see the answer charge it once.
    """
    if reported is None or not generation.track_id:
        return
    model_id = current_model(generation)
    with transaction.atomic():
        dropped = GenerationRequest.objects.filter(
            pk=generation.pk, attempts=generation.attempts, track_id=generation.track_id
        ).update(track_id="", provider_id="")
        if not dropped:
            return
        record(generation, JobCost(reported, Source.PROVIDER), model_id=model_id)
        generation.save(update_fields=["cost", "cost_source", "updated_at"])


def _fits(generation: GenerationRequest, amount: Decimal) -> bool:
    """Whether ``amount``, and the request's total with it, fit the cost columns; else warn.

    A cost past :data:`~django_modelslab.amounts.MAX_AMOUNT` is recorded as unknown: stored,
    it would make every page that reads the row fail.
    """
    if amount <= MAX_AMOUNT and (generation.cost or ZERO) + amount <= MAX_AMOUNT:
        return True
    logger.warning(
        "Generation #%s: a cost of %s (on a total of %s) is more than the cost columns hold "
        "(%s); recorded as unknown.",
        generation.pk,
        amount,
        generation.cost or ZERO,
        MAX_AMOUNT,
    )
    return False


def _last_reported_cost(generation: GenerationRequest) -> Decimal | None:
    for entry in reversed(generation.provider_responses or []):
        body = entry.get("body") if isinstance(entry, dict) else None
        if isinstance(body, dict) and str(body.get("status", "")).lower() == "success":
            return reported_cost(body)
    return None


# --- budgets ------------------------------------------------------------------------------


def midnight(day: date) -> datetime:
    """The start of ``day`` in the project's ``TIME_ZONE``."""
    if not settings.USE_TZ:
        return datetime.combine(day, clock.min)
    return datetime.combine(day, clock.min, tzinfo=timezone.get_default_timezone())


def today() -> date:
    """Today's date in the project's ``TIME_ZONE``."""
    return _date_of(timezone.now())


def day_start(now: datetime | None = None) -> datetime:
    """Midnight that began today (the day of ``now``), in the project's ``TIME_ZONE``."""
    return midnight(_date_of(timezone.now() if now is None else now))


def _date_of(moment: datetime) -> date:
    if not settings.USE_TZ:
        return moment.date()
    return timezone.localtime(moment, timezone.get_default_timezone()).date()


def spent(
    user: Any = None, *, since: datetime | None = None, until: datetime | None = None
) -> Decimal:
    """The sum of the charges made in ``[since, until)`` (``user``'s only, when given)."""
    charges = Charge.objects.all()
    if since is not None:
        charges = charges.filter(created_at__gte=since)
    if until is not None:
        charges = charges.filter(created_at__lt=until)
    if user is not None:
        charges = charges.filter(user=user)
    return charges.aggregate(total=Sum("amount"))["total"] or ZERO


def spent_today(user: Any = None, *, now: datetime | None = None) -> Decimal:
    """The charges made today (``user``'s only, when given), whatever the requests' age."""
    return spent(user, since=day_start(now))


def committed(user: Any = None, *, exclude: int | None = None) -> Decimal:
    """The estimated cost of requests queued or running (``user``'s only, when given)."""
    generations = GenerationRequest.objects.filter(status__in=IN_FLIGHT)
    if exclude is not None:
        generations = generations.exclude(pk=exclude)
    if user is not None:
        generations = generations.filter(requested_by=user)
    rows = (
        generations.order_by()
        .values("model_id", "kind", "api_version")
        .annotate(samples=Sum("samples"))
    )
    return sum((_estimate(_model_of(row), row["samples"]) for row in rows), ZERO)


def _model_of(row: Mapping[str, Any]) -> str:
    """A grouped row's model: its own, else its kind's default model."""
    if row["model_id"]:
        return row["model_id"]
    return kinds.default_model(GenerationRequest(kind=row["kind"], api_version=row["api_version"]))


def estimate(generation: GenerationRequest) -> Decimal:
    """What a new job for ``generation`` should cost: price x images (0 without a price).

    The images: ``samples``, or one for an upscale; the price: its model's, or its kind's
    default model's. :func:`known_estimate` tells a missing price apart.
    """
    return known_estimate(generation) or ZERO


def known_estimate(generation: GenerationRequest) -> Decimal | None:
    """:func:`estimate`, or None when ``PRICES`` has no price for the request's model."""
    price = price_of(estimated_model(generation))
    return None if price is None else price * kinds.outputs(generation)


def estimated_model(generation: GenerationRequest) -> str:
    """The model a new job for ``generation`` is priced by: its own, or its kind's default."""
    return generation.model_id or kinds.default_model(generation)


def _estimate(model_id: str, samples: int | None) -> Decimal:
    price = price_of(model_id)
    return ZERO if price is None else price * (samples or 1)


def check_budget(generation: GenerationRequest, *, regenerating: bool = False) -> None:
    """Raise :class:`BudgetExceeded` if a new job for ``generation`` would break a daily budget.

    The per-user budget counts against ``generation.requested_by``. Work that starts no new
    paid job (a cache hit, or a retry that continues an existing job) is never refused.
    Refused: spending so far plus this request's estimate exceeds the budget, or spending
    has already reached it.
    """
    per_user = _budget("DAILY_BUDGET_PER_USER")
    overall = _budget("DAILY_BUDGET")
    if per_user is None and overall is None:
        return
    if not regenerating and _starts_no_job(generation):
        return
    cost = estimate(generation)
    user = generation.requested_by if generation.requested_by_id else None
    if per_user is not None and user is not None:
        spent = spent_today(user) + committed(user, exclude=generation.pk)
        _refuse_over(per_user, spent, cost, scope="user", who=f"for {user.get_username()}")
    if overall is not None:
        spent = spent_today() + committed(exclude=generation.pk)
        _refuse_over(overall, spent, cost, scope="global", who="for everyone")


def _budget(name: str) -> Decimal | None:
    value = get_setting(name)
    return None if value is None else parse_amount(value)


def _starts_no_job(generation: GenerationRequest) -> bool:
    """A retry that polls or copies an existing job, or a request the cache will serve."""
    if generation.provider_id or (generation.output_urls and generation.outputs_alive):
        return True
    if not (generation.use_cache and generation.seed is not None and get_setting("CACHE")):
        return False
    probe = copy.copy(generation)  # unsaved: only its cache key is wanted
    probe.model_id = probe.model_id or kinds.default_model(probe)
    return generation.cache_source(probe.compute_cache_key()) is not None


def _refuse_over(budget: Decimal, spent: Decimal, cost: Decimal, *, scope: str, who: str) -> None:
    if spent < budget and spent + cost <= budget:
        return
    unit = get_setting("COST_UNIT")
    this = f"; this request would cost {format_amount(cost)}" if cost else ""
    raise BudgetExceeded(
        f"Daily budget {who} reached: {format_amount(spent)} of {format_amount(budget)} "
        f"{unit} spent or queued today{this}. It resets at midnight ({_zone_name()}).",
        scope=scope,
        budget=budget,
        spent=spent,
        estimate=cost,
    )


def _zone_name() -> str:
    return str(timezone.get_default_timezone()) if settings.USE_TZ else settings.TIME_ZONE


# --- totals -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CostRow:
    """One line of the totals: a user or a model, its paid jobs, their requests and cost."""

    label: str
    jobs: int  # charges
    requests: int  # distinct requests charged
    cost: Decimal
    unknown: int  # succeeded requests whose cost is not known

    @property
    def cost_label(self) -> str:
        return format_amount(self.cost)


def totals(
    charges: QuerySet[Charge], unknown: QuerySet[GenerationRequest]
) -> dict[str, list[CostRow]]:
    """``charges`` grouped ``by_user`` (who had asked) and ``by_model`` (the model that did the
    job), largest cost first, plus ``all`` (one row). ``unknown`` are the succeeded requests
    of the same selection whose cost is not known: they are counted, not priced."""
    charges = charges.order_by()
    unknown = unknown.filter(status=Status.SUCCEEDED, cost__isnull=True).order_by()
    model = Coalesce(NullIf(F("produced_by"), Value("")), NullIf(F("model_id"), Value("")))
    users = _user_labels(charges, unknown)
    return {
        "by_user": _grouped(
            charges.values(key=F("user")),
            unknown.values(key=F("requested_by")),
            lambda key: users.get(key, "(nobody)"),
        ),
        "by_model": _grouped(
            charges.values(key=NullIf(F("model_id"), Value(""))),
            unknown.values(key=model),
            lambda key: key or "(default model)",
        ),
        "all": [_total(charges, unknown)],
    }


_SUMS = {"jobs": Count("pk"), "requests": Count("request", distinct=True), "total": Sum("amount")}


def _total(charges: QuerySet[Charge], unknown: QuerySet[GenerationRequest]) -> CostRow:
    row = charges.aggregate(**_SUMS)
    return CostRow(
        label="Total",
        jobs=row["jobs"],
        requests=row["requests"],
        cost=row["total"] or ZERO,
        unknown=unknown.count(),
    )


def _grouped(charges: QuerySet[Any], unknown: QuerySet[Any], label: Any) -> list[CostRow]:
    paid = {row["key"]: row for row in charges.annotate(**_SUMS)}
    missing = {row["key"]: row["n"] for row in unknown.annotate(n=Count("pk"))}
    empty = {"jobs": 0, "requests": 0, "total": None}
    result = [
        CostRow(
            label=label(key),
            jobs=paid.get(key, empty)["jobs"],
            requests=paid.get(key, empty)["requests"],
            cost=paid.get(key, empty)["total"] or ZERO,
            unknown=missing.get(key, 0),
        )
        for key in paid.keys() | missing.keys()
    ]
    return sorted(result, key=lambda row: (-row.cost, row.label))


def _user_labels(charges: QuerySet[Charge], unknown: QuerySet[GenerationRequest]) -> dict[int, str]:
    from django.contrib.auth import get_user_model

    ids = set(charges.values_list("user", flat=True))
    ids |= set(unknown.values_list("requested_by", flat=True))
    users = get_user_model().objects.filter(pk__in=ids - {None})
    return {user.pk: user.get_username() for user in users}
