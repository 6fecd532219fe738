"""What each generation cost, totals, and the daily budgets checked before work is sent.

A request's ``cost`` is what all its paid attempts cost together: the amount ModelsLab
reported in its answer (``cost_source="provider"``), else the ``PRICES`` setting's price
per image times the images stored (``"price_table"``), else unknown (``None``). Reusing an
identical request's images from the cache costs 0 (and adds no source).

Budgets count a day in the project's ``TIME_ZONE``: the recorded cost of requests that
finished today, plus the estimate (price x samples) of requests still queued or running.
:func:`check_budget` is called by :func:`django_modelslab.pipeline.submit` and
:func:`~django_modelslab.pipeline.regenerate` before anything is queued or sent.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime
from datetime import time as clock
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, NullIf
from django.utils import timezone

from .amounts import QUANTUM, format_amount, parse_amount
from .client import ProviderResponse, reported_cost
from .conf import get_setting
from .exceptions import BudgetExceeded
from .models import GeneratedImage, GenerationRequest

__all__ = [
    "CACHED",
    "Charge",
    "CostRow",
    "add",
    "charge_for",
    "check_budget",
    "committed",
    "day_start",
    "estimate",
    "price_of",
    "record_unpaid_job",
    "spent_today",
    "totals",
]

Status = GenerationRequest.Status
Source = GenerationRequest.CostSource
ZERO = Decimal(0)
IN_FLIGHT = (Status.QUEUED, Status.PROCESSING)


@dataclass(frozen=True)
class Charge:
    """What one attempt cost: ``amount`` None when unknown; ``source`` a CostSource or ""."""

    amount: Decimal | None
    source: str = ""


#: A result reused from the cache: no API call, nothing to pay.
CACHED = Charge(ZERO)


# --- recording ----------------------------------------------------------------------------


def price_of(model_id: str) -> Decimal | None:
    """``PRICES[model_id]``, else ``PRICES["*"]``, else None (also for an invalid value)."""
    prices = get_setting("PRICES")
    if not isinstance(prices, dict):
        return None
    model_id = model_id or get_setting("DEFAULT_MODEL")
    value = prices.get(model_id, prices.get("*"))
    return parse_amount(value)


def charge_for(request: GenerationRequest, response: ProviderResponse | None) -> Charge:
    """The cost of the attempt whose outputs ``request.output_urls`` holds.

    ``response`` None means the outputs came from an earlier attempt's answer (its copy
    failed): that answer is read back from ``provider_responses``.
    """
    reported = response.cost if response is not None else _last_reported_cost(request)
    if reported is not None:
        return Charge(reported, Source.PROVIDER)
    price = price_of(request.produced_by or request.model_id)
    if price is None:
        return Charge(None)
    return Charge(price * len(request.output_urls), Source.PRICE_TABLE)


def add(request: GenerationRequest, charge: Charge) -> None:
    """Add ``charge`` to ``request.cost`` (unsaved); an unknown amount changes nothing."""
    if charge.amount is None:
        return
    total = (request.cost or ZERO) + charge.amount
    request.cost = total.quantize(QUANTUM)
    if charge.source:
        request.cost_source = charge.source


def record_unpaid_job(request: GenerationRequest, reported: Decimal | None) -> None:
    """Add what ModelsLab reported for a job that stored nothing (safety refusal, failure).

    Nothing without a reported cost: a refused or failed job is not priced from PRICES.
    Once per job: the job (its ``track_id``) is dropped from the row in the same update, so a
    webhook and a poller that both see the answer charge it once.
    """
    if reported is None or not request.track_id:
        return
    with transaction.atomic():
        dropped = GenerationRequest.objects.filter(
            pk=request.pk, attempts=request.attempts, track_id=request.track_id
        ).update(track_id="", provider_id="")
        if not dropped:
            return
        add(request, Charge(reported, Source.PROVIDER))
        request.save(update_fields=["cost", "cost_source", "updated_at"])


def _last_reported_cost(request: GenerationRequest) -> Decimal | None:
    for entry in reversed(request.provider_responses or []):
        body = entry.get("body") if isinstance(entry, dict) else None
        if isinstance(body, dict) and str(body.get("status", "")).lower() == "success":
            return reported_cost(body)
    return None


# --- budgets ------------------------------------------------------------------------------


def day_start(now: datetime | None = None) -> datetime:
    """Midnight that began today, in the project's ``TIME_ZONE``."""
    now = now or timezone.now()
    if not settings.USE_TZ:
        return datetime.combine(now.date(), clock.min)
    zone = timezone.get_default_timezone()
    return datetime.combine(timezone.localtime(now, zone).date(), clock.min, tzinfo=zone)


def spent_today(user: Any = None, *, now: datetime | None = None) -> Decimal:
    """The recorded cost of requests that finished today (``user``'s only, when given)."""
    requests = GenerationRequest.objects.filter(finished_at__gte=day_start(now))
    if user is not None:
        requests = requests.filter(requested_by=user)
    return requests.aggregate(total=Sum("cost"))["total"] or ZERO


def committed(user: Any = None, *, exclude: int | None = None) -> Decimal:
    """The estimated cost of requests queued or running (``user``'s only, when given)."""
    requests = GenerationRequest.objects.filter(status__in=IN_FLIGHT).exclude(pk=exclude)
    if user is not None:
        requests = requests.filter(requested_by=user)
    rows = requests.order_by().values("model_id").annotate(samples=Sum("samples"))
    return sum((_estimate(row["model_id"], row["samples"]) for row in rows), ZERO)


def estimate(request: GenerationRequest) -> Decimal:
    """What a new job for ``request`` should cost: price x samples (0 without a price)."""
    return _estimate(request.model_id, request.samples)


def _estimate(model_id: str, samples: int | None) -> Decimal:
    price = price_of(model_id)
    return ZERO if price is None else price * (samples or 1)


def check_budget(request: GenerationRequest, *, regenerating: bool = False) -> None:
    """Raise :class:`BudgetExceeded` if a new job for ``request`` would break a daily budget.

    The per-user budget counts against ``request.requested_by``. Work that starts no new
    paid job (a cache hit, or a retry that continues an existing job) is never refused.
    Refused: spending so far plus this request's estimate exceeds the budget, or spending
    has already reached it.
    """
    per_user = _budget("DAILY_BUDGET_PER_USER")
    overall = _budget("DAILY_BUDGET")
    if per_user is None and overall is None:
        return
    if not regenerating and _starts_no_job(request):
        return
    cost = estimate(request)
    user = request.requested_by if request.requested_by_id else None
    if per_user is not None and user is not None:
        spent = spent_today(user) + committed(user, exclude=request.pk)
        _refuse_over(per_user, spent, cost, scope="user", who=f"for {user.get_username()}")
    if overall is not None:
        spent = spent_today() + committed(exclude=request.pk)
        _refuse_over(overall, spent, cost, scope="global", who="for everyone")


def _budget(name: str) -> Decimal | None:
    value = get_setting(name)
    return None if value is None else parse_amount(value)


def _starts_no_job(request: GenerationRequest) -> bool:
    """A retry that polls or copies an existing job, or a request the cache will serve."""
    alive = request.outputs_expire_at is not None and timezone.now() < request.outputs_expire_at
    if request.provider_id or (request.output_urls and alive):
        return True
    if not (request.use_cache and request.seed is not None and get_setting("CACHE")):
        return False
    probe = copy.copy(request)  # unsaved: only its cache key is wanted
    probe.model_id = probe.model_id or get_setting("DEFAULT_MODEL")
    return (
        GenerationRequest.objects.filter(
            cache_key=probe.compute_cache_key(),
            status=Status.SUCCEEDED,
            images__superseded=False,
        )
        .exclude(pk=request.pk)
        .exists()
    )


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


#: Succeeded requests whose cost is not known (no reported cost, no price).
_UNKNOWN = Count("pk", filter=Q(cost__isnull=True, status=Status.SUCCEEDED))


@dataclass(frozen=True)
class CostRow:
    """One line of the totals: a user or a model, its requests, images and cost."""

    label: str
    requests: int
    images: int
    cost: Decimal
    unknown: int  # succeeded requests whose cost is not known

    @property
    def cost_label(self) -> str:
        return format_amount(self.cost)


def totals(requests: QuerySet[GenerationRequest]) -> dict[str, list[CostRow]]:
    """Totals of ``requests`` grouped ``by_user`` and ``by_model`` (the model that produced
    the images, else the one asked for), largest cost first, plus ``all`` (one row)."""
    model = Coalesce(NullIf(F("produced_by"), Value("")), NullIf(F("model_id"), Value("")))
    requests = requests.order_by().annotate(cost_model=model)
    users = _user_labels(requests)
    return {
        "by_user": _grouped(requests, "requested_by", lambda key: users.get(key, "(nobody)")),
        "by_model": _grouped(requests, "cost_model", lambda key: key or "(default model)"),
        "all": [_total(requests)],
    }


def _total(requests: QuerySet[GenerationRequest]) -> CostRow:
    row = requests.aggregate(n=Count("pk"), total=Sum("cost"), unknown=_UNKNOWN)
    return CostRow(
        label="Total",
        requests=row["n"],
        images=_image_counts(requests, None)[None],
        cost=row["total"] or ZERO,
        unknown=row["unknown"],
    )


def _grouped(requests: QuerySet[GenerationRequest], key: str, label: Any) -> list[CostRow]:
    rows = requests.values(key).annotate(n=Count("pk"), total=Sum("cost"), unknown=_UNKNOWN)
    images = _image_counts(requests, key)
    result = [
        CostRow(
            label=label(row[key]),
            requests=row["n"],
            images=images.get(row[key], 0),
            cost=row["total"] or ZERO,
            unknown=row["unknown"],
        )
        for row in rows
    ]
    return sorted(result, key=lambda row: (-row.cost, row.label))


def _image_counts(requests: QuerySet[GenerationRequest], key: str | None) -> dict[Any, int]:
    """Images stored by these requests (superseded ones too: they were paid for)."""
    ids = requests.values("pk")
    images = GeneratedImage.objects.filter(request__in=ids).order_by()
    if key is None:
        return {None: images.count()}
    if key == "cost_model":
        model = Coalesce(
            NullIf(F("request__produced_by"), Value("")),
            NullIf(F("request__model_id"), Value("")),
        )
        grouped = images.annotate(group=model).values("group")
    else:
        grouped = images.values(group=F(f"request__{key}"))
    return {row["group"]: row["n"] for row in grouped.annotate(n=Count("pk"))}


def _user_labels(requests: QuerySet[GenerationRequest]) -> dict[int, str]:
    from django.contrib.auth import get_user_model

    ids = {pk for pk in requests.values_list("requested_by", flat=True) if pk is not None}
    return {user.pk: user.get_username() for user in get_user_model().objects.filter(pk__in=ids)}
