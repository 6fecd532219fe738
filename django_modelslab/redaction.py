"""Redaction: secrets and inline image data cut out of whatever is kept, logged or shown.

Provider answers, webhook bodies, exception texts and failure reasons pass through
:func:`redact` (the API key and webhook secrets, in every form they can take) and
:func:`elide_image_data` (base64 input images) before they are stored or logged.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import quote, quote_plus

REDACTED: Final = "[redacted]"
#: Fields whose value is a credential wherever they appear (any case, any depth).
SECRET_FIELDS: Final = frozenset({"key", "api_key", "apikey", "authorization"})


def redact(value: Any, secret: str | Iterable[str | None] | None = None) -> Any:
    """Copy ``value`` with credential fields masked and ``secret`` cut out of every string.

    ``secret`` is one secret or several. Each is cut out as written, without its surrounding
    whitespace and in its escaped forms (:func:`secret_forms`), from values and from the
    field names of mappings alike. Redact before truncating, so no prefix of a secret that
    straddles the cut survives.
    """
    secrets = [secret] if isinstance(secret, str) or secret is None else secret
    forms = tuple(sorted({f for s in secrets if s for f in secret_forms(s)}, key=len, reverse=True))
    return _redact(value, forms)


def _redact(value: Any, forms: tuple[str, ...]) -> Any:
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for k, v in value.items():
            name = _redact(k, forms)
            if name != k:  # a field named by a secret: keep it, under a name of its own
                base, n = name, 1
                while name in out or name in value:
                    n += 1
                    name = f"{base} ({n})"
            out[name] = REDACTED if str(k).lower() in SECRET_FIELDS else _redact(v, forms)
        return out
    if isinstance(value, list | tuple):
        return [_redact(v, forms) for v in value]
    if isinstance(value, str):
        for form in forms:
            if form in value:
                value = value.replace(form, REDACTED)
    return value


@functools.lru_cache(maxsize=32)
def secret_forms(secret: str) -> frozenset[str]:
    """How ``secret`` can appear in text: as is, stripped, and as the inside of its ``repr``,
    its JSON string, its bytes ``repr`` and its URL encodings, one escaping deep or two
    (an error message quoting a ``repr``, stored as JSON)."""
    found = {f for f in (secret, secret.strip()) if f}
    for _depth in range(2):
        found |= {e for f in found for e in _escaped(f)}
    return frozenset(f for f in found if f)


def _escaped(text: str) -> set[str]:
    quoted = (quote(text, safe=""), quote(text), quote_plus(text))
    return {
        repr(text)[1:-1],
        json.dumps(text)[1:-1],
        json.dumps(text, ensure_ascii=False)[1:-1],
        repr(text.encode())[2:-1],
        *quoted,
        *(_PERCENT.sub(lambda m: m.group().lower(), q) for q in quoted),
    }


_PERCENT = re.compile(r"%[0-9A-F]{2}")


#: Strings longer than this made only of base64 characters are taken for inline image data.
MAX_INLINE_TEXT: Final = 4096
_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/=\s_-]+")


def elide_image_data(value: Any) -> Any:
    """Copy ``value`` with inline images (``data:`` URLs, long base64 runs) cut to a stub.

    Input images may travel as base64 (``INPUT_IMAGE_TRANSPORT``); ModelsLab echoes its
    parameters, so whatever is kept or logged goes through this first.
    """
    if isinstance(value, Mapping):
        return {k: elide_image_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [elide_image_data(v) for v in value]
    if isinstance(value, str):
        if value[:5].lower() == "data:" and "," in value[:200]:
            head = value[: value.index(",")]
            return f"[{head}, {len(value)} characters elided]"
        if len(value) > MAX_INLINE_TEXT and _BASE64_TEXT.fullmatch(value):
            return f"[base64 data, {len(value)} characters elided]"
    return value
