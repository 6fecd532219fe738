"""``manage.py prune_images``: delete stored files that no row references any more.

Lists every file under ``MODELSLAB["UPLOAD_PREFIX"]`` in the configured storage (images,
thumbnails, renditions, input images), then reads what every file field of this app's
models references, and deletes the unreferenced files older than the grace period, each
checked again just before (docs/deleting.md). Asks first on a terminal; ``--yes`` for
scripts; ``--dry-run`` only lists. Exits with status 1 when a file could not be deleted.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_modelslab.conf import get_setting
from django_modelslab.exceptions import StorageError
from django_modelslab.pruning import Orphans, delete_orphans, find_orphans
from django_modelslab.storage import ContentAddressedStorageMixin, get_image_storage


class Command(BaseCommand):
    help = (
        "Delete stored images, thumbnails, renditions and input images that no row "
        "references any more, once older than the grace period. Asks first on a terminal; "
        "--yes for scripts, --dry-run to only list."
    )
    stealth_options = ("stdin",)  # call_command(..., stdin=...): where the answer is read

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="List what would be deleted (with -v 2, file by file); delete nothing.",
        )
        parser.add_argument(
            "--grace",
            type=int,
            metavar="SECONDS",
            help="Keep unreferenced files modified in the last SECONDS (default: "
            "MODELSLAB['PRUNE_GRACE'], a day), so a file being stored now is never taken.",
        )
        parser.add_argument(
            "--yes",
            action="store_true",
            help="Do not ask for confirmation (for scripts and cron jobs).",
        )

    def handle(
        self,
        *args: Any,
        dry_run: bool,
        grace: int | None,
        yes: bool,
        **options: Any,
    ) -> None:
        default_grace = int(get_setting("PRUNE_GRACE"))
        if grace is None:
            grace = default_grace
        if grace < 0:
            raise CommandError(f"--grace must be 0 or more seconds, got {grace}.")
        prefix = get_setting("UPLOAD_PREFIX")
        if not prefix.strip("/"):
            raise CommandError(
                "MODELSLAB['UPLOAD_PREFIX'] is empty: prune_images would list the whole "
                "storage, files of other apps included. Give the images a prefix of their own."
            )
        storage = get_image_storage()
        if not isinstance(storage, ContentAddressedStorageMixin):
            raise CommandError(
                f"The image storage is a {type(storage).__name__}: prune_images needs a "
                "django_modelslab.storage content-addressed storage (docs/storage.md)."
            )
        if grace < default_grace / 4:
            self.stderr.write(
                f"Warning: --grace {grace} is under a quarter of PRUNE_GRACE "
                f"({default_grace} s): a file a worker reuses right now may be taken. "
                "Run it so only while nothing is being generated."
            )
        verbose = options["verbosity"] >= 2
        where = f"under {prefix!r} in {type(storage).__name__}"
        try:
            orphans = find_orphans(storage, prefix=prefix, grace=grace)
        except StorageError as exc:
            raise CommandError(str(exc)) from exc
        self._report_found(orphans, where, grace)
        if not orphans.files:
            return
        if dry_run:
            if verbose:
                for file in orphans.files:
                    self.stdout.write(f"would delete {file.name} ({file.size:,} bytes)")
            self.stdout.write(
                f"Dry run: {len(orphans.files)} file(s) ({orphans.size:,} bytes) would be "
                "deleted; nothing deleted."
            )
            return
        if not yes:
            self._confirm(orphans, options.get("stdin") or sys.stdin)
        try:
            result = delete_orphans(storage, orphans)
        except StorageError as exc:
            raise CommandError(str(exc)) from exc
        if verbose:
            for file in result.deleted:
                self.stdout.write(f"deleted {file.name} ({file.size:,} bytes)")
        for name, reason in sorted(result.errors.items()):
            self.stderr.write(f"{name}: not deleted: {reason}")
        freed = sum(file.size for file in result.deleted)
        summary = f"Deleted {len(result.deleted)} file(s), {freed:,} bytes freed"
        if result.kept:
            summary += f"; {len(result.kept)} kept (stored or referenced again meanwhile)"
        if result.gone:
            summary += f"; {len(result.gone)} already gone"
        summary += f"; {len(result.errors)} not deleted."
        if result.errors:
            raise CommandError(summary)
        self.stdout.write(self.style.SUCCESS(summary))

    def _report_found(self, orphans: Orphans, where: str, grace: int) -> None:
        self.stdout.write(
            f"{orphans.listed} file(s) {where}: {len(orphans.files)} unreferenced and older "
            f"than {grace} s ({orphans.size:,} bytes); {orphans.young} unreferenced but "
            "younger, kept."
        )

    def _confirm(self, orphans: Orphans, stdin: IO[str]) -> None:
        if not stdin.isatty():
            raise CommandError(
                "Not on a terminal, so nobody can confirm: nothing deleted. Run with --yes to "
                "delete without asking (or --dry-run to list)."
            )
        self.stdout.write(
            f"Delete {len(orphans.files)} file(s), {orphans.size:,} bytes? [y/N] ", ending=""
        )
        self.stdout.flush()
        answer = stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            raise CommandError("Not confirmed: nothing deleted.")
