"""``{% load modelslab %}``: ``{% modelslab_image image "fill-400x300" %}`` renders one
``<img>`` of a stored rendition, with a ``srcset`` for high-density screens.

``{% modelslab_image image "fill-400x300" class="hero" alt="A fox" %}``: attributes after the
spec pass through, escaped (``alt`` replaces the image's alt text; ``loading`` and
``decoding`` replace the defaults ``lazy`` and ``async``; a value of None or False drops
the attribute). ``... as img`` puts an :class:`ImageTag` in the context instead:
``{{ img.url }}``, ``{{ img.width }}``, ``{{ img }}`` (the ``<img>``). ``None`` renders
nothing. Renditions are made on the first render and found after that: prefetch them
(``GeneratedImage.objects.prefetch_renditions()``) and a page of images makes no query per
image.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from django import template
from django.forms.utils import flatatt
from django.template.base import FilterExpression, Parser, Token
from django.template.context import Context
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString

from ..exceptions import StorageError
from ..models import GeneratedImage, Rendition
from ..specs import parse_spec

register = template.Library()
logger = logging.getLogger(__name__)

#: Densities offered in ``srcset`` besides 1x (each no larger than the original allows).
DENSITIES = (2,)
_ATTRIBUTE = re.compile(r"([A-Za-z_:][-\w:.]*)=(.+)", re.DOTALL)


@dataclass
class ImageTag:
    """What ``{% modelslab_image ... as img %}`` stores: the 1x rendition, the ``srcset``
    and the attributes; ``str()`` is the ``<img>`` element."""

    rendition: Rendition
    srcset: str
    alt: str
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.rendition.url

    @property
    def width(self) -> int:
        return self.rendition.width

    @property
    def height(self) -> int:
        return self.rendition.height

    def __html__(self) -> str:
        attrs: dict[str, Any] = {
            "src": self.url,
            "srcset": self.srcset,
            "width": self.width,
            "height": self.height,
            "alt": self.alt,
            "loading": "lazy",
            "decoding": "async",
        }
        # Every value escaped, template literals too (Django marks those safe).
        attrs.update({name: _escaped(value) for name, value in self.attrs.items()})
        attrs["alt"] = _escaped(self.alt)
        shown = {name: value for name, value in attrs.items() if value not in (None, False)}
        return format_html("<img{}>", flatatt(shown))

    def __str__(self) -> str:
        return self.__html__()


def _escaped(value: Any) -> Any:
    return value if value is None or isinstance(value, bool) else escape(str(value))


def image_tag(image: GeneratedImage, spec: str, **attrs: Any) -> ImageTag:
    """The ``<img>`` for ``image`` at ``spec``: 1x, plus 2x (or the density the original
    allows) when the original is larger than the 1x rendition."""
    parsed = parse_spec(spec)
    one = image.get_rendition(parsed)
    sources = [f"{one.url} 1x"]
    for density in DENSITIES:
        larger = parsed.scaled(density)
        plan = larger.plan(image.width, image.height)
        if plan.width <= one.width:
            break  # the original allows nothing sharper
        rendition = image.get_rendition(larger)
        sources.append(f"{rendition.url} {round(rendition.width / one.width, 2):g}x")
    alt = attrs.pop("alt", None)
    return ImageTag(one, ", ".join(sources), image.alt_text if alt is None else str(alt), attrs)


class ImageNode(template.Node):
    def __init__(
        self,
        image: FilterExpression,
        spec: FilterExpression,
        attrs: dict[str, FilterExpression],
        target: str | None,
    ) -> None:
        self.image, self.spec, self.attrs, self.target = image, spec, attrs, target

    def render(self, context: Context) -> str:
        image = self.image.resolve(context)
        tag: ImageTag | None = None
        if image:
            attrs = {name: value.resolve(context) for name, value in self.attrs.items()}
            try:
                tag = image_tag(image, self.spec.resolve(context), **attrs)
            except StorageError as exc:  # a page still renders; the log says which file
                logger.warning("modelslab_image: no rendition of image #%s: %s", image.pk, exc)
        if self.target is not None:
            context[self.target] = tag
            return ""
        return SafeString(tag.__html__()) if tag is not None else ""


@register.tag("modelslab_image")
def modelslab_image(parser: Parser, token: Token) -> ImageNode:
    """``{% modelslab_image image "spec" [name=value ...] [as variable] %}``."""
    bits = token.split_contents()
    tag_name, args = bits[0], bits[1:]
    target = None
    if len(args) >= 2 and args[-2] == "as":
        target, args = args[-1], args[:-2]
    if len(args) < 2:
        raise template.TemplateSyntaxError(
            f'{tag_name} takes an image and a spec: {{% {tag_name} image "fill-400x300" %}}'
        )
    attrs: dict[str, FilterExpression] = {}
    for bit in args[2:]:
        match = _ATTRIBUTE.fullmatch(bit)
        if match is None:
            raise template.TemplateSyntaxError(
                f"{tag_name}: {bit!r} is not an attribute (name=value)"
            )
        attrs[match.group(1)] = parser.compile_filter(match.group(2))
    return ImageNode(parser.compile_filter(args[0]), parser.compile_filter(args[1]), attrs, target)
