"""Alt text for stored images: the ALT_TEXT_HOOK's, else a cleaned version of the prompt.

:func:`alt_text_for` runs when the pipeline records an image (``pipeline/record.py``). A hook
that fails or returns nothing usable is logged (redacted) and the default is used: an image
is never lost over its alt text.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from typing import TYPE_CHECKING

from .conf import configured_secrets, load_hook
from .models import ALT_TEXT_MAX_LENGTH
from .redaction import redact

if TYPE_CHECKING:
    from .models import GeneratedImage, GenerationRequest

logger = logging.getLogger(__name__)


def clean_alt_text(text: str, *, length: int = ALT_TEXT_MAX_LENGTH) -> str:
    """``text`` on one line: control characters dropped, whitespace collapsed, cut after a whole
    word to at most ``length`` characters (an ellipsis marks the cut)."""
    printable = "".join(_printable(char) for char in str(text))
    collapsed = re.sub(r"\s+", " ", printable).strip()
    if len(collapsed) <= length:
        return collapsed
    head = collapsed[: length - 1]
    word_end = head.rfind(" ") if collapsed[length - 1] != " " else len(head)
    return (head[:word_end] if word_end > 0 else head).rstrip() + "…"


def _printable(char: str) -> str:
    """Control characters and separators become spaces; other invisible ones (bidi
    overrides, private use) go, except the joiner emoji sequences use."""
    category = unicodedata.category(char)
    if category == "Cc" or category[0] == "Z":
        return " "
    return "" if category[0] == "C" and char != "\u200d" else char


def default_alt_text(generation: GenerationRequest) -> str:
    """The prompt, cleaned (:func:`clean_alt_text`)."""
    return clean_alt_text(generation.prompt or "")


def alt_text_for(image: GeneratedImage, generation: GenerationRequest) -> str:
    """What ``ALT_TEXT_HOOK(image, generation)`` returns, cleaned, else the default.

    ``image`` is not saved yet (no primary key) but has its file, size and format.
    """
    hook = load_hook("ALT_TEXT_HOOK")
    if hook is not None:
        try:
            text = hook(image, generation)
        except Exception as exc:
            reason = redact(f"{type(exc).__name__}: {exc}", configured_secrets())
            logger.warning(
                "ALT_TEXT_HOOK failed for an image of generation #%s (%s); "
                "the prompt is used instead",
                generation.pk,
                reason,
            )
        else:
            if isinstance(text, str) and text.strip():
                return clean_alt_text(text)
            if text is not None:
                logger.warning(
                    "ALT_TEXT_HOOK returned %s for an image of generation #%s, not text; "
                    "the prompt is used instead",
                    type(text).__name__,
                    generation.pk,
                )
    return default_alt_text(generation)
