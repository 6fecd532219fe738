"""Lists on large tables (docs/scaling.md): no full-table COUNT(*) and no DISTINCT over every
row on the admin's changelists, bounded queries on the API's lists, estimated counts."""

from __future__ import annotations

import importlib

import pytest
from django.core.management import call_command
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


# --- prompt search: the trigram indexes of migration 0012 (PostgreSQL) ------------------------

TRIGRAM_INDEXES = ("modelslab_req_prompt_trgm", "modelslab_req_negative_trgm")


def migration_0012():
    return importlib.import_module("django_modelslab.migrations.0012_prompt_search_indexes")


def trigram_indexes() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = %s AND indexname LIKE %s "
            "ORDER BY indexname",
            [GenerationRequest._meta.db_table, "%trgm"],
        )
        return [row[0] for row in cursor.fetchall()]


def plan(queryset, *off: str) -> str:
    """EXPLAIN of the SQL Django sends, with sequential scans (and the plans named in
    ``off``) priced out: a test table is small enough that reading it whole is the
    planner's choice."""
    settings = ("enable_seqscan", *off)
    with connection.cursor() as cursor:
        for setting in settings:
            cursor.execute(f"SET {setting} = off")
        try:
            return queryset.explain()
        finally:
            for setting in settings:
                cursor.execute(f"RESET {setting}")


@postgres_only
def test_the_migration_made_trigram_indexes_that_prompt_search_uses():
    assert trigram_indexes() == sorted(TRIGRAM_INDEXES)
    rows(30)
    analyze()
    # --prompt-contains: UPPER("prompt"::text) LIKE UPPER('%...%'), any order.
    searched = GenerationRequest.objects.filter(prompt__icontains="row 1")
    assert "modelslab_req_prompt_trgm" in plan(searched.order_by())
    # A page in date order: on a large table, a rare word's rows by the trigrams then a
    # top-N sort; a common word's by reading the date index until the page is full (the
    # bench's plans at a million rows). Here, with the date index priced out:
    page = searched.order_by("created_at", "pk")[:50]
    assert "modelslab_req_prompt_trgm" in plan(page, "enable_indexscan")


@postgres_only
def test_the_admin_search_reads_indexes_only(rf, editor):
    """Prompts by trigrams, job and track ids by their B-trees: no branch of the OR reads
    the table."""
    from django.contrib import admin

    rows(30)
    analyze()
    model_admin = admin.site._registry[GenerationRequest]
    request = rf.get(CHANGELIST, {"q": "row"})
    request.user = editor
    found, _duplicates = model_admin.get_search_results(
        request, GenerationRequest.objects.order_by(), "row"
    )
    explained = plan(found)
    for index in (*TRIGRAM_INDEXES, "modelslab_req_provider_id", "modelslab_req_track_id"):
        assert index in explained
    assert "Seq Scan" not in explained


def test_the_admin_finds_a_request_by_its_whole_job_or_track_id(client, editor):
    request = new_request(prompt="a heron", provider_id="98765", track_id="track-abc")
    new_request(prompt="a crane", provider_id="987650", track_id="track-abcd")
    for term in ("98765", "track-abc"):
        page = client.get(CHANGELIST, {"q": term})
        assert [row.pk for row in page.context["cl"].result_list] == [request.pk]


@postgres_only
def test_the_migration_is_reversible():
    call_command("migrate", "django_modelslab", "0011", verbosity=0)
    try:
        assert trigram_indexes() == []
    finally:
        call_command("migrate", "django_modelslab", verbosity=0)
    assert trigram_indexes() == sorted(TRIGRAM_INDEXES)


@postgres_only
def test_without_the_privilege_to_create_pg_trgm_the_migration_warns_and_goes_on(caplog, capsys):
    """A role without CREATE on the database cannot create the extension: the migration
    says what to run by hand, creates nothing, and search still works (by reading rows)."""
    role = "modelslab_no_create"
    with connection.cursor() as cursor:
        cursor.execute("DROP EXTENSION pg_trgm CASCADE")  # and the indexes with it
        cursor.execute(f"CREATE ROLE {role}")
        cursor.execute(f"SET ROLE {role}")
    try:
        with connection.schema_editor() as editor:
            migration_0012().create_indexes(None, editor)
        with connection.cursor() as cursor:
            cursor.execute("RESET ROLE")
        assert trigram_indexes() == []
        assert "CREATE EXTENSION IF NOT EXISTS pg_trgm;" in caplog.text
        assert "modelslab_req_prompt_trgm" in capsys.readouterr().err
        new_request(prompt="a lighthouse at dusk")
        assert GenerationRequest.objects.filter(prompt__icontains="LIGHTHOUSE").count() == 1
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET ROLE")
            cursor.execute(f"DROP ROLE IF EXISTS {role}")
        with connection.schema_editor() as editor:
            migration_0012().create_indexes(None, editor)
    assert trigram_indexes() == sorted(TRIGRAM_INDEXES)


def test_the_migration_does_nothing_on_other_databases():
    if connection.vendor == "postgresql":
        pytest.skip("the SQLite pass checks this")
    with connection.schema_editor() as editor:
        migration_0012().create_indexes(None, editor)
        migration_0012().drop_indexes(None, editor)
    assert "trgm" not in " ".join(
        connection.introspection.get_constraints(
            connection.cursor(), GenerationRequest._meta.db_table
        )
    )


@pytest.mark.parametrize("url", [CHANGELIST, IMAGES])
def test_a_deep_admin_page_skips_its_offset_over_the_keys_only(client, editor, monkeypatch, url):
    """Past KEYS_FIRST_OFFSET, the offset is skipped by ``SELECT id ... OFFSET n`` (an
    index-only scan on PostgreSQL), then the page's rows are read by key: the same rows in
    the same order."""
    from django.contrib import admin

    from django_modelslab import counts

    for model in (GenerationRequest, GeneratedImage):
        monkeypatch.setattr(admin.site._registry[model], "list_per_page", 5)
    rows(30)
    shown = [row.pk for row in client.get(url, {"p": 3}).context["cl"].result_list]
    monkeypatch.setattr(counts, "KEYS_FIRST_OFFSET", 10)
    with CaptureQueriesContext(connection) as queries:
        page = client.get(url, {"p": 3})
    assert [row.pk for row in page.context["cl"].result_list] == shown
    (keys,) = [q["sql"] for q in queries.captured_queries if "OFFSET" in q["sql"]]
    assert keys.startswith(f'SELECT "{page.context["cl"].model._meta.db_table}"."id" AS "pk" FROM')
