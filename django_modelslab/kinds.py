"""What each kind of request needs and sends: text2img, img2img, inpaint, upscale; v6 or v7.

One set of rules for every face (admin form, API serializer) and the pipeline:
:func:`input_errors` says what is missing or wrong, :func:`set_inputs` stores the inputs on a
request, :func:`provider_params` shapes the payload ModelsLab gets for the kind.
"""

from __future__ import annotations

from typing import IO, Any, cast

from django.utils.translation import gettext as _

from . import inputs
from .conf import get_setting
from .exceptions import InputMissing, ReservedParameters
from .models import GeneratedImage, GenerationRequest
from .redaction import SECRET_FIELDS

Kind = GenerationRequest.Kind
ApiVersion = GenerationRequest.ApiVersion

#: Kinds that take an input image, a mask, a strength, a scale.
NEEDS_INIT = (Kind.IMG2IMG, Kind.INPAINT, Kind.UPSCALE)
NEEDS_MASK = (Kind.INPAINT,)
TAKES_STRENGTH = (Kind.IMG2IMG, Kind.INPAINT)
#: What ModelsLab's v7 serves here (v7/images/text-to-image and image-to-image).
V7_KINDS = (Kind.TEXT2IMG, Kind.IMG2IMG)
MIN_SCALE, MAX_SCALE, DEFAULT_SCALE = 2, 4, 2

#: Payload fields the pipeline and the client set themselves (:func:`provider_params`,
#: ``pipeline.steps._provider_params``, the client's key): ``extra`` may not set them, in any case.
PIPELINE_PARAMS: frozenset[str] = SECRET_FIELDS | {
    "webhook",
    "track_id",
    "model_id",
    "prompt",
    "negative_prompt",
    "width",
    "height",
    "samples",
    "num_inference_steps",
    "guidance_scale",
    "seed",
    "safety_checker",
    "init_image",
    "mask_image",
    "strength",
    "scale",
}


def input_errors(
    kind: str,
    api_version: str = ApiVersion.V6,
    *,
    init: bool = False,
    mask: bool = False,
    strength: float | None = None,
    scale: int | None = None,
) -> dict[str, str]:
    """Problems with a request's inputs, keyed by field: ``kind``, ``init_image``,
    ``mask_image``, ``strength``, ``scale``. ``init`` / ``mask``: whether one is given."""
    errors: dict[str, str] = {}
    label = Kind(kind).label if kind in Kind.values else kind
    if api_version == ApiVersion.V7 and kind not in V7_KINDS:
        errors["kind"] = _("%(kind)s is not available on v7; use v6.") % {"kind": label}
    if kind in NEEDS_INIT and not init:
        errors["init_image"] = _("%(kind)s needs an input image.") % {"kind": label}
    if kind not in NEEDS_INIT and init:
        errors["init_image"] = _(
            "Only image to image, inpaint and upscale take an input image; set the kind."
        )
    if kind in NEEDS_MASK and not mask:
        errors["mask_image"] = _("Inpaint needs a mask image (white is repainted).")
    if kind not in NEEDS_MASK and mask:
        errors["mask_image"] = _("Only inpaint takes a mask image.")
    if strength is not None:
        if kind not in TAKES_STRENGTH:
            errors["strength"] = _("Strength applies to image to image and inpaint only.")
        elif not 0.0 <= strength <= 1.0:
            errors["strength"] = _("Use 0 (keep the input) to 1 (ignore it).")
    if scale is not None:
        if kind != Kind.UPSCALE:
            errors["scale"] = _("Scale applies to upscale only.")
        elif not MIN_SCALE <= scale <= MAX_SCALE:
            errors["scale"] = _("Use %(min)s to %(max)s.") % {"min": MIN_SCALE, "max": MAX_SCALE}
    return errors


def reserved_params(extra: Any) -> list[str]:
    """The keys of ``extra`` that name a :data:`PIPELINE_PARAMS` field, as given, sorted."""
    if not isinstance(extra, dict):
        return []
    return sorted(str(name) for name in extra if str(name).strip().lower() in PIPELINE_PARAMS)


def extra_problem(extra: Any) -> str | None:
    """Why ``extra`` cannot be sent to ModelsLab (None when it can): one message for every face."""
    if extra is None:
        return None
    if not isinstance(extra, dict):
        return _("Extra must be a JSON object of further ModelsLab parameters.")
    names = reserved_params(extra)
    if not names:
        return None
    return _(
        "Extra cannot set %(names)s: django-modelslab sets these itself. Use the request's own "
        "fields for the prompt, size, seed, model and input images."
    ) % {"names": ", ".join(names)}


def check_extra(generation: GenerationRequest) -> None:
    """Raise :class:`ReservedParameters` when ``generation.extra`` may not be sent as it is."""
    problem = extra_problem(generation.extra)
    if problem is not None:
        label = f"Request #{generation.pk}: " if generation.pk else ""
        raise ReservedParameters(label + problem, names=reserved_params(generation.extra))


def set_inputs(
    generation: GenerationRequest,
    *,
    init_file: IO[bytes] | None = None,
    init_from: GeneratedImage | None = None,
    mask_file: IO[bytes] | None = None,
) -> None:
    """Store uploaded inputs and point ``generation`` at them (not saved); size follows the input.

    A text-to-image request keeps no inputs. Uploads must have passed
    :func:`inputs.check_input`; storage errors raise :class:`StorageError`.
    """
    if generation.kind == Kind.TEXT2IMG:
        generation.init_image = generation.mask_image = ""
        generation.init_from = None
        generation.strength = generation.scale = None
        return
    if init_from is not None:
        generation.init_from = init_from
        generation.init_image = init_from.image.name
    elif init_file is not None:
        generation.init_from = None
        generation.init_image = inputs.store_input(init_file).key
    if mask_file is not None:
        generation.mask_image = inputs.store_input(mask_file).key
    if generation.kind != Kind.INPAINT:
        generation.mask_image = ""
    if generation.kind == Kind.UPSCALE:
        generation.scale = generation.scale or DEFAULT_SCALE
        generation.samples = 1  # one output per input
    if generation.init_image:
        width, height = _input_size(generation)
        factor = generation.scale if generation.kind == Kind.UPSCALE and generation.scale else 1
        generation.width, generation.height = width * factor, height * factor


def _input_size(generation: GenerationRequest) -> tuple[int, int]:
    source, name = (
        generation.init_from,
        cast(str, generation.init_image.name),
    )  # set: see the caller
    if source is not None and source.image.name == name:
        return source.width, source.height
    return inputs.stored_size(name)


def default_model(generation: GenerationRequest) -> str:
    """The model for a request that names none: per kind and API version."""
    if generation.kind == Kind.UPSCALE:
        return get_setting("DEFAULT_UPSCALE_MODEL")
    if generation.api_version == ApiVersion.V7:
        return get_setting("DEFAULT_V7_MODEL")
    return get_setting("DEFAULT_MODEL")


def uses_fallback_setting(generation: GenerationRequest) -> bool:
    """Whether the FALLBACK_MODELS setting applies: it lists v6 image models."""
    return generation.kind != Kind.UPSCALE and generation.api_version != ApiVersion.V7


def outputs(generation: GenerationRequest) -> int:
    """How many images a job for ``generation`` makes: one per input for upscale, else samples."""
    return 1 if generation.kind == Kind.UPSCALE else generation.samples or 1


def input_images(generation: GenerationRequest) -> dict[str, str]:
    """The request's input images as ModelsLab takes them (reads storage; may raise)."""
    images: dict[str, str] = {}
    if generation.kind in NEEDS_INIT:
        if not generation.init_image.name:  # (a FieldFile is true when it has a name)
            raise InputMissing(
                f"{generation.get_kind_display()} needs an input image; none is set."
            )
        images["init_image"] = _provider_image(generation.init_image.name)
    if generation.kind in NEEDS_MASK:
        if not generation.mask_image.name:
            raise InputMissing("Inpaint needs a mask image; none is set.")
        images["mask_image"] = _provider_image(generation.mask_image.name)
    return images


def _provider_image(name: str) -> str:
    try:
        return inputs.provider_image(name)
    except OSError as exc:  # FileNotFoundError included: the stored input is gone
        raise InputMissing(f"The input image {name} cannot be read: {exc}") from exc


def extra_params(generation: GenerationRequest) -> dict[str, Any]:
    """``generation.extra`` without any :data:`PIPELINE_PARAMS` field (a row saved before they
    were refused is sent without them)."""
    extra = generation.extra if isinstance(generation.extra, dict) else {}
    return {k: v for k, v in extra.items() if str(k).strip().lower() not in PIPELINE_PARAMS}


def provider_params(
    generation: GenerationRequest, params: dict[str, Any], images: dict[str, str]
) -> dict[str, Any]:
    """Shape the text2img ``params`` for the request's kind, adding its ``images``."""
    if generation.kind == Kind.TEXT2IMG:
        return params
    if generation.kind == Kind.UPSCALE:
        upscale = extra_params(generation)
        upscale.update(
            images,
            model_id=params["model_id"],
            scale=generation.scale or DEFAULT_SCALE,
            track_id=params["track_id"],
        )
        if "webhook" in params:
            upscale["webhook"] = params["webhook"]
        return upscale
    # The output follows the input's size: width and height are not sent.
    edit = {k: v for k, v in params.items() if k not in ("width", "height")}
    edit.update(images)
    if generation.strength is not None:
        edit["strength"] = generation.strength
    return edit
