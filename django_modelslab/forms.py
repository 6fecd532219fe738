"""Admin forms: the request's parameters are checked here, before anything reaches ModelsLab."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from .fallbacks import clean_model_ids
from .limits import MAX_SAMPLES, MAX_SIDE, MIN_SAMPLES, MIN_SIDE, SIDE_STEP
from .models import GenerationRequest


def validate_size(value: int) -> None:
    """A side of 256 to 1024 pixels, a multiple of 8."""
    if value is None:
        return
    if not MIN_SIDE <= value <= MAX_SIDE:
        raise ValidationError(
            _("Use %(min)s to %(max)s pixels (got %(value)s)."),
            code="size_range",
            params={"min": MIN_SIDE, "max": MAX_SIDE, "value": value},
        )
    if value % SIDE_STEP:
        lower = value - value % SIDE_STEP
        raise ValidationError(
            _("Use a multiple of %(step)s pixels, e.g. %(lower)s or %(upper)s (got %(value)s)."),
            code="size_step",
            params={"step": SIDE_STEP, "lower": lower, "upper": lower + SIDE_STEP, "value": value},
        )


def validate_samples(value: int) -> None:
    """One to four images per generation."""
    if value is not None and not MIN_SAMPLES <= value <= MAX_SAMPLES:
        raise ValidationError(
            _("Ask for %(min)s to %(max)s images at a time (got %(value)s)."),
            code="samples_range",
            params={"min": MIN_SAMPLES, "max": MAX_SAMPLES, "value": value},
        )


class ModelIdsField(forms.CharField):
    """Model ids, one per line or comma-separated, as a list (checked by clean_model_ids)."""

    widget = forms.Textarea(attrs={"rows": 2})

    def prepare_value(self, value):
        if isinstance(value, list | tuple):
            return "\n".join(str(v) for v in value)
        return value

    def to_python(self, value) -> list[str]:
        if isinstance(value, list | tuple):
            text = "\n".join(str(v) for v in value)
        else:
            text = super().to_python(value)
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
    """The request form of the admin, with ModelsLab's limits checked at the edge."""

    fallback_models = ModelIdsField(
        required=False,
        label=_("Fallback models"),
        help_text=_(
            "Model ids tried in order when the model fails (one per line or comma-separated); "
            "empty: the FALLBACK_MODELS setting."
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
        limits = {
            "width": (MIN_SIDE, MAX_SIDE, SIDE_STEP),
            "height": (MIN_SIDE, MAX_SIDE, SIDE_STEP),
            "samples": (MIN_SAMPLES, MAX_SAMPLES, 1),
        }
        for name, (low, high, step) in limits.items():
            field = self.fields.get(name)
            if field is not None:
                field.widget.attrs.update(min=low, max=high, step=step)
        for name in ("width", "height"):
            if name in self.fields:
                self.fields[name].help_text = _(
                    "%(min)s to %(max)s px, a multiple of %(step)s."
                ) % {
                    "min": MIN_SIDE,
                    "max": MAX_SIDE,
                    "step": SIDE_STEP,
                }
        if "samples" in self.fields:
            self.fields["samples"].help_text = _("Images per generation, %(min)s to %(max)s.") % {
                "min": MIN_SAMPLES,
                "max": MAX_SAMPLES,
            }

    def clean_width(self) -> int:
        value = self.cleaned_data["width"]
        validate_size(value)
        return value

    def clean_height(self) -> int:
        value = self.cleaned_data["height"]
        validate_size(value)
        return value

    def clean_samples(self) -> int:
        value = self.cleaned_data["samples"]
        validate_samples(value)
        return value
