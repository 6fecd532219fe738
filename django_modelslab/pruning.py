"""Which stored files no row references any more, and deleting them without racing a store.

A part: ``manage.py prune_images`` (a face) asks this module, which asks the storage
(:meth:`~.storage.base.ContentAddressedStorageMixin.iter_stored` and ``delete_stale``).
References are every ``FileField`` of every model of this app, whatever they are called
(images, thumbnails, input images, renditions...), and the fields other apps name through
their config's ``modelslab_file_fields()`` (the Wagtail integration: library images that
share our files).

The protocol (docs/deleting.md): list the files first, then read the references, so a file
stored after the listing is not a candidate and a row made before the references were read
keeps its file; a store that reuses a file refreshes its modification time; just before
deleting, the storage checks each file's time again and the references again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from django.apps import apps
from django.db import models

from .storage.base import ContentAddressedStorageMixin, Deleted, StoredFile
from .storage.content import storage_errors

APP_LABEL = "django_modelslab"


def file_fields() -> Iterator[tuple[type[models.Model], str]]:
    """``(model, field name)`` for every file field of this app's models, then those an
    installed app declares with a ``modelslab_file_fields()`` method on its config.

    All of them count, whatever storage they name: a name kept by mistake costs a file,
    a name missed would cost an image.
    """
    for model in apps.get_app_config(APP_LABEL).get_models():
        if model._meta.proxy:
            continue
        for field in model._meta.concrete_fields:
            if isinstance(field, models.FileField):
                yield model, field.name
    for config in apps.get_app_configs():
        declared = getattr(config, "modelslab_file_fields", None)
        if declared is not None:
            yield from declared()


def referenced_names() -> set[str]:
    """Every file name a row of this app references now."""
    names: set[str] = set()
    for model, field in file_fields():
        rows = (
            model._base_manager.exclude(**{field: ""})
            .exclude(**{f"{field}__isnull": True})
            .order_by()
            .values_list(field, flat=True)
            .distinct()
        )
        names.update(rows.iterator(chunk_size=2000))
    return names


def still_referenced(names: Sequence[str]) -> set[str]:
    """Those of ``names`` a row references now (the last check before deleting)."""
    found: set[str] = set()
    for model, field in file_fields():
        rows = model._base_manager.filter(**{f"{field}__in": list(names)}).order_by()
        found.update(rows.values_list(field, flat=True).distinct())
    return found


@dataclass(frozen=True)
class Orphans:
    """The files a prune would delete, and what the listing found."""

    files: list[StoredFile]  # unreferenced, modified before ``cutoff``
    cutoff: float  # epoch seconds: now minus the grace period, when the listing began
    listed: int  # every file under the prefix
    young: int  # unreferenced but modified after ``cutoff`` (kept for now)

    @property
    def size(self) -> int:
        return sum(file.size for file in self.files)


def find_orphans(
    storage: ContentAddressedStorageMixin, *, prefix: str, grace: float, now: float | None = None
) -> Orphans:
    """List ``prefix`` first, then read the references: the unreferenced files older than
    ``grace`` seconds. A failing storage raises :class:`~.exceptions.StorageError`."""
    cutoff = (time.time() if now is None else now) - grace
    with storage_errors(prefix, storage, "Listing"):  # type: ignore[arg-type]
        listed = list(storage.iter_stored(prefix))
    referenced = referenced_names()  # after the listing: see the module's docstring
    unreferenced = [file for file in listed if file.name not in referenced]
    files = [file for file in unreferenced if file.modified < cutoff]
    return Orphans(files, cutoff, len(listed), len(unreferenced) - len(files))


def delete_orphans(storage: ContentAddressedStorageMixin, orphans: Orphans) -> Deleted:
    """Delete ``orphans``' files, each checked again (time, references) just before."""
    with storage_errors("", storage, "Deleting from"):  # type: ignore[arg-type]
        return storage.delete_stale(
            [file.name for file in orphans.files],
            before=orphans.cutoff,
            still_wanted=still_referenced,
        )
