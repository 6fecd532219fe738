"""``manage.py copy_images --from ALIAS``: move a site's images to its configured storage.

Copies every file a row references (images, thumbnails, image inputs) from the storage
alias the site used before into ``MODELSLAB["STORAGE"]``, by content: keys already there
are skipped, and only bytes that hash to their name are written. Run it after switching
storages (e.g. from files to S3), then ``verify_images``. Exits with status 1 when a file
could not be copied; running it again retries only those.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.files.storage import storages
from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_modelslab.conf import get_setting
from django_modelslab.integrity import copy_file, referenced_files
from django_modelslab.storage import get_image_storage


class Command(BaseCommand):
    help = (
        "Copy every stored image, thumbnail and input from an old storage alias into the "
        "configured MODELSLAB['STORAGE'] (keys already there are skipped; bytes are checked "
        "against their hash). Exits with status 1 if a file could not be copied."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--from",
            dest="source",
            required=True,
            metavar="ALIAS",
            help="The settings.STORAGES alias that holds the files now (the old storage).",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Only say how many files would be copied; write nothing.",
        )

    def handle(self, *args: Any, source: str, dry_run: bool, **options: Any) -> None:
        aliases = getattr(settings, "STORAGES", {})
        if source not in aliases:
            known = ", ".join(sorted(aliases)) or "none"
            raise CommandError(
                f"--from {source}: no such alias in settings.STORAGES (it has: {known})."
            )
        configured = get_setting("STORAGE")
        if configured not in aliases:
            configured = "default"
        if source == configured:
            raise CommandError(
                f"--from {source}: that is the configured storage (MODELSLAB['STORAGE']); "
                "name the alias of the storage the files are copied from."
            )
        old, new = storages[source], get_image_storage()
        verbose = options["verbosity"] >= 2
        counts = {"copied": 0, "present": 0, "would copy": 0, "failed": 0}
        size = 0
        for name, metadata in referenced_files():
            result = copy_file(name, old, new, metadata=metadata, dry_run=dry_run)
            if not result.ok:
                counts["failed"] += 1
                self.stderr.write(f"{name}: {result.outcome}")
                continue
            counts[result.outcome] += 1
            size += result.size
            if verbose and result.outcome != "present":
                self.stdout.write(f"{name}: {result.outcome}")
        where = f"from {source!r} to {configured!r} ({type(new).__name__})"
        if dry_run:
            summary = (
                f"Dry run {where}: {counts['would copy']} file(s) would be copied, "
                f"{counts['present']} already there."
            )
        else:
            summary = (
                f"Copied {counts['copied']} file(s) ({size:,} bytes) {where}; "
                f"{counts['present']} already there; {counts['failed']} not copied."
            )
        if counts["failed"]:
            raise CommandError(summary)
        self.stdout.write(self.style.SUCCESS(summary))
