"""The endpoints behind ``GeneratedImageField``'s widget: Choose (a searchable, paginated list
of the images the user may see) and Generate (start a generation, poll it, pick a result).

Admin views of the generated images' admin (``admin_view``: staff only, CSRF on POST). Who
sees what follows the API's rules: a user's own images; everyone's with
``view_generationrequest`` or ``view_generatedimage``. Generating needs ``generate_images``
(403 otherwise) and goes through ``pipeline.submit``, as the admin's Generate does.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django import forms
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.http import HttpRequest, JsonResponse
from django.utils.translation import gettext
from django.views.decorators.http import require_GET, require_POST

from .. import pipeline
from ..conf import get_setting
from ..contention import StillLocked, retry_when_locked
from ..exceptions import BudgetExceeded, InvalidParameters
from ..fields import SIZES
from ..models import GeneratedImage, GenerationRequest
from .actions import can_generate
from .html import ACTIVE_STATUSES

#: Images per page of the Choose list.
PAGE_SIZE = 24
SEES_ALL = ("django_modelslab.view_generationrequest", "django_modelslab.view_generatedimage")


def visible_images(user: Any) -> QuerySet[GeneratedImage]:
    """The images ``user`` may pick: their own; with a view permission, everyone's."""
    images = GeneratedImage.objects.select_related("request")
    if any(user.has_perm(permission) for permission in SEES_ALL):
        return images
    return images.filter(request__requested_by=user.pk)


def visible_generations(user: Any) -> QuerySet[GenerationRequest]:
    """The requests whose progress ``user`` may follow (the same rule)."""
    if any(user.has_perm(permission) for permission in SEES_ALL):
        return GenerationRequest.objects.all()
    return GenerationRequest.objects.filter(requested_by=user.pk)


def image_json(image: GeneratedImage) -> dict[str, Any]:
    """What the widget shows of an image."""
    return {
        "id": image.pk,
        "thumbnail": (image.thumbnail.url if image.thumbnail else image.image.url)
        if image.image
        else "",
        "url": image.image.url if image.image else "",
        "prompt": image.request.prompt_preview(80),
        "width": image.width,
        "height": image.height,
        "label": gettext("Image %(pk)s of request %(request)s: %(prompt)s")
        % {"pk": image.pk, "request": image.request_id, "prompt": image.request.prompt_preview(80)},
    }


def forbidden() -> JsonResponse:
    return JsonResponse(
        {"detail": gettext("Generating needs the django_modelslab.generate_images permission.")},
        status=403,
    )


@require_GET
def config_view(request: HttpRequest) -> JsonResponse:
    """``GET picker/config/``: whether this user may generate, and the form's defaults."""
    return JsonResponse(
        {
            "can_generate": can_generate(request),
            "default_model": get_setting("DEFAULT_MODEL"),
            "sizes": SIZES,
        }
    )


@require_GET
def images_view(request: HttpRequest) -> JsonResponse:
    """``GET picker/?q=fox&page=2``: the visible images, newest first, searched by prompt."""
    query = request.GET.get("q", "").strip()[:200]
    images = visible_images(request.user).exclude(image="")
    if query:
        images = images.filter(Q(request__prompt__icontains=query))
    paginator = Paginator(images.order_by("-created_at", "-pk"), PAGE_SIZE)
    page = paginator.get_page(request.GET.get("page"))
    return JsonResponse(
        {
            "results": [image_json(image) for image in page.object_list],
            "page": page.number,
            "pages": paginator.num_pages,
            "count": paginator.count,
        }
    )


class GenerateForm(forms.ModelForm):
    """The widget's prompt form: ModelsLab's limits are the model's validators."""

    size = forms.ChoiceField(choices=[(size, size) for size in SIZES], initial=SIZES[0])

    class Meta:
        model = GenerationRequest
        fields = ("prompt", "model_id", "samples", "seed")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["model_id"].required = self.fields["samples"].required = False

    def clean_model_id(self) -> str:
        return self.cleaned_data.get("model_id") or get_setting("DEFAULT_MODEL")

    def clean_samples(self) -> int:
        samples = self.cleaned_data.get("samples")
        return 1 if samples is None else samples

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        size = data.get("size")
        if size:
            width, height = (int(side) for side in size.split("x"))
            self.instance.width, self.instance.height = width, height
        return data


@require_POST
def generate_view(request: HttpRequest) -> JsonResponse:
    """``POST picker/generate/``: save a request and start it through the pipeline."""
    if not can_generate(request):
        return forbidden()
    return submit_form(request, GenerateForm(request.POST))


def submit_form(request: HttpRequest, form: forms.ModelForm[GenerationRequest]) -> JsonResponse:
    """Save ``form``'s request for the signed-in user and submit it: 201 with its progress,
    or 400 with the form's (or the pipeline's) errors."""
    if not form.is_valid():
        return JsonResponse({"errors": form.errors.get_json_data()}, status=400)
    generation = form.save(commit=False)
    generation.requested_by = request.user  # type: ignore[assignment]  # signed in: the admin
    try:
        generation = retry_when_locked(partial(pipeline.submit, generation))
    except (BudgetExceeded, InvalidParameters, StillLocked) as exc:
        return JsonResponse({"errors": {"__all__": [{"message": str(exc)}]}}, status=400)
    return JsonResponse(generation_json(generation), status=201)


@require_GET
def generation_view(request: HttpRequest, generation_id: int) -> JsonResponse:
    """``GET picker/generations/<id>/``: a generation's progress and, once done, its images."""
    generation = visible_generations(request.user).filter(pk=generation_id).first()
    if generation is None:
        return JsonResponse({"detail": gettext("No such generation.")}, status=404)
    return JsonResponse(generation_json(generation))


def generation_json(generation: GenerationRequest) -> dict[str, Any]:
    images = (
        generation.images.filter(superseded=False).exclude(image="").select_related("request")
        if generation.status == GenerationRequest.Status.SUCCEEDED
        else []
    )
    return {
        "id": generation.pk,
        "status": generation.status,
        "label": generation.get_status_display(),
        "active": generation.status in (GenerationRequest.Status.PENDING, *ACTIVE_STATUSES),
        "error": generation.error,
        "images": [image_json(image) for image in images],
    }
