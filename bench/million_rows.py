"""List pages at scale: 1,000,000 requests and 2,000,000 images in PostgreSQL.

Fills a PostgreSQL database with server-side bulk inserts (``INSERT ... SELECT`` over
``generate_series``: statuses, kinds, models, users and dates spread over three years), then
times each list page REPEATS times through Django's test client: the admin changelists of
requests and images (each list filter), the REST lists ``generations/`` and ``images/``
(each filter, as a superuser and as a normal user who sees only their own) and
``regenerate_images --dry-run --limit 50`` with each selection filter. Target: p95 <= 100 ms
per page; prints p50/p95 per view and EXPLAIN for the queries the migration's indexes serve,
and exits 1 on a miss.

Usage: python bench/million_rows.py [--requests N] [--repeat R] [--target-ms MS]
Without MODELSLAB_TEST_POSTGRES it runs itself beside a throwaway cluster (tests/pgcluster.py);
with it (a cluster you keep), the data is made once and reused by later runs.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import beside_a_cluster, create_database  # noqa: E402

DB_NAME = "modelslab_bench"
USERS = 2000
MODELS = [
    "flux",
    "sdxl",
    "realistic-vision-v6",
    "juggernaut-xl",
    "dreamshaper-8",
    "anything-v5",
    "midjourney-v4",
    "deliberate-v3",
    "sd-1.5",
    "playground-v2",
    "kandinsky-3",
    "rare-model",
]
#: Prompt searches: in the prompts of about 300 requests in a million ("... request 4242",
#: "... request 14242", ...), and of one request in ten ("a red lighthouse at dusk ...").
RARE_WORD, COMMON_WORD = "4242", "lighthouse"


def options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--target-ms", type=float, default=100.0)
    return parser.parse_args()


def fill(requests: int) -> None:
    """Users, then ``requests`` requests and about two images each, made by the server."""
    from django.db import connection, transaction

    from django_modelslab.models import GeneratedImage, GenerationRequest

    if GenerationRequest.objects.exists():
        return
    started = time.perf_counter()
    with transaction.atomic():  # all or nothing: a failed fill leaves an empty database
        insert(requests)
    with connection.cursor() as cursor:
        for model in (GenerationRequest, GeneratedImage):
            cursor.execute(f"VACUUM ANALYZE {model._meta.db_table}")
    print(f"filled in {time.perf_counter() - started:.0f} s (at {time.strftime('%H:%M:%S')})")


def insert(requests: int) -> None:
    from django.contrib.auth import get_user_model
    from django.db import connection

    from django_modelslab.models import GeneratedImage, GenerationRequest

    User = get_user_model()
    User.objects.create_superuser("admin", "admin@example.com", "x")
    User.objects.bulk_create(
        User(username=f"user{n}", is_active=True, password="!") for n in range(USERS)
    )
    first_user = User.objects.filter(username="user0").get().pk
    models = "(ARRAY[" + ",".join(f"'{m}'" for m in MODELS) + "])"
    # Request i was created at a steady pace over three years, up to now (ids follow time).
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")  # no FK triggers while filling
        cursor.execute("SET synchronous_commit = off")
        cursor.execute(
            f"""
            INSERT INTO {GenerationRequest._meta.db_table} (
                kind, prompt, negative_prompt, model_id, width, height, samples, steps,
                guidance, seed, extra, api_version, init_image, mask_image, fallback_models,
                requested_by_id, status, error, attempts, provider_id, track_id, output_urls,
                provider_responses, use_cache, bypass_cache, produced_by, model_attempts,
                cost, cost_source, cache_key, regeneration_batch, created_at, updated_at,
                submitted_at, started_at, finished_at)
            SELECT
                CASE WHEN r.k < 0.85 THEN 'text2img' WHEN r.k < 0.93 THEN 'img2img'
                     WHEN r.k < 0.97 THEN 'inpaint' ELSE 'upscale' END,
                'a ' || (ARRAY['red','misty','golden','quiet','neon','ancient','tiny','vast'])
                    [1 + i % 8] || ' ' || (ARRAY['lighthouse','forest','city','cat','robot',
                    'castle','river','portrait','mountain','garden'])[1 + (i / 8) % 10]
                    || ' at dusk, detailed, 35mm, request ' || i,
                '', {models}[1 + floor(power(r.m, 2) * {len(MODELS)})::int],
                512, 512,
                CASE WHEN r.n < 0.25 THEN 1 WHEN r.n < 0.55 THEN 2 WHEN r.n < 0.8 THEN 3
                     ELSE 4 END,
                30, 7.5, (i::bigint * 7919) % 4294967295, '{{}}', CASE WHEN r.v < 0.9 THEN 'v6'
                ELSE 'v7' END, '', '', '[]',
                {first_user} + floor(power(r.u, 3) * {USERS})::int,
                CASE WHEN i > {requests} - 2000 AND r.s < 0.05 THEN 'pending'
                     WHEN i > {requests} - 2000 AND r.s < 0.10 THEN 'queued'
                     WHEN i > {requests} - 2000 AND r.s < 0.15 THEN 'processing'
                     WHEN r.s < 0.88 THEN 'succeeded' WHEN r.s < 0.96 THEN 'failed'
                     ELSE 'refused' END,
                '', 1, 'p' || i, 't' || i, '[]', '[]', true, false, '', '[]',
                0.0047, 'provider', md5(i::text), '', t.at, t.at + interval '20 seconds',
                t.at, t.at + interval '1 second', t.at + interval '20 seconds'
            FROM generate_series(1, {requests}) AS i,
                LATERAL (SELECT random() AS k, random() AS m, random() AS n, random() AS v,
                                random() AS u, random() AS s, i AS j) AS r,
                LATERAL (SELECT now() - interval '3 years' * (1 - r.j::float / {requests})
                    AS at) AS t
            """
        )
        # The succeeded requests' outputs: position 0 .. samples - 1 (about 2 per request).
        cursor.execute(
            f"""
            INSERT INTO {GeneratedImage._meta.db_table} (
                request_id, image, thumbnail, sha256, width, height, format, bytes,
                source_url, seed, attempt, position, superseded, chosen, nsfw, alt_text,
                created_at)
            SELECT g.id, 'modelslab/' || h.sha || '.png', 'modelslab/' || h.sha || '.webp',
                h.sha, 512, 512, CASE WHEN g.id % 5 = 0 THEN 'WEBP' ELSE 'PNG' END,
                300000 + g.id % 90000, '', g.seed, 1, p, g.id % 20 = 0 AND p = 1,
                p = 0 AND g.id % 3 = 0, CASE WHEN g.id % 97 = 0 THEN true
                    WHEN g.id % 2 = 0 THEN false END,
                left(g.prompt, 120), g.finished_at
            FROM {GenerationRequest._meta.db_table} g,
                generate_series(0, g.samples - 1) AS p,
                LATERAL (SELECT md5(g.id || ':' || p) || md5(p || ':' || g.id) AS sha) AS h
            WHERE g.status = 'succeeded'
            """
        )
        cursor.execute("SET session_replication_role = origin")


#: A query slower than this (s) during a timed run is printed under its view, with the time.
SLOW_QUERY = 0.05


def timed(call: Callable[[], object], repeat: int) -> tuple[float, float, float, float, list[str]]:
    """p50 and p95 of the whole call, p95 of its time in the database, p50 of this
    process's CPU time (ms: Django's own work, whatever the machine's load), and the slow
    queries met (when, how long, what)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    call()  # warm: the first run pays for caches and compiled templates
    times, in_db, cpu, slow = [], [], [], []
    for run in range(repeat):
        with CaptureQueriesContext(connection) as queries:
            started, cpu_started = time.perf_counter(), time.process_time()
            call()
            times.append((time.perf_counter() - started) * 1000)
            cpu.append((time.process_time() - cpu_started) * 1000)
        in_db.append(sum(float(q["time"]) for q in queries.captured_queries) * 1000)
        slow += [
            f"run {run + 1} at {time.strftime('%H:%M:%S')}: {float(q['time']) * 1000:.0f} ms "
            f"{q['sql'][:140]}"
            for q in queries.captured_queries
            if float(q["time"]) > SLOW_QUERY
        ]
    p50, p95 = percentile(times, 50), percentile(times, 95)
    return p50, p95, percentile(in_db, 95), percentile(cpu, 50), slow


def percentile(values: list[float], p: int) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(len(ordered) * p / 100) - 1)]


def page(client, url: str) -> Callable[[], object]:
    def call() -> object:
        response = client.get(url)
        if response.status_code != 200:
            raise SystemExit(f"{url}: HTTP {response.status_code}")
        return response

    return call


def dry_run(*args: str) -> Callable[[], object]:
    from django.core.management import call_command

    def call() -> object:
        call_command("regenerate_images", "--dry-run", "--limit", "50", *args, stdout=io.StringIO())
        return None

    return call


def explain(label: str, queryset) -> None:
    plan = queryset.explain(analyze=True, costs=False, timing=False, summary=True)
    print(f"\n  {label}\n" + "\n".join("    " + line for line in plan.splitlines()))


def main() -> int:
    args = options()
    status = beside_a_cluster()  # as the PostgreSQL test pass runs
    if status is not None:
        return status
    create_database(DB_NAME, fresh=False)
    os.environ["MODELSLAB_TEST_DB_NAME"] = DB_NAME
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db.models import Count
    from django.test import Client
    from django.test.utils import setup_test_environment

    from django_modelslab.models import GeneratedImage, GenerationRequest

    setup_test_environment()
    settings.MODELSLAB = {**settings.MODELSLAB, "API_ESTIMATED_COUNT": True}
    call_command("migrate", verbosity=0)
    fill(args.requests)
    requests, images = (
        model.objects.order_by().count() for model in (GenerationRequest, GeneratedImage)
    )
    print(
        f"PostgreSQL: {requests:,} requests, {images:,} images (target p95 <= {args.target_ms} ms)"
    )

    User = get_user_model()
    admin, client = Client(), Client()
    admin.force_login(User.objects.get(username="admin"))
    # A normal user with a typical history (a few hundred requests), not the busiest; in a
    # small database (--requests), the busiest.
    users = User.objects.filter(is_superuser=False).annotate(n=Count("modelslab_requests"))
    owner = users.filter(n__gte=200).order_by("n").first() or users.order_by("-n").first()
    client.force_login(owner)
    some_request = GenerationRequest.objects.filter(status="succeeded").order_by("-pk")[500].pk
    week = (GenerationRequest.objects.order_by("-created_at")[0].created_at).date()
    since = f"{week.replace(day=1).isoformat()}"
    since_admin = urlencode({"created_at__gte": f"{since} 00:00:00+00:00"})
    a_year = week.year - 1
    rare, popular = "rare-model", MODELS[0]
    req, img, api = (
        "/admin/django_modelslab/generationrequest/",
        "/admin/django_modelslab/generatedimage/",
        "/api/modelslab/",
    )
    views: list[tuple[str, Callable[[], object]]] = [
        ("admin requests", page(admin, req)),
        ("admin requests ?status=failed", page(admin, req + "?status__exact=failed")),
        ("admin requests ?status=processing", page(admin, req + "?status__exact=processing")),
        ("admin requests ?kind=upscale", page(admin, req + "?kind__exact=upscale")),
        ("admin requests ?api_version=v7", page(admin, req + "?api_version__exact=v7")),
        (f"admin requests ?model_id={popular}", page(admin, req + f"?model_id={popular}")),
        (f"admin requests ?model_id={rare}", page(admin, req + f"?model_id={rare}")),
        ("admin requests ?created_at (this month)", page(admin, req + f"?{since_admin}")),
        (
            f"admin requests ?created_at__year={a_year}",
            page(admin, req + f"?created_at__year={a_year}"),
        ),
        ("admin requests ?p=200", page(admin, req + "?p=200")),
        (f"admin requests ?q={RARE_WORD} (rare)", page(admin, req + f"?q={RARE_WORD}")),
        (f"admin requests ?q={COMMON_WORD} (common)", page(admin, req + f"?q={COMMON_WORD}")),
        ("admin images", page(admin, img)),
        (
            f"admin images ?request__model_id={rare}",
            page(admin, img + f"?request__model_id={rare}"),
        ),
        ("admin images ?format=WEBP", page(admin, img + "?format=WEBP")),
        ("admin images ?created_at (this month)", page(admin, img + f"?{since_admin}")),
        ("admin images ?chosen=1", page(admin, img + "?chosen__exact=1")),
        ("admin images ?superseded=1", page(admin, img + "?superseded__exact=1")),
        ("admin images ?nsfw=1", page(admin, img + "?nsfw__exact=1")),
        (f"admin images ?q={RARE_WORD} (rare)", page(admin, img + f"?q={RARE_WORD}")),
        (f"admin images ?q={COMMON_WORD} (common)", page(admin, img + f"?q={COMMON_WORD}")),
        ("api generations (superuser)", page(admin, api + "generations/")),
        ("api generations ?status=failed", page(admin, api + "generations/?status=failed")),
        ("api generations ?status=queued", page(admin, api + "generations/?status=queued")),
        (f"api generations ?model={rare}", page(admin, api + f"generations/?model={rare}")),
        (
            "api generations ?created_after",
            page(admin, api + f"generations/?created_after={since}"),
        ),
        (
            "api generations ?created_before",
            page(admin, api + f"generations/?created_before={a_year}-06-01"),
        ),
        ("api generations ?page=100", page(admin, api + "generations/?page=100")),
        ("api generations (normal user)", page(client, api + "generations/")),
        ("api generations ?status=failed (user)", page(client, api + "generations/?status=failed")),
        ("api images (superuser)", page(admin, api + "images/")),
        ("api images ?request=", page(admin, api + f"images/?request={some_request}")),
        ("api images ?chosen=true", page(admin, api + "images/?chosen=true")),
        ("api images ?superseded=true", page(admin, api + "images/?superseded=true")),
        ("api images (normal user)", page(client, api + "images/")),
        ("api images ?chosen=true (user)", page(client, api + "images/?chosen=true")),
        ("regenerate_images --dry-run", dry_run()),
        ("  --status failed", dry_run("--status", "failed")),
        (f"  --model {rare}", dry_run("--model", rare)),
        ("  --kind upscale", dry_run("--kind", "upscale")),
        ("  --created-after", dry_run("--created-after", since)),
        ("  --created-before", dry_run("--created-before", f"{a_year}-06-01")),
        (f"  --prompt-contains {RARE_WORD} (rare)", dry_run("--prompt-contains", RARE_WORD)),
        (
            f"  --prompt-contains {COMMON_WORD} (common)",
            dry_run("--prompt-contains", COMMON_WORD),
        ),
        ("  --stale", dry_run("--stale")),
    ]
    misses = []
    load = os.getloadavg()[0]
    print(
        f"\nload average {load:.1f} on {os.cpu_count()} cores; db = time in SQL (p95); "
        "cpu = this process's CPU time (p50)"
    )
    print(f"{'view':<48} {'p50 ms':>8} {'p95 ms':>8} {'db ms':>8} {'cpu ms':>8}")
    for label, call in views:
        p50, p95, db, cpu, slow = timed(call, args.repeat)
        flag = "" if p95 <= args.target_ms else "  MISS"
        if flag:
            misses.append(label)
        print(f"{label:<48} {p50:8.1f} {p95:8.1f} {db:8.1f} {cpu:8.1f}{flag}")
        for line in slow[:3]:
            print(f"    slow query, {line}")
        if len(slow) > 3:
            print(f"    ... and {len(slow) - 3} more slow queries")

    ones, fives, _fifteens = os.getloadavg()
    print(f"\nload average after the runs: {ones:.1f} (1 min), {fives:.1f} (5 min)")
    print("\nPlans the migration's indexes serve:")
    requests_qs = GenerationRequest.objects.order_by("-created_at", "-pk")
    explain(
        "requests by status, newest first (modelslab_req_status_new)",
        requests_qs.filter(status="failed")[:100],
    )
    explain(
        "requests by model, newest first (modelslab_req_model_new)",
        requests_qs.filter(model_id=rare)[:100],
    )
    explain(
        "a user's requests, newest first (modelslab_req_user_day)",
        requests_qs.filter(requested_by=owner)[:20],
    )
    explain(
        "images newest first (modelslab_img_new)",
        GeneratedImage.objects.order_by("-created_at", "-pk")[:50],
    )
    explain(
        "a user's images, newest first",
        (
            GeneratedImage.objects.filter(request__requested_by=owner).order_by(
                "-created_at", "-pk"
            )[:20]
        ),
    )
    for word, why in ((RARE_WORD, "rare: trigram index"), (COMMON_WORD, "common: newest first")):
        explain(
            f"requests whose prompt contains {word!r}, oldest first ({why})",
            GenerationRequest.objects.filter(prompt__icontains=word).order_by("created_at", "pk")[
                :50
            ],
        )
    if misses:
        print(f"\nMISSED p95 <= {args.target_ms} ms: {', '.join(misses)}")
        return 1
    print(f"\nAll views p95 <= {args.target_ms} ms.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
