"""Safety: the ``safety_checker`` flag sent to ModelsLab, its NSFW flags, the moderation hook.

* :func:`provider_params` adds ``safety_checker: "yes" | "no"`` to a generate call when the
  request (or the SAFETY_CHECKER setting) says so; None leaves ModelsLab's default.
* :func:`refusal` reads a finished job's ``nsfw_content_detected``: when every output was
  flagged and the checker was not turned off, ModelsLab blanked them, and the request ends
  ``refused`` (:class:`~django_modelslab.exceptions.SafetyRefused`) instead of storing blanks.
  Partly flagged jobs succeed; each image keeps its flag (``GeneratedImage.nsfw``).
* :func:`moderation_refusal` asks the MODERATION_HOOK about a prompt before any call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .conf import get_setting, load_hook
from .exceptions import PromptRejected, SafetyRefused

if TYPE_CHECKING:
    from .client import ProviderResponse
    from .models import GenerationRequest

DEFAULT_MODERATION_MESSAGE = "The prompt was refused by moderation."


def checker(generation: GenerationRequest) -> bool | None:
    """Whether ModelsLab's safety checker is asked for: the request's choice, else the setting."""
    if generation.safety_checker is not None:
        return generation.safety_checker
    return get_setting("SAFETY_CHECKER")


def provider_params(generation: GenerationRequest) -> dict[str, str]:
    """``{"safety_checker": "yes"|"no"}``, or nothing to leave ModelsLab's default."""
    on = checker(generation)
    return {} if on is None else {"safety_checker": "yes" if on else "no"}


def nsfw_flag(flags: tuple[bool | None, ...], position: int) -> bool | None:
    """The flag of output ``position`` (None: ModelsLab did not say)."""
    return flags[position] if position < len(flags) else None


def refusal(
    generation: GenerationRequest, response: ProviderResponse, *, model_id: str
) -> SafetyRefused | None:
    """The refusal to raise when every output was flagged NSFW (and so blanked), else None.

    With the checker explicitly off ModelsLab blanks nothing: flagged images are stored,
    marked ``nsfw``. With it on, or left to ModelsLab's default (on for most models), a
    flagged output is a blank placeholder.
    """
    outputs = len(response.output_urls)
    flags = response.nsfw[:outputs]
    if not outputs or len(flags) < outputs or not all(flags) or checker(generation) is False:
        return None
    what = "the image" if outputs == 1 else f"all {outputs} images"
    return SafetyRefused(
        f"ModelsLab's safety checker flagged {what} as NSFW and blanked "
        f"{'it' if outputs == 1 else 'them'} (model {model_id}). "
        "Change the prompt and generate again."
    )


def moderation_refusal(generation: GenerationRequest) -> PromptRejected | None:
    """Ask the MODERATION_HOOK about ``generation``; the refusal to record, or None to go on.

    The hook returns None or True to allow, False or a message (shown to the user) to refuse;
    it may also raise :class:`~django_modelslab.exceptions.PromptRejected` itself.
    """
    hook = load_hook("MODERATION_HOOK")
    if hook is None:
        return None
    try:
        verdict = hook(generation)
    except PromptRejected as exc:
        return exc
    if verdict is None or verdict is True:
        return None
    message = verdict if isinstance(verdict, str) and verdict.strip() else ""
    return PromptRejected(message or DEFAULT_MODERATION_MESSAGE)
