"""Request body parsers with the API's own limits: size (413) and JSON nesting (400).

A JSON body may be as large as Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE`` or, when that is
smaller, the largest valid request (its ``data:`` images at ``MAX_IMAGE_BYTES``, base64,
plus the text fields); a larger one is refused before it is read. Forms (multipart and
url-encoded) keep Django's limits (multipart files stream to disk), refused in the API's shape.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import QueryDict
from django.utils.translation import gettext as _
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser, DataAndFiles, JSONParser, MultiPartParser
from rest_framework.renderers import JSONRenderer

from ..conf import get_setting
from ..limits import TOO_DEEP, check_json
from .exceptions import RequestTooLarge

#: Room in a JSON body for everything but its images: keys, numbers, whitespace.
BODY_ALLOWANCE = 64 * 1024
#: Bytes a character of a prompt can take in JSON at most (an escaped surrogate pair).
JSON_BYTES_PER_CHARACTER = 12
#: Prompts in a body (``prompt`` and ``negative_prompt``).
PROMPTS = 2


def data_url_bytes(image_bytes: int) -> int:
    """The length of a base64 ``data:`` URL of ``image_bytes`` bytes (with a long type)."""
    return 4 * -(-image_bytes // 3) + len("data:image/webp;base64,")


def largest_valid_body(images: int) -> int:
    """The largest JSON body a valid request can be: ``images`` data: URLs plus text."""
    text = PROMPTS * get_setting("MAX_PROMPT_LENGTH") * JSON_BYTES_PER_CHARACTER
    return images * data_url_bytes(get_setting("MAX_IMAGE_BYTES")) + text + BODY_ALLOWANCE


def json_body_limit(images: int) -> int | None:
    """Bytes a JSON body may have: DATA_UPLOAD_MAX_MEMORY_SIZE, raised to a valid body's.

    None when the project turned Django's limit off (``DATA_UPLOAD_MAX_MEMORY_SIZE = None``).
    """
    django_limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if django_limit is None:
        return None
    return max(django_limit, largest_valid_body(images))


def _too_large(limit: int) -> RequestTooLarge:
    return RequestTooLarge(
        _("The request body is larger than this endpoint accepts (%(limit)d bytes).")
        % {"limit": limit}
    )


def _form_fields_too_large() -> RequestTooLarge:
    return RequestTooLarge(
        _(
            "The form fields are larger than DATA_UPLOAD_MAX_MEMORY_SIZE allows: "
            "send input images as file parts, not as data: URLs."
        )
    )


def read_at_most(stream: IO[bytes] | None, limit: int | None, context: Mapping[str, Any]) -> bytes:
    """The body, at most ``limit`` bytes (None: no limit); a longer one is a 413, and one
    whose declared length is longer is refused unread."""
    if stream is None:
        return b""
    if limit is None:
        return stream.read()
    declared = getattr(context.get("request"), "META", {}).get("CONTENT_LENGTH") or 0
    try:
        too_long = int(declared) > limit
    except ValueError:
        too_long = False
    body = b"" if too_long else stream.read(limit + 1)
    if too_long or len(body) > limit:
        raise _too_large(limit)
    return body


class LimitedJSONParser(BaseParser):
    """JSON up to :func:`json_body_limit` (``images`` data: URLs) that ``check_json`` passes.

    Not a JSONParser subclass: DRF reads those through ``request.body``, which applies
    Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (2.5 MiB) instead of this parser's limit.
    """

    media_type = "application/json"
    renderer_class = JSONRenderer
    #: How many base64 input images a valid body carries at most.
    images = 0

    def parse(
        self,
        stream: IO[bytes] | None,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        limit = json_body_limit(self.images)
        body = read_at_most(stream, limit, parser_context or {})
        try:
            data = JSONParser().parse(io.BytesIO(body), media_type, parser_context)
            check_json(data)
        except RecursionError:
            raise ParseError(_("JSON parse error - %(error)s") % {"error": TOO_DEEP}) from None
        except ValueError as exc:
            raise ParseError(_("JSON parse error - %(error)s") % {"error": exc}) from None
        return data


class GenerationJSONParser(LimitedJSONParser):
    """``POST generations/``: an input image and a mask, as data: URLs."""

    images = 2


class LimitedMultiPartParser(MultiPartParser):
    """Django's multipart parsing; its limits answer 413 and 400 in the API's shape."""

    def parse(
        self,
        stream: IO[bytes],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> DataAndFiles:
        try:
            return super().parse(stream, media_type, parser_context)
        except RequestDataTooBig:
            raise _form_fields_too_large() from None
        except (TooManyFieldsSent, TooManyFilesSent) as exc:
            raise ParseError(_("Multipart form parse error - %(error)s") % {"error": exc}) from None


class LimitedFormParser(BaseParser):
    """URL-encoded forms within Django's limits (``DATA_UPLOAD_MAX_MEMORY_SIZE`` and
    ``DATA_UPLOAD_MAX_NUMBER_FIELDS``, as for ``request.POST``): a 413 and a 400 in the
    API's shape. Not a FormParser subclass: DRF reads those through ``request.body``, whose
    RequestDataTooBig is Django's bare HTML 400.
    """

    media_type = "application/x-www-form-urlencoded"

    def parse(
        self,
        stream: IO[bytes] | None,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> QueryDict:
        context = parser_context or {}
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        try:
            body = read_at_most(stream, limit, context)
        except RequestTooLarge:
            raise _form_fields_too_large() from None
        encoding = context.get("encoding") or settings.DEFAULT_CHARSET
        try:
            return QueryDict(body, encoding=encoding)
        except TooManyFieldsSent as exc:
            raise ParseError(_("Form parse error - %(error)s") % {"error": exc}) from None
