"""Admin forms: the request's parameters are checked here, before anything reaches ModelsLab.

ModelsLab's limits (size, samples, steps, guidance, seed) are the model's validators
(:mod:`.limits`), run by the ModelForm: the same rules and messages as the API's.
"""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from . import inputs, kinds
from .exceptions import InvalidImage
from .fallbacks import clean_model_ids
from .limits import LIMITS, MAX_SAMPLES, MAX_SIDE, MIN_SAMPLES, MIN_SIDE, SIDE_STEP
from .models import GenerationRequest

#: :func:`kinds.input_errors` names -> this form's fields.
INPUT_FIELDS = {"init_image": "init_upload", "mask_image": "mask_upload"}


class ModelIdsField(forms.CharField):
    """Model ids, one per line or comma-separated, as a list (checked by clean_model_ids)."""

    widget = forms.Textarea(attrs={"rows": 2})

    def prepare_value(self, value):
        if isinstance(value, list | tuple):
            return "\n".join(str(v) for v in value)
        return value

    def to_python(self, value) -> list[str]:  # type: ignore[override]  # a list, not a str
        if isinstance(value, list | tuple):
            text = "\n".join(str(v) for v in value)
        else:
            text = cast(str, super().to_python(value))  # empty_value is ""
        try:
            return clean_model_ids(text.replace(",", "\n").splitlines())
        except ValueError as exc:
            raise ValidationError(str(exc), code="model_ids") from exc


class SafetyCheckerSelect(forms.NullBooleanSelect):
    """ModelsLab's default / on / off."""

    def __init__(self, attrs=None) -> None:
        super().__init__(attrs)
        self.choices = [
            ("unknown", _("ModelsLab's default")),
            ("true", _("On")),
            ("false", _("Off")),
        ]


class GenerationRequestAdminForm(forms.ModelForm):
    """The request form of the admin, with ModelsLab's limits checked at the edge.

    Input images are uploaded through ``init_upload`` / ``mask_upload`` (verified here, stored
    by content on save) or picked with ``init_from`` (a generated image).
    """

    init_upload = forms.FileField(
        label=_("Input image"),
        required=False,
        widget=forms.FileInput(attrs={"accept": "image/png,image/jpeg,image/webp,image/gif"}),
        help_text=_(
            "Image to image, inpaint, upscale: upload the input, or pick a generated image "
            "below. Width and height then follow the input."
        ),
    )
    mask_upload = forms.FileField(
        label=_("Mask image"),
        required=False,
        widget=forms.FileInput(attrs={"accept": "image/png,image/jpeg,image/webp,image/gif"}),
        help_text=_("Inpaint: white is repainted, black kept."),
    )

    fallback_models = ModelIdsField(
        required=False,
        label=_("Fallback models"),
        help_text=_(
            "Model ids tried in order when the model fails (one per line or comma-separated); "
            "empty: the FALLBACK_MODELS setting (v6 image models; not for upscale or v7)."
        ),
    )
    safety_checker = forms.NullBooleanField(
        required=False,
        label=_("Safety checker"),
        widget=SafetyCheckerSelect(),
        help_text=_("On: ModelsLab blanks NSFW outputs, and a fully blanked job ends refused."),
    )

    class Meta:
        model = GenerationRequest
        fields = (
            "prompt",
            "negative_prompt",
            "model_id",
            "width",
            "height",
            "samples",
            "kind",
            "api_version",
            "init_from",
            "strength",
            "scale",
            "seed",
            "steps",
            "guidance",
            "use_cache",
            "extra",
            "fallback_models",
            "safety_checker",
        )
        widgets = {
            "prompt": forms.Textarea(attrs={"rows": 3}),
            "negative_prompt": forms.Textarea(attrs={"rows": 2}),
        }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if "api_version" in self.fields:  # forms posted before v7 existed mean v6
            self.fields["api_version"].required = False
        for name, (low, high, _hint) in LIMITS.items():  # hints: the model's validators decide
            if name in self.fields:
                self.fields[name].widget.attrs.update(min=low, max=high)
        side = {"min": MIN_SIDE, "max": MAX_SIDE, "step": SIDE_STEP}
        for name in set(self.fields) & {"width", "height"}:
            self.fields[name].widget.attrs["step"] = SIDE_STEP
            self.fields[name].help_text = _("%(min)s to %(max)s px, a multiple of %(step)s.") % side
        if "samples" in self.fields:
            self.fields["samples"].help_text = _("Images per generation, %(min)s to %(max)s.") % {
                "min": MIN_SAMPLES,
                "max": MAX_SAMPLES,
            }

    def clean_api_version(self) -> str:
        return self.cleaned_data.get("api_version") or GenerationRequest.ApiVersion.V6

    def _clean_upload(self, name: str) -> object:
        upload = self.cleaned_data.get(name)
        if upload:
            try:
                inputs.check_input(upload)
            except InvalidImage as exc:
                raise ValidationError(str(exc), code="invalid_image") from exc
        return upload

    def clean_init_upload(self) -> object:
        return self._clean_upload("init_upload")

    def clean_mask_upload(self) -> object:
        return self._clean_upload("mask_upload")

    def clean(self) -> dict:
        data = cast("dict[str, Any]", super().clean())  # ModelForm.clean: the cleaned_data
        kind = data.get("kind") or GenerationRequest.Kind.TEXT2IMG
        upload, picked = data.get("init_upload"), data.get("init_from")
        if upload and picked:
            self.add_error(
                "init_upload", _("Upload an input image or pick a generated one, not both.")
            )
        stored = kind in kinds.NEEDS_INIT and bool(self.instance.init_image)
        errors = kinds.input_errors(
            kind,
            data.get("api_version") or GenerationRequest.ApiVersion.V6,
            # an upload already refused counts as given: one error per field is enough
            init=bool(upload or picked or stored or "init_upload" in self.errors),
            mask=bool(
                data.get("mask_upload")
                or "mask_upload" in self.errors
                or (kind in kinds.NEEDS_MASK and self.instance.mask_image)
            ),
            strength=data.get("strength"),
            scale=data.get("scale"),
        )
        for name, message in errors.items():
            field = INPUT_FIELDS.get(name, name)
            self.add_error(field if field in self.fields else None, message)
        return data

    def save(self, commit: bool = True) -> GenerationRequest:
        """Store the uploaded inputs by content and size the request after them."""
        kinds.set_inputs(
            self.instance,
            init_file=self.cleaned_data.get("init_upload") or None,
            init_from=self.cleaned_data.get("init_from"),
            mask_file=self.cleaned_data.get("mask_upload") or None,
        )
        return super().save(commit)

    def clean_extra(self) -> object:
        """Further ModelsLab parameters; never one the pipeline sets (the key, the webhook...)."""
        value = self.cleaned_data.get("extra")
        problem = kinds.extra_problem(value)
        if problem is not None:
            raise ValidationError(problem, code="invalid_extra")
        return value
