"""Webhooks: the emulator calls the live server; deliveries are authenticated, recorded,
confirmed through the fetch endpoint, and idempotent."""

from __future__ import annotations

import json
from datetime import timedelta
from urllib.parse import quote, quote_plus

import httpx
import pytest
from django.core.exceptions import SuspiciousOperation
from django.urls import reverse

from django_modelslab import pipeline, webhooks
from django_modelslab.exceptions import ModelsLabError, WebhookRejected
from django_modelslab.models import GenerationRequest, WebhookDelivery
from django_modelslab.testing import Fault
from django_modelslab.webhooks import MAX_RAW_BODY

from .conftest import TEST_API_KEY
from .helpers import OLD_WEBHOOK_SECRET, WEBHOOK_SECRET, configure, finished, new_request, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

PROMPT = "a harbour at night"
Status = GenerationRequest.Status
Outcome = WebhookDelivery.Outcome


def post(url_or_secret: str, body, client=None) -> httpx.Response:
    return httpx.post(url_or_secret, content=json.dumps(body), timeout=10)


def webhook_url(live_server, secret: str = WEBHOOK_SECRET) -> str:
    return live_server.url + reverse("modelslab:webhook", kwargs={"secret": secret})


def test_webhook_finishes_the_request_after_confirming_with_fetch(webhooks_on, emulator):
    request = new_request(PROMPT, seed=1)

    returned = pipeline.run(request.pk)

    assert returned.status == Status.PROCESSING  # the worker did not wait
    assert emulator.calls["fetch"] == 0
    done = wait_for(lambda: finished(request))
    assert done.status == Status.SUCCEEDED, done.error
    assert done.images.count() == 1
    assert emulator.calls["fetch"] >= 1  # the delivery was confirmed through the API
    assert emulator.calls["text2img"] == 1
    sent = emulator.requests[0][1]
    assert sent["webhook"] == webhook_url(webhooks_on)
    assert sent["track_id"] == done.track_id
    delivery = WebhookDelivery.objects.get()
    assert (delivery.valid, delivery.outcome, delivery.request) == (True, Outcome.ACCEPTED, done)
    # Neither the API key nor the webhook secret is kept anywhere readable.
    for text in (json.dumps(done.provider_responses), json.dumps(delivery.body)):
        assert WEBHOOK_SECRET not in text
        assert TEST_API_KEY not in text


def test_duplicate_deliveries_change_nothing(webhooks_on, emulator):
    emulator.webhook_duplicates = 2
    request = new_request(PROMPT, seed=2)

    pipeline.run(request.pk)
    wait_for(lambda: WebhookDelivery.objects.count() == 3)
    done = wait_for(lambda: finished(request))

    assert done.status == Status.SUCCEEDED
    assert done.images.count() == 1
    outcomes = sorted(WebhookDelivery.objects.values_list("outcome", flat=True))
    assert outcomes == [Outcome.ACCEPTED, Outcome.DUPLICATE, Outcome.DUPLICATE]
    assert all(d["status"] == 200 for d in emulator.webhook_deliveries)


def test_bad_secret_is_refused_and_recorded(webhooks_on):
    request = new_request(PROMPT)

    response = post(webhook_url(webhooks_on, "not-the-secret"), {"id": 1, "status": "success"})

    assert response.status_code == 400
    delivery = WebhookDelivery.objects.get()
    assert (delivery.valid, delivery.outcome) == (False, Outcome.REJECTED)
    request.refresh_from_db()
    assert request.status == Status.PENDING


def test_a_rejection_is_a_suspicious_operation_of_the_one_hierarchy(webhooks_on):
    """Django answers SuspiciousOperation with 400; ``except ModelsLabError`` catches it too."""
    with pytest.raises(WebhookRejected) as rejected:
        webhooks.receive("not-the-secret", b"{}")
    assert isinstance(rejected.value, ModelsLabError)
    assert isinstance(rejected.value, SuspiciousOperation)
    assert webhooks.WebhookRejected is WebhookRejected  # the old import path


def test_rotated_secret_is_still_accepted(webhooks_on):
    response = post(
        webhook_url(webhooks_on, OLD_WEBHOOK_SECRET), {"id": 5, "track_id": "none-such"}
    )
    assert response.status_code == 200
    assert response.json() == {"outcome": Outcome.UNKNOWN}


def test_unreadable_body_is_a_400(webhooks_on):
    response = httpx.post(webhook_url(webhooks_on), content=b"<html>", timeout=10)
    assert response.status_code == 400
    assert WebhookDelivery.objects.get().outcome == Outcome.REJECTED


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        # 200 KB: json.loads alone ends in a RecursionError.
        (b"[" * 100_000 + b"]" * 100_000, "nested more than 32 levels deep"),
        (b'{"id": 1, "meta": ' + b"[" * 40 + b"]" * 40 + b"}", "nested more than 32 levels deep"),
        # Neither can be stored in a JSON column (found by tests/test_api_schema.py).
        (b'{"id": NaN}', "NaN is not a JSON number"),
        (b'{"id": 1e999}', "inf is not a JSON number"),
        (b'{"id": 1, "message": "\\ud800"}', "a string holds a lone surrogate"),
    ],
)
def test_odd_json_is_a_400_and_recorded(webhooks_on, body, reason):
    response = httpx.post(webhook_url(webhooks_on), content=body, timeout=10)

    assert response.status_code == 400
    delivery = WebhookDelivery.objects.get()
    assert (delivery.valid, delivery.outcome) == (True, Outcome.REJECTED)
    assert delivery.error.startswith(f"Unreadable body: {reason}")


def test_body_over_djangos_limit_is_a_400_and_recorded(webhooks_on):
    body = json.dumps({"id": 1, "status": "success", "junk": "x" * (3 * 1024 * 1024)})

    response = httpx.post(webhook_url(webhooks_on), content=body, timeout=10)

    assert response.status_code == 400
    delivery = WebhookDelivery.objects.get()
    assert (delivery.valid, delivery.outcome) == (True, Outcome.REJECTED)
    assert delivery.error == (
        "Unreadable body: larger than DATA_UPLOAD_MAX_MEMORY_SIZE (2621440 bytes)"
    )


def test_forged_success_is_not_trusted(webhooks_on, emulator):
    """A delivery claiming success for a job still processing stores nothing."""
    emulator.add_fault("text2img", Fault.never_finish())
    request = new_request(PROMPT, seed=3)
    pipeline.run(request.pk)
    request.refresh_from_db()

    response = post(
        webhook_url(webhooks_on),
        {
            "status": "success",
            "id": request.provider_id,
            "track_id": request.track_id,
            "output": [f"{emulator.origin}/generations/forged-0.png"],
        },
    )

    assert response.status_code == 200
    request.refresh_from_db()
    assert request.status == Status.PROCESSING
    assert request.images.count() == 0
    assert emulator.calls["download"] == 0


def test_delivery_for_an_earlier_attempt_is_ignored(webhooks_on, emulator):
    request = new_request(PROMPT, seed=4)
    pipeline.run(request.pk)
    done = wait_for(lambda: finished(request))
    old_track = done.track_id
    pipeline.regenerate(done)
    current = wait_for(lambda: finished(request) and request.attempts == 2 and request)
    assert current.status == Status.SUCCEEDED
    images = current.images.count()

    response = post(webhook_url(webhooks_on), {"status": "success", "id": 1, "track_id": old_track})

    assert response.json() == {"outcome": Outcome.DUPLICATE}
    assert current.images.count() == images


def test_webhook_recovers_a_lost_generate_answer(webhooks_on, emulator, settings):
    """The generate call timed out (never resubmitted); the callback names the job."""
    configure(settings, TIMEOUT=0.3)
    emulator.add_fault("text2img", Fault.delay(0.6))
    request = new_request(PROMPT, seed=5)

    failed = pipeline.run(request.pk)
    assert failed.status == Status.FAILED
    assert "may have" in failed.error

    done = wait_for(lambda: finished(request, Status.SUCCEEDED))
    assert done.images.count() == 1
    assert emulator.calls["text2img"] == 1


@pytest.mark.parametrize("echoes_track_id", [True, False], ids=["track-id", "parameters"])
def test_webhook_recovers_a_lost_answer_when_the_fetched_job_echoes_the_request(
    webhooks_on, emulator, settings, echoes_track_id
):
    """The job a callback names is adopted once fetching it shows it is the request's: by
    its track id, or (echoing none) by its prompt, model and seed."""
    if not echoes_track_id:
        emulator.configure(answer_fields={"meta": {"track_id": None}})
    configure(settings, TIMEOUT=0.3)
    emulator.add_fault("text2img", Fault.delay(0.6))
    request = new_request(PROMPT, seed=6)

    assert pipeline.run(request.pk).status == Status.FAILED

    done = wait_for(lambda: finished(request, Status.SUCCEEDED))
    assert done.images.count() == 1
    assert done.provider_id == str(next(iter(emulator.jobs.values())).id)


@pytest.mark.parametrize("echoes_track_id", [True, False], ids=["track-id", "parameters"])
def test_a_delivery_cannot_give_a_lost_answer_request_another_requests_job(
    webhooks_on, emulator, settings, caplog, echoes_track_id
):
    """{"track_id": <bob's>, "id": <alice's job>} gives bob nothing: alice's job, fetched,
    echoes alice's track id (or alice's prompt), not bob's."""
    if not echoes_track_id:
        emulator.configure(answer_fields={"meta": {"track_id": None}})
    alice = new_request(prompt="alice's lighthouse", seed=7)
    pipeline.run(alice.pk)
    alice = wait_for(lambda: finished(alice, Status.SUCCEEDED))
    emulator.webhook_auto_finish = False  # bob's own job never calls back
    configure(settings, TIMEOUT=0.3)
    emulator.add_fault("text2img", Fault.delay(0.6))
    bob = new_request(prompt="bob's orchard", seed=8)
    assert pipeline.run(bob.pk).status == Status.FAILED  # the generate answer was lost
    bob.refresh_from_db()
    downloads = emulator.calls["download"]

    response = post(
        webhook_url(webhooks_on),
        {"status": "success", "track_id": bob.track_id, "id": alice.provider_id},
    )

    assert response.status_code == 200
    bob.refresh_from_db()
    assert (bob.status, bob.provider_id, bob.images.count()) == (Status.FAILED, "", 0)
    assert emulator.calls["download"] == downloads
    delivery = WebhookDelivery.objects.get(provider_id=alice.provider_id, request=bob)
    assert delivery.outcome == Outcome.UNKNOWN
    assert f"Job {alice.provider_id} is not adopted" in delivery.error
    assert f"Job {alice.provider_id} is not adopted" in caplog.text


def test_deliveries_with_an_unknown_secret_are_counted_not_stored_one_by_one(client, settings):
    """1,000 anonymous POSTs store one row a minute, whose count says how many came."""
    configure(settings, WEBHOOK_SECRETS=[WEBHOOK_SECRET])
    url = reverse("modelslab:webhook", kwargs={"secret": "not-the-secret"})
    earlier = WebhookDelivery.objects.create(outcome=Outcome.REJECTED, error="Unknown secret.")
    WebhookDelivery.objects.filter(pk=earlier.pk).update(
        received_at=earlier.received_at - timedelta(minutes=2)
    )

    for n in range(1000):
        body = json.dumps({"id": n, "padding": "x" * 1000})
        assert client.post(url, body, content_type="application/json").status_code == 400

    rows = WebhookDelivery.objects.exclude(pk=earlier.pk)
    assert 1 <= rows.count() <= 2  # one a minute (the loop may straddle a minute)
    assert sum(rows.values_list("count", flat=True)) == 1000
    assert {(row.valid, row.outcome, row.body) for row in rows} == {(False, Outcome.REJECTED, None)}
    assert WebhookDelivery.objects.get(pk=earlier.pk).count == 1  # an earlier minute's row


def test_the_webhook_is_open_under_login_required_middleware(client, settings):
    """Django's LoginRequiredMiddleware must not send ModelsLab to the login page."""
    settings.MIDDLEWARE = [
        *settings.MIDDLEWARE,
        "django.contrib.auth.middleware.LoginRequiredMiddleware",
    ]
    configure(settings, WEBHOOK_SECRETS=[WEBHOOK_SECRET])

    def deliver(secret: str) -> int:
        url = reverse("modelslab:webhook", kwargs={"secret": secret})
        body = json.dumps({"id": 1, "track_id": "none-such"})
        return client.post(url, body, content_type="application/json").status_code

    assert deliver(WEBHOOK_SECRET) == 200
    assert deliver("not-the-secret") == 400
    assert client.get("/media/none.png").status_code == 302  # a plain view: the middleware is on


def test_check_warns_when_webhooks_have_no_secret(settings):
    from django_modelslab.checks import check_settings

    configure(settings, PUBLIC_BASE_URL="https://example.com")
    assert [m.id for m in check_settings()] == ["django_modelslab.W002"]


def test_deliveries_are_listed_read_only_in_the_admin(webhooks_on, admin_client):
    post(webhook_url(webhooks_on, "not-the-secret"), {"id": 1})
    post(webhook_url(webhooks_on), {"id": 2, "track_id": "9999-1"})

    page = admin_client.get(reverse("admin:django_modelslab_webhookdelivery_changelist"))

    assert page.status_code == 200
    text = page.content.decode()
    assert "Rejected (bad secret or body)" in text
    assert "No matching request" in text
    assert WEBHOOK_SECRET not in text
    delivery = WebhookDelivery.objects.get(track_id="9999-1")
    detail = admin_client.get(
        reverse("admin:django_modelslab_webhookdelivery_change", args=[delivery.pk])
    ).content.decode()
    assert 'name="_save"' not in detail  # read-only


ODD_SECRET = 'rotated"secret\\with/odd+chars é-0123456789'  # JSON, repr and URLs escape it


def test_secrets_are_redacted_from_field_names_and_escaped_forms(webhooks_on, settings):
    configure(settings, WEBHOOK_SECRETS=[WEBHOOK_SECRET, ODD_SECRET])
    forms = {
        "url": f"https://site.test/modelslab/webhook/{quote(ODD_SECRET, safe='')}/",
        "form": f"secret={quote_plus(ODD_SECRET)}",
        "json": json.dumps({"secret": ODD_SECRET}),
        "repr": repr(ODD_SECRET.encode()),
    }
    body = {"id": 5, "track_id": "none-such", WEBHOOK_SECRET: "named by the secret", **forms}
    body[TEST_API_KEY] = ["named by the key"]

    response = post(webhook_url(webhooks_on), body)

    assert response.status_code == 200
    kept = WebhookDelivery.objects.get().body
    assert kept["[redacted]"] == "named by the secret"
    assert kept["[redacted] (2)"] == ["named by the key"]  # nothing lost to a name clash
    assert kept["url"] == "https://site.test/modelslab/webhook/[redacted]/"
    assert kept["form"] == "secret=[redacted]"
    assert kept["json"] == '{"secret": "[redacted]"}'
    assert kept["repr"] == "b'[redacted]'"
    for secret in (WEBHOOK_SECRET, TEST_API_KEY, "odd+chars"):
        assert secret not in json.dumps(kept, ensure_ascii=False)


def test_an_unreadable_body_is_redacted_before_it_is_cut(webhooks_on):
    head = MAX_RAW_BODY - 14  # the cut falls 14 characters into the secret
    body = b"x" * head + WEBHOOK_SECRET.encode() + b"y" * 100

    response = httpx.post(webhook_url(webhooks_on), content=body, timeout=10)

    assert response.status_code == 400
    kept = WebhookDelivery.objects.get().raw_body
    assert kept == "x" * head + "[redacted]" + "y" * 4
    assert WEBHOOK_SECRET[:14] not in kept
