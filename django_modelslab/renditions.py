"""Renditions: a generated image resized by a spec, made once and stored once.

:func:`get_rendition` is what ``GeneratedImage.get_rendition(spec)`` runs. It finds the
(image, spec) row (in the prefetched ``renditions`` when there are some: no query), or
makes it: the original is read from storage and resized in bounded memory
(:mod:`.imaging.renditions`), the bytes stored under their own hash in
``<UPLOAD_PREFIX>renditions/`` (:mod:`.storage.content`: identical renditions are one file),
and the row created with ``get_or_create`` on the (image, spec) constraint. Two workers
asking at once encode the same bytes to the same key (written once) and one of them makes
the row; the other gets it.
"""

from __future__ import annotations

from contextlib import ExitStack

from .conf import get_setting
from .exceptions import StorageError
from .imaging.credentials import Ingredient, load_credentials, sign_derived
from .imaging.renditions import output_format, render_rendition
from .models import GeneratedImage, Rendition
from .specs import Spec, parse_spec
from .storage.content import RENDITION_FOLDER, storage_errors, store_thumbnail

#: Where an instance keeps the renditions it looked up or made.
_MADE = "_modelslab_renditions"


def get_rendition(image: GeneratedImage, spec: str | Spec) -> Rendition:
    """The rendition of ``image`` for ``spec``, made and stored the first time it is asked.

    :class:`~.exceptions.InvalidRenditionSpec` for a spec that cannot be read (or a format
    this Pillow cannot write); :class:`~.exceptions.StorageError` when the original cannot be
    read or the rendition cannot be written.
    """
    parsed = parse_spec(spec)
    name = str(parsed)
    rendition = known_rendition(image, name) or _make(image, parsed)
    _remember(image, rendition)
    return rendition


def known_rendition(image: GeneratedImage, spec: str) -> Rendition | None:
    """The stored row for ``spec`` (canonical), from the prefetched renditions when loaded."""
    made = image.__dict__.get(_MADE, {})
    if spec in made:
        return made[spec]
    prefetched = getattr(image, "_prefetched_objects_cache", {}).get("renditions")
    if prefetched is not None:
        return next((r for r in prefetched if r.spec == spec), None)
    return Rendition.objects.filter(image=image, spec=spec).first()


def _make(image: GeneratedImage, spec: Spec) -> Rendition:
    fmt = output_format(image.format, spec.format)
    plan = spec.plan(image.width, image.height)
    storage = image.image.storage
    name = image.image.name or ""
    credentials = load_credentials(get_setting("C2PA"))
    with ExitStack() as stack:
        with storage_errors(name, storage, "Reading"):
            try:
                source = stack.enter_context(storage.open(name, "rb"))
            except FileNotFoundError as exc:
                raise StorageError(f"Reading {name} failed: it is not stored", key=name) from exc
            made = render_rendition(source, plan, fmt)
            if credentials is not None:  # C2PA: resized (converted) from the original
                source.seek(0)
                title = f"{name.rsplit('/', 1)[-1]} {spec}"
                parent = Ingredient(source, title=name.rsplit("/", 1)[-1])
                signed = stack.enter_context(
                    sign_derived(made.file, credentials, title=title, parent=parent)
                )
                made = type(made)(signed.file, made.info)
        stored = store_thumbnail(
            made, storage=storage, prefix=get_setting("UPLOAD_PREFIX"), folder=RENDITION_FOLDER
        )
    defaults = {
        "file": stored.key,
        "width": stored.info.width,
        "height": stored.info.height,
        "format": stored.info.format,
        "bytes": stored.size,
        "sha256": stored.sha256,
    }
    # On the (image, spec) constraint: a racing worker's IntegrityError becomes its row.
    rendition, _created = Rendition.objects.get_or_create(
        image=image, spec=str(spec), defaults=defaults
    )
    return rendition


def _remember(image: GeneratedImage, rendition: Rendition) -> None:
    """Keep ``rendition`` on this instance: asking it again makes no query."""
    image.__dict__.setdefault(_MADE, {})[rendition.spec] = rendition
