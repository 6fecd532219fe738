"""Admin forms: the request's parameters are checked here, before anything reaches ModelsLab."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from .models import GenerationRequest

#: Image sides ModelsLab accepts (pixels), and the step they must be a multiple of.
MIN_SIZE = 256
MAX_SIZE = 1024
SIZE_STEP = 8
#: Images per generation.
MIN_SAMPLES = 1
MAX_SAMPLES = 4


def validate_size(value: int) -> None:
    """A side of 256 to 1024 pixels, a multiple of 8."""
    if value is None:
        return
    if not MIN_SIZE <= value <= MAX_SIZE:
        raise ValidationError(
            _("Use %(min)s to %(max)s pixels (got %(value)s)."),
            code="size_range",
            params={"min": MIN_SIZE, "max": MAX_SIZE, "value": value},
        )
    if value % SIZE_STEP:
        lower = value - value % SIZE_STEP
        raise ValidationError(
            _("Use a multiple of %(step)s pixels, e.g. %(lower)s or %(upper)s (got %(value)s)."),
            code="size_step",
            params={"step": SIZE_STEP, "lower": lower, "upper": lower + SIZE_STEP, "value": value},
        )


def validate_samples(value: int) -> None:
    """One to four images per generation."""
    if value is not None and not MIN_SAMPLES <= value <= MAX_SAMPLES:
        raise ValidationError(
            _("Ask for %(min)s to %(max)s images at a time (got %(value)s)."),
            code="samples_range",
            params={"min": MIN_SAMPLES, "max": MAX_SAMPLES, "value": value},
        )


class GenerationRequestAdminForm(forms.ModelForm):
    """The request form of the admin, with ModelsLab's limits checked at the edge."""

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
        )
        widgets = {
            "prompt": forms.Textarea(attrs={"rows": 3}),
            "negative_prompt": forms.Textarea(attrs={"rows": 2}),
        }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        limits = {
            "width": (MIN_SIZE, MAX_SIZE, SIZE_STEP),
            "height": (MIN_SIZE, MAX_SIZE, SIZE_STEP),
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
                    "min": MIN_SIZE,
                    "max": MAX_SIZE,
                    "step": SIZE_STEP,
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
