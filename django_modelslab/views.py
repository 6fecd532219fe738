"""The endpoint ModelsLab POSTs to when a job finishes (a face: it calls webhooks.receive)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from . import webhooks


@csrf_exempt
@login_not_required  # ModelsLab has no session: LoginRequiredMiddleware must let it through
@require_POST
def webhook(request: HttpRequest, secret: str) -> JsonResponse:
    """200 for every authenticated delivery (duplicates too), 400 for a bad secret or body.

    A crash propagates as a 500 so that a sender that retries will try again; the delivery is
    recorded with the traceback first.
    """
    try:
        body: bytes | None = request.body
    except RequestDataTooBig:
        body = None  # over DATA_UPLOAD_MAX_MEMORY_SIZE: recorded and refused by receive()
    delivery = webhooks.receive(secret, body, remote_addr=request.META.get("REMOTE_ADDR"))
    return JsonResponse({"outcome": delivery.outcome})
