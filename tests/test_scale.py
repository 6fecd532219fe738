"""Lists on large tables (docs/scaling.md): no full-table COUNT(*) and no DISTINCT over every
row on the admin's changelists, bounded queries on the API's lists, estimated counts."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_modelslab.models import GeneratedImage, GenerationRequest

from .helpers import CHANGELIST, api_client, api_url, configure, new_request

pytestmark = pytest.mark.django_db(transaction=True)

IMAGES = "/admin/django_modelslab/generatedimage/"
Status = GenerationRequest.Status
postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="runs in the PostgreSQL pass (make test-pg: python -m tests.pgcluster)",
)


def rows(count: int, owner=None) -> None:
    for n in range(count):
        request = new_request(
            prompt=f"row {n}", status=Status.SUCCEEDED, model_id=f"model-{n % 3}",
            requested_by=owner,
        )  # fmt: skip
        for position in range(2):
            GeneratedImage.objects.create(
                request=request, image=f"modelslab/{n}-{position}.png",
                thumbnail=f"modelslab/thumbs/{n}-{position}.webp",
                sha256=f"{n:032d}{position:032d}", width=256, height=256, format="PNG",
                bytes=10, position=position,
            )  # fmt: skip


def analyze() -> None:
    with connection.cursor() as cursor:
        for model in (GenerationRequest, GeneratedImage):
            cursor.execute(f"ANALYZE {model._meta.db_table}")


def counts(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]


@postgres_only
@pytest.mark.parametrize("url", [CHANGELIST, IMAGES, CHANGELIST + "?status__exact=succeeded"])
def test_the_admin_changelists_count_by_estimate_above_the_threshold(client, editor, settings, url):
    rows(30)
    analyze()
    configure(settings, ESTIMATED_COUNT_ABOVE=10)
    with CaptureQueriesContext(connection) as queries:
        page = client.get(url)
    assert page.status_code == 200
    assert counts(queries) == []  # neither the page's count nor the full count
    # The model filter reads the index, the format filter knows its choices, the date
    # hierarchy asks for the table's first and last date: nothing reads every row.
    assert not [q["sql"] for q in queries.captured_queries if "DISTINCT" in q["sql"].upper()]
    assert page.context["cl"].result_count > 10  # PostgreSQL's estimate
    assert page.context["cl"].full_result_count is None


@postgres_only
def test_below_the_threshold_the_admin_counts_exactly(client, editor):
    rows(3)
    analyze()
    with CaptureQueriesContext(connection) as queries:
        page = client.get(CHANGELIST)
    assert page.context["cl"].result_count == 3
    assert len(counts(queries)) == 1  # the filtered list's, not a second full-table one


def test_the_model_filter_lists_every_model_in_use(client, editor):
    rows(4)
    for url, parameter in ((CHANGELIST, "model_id"), (IMAGES, "request__model_id")):
        page = client.get(url).content.decode()
        for model in ("model-0", "model-1", "model-2"):
            assert f"?{parameter}={model}" in page


@pytest.mark.parametrize("url", [CHANGELIST, IMAGES])
def test_the_date_hierarchy_offers_the_periods_between_the_first_and_last_date(client, editor, url):
    rows(2)
    old = GenerationRequest.objects.order_by("pk").first()
    GenerationRequest.objects.filter(pk=old.pk).update(
        created_at=timezone.now().replace(year=2021, month=3, day=15)
    )
    GeneratedImage.objects.filter(request=old).update(
        created_at=timezone.now().replace(year=2021, month=3, day=15)
    )
    year = timezone.localtime().year
    page = client.get(url).content.decode()
    for shown in range(2021, year + 1):  # every year between, with rows or not
        assert f"created_at__year={shown}" in page
    months = client.get(f"{url}?created_at__year=2021").content.decode()
    assert [m for m in range(1, 13) if f"created_at__month={m}&" in months] == list(
        range(3, 13)
    )  # from the first row's month to the end of that year
    days = client.get(f"{url}?created_at__year=2021&created_at__month=3").content.decode()
    assert "created_at__day=15" in days and "created_at__day=31" in days


@postgres_only
@pytest.mark.parametrize("name", ["generation-list", "image-list"])
def test_the_api_counts_by_estimate_only_when_asked(settings, name):
    from django.contrib.auth.models import User

    owner = User.objects.create_user("owner")
    rows(30, owner)
    analyze()
    configure(settings, ESTIMATED_COUNT_ABOVE=10)
    client = api_client(owner)
    with CaptureQueriesContext(connection) as exact:
        assert client.get(api_url(name)).json()["count"] == (30 if "generation" in name else 60)
    assert len(counts(exact)) == 1

    configure(settings, ESTIMATED_COUNT_ABOVE=10, API_ESTIMATED_COUNT=True)
    with CaptureQueriesContext(connection) as estimated:
        answer = client.get(api_url(name)).json()
    assert counts(estimated) == []
    assert answer["count"] > 10 and len(answer["results"]) == 20


@pytest.mark.parametrize("name", ["generation-list", "image-list"])
def test_the_api_lists_run_a_constant_number_of_queries(django_assert_max_num_queries, name):
    from django.contrib.auth.models import User

    owner = User.objects.create_user("owner")
    client = api_client(owner)
    rows(3, owner)
    with CaptureQueriesContext(connection) as few:
        assert client.get(api_url(name)).status_code == 200
    rows(20, owner)
    with django_assert_max_num_queries(len(few)):
        assert len(client.get(api_url(name)).json()["results"]) == 20
