"""What was asked of ModelsLab (``GenerationRequest``) and what came back (``GeneratedImage``)."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from django.utils.module_loading import import_string
from django.utils.text import Truncator
from django.utils.translation import gettext_lazy as _

from .limits import LIMITS, bounds, check_side
from .storage import field_storage

if TYPE_CHECKING:
    from .specs import Spec

#: Parameters that define a generation's output; two seeded requests equal on all of them
#: produce the same images, so the second one can reuse the first one's.
CACHE_KEY_FIELDS = (
    "kind",
    "model_id",
    "prompt",
    "negative_prompt",
    "width",
    "height",
    "samples",
    "steps",
    "guidance",
    "seed",
    "extra",
    "api_version",
    "init_image",
    "mask_image",
    "strength",
    "scale",
    "safety_checker",
    "fallback_models",
)


def request_id_from_track_id(track_id: str) -> int | None:
    """The request a track id belongs to, if it is one of ours.

    ``"<request id>-<attempt>"``, or ``"<request id>-<attempt>.<n>"`` for the n-th fallback
    model tried in that attempt.
    """
    head, _, attempt = track_id.partition("-")
    attempt, _, model = attempt.partition(".")
    ours = head.isdigit() and attempt.isdigit() and (not model or model.isdigit())
    return int(head) if ours else None


class GenerationRequest(models.Model):
    """One generation: its parameters, its state, and the provider's raw answers."""

    class Kind(models.TextChoices):
        TEXT2IMG = "text2img", _("Text to image")
        IMG2IMG = "img2img", _("Image to image")
        INPAINT = "inpaint", _("Inpaint")
        UPSCALE = "upscale", _("Upscale")

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        QUEUED = "queued", _("Queued")
        PROCESSING = "processing", _("Processing")
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")
        REFUSED = "refused", _("Refused (moderation or safety)")

    class ApiVersion(models.TextChoices):
        V6 = "v6", _("v6 (community models)")
        V7 = "v7", _("v7 (provider models)")

    class CostSource(models.TextChoices):
        PROVIDER = "provider", _("Reported by ModelsLab")
        PRICE_TABLE = "price_table", _("From the PRICES setting")

    # What was asked
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.TEXT2IMG)
    prompt = models.TextField()
    negative_prompt = models.TextField(blank=True)
    model_id = models.CharField(
        max_length=200, blank=True, help_text=_("Blank means the DEFAULT_MODEL setting.")
    )
    width = models.PositiveSmallIntegerField(default=512)
    height = models.PositiveSmallIntegerField(default=512)
    samples = models.PositiveSmallIntegerField(default=1, validators=bounds("samples"))
    steps = models.PositiveSmallIntegerField(null=True, blank=True, validators=bounds("steps"))
    guidance = models.FloatField(null=True, blank=True, validators=bounds("guidance"))
    seed = models.BigIntegerField(
        null=True,
        blank=True,
        validators=bounds("seed"),
        help_text=_(
            "Blank lets ModelsLab pick a random seed (each image records the one used). "
            "Regenerate draws a new seed unless asked to keep it."
        ),
    )
    extra = models.JSONField(
        default=dict, blank=True, help_text=_("Further ModelsLab parameters, passed through.")
    )
    api_version = models.CharField(
        max_length=4,
        choices=ApiVersion.choices,
        default=ApiVersion.V6,
        help_text=_("Which ModelsLab API serves the request: v6 (community models) or v7."),
    )
    init_image = models.FileField(
        storage=field_storage,
        max_length=300,
        blank=True,
        help_text=_("Image to image, inpaint, upscale: the input, stored by content."),
    )
    init_from = models.ForeignKey(
        "GeneratedImage",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="derived_requests",
        help_text=_("The generated image used as the input, when it was one."),
    )
    mask_image = models.FileField(
        storage=field_storage,
        max_length=300,
        blank=True,
        help_text=_("Inpaint: white is repainted, black kept. Stored by content."),
    )
    strength = models.FloatField(
        null=True,
        blank=True,
        help_text=_("Image to image, inpaint: 0 keeps the input, 1 ignores it."),
    )
    scale = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text=_("Upscale: the factor (2, 3 or 4).")
    )
    safety_checker = models.BooleanField(
        null=True, blank=True, help_text=_("Ask ModelsLab to check outputs; blank: its default.")
    )
    fallback_models = models.JSONField(
        default=list,
        blank=True,
        help_text=_("Model ids tried in order when the model fails; empty: FALLBACK_MODELS."),
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="modelslab_requests",
    )

    # Its state
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(blank=True, help_text=_("Why the last attempt failed."))
    attempts = models.PositiveIntegerField(default=0)
    provider_id = models.CharField(max_length=64, blank=True)
    track_id = models.CharField(max_length=64, blank=True)
    eta = models.FloatField(null=True, blank=True)
    output_urls = models.JSONField(
        default=list, blank=True, help_text=_("Temporary URLs of the last attempt's outputs.")
    )
    outputs_expire_at = models.DateTimeField(null=True, blank=True)
    provider_responses = models.JSONField(
        default=list, blank=True, help_text=_("Every raw answer from ModelsLab, key redacted.")
    )
    use_cache = models.BooleanField(
        default=True, help_text=_("Reuse the images of an identical seeded request.")
    )
    bypass_cache = models.BooleanField(
        default=False,
        help_text=_("Set by a regenerate: its attempt starts a new job whatever the cache holds."),
    )
    produced_by = models.CharField(
        max_length=200, blank=True, help_text=_("The model whose images were stored.")
    )
    model_attempts = models.JSONField(
        default=list,
        blank=True,
        help_text=_("Each model tried: model id, outcome, error, seconds."),
    )
    cost = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    cost_source = models.CharField(max_length=20, choices=CostSource.choices, blank=True)
    cache_key = models.CharField(max_length=64, blank=True)
    regeneration_batch = models.CharField(
        max_length=32,
        blank=True,
        help_text=_("The regenerate_images run that last regenerated this request."),
    )
    cached_from = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text=_("The identical earlier request whose images were reused."),
    )

    # Timings
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "-pk")
        verbose_name = _("generation request")
        verbose_name_plural = _("generation requests")
        indexes = [
            models.Index(fields=["status"], name="modelslab_req_status"),
            models.Index(fields=["cache_key"], name="modelslab_req_cache_key"),
            models.Index(fields=["provider_id"], name="modelslab_req_provider_id"),
            models.Index(fields=["track_id"], name="modelslab_req_track_id"),
            models.Index(fields=["regeneration_batch"], name="modelslab_req_batch"),
            models.Index(fields=["requested_by", "created_at"], name="modelslab_req_user_day"),
            # Lists at scale (docs/scaling.md): newest first, whole or by status or model.
            models.Index(fields=["-created_at", "-id"], name="modelslab_req_new"),
            models.Index(fields=["status", "-created_at", "-id"], name="modelslab_req_status_new"),
            models.Index(fields=["model_id", "-created_at", "-id"], name="modelslab_req_model_new"),
        ]
        permissions = [("generate_images", _("Can generate and regenerate images"))]

    def __str__(self) -> str:
        return f"#{self.pk} {self.prompt_preview()}"

    def prompt_preview(self, length: int = 60) -> str:
        """The prompt for display: at most ``length`` characters, cut with an ellipsis."""
        return Truncator(self.prompt).chars(length)

    def clean(self) -> None:
        """A text-to-image request's size must be one ModelsLab draws; other kinds take the
        input's size (an upscale's times its scale), whatever it is."""
        if self.kind != self.Kind.TEXT2IMG:
            return
        errors: dict[str, list[ValidationError]] = {}
        for name in ("width", "height"):
            try:
                check_side(getattr(self, name))
            except ValidationError as exc:
                errors[name] = exc.error_list
        if errors:
            raise ValidationError(errors)

    def parameter_errors(self) -> dict[str, list[str]]:
        """The messages for each field outside ModelsLab's limits (:data:`.limits.LIMITS`)."""
        others = [f.name for f in self._meta.fields if f.name not in LIMITS]
        try:
            self.full_clean(exclude=others, validate_unique=False, validate_constraints=False)
        except ValidationError as exc:
            return exc.message_dict
        return {}

    def new_track_id(self) -> str:
        """The track id of the current attempt, echoed by ModelsLab in webhooks."""
        return f"{self.pk}-{self.attempts}"

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.SUCCEEDED, self.Status.FAILED, self.Status.REFUSED)

    @property
    def outputs_alive(self) -> bool:
        """Whether the last job's output URLs can still be downloaded (OUTPUT_URL_TTL)."""
        return self.outputs_expire_at is not None and timezone.now() < self.outputs_expire_at

    def cache_source(self, cache_key: str | None = None) -> GenerationRequest | None:
        """The latest other request with this cache key that succeeded with current images
        whose files (and thumbnails) are all in the configured storage.

        ``cache_key`` defaults to the stored one (blank: no source). The storage is asked
        once per file (a HEAD request on S3): after a move to another storage, or a lost
        file, the latest source is no hit and the request goes to the provider.
        """
        key = self.cache_key if cache_key is None else cache_key
        if not key:
            return None
        source = (
            GenerationRequest.objects.filter(cache_key=key, status=self.Status.SUCCEEDED)
            .exclude(pk=self.pk)
            .filter(images__superseded=False)
            .order_by("-finished_at")
            .first()
        )
        if source is None or not source.files_stored():
            return None
        return source

    def files_stored(self) -> bool:
        """Whether every current image's file and thumbnail exist in the storage."""
        names: set[str] = set()
        for image in self.images.filter(superseded=False):
            names.update(name for name in (image.image.name, image.thumbnail.name) if name)
        storage = field_storage()
        return all(storage.exists(name) for name in sorted(names))

    @property
    def duration(self) -> float | None:
        """Seconds from the start of the last attempt to its end."""
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None

    def compute_cache_key(self) -> str:
        """A hash of the output-defining parameters; blank unless the seed is fixed."""
        if self.seed is None:
            return ""
        params: dict[str, Any] = {name: getattr(self, name) for name in CACHE_KEY_FIELDS}
        canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()


#: What ``GeneratedImage.get_rendition`` calls, by name: the models import neither Pillow nor
#: the module that makes renditions (it imports the models): see docs/architecture.md.
GET_RENDITION = "django_modelslab.renditions.get_rendition"
#: Longest alt text kept (the default, from the prompt, is cut on a word to fit).
ALT_TEXT_MAX_LENGTH = 500


class GeneratedImageQuerySet(models.QuerySet["GeneratedImage"]):
    def prefetch_renditions(self) -> GeneratedImageQuerySet:
        """Load every image's renditions in one more query: ``get_rendition`` (and the
        ``modelslab_image`` tag) then finds existing ones without a query per image."""
        return self.prefetch_related("renditions")


class GeneratedImage(models.Model):
    """One image, copied out of ModelsLab into permanent storage under its content hash."""

    request = models.ForeignKey(GenerationRequest, on_delete=models.CASCADE, related_name="images")
    image = models.FileField(storage=field_storage, max_length=300)
    thumbnail = models.FileField(
        storage=field_storage,
        max_length=300,
        blank=True,
        help_text=_("A small WebP copy for lists, content-addressed like the image."),
    )
    sha256 = models.CharField(max_length=64)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    format = models.CharField(max_length=10)
    bytes = models.PositiveBigIntegerField()
    source_url = models.URLField(max_length=2000, blank=True)
    source_expires_at = models.DateTimeField(null=True, blank=True)
    #: The seed ModelsLab used for the job that made it (its ``meta.seed``, else the one sent;
    #: None: unknown). Every image of a job carries it; ``position`` tells them apart.
    seed = models.BigIntegerField(null=True, blank=True)
    attempt = models.PositiveIntegerField(default=1)
    position = models.PositiveSmallIntegerField(default=0, help_text=_("Index in the output."))
    superseded = models.BooleanField(
        default=False, help_text=_("Replaced by a later regeneration; kept for history.")
    )
    chosen = models.BooleanField(
        default=False, help_text=_("The image an editor picked for this request.")
    )
    nsfw = models.BooleanField(
        null=True, blank=True, help_text=_("ModelsLab flagged it as NSFW; blank: not reported.")
    )
    alt_text = models.CharField(
        max_length=ALT_TEXT_MAX_LENGTH,
        blank=True,
        help_text=_(
            "Describes the image for people who cannot see it (the img tag's alt). "
            "Filled from the prompt, or by ALT_TEXT_HOOK, when the image is stored."
        ),
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = GeneratedImageQuerySet.as_manager()

    class Meta:
        ordering = ("request", "attempt", "position")
        verbose_name = _("generated image")
        verbose_name_plural = _("generated images")
        indexes = [
            models.Index(fields=["sha256"], name="modelslab_img_sha256"),
            # The admin's and the API's image lists: newest first (docs/scaling.md).
            models.Index(fields=["-created_at", "-id"], name="modelslab_img_new"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["request", "attempt", "position"], name="modelslab_img_unique_output"
            ),
            models.UniqueConstraint(
                fields=["request"],
                condition=models.Q(chosen=True),
                name="modelslab_img_one_chosen",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.sha256[:12]}.{self.format.lower()} {self.width}×{self.height}"  # noqa: RUF001

    def get_rendition(self, spec: str | Spec) -> Rendition:
        """This image resized by ``spec`` (``"fill-400x300"``, ``"width-640|format-webp"``),
        made and stored on first use, then found again (one row and one file per spec).

        An invalid spec raises :class:`~django_modelslab.exceptions.InvalidRenditionSpec`.
        The work is in :func:`django_modelslab.renditions.get_rendition`.
        """
        get_rendition = import_string(GET_RENDITION)
        return get_rendition(self, spec)


class Rendition(models.Model):
    """A resized copy of a generated image for one spec, content-addressed like the image."""

    image = models.ForeignKey(GeneratedImage, on_delete=models.CASCADE, related_name="renditions")
    spec = models.CharField(max_length=100, help_text=_('Canonical spec, e.g. "fill-400x300".'))
    file = models.FileField(storage=field_storage, max_length=300)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    format = models.CharField(max_length=10)
    bytes = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("rendition")
        verbose_name_plural = _("renditions")
        constraints = [
            models.UniqueConstraint(fields=["image", "spec"], name="modelslab_rendition_unique")
        ]

    def __str__(self) -> str:
        return f"{self.spec} of image #{self.image_id}"

    @property
    def url(self) -> str:
        """The stored file's URL."""
        return self.file.url


class Charge(models.Model):
    """One paid provider job in the ledger: what it cost, for whom, with which model.

    Written in the transaction that records the job's outcome; ``GenerationRequest.cost`` is
    the running total of a request's charges. Daily budgets and the admin's Costs page sum
    these rows by ``created_at`` (when the job was paid), not by request.
    """

    request = models.ForeignKey(GenerationRequest, on_delete=models.CASCADE, related_name="charges")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="modelslab_charges",
        help_text=_("Who had asked for the request when the job was paid."),
    )
    model_id = models.CharField(max_length=200, blank=True)
    amount = models.DecimalField(max_digits=12, decimal_places=6)
    source = models.CharField(max_length=20, choices=GenerationRequest.CostSource.choices)
    attempt = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("-created_at", "-pk")
        verbose_name = _("charge")
        verbose_name_plural = _("charges")
        indexes = [
            models.Index(fields=["user", "created_at"], name="modelslab_charge_user_day"),
            models.Index(fields=["created_at"], name="modelslab_charge_day"),
        ]

    def __str__(self) -> str:
        return f"#{self.request_id} attempt {self.attempt}: {self.amount} ({self.model_id})"


class IdempotencyKey(models.Model):
    """An API client's ``Idempotency-Key``: the same key and body return the same request."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    endpoint = models.CharField(
        max_length=40,
        blank=True,
        help_text=_(
            "The API endpoint the key was sent to; a key is scoped to its endpoint. Blank: "
            "recorded before keys were scoped (matches either endpoint)."
        ),
    )
    key = models.CharField(max_length=255)
    body_hash = models.CharField(max_length=64)
    request = models.ForeignKey(GenerationRequest, on_delete=models.CASCADE, related_name="+")
    response_status = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        help_text=_(
            "The HTTP status the first call answered (generations/: 201 finished, 202 "
            "queued); a replay answers the same. Empty: not recorded (202)."
        ),
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("idempotency key")
        verbose_name_plural = _("idempotency keys")
        constraints = [
            models.UniqueConstraint(
                fields=["user", "endpoint", "key"], name="modelslab_idempotency_scope_unique"
            )
        ]

    def __str__(self) -> str:
        return self.key


class WebhookDelivery(models.Model):
    """One POST from ModelsLab to the webhook view, kept whatever happened to it."""

    class Outcome(models.TextChoices):
        REJECTED = "rejected", _("Rejected (bad secret or body)")
        UNKNOWN = "unknown", _("No matching request")
        DUPLICATE = "duplicate", _("Already handled")
        ACCEPTED = "accepted", _("Accepted: result being confirmed")
        ERROR = "error", _("Error while handling")

    received_at = models.DateTimeField(auto_now_add=True)
    count = models.PositiveIntegerField(
        default=1,
        help_text=_(
            "How many deliveries the row stands for: those with an unknown secret are counted "
            "on one row a minute, not stored one by one."
        ),
    )
    valid = models.BooleanField(default=False, help_text=_("The URL carried a known secret."))
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    error = models.TextField(blank=True)
    body = models.JSONField(null=True, blank=True, help_text=_("The payload, key redacted."))
    raw_body = models.TextField(blank=True, help_text=_("The payload when it was not JSON."))
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    provider_id = models.CharField(max_length=64, blank=True)
    track_id = models.CharField(max_length=64, blank=True)
    request = models.ForeignKey(
        GenerationRequest,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="webhook_deliveries",
    )

    class Meta:
        ordering = ("-received_at", "-pk")
        verbose_name = _("webhook delivery")
        verbose_name_plural = _("webhook deliveries")

    def __str__(self) -> str:
        return f"{self.received_at:%Y-%m-%d %H:%M:%S} {self.outcome} {self.track_id}"


class ProviderSlot(models.Model):
    """A place among the account's jobs at ModelsLab (``MAX_CONCURRENT_JOBS``), leased.

    One row per process holding a place (``held``) or waiting for one, oldest first; a row
    whose ``expires_at`` has passed (its process died) is deleted by the next one to look.
    See :mod:`django_modelslab.pipeline.slots`.
    """

    holder = models.CharField(max_length=100)  # host, pid and a random part, for people
    held = models.BooleanField(default=False)
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "provider slot"

    def __str__(self) -> str:
        return f"{'held' if self.held else 'waiting'} by {self.holder}"
