"""Wagtail admin views: Images → Generate, the image chooser's Generate tab, Regenerate.

The server side of the Django admin's field widget (``admin/picker.py``) serves here too: its
prompt form, the progress JSON, who follows which generation. Generating goes through
``pipeline.submit`` (``pipeline.regenerate`` for Regenerate); the editor's picks become library
images through :func:`~.library.add_to_library`. Every view needs ``generate_images`` and
Wagtail's permission to add images to the collection (:mod:`.permissions`); without them it
answers 403.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.http import urlencode
from django.utils.translation import gettext, gettext_lazy, ngettext
from django.views.decorators.http import require_GET, require_POST
from django.views.generic import TemplateView, View
from wagtail.admin.forms.collections import CollectionChoiceField
from wagtail.admin.views.generic.base import WagtailAdminTemplateMixin
from wagtail.admin.widgets.button import HeaderButton
from wagtail.images import get_image_model
from wagtail.images.forms import ImageInsertionForm
from wagtail.images.views.chooser import (
    ImageChooseView,
    ImageChosenResponseMixin,
    SelectFormatResponseMixin,
)
from wagtail.images.views.images import EditView
from wagtail.models import Collection
from wagtail.permissions import policy_registry

from django_modelslab import pipeline
from django_modelslab.admin import picker
from django_modelslab.contention import StillLocked, retry_when_locked
from django_modelslab.exceptions import ModelsLabError
from django_modelslab.models import GeneratedImage, GenerationRequest

from .library import add_to_library, file_in_use
from .models import LibraryImage
from .permissions import add_collections, may_generate


class GenerateForm(picker.GenerateForm):
    """The field widget's prompt form, with a negative prompt and the collection to add to."""

    collection = CollectionChoiceField(
        label=gettext_lazy("Collection"),
        queryset=Collection.objects.none(),
        help_text=gettext_lazy("Where the images you pick are added."),
    )
    field_order = ("prompt", "negative_prompt", "model_id", "size", "samples", "seed")

    class Meta(picker.GenerateForm.Meta):
        fields = ("prompt", "negative_prompt", "model_id", "samples", "seed")  # type: ignore[assignment]

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        collections = add_collections(user)
        field = self.fields["collection"]
        field.queryset = collections  # type: ignore[attr-defined]
        field.initial = collections.first()
        self.fields["prompt"].widget.attrs["rows"] = 3
        self.fields["negative_prompt"].widget.attrs["rows"] = 2


def collection_of(request: HttpRequest, data: Any) -> Collection | None:
    """The collection named in ``data`` (POST or GET), or None."""
    value = data.get("collection", "")
    return Collection.objects.filter(pk=value).first() if str(value).isdigit() else None


def check_may_generate(request: HttpRequest, collection: Collection | None = None) -> None:
    if not may_generate(request.user, collection):
        raise PermissionDenied


def followed_generations(user: Any) -> QuerySet[GenerationRequest]:
    """What ``user`` may follow and pick from: the widget's rule (their own, or everyone's with
    a view permission), plus the generations of library images they may change (Regenerate)."""
    changeable = policy_registry.get_by_type(get_image_model()).instances_user_has_permission_for(
        user, "change"
    )
    return GenerationRequest.objects.filter(
        Q(pk__in=picker.visible_generations(user).values("pk"))
        | Q(images__library_image__image__in=changeable.values("pk"))
    ).distinct()


def pickable_images(user: Any) -> QuerySet[GeneratedImage]:
    return GeneratedImage.objects.filter(
        request__in=followed_generations(user).values("pk"), superseded=False
    ).exclude(image="")


def generate_context(request: HttpRequest, *, mode: str, follow: int | None = None) -> dict:
    """What ``modelslab_wagtail/_generate.html`` needs (the page's and the chooser tab's)."""
    collection = collection_of(request, request.GET)
    form = GenerateForm(user=request.user, prefix="modelslab")
    if collection is not None and may_generate(request.user, collection):
        form.fields["collection"].initial = collection
    return {
        "generate_form": form,
        "generate_mode": mode,
        "generate_url": reverse("modelslab_wagtail:generate_start"),
        "progress_url": reverse("modelslab_wagtail:generation", args=(0,)),
        "follow": follow or "",
    }


class GenerateView(WagtailAdminTemplateMixin, TemplateView):
    """Images → Generate: the prompt form, progress, results; picks go to a collection."""

    template_name = "modelslab_wagtail/generate.html"
    page_title = gettext_lazy("Generate images")
    header_icon = "image"

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        check_may_generate(request)
        return super().dispatch(request, *args, **kwargs)

    def get_breadcrumbs_items(self) -> list[dict[str, Any]]:
        return [
            *self.breadcrumbs_items,
            {"url": reverse("wagtailimages:index"), "label": gettext("Images")},
            {"url": "", "label": self.get_page_title()},
        ]

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        follow = self.request.GET.get("generation", "")
        context = super().get_context_data(**kwargs)
        context.update(
            generate_context(
                self.request, mode="library", follow=int(follow) if follow.isdigit() else None
            )
        )
        context["add_url"] = reverse("modelslab_wagtail:add")
        return context


@require_POST
def start_view(request: HttpRequest) -> JsonResponse:
    """``POST generate/``: save a request and submit it (the widget's endpoint, plus a negative
    prompt and the collection, whose add permission is checked)."""
    form = GenerateForm(request.POST, user=request.user, prefix="modelslab")
    collection = collection_of(request, {"collection": request.POST.get("modelslab-collection")})
    if not may_generate(request.user, collection):
        return JsonResponse(
            {"detail": gettext("You may not generate images into this collection.")}, status=403
        )
    return picker.submit_form(request, form)


@require_GET
def generation_view(request: HttpRequest, generation_id: int) -> JsonResponse:
    """``GET generations/<id>/``: progress and, once done, the images (the widget's JSON)."""
    if not may_generate(request.user):
        return JsonResponse({"detail": gettext("You may not generate images.")}, status=403)
    generation = followed_generations(request.user).filter(pk=generation_id).first()
    if generation is None:
        return JsonResponse({"detail": gettext("No such generation.")}, status=404)
    return JsonResponse(picker.generation_json(generation))


def picked(request: HttpRequest) -> tuple[list[GeneratedImage], Collection]:
    """The generated images a POST picks and its collection (403 without the permissions)."""
    collection = collection_of(request, request.POST)
    if collection is None or not may_generate(request.user, collection):
        raise PermissionDenied
    ids = [value for value in request.POST.getlist("image") if value.isdigit()]
    images = list(pickable_images(request.user).filter(pk__in=ids).select_related("request"))
    return images, collection


@require_POST
def add_view(request: HttpRequest) -> HttpResponse:
    """``POST add/``: the picked results into the library, then the collection's images."""
    images, collection = picked(request)
    if not images:
        messages.error(request, gettext("Pick at least one image to add to the library."))
        return redirect("modelslab_wagtail:generate")
    user: Any = request.user  # signed in: the admin
    added = [add_to_library(image, collection=collection, user=user) for image in images]
    messages.success(
        request,
        ngettext(
            "%(count)d image added to %(collection)s.",
            "%(count)d images added to %(collection)s.",
            len(added),
        )
        % {"count": len(added), "collection": collection.name},
    )
    return redirect(
        f"{reverse('wagtailimages:index')}?{urlencode({'collection_id': collection.pk})}"
    )


class ChooserPickView(SelectFormatResponseMixin, ImageChosenResponseMixin, View):
    """The chooser's Generate tab: the picked result joins the library and is chosen, as an
    upload is (``wagtailimages_chooser:create``): the ``chosen`` step, or ``select_format``
    in rich text."""

    preserve_url_parameters = ["select_format"]

    def post(self, request: HttpRequest) -> HttpResponse:
        self.model = get_image_model()
        images, collection = picked(request)
        if len(images) != 1:
            raise PermissionDenied
        user: Any = request.user  # signed in: the admin
        image = add_to_library(images[0], collection=collection, user=user)
        if request.GET.get("select_format"):
            form = ImageInsertionForm(
                initial={"alt_text": image.default_alt_text}, prefix="image-chooser-insertion"
            )
            return self.render_select_format_response(image, form)
        return self.get_chosen_response(image)


class GenerateTabChooseView(ImageChooseView):
    """Wagtail's image chooser with a Generate tab for editors who may generate."""

    def render_to_response(self) -> HttpResponse:
        if may_generate(self.request.user):
            self.template_name = "modelslab_wagtail/chooser.html"
        return super().render_to_response()

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        if may_generate(self.request.user):
            context.update(generate_context(self.request, mode="chooser"))
            pick_url = reverse("modelslab_wagtail:chooser_pick")
            if self.request.GET.get("select_format"):
                pick_url += "?" + urlencode({"select_format": self.request.GET["select_format"]})
            context["pick_url"] = pick_url
        return context


def generation_of(image: Any) -> GenerationRequest | None:
    link = LibraryImage.objects.filter(image=image).select_related("generated_image").first()
    return link.generated_image.request if link is not None else None


class GenerateEditView(EditView):
    """Wagtail's image edit page, with Regenerate in its header for a generated image."""

    @cached_property
    def header_buttons(self) -> list[Any]:
        buttons = list(super().header_buttons)
        if generation_of(self.object) is not None and may_generate(
            self.request.user, self.object.collection
        ):
            url = reverse("modelslab_wagtail:regenerate", args=(self.object.pk,))
            buttons.append(HeaderButton(gettext("Regenerate"), url=url, icon_name="rotate"))
        return buttons

    def save_instance(self) -> Any:
        """Save; a replaced file that a generation (or another library image) still names is
        kept. Wagtail's image form deletes the replaced file itself (``BaseImageForm.save``,
        not through the delete signal), so it is told there is no original to delete."""
        original = self.form.original_file
        replaced = original and "file" in self.form.changed_data
        if replaced and file_in_use(original.name, original.storage, besides=self.object):
            self.form.original_file = None
        return super().save_instance()


class RegenerateView(WagtailAdminTemplateMixin, TemplateView):
    """``images/<id>/regenerate/``: confirm, then ``pipeline.regenerate`` the image's generation
    (a new picture; the image and its generated file stay) and follow it on Generate."""

    template_name = "modelslab_wagtail/regenerate.html"
    page_title = gettext_lazy("Regenerate")
    header_icon = "rotate"

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        self.image = get_object_or_404(get_image_model(), pk=kwargs["image_id"])
        policy = policy_registry.get_by_type(get_image_model())
        if not policy.user_has_permission_for_instance(request.user, "change", self.image):
            raise PermissionDenied
        check_may_generate(request, self.image.collection)
        generation = generation_of(self.image)
        if generation is None:
            raise PermissionDenied
        self.generation = generation
        return super().dispatch(request, *args, **kwargs)

    def get_page_subtitle(self) -> str:
        return str(self.image.title)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(image=self.image, generation=self.generation)
        return context

    def post(self, request: HttpRequest, image_id: int) -> HttpResponse:
        try:
            generation = retry_when_locked(partial(pipeline.regenerate, self.generation))
        except (ModelsLabError, StillLocked) as exc:
            messages.error(request, str(exc))
            return redirect("wagtailimages:edit", self.image.pk)
        query = urlencode({"generation": generation.pk, "collection": self.image.collection_id})
        return redirect(f"{reverse('modelslab_wagtail:generate')}?{query}")
