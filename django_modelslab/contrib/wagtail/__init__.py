"""Generated images in Wagtail's image library (install the ``wagtail`` extra).

Add ``"django_modelslab.contrib.wagtail"`` to ``INSTALLED_APPS`` after ``"wagtail.images"``,
then :func:`add_to_library` turns a :class:`~django_modelslab.models.GeneratedImage` into an
ordinary Wagtail image (docs/wagtail.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .library import add_to_library

__all__ = ["add_to_library"]


def __getattr__(name: str) -> Any:
    # Imported on first use: Django imports this package to find the app's config, before
    # the models can be loaded.
    if name == "add_to_library":
        from .library import add_to_library

        return add_to_library
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
