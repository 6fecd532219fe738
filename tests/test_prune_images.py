"""``manage.py prune_images``: unreferenced stored files go, shared and young ones stay, and a
store racing a prune keeps its file; on the filesystem and on S3 (SeaweedFS)."""

from __future__ import annotations

import io
import os
import pty
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from django_modelslab.models import GeneratedImage, GenerationRequest, WebhookDelivery
from django_modelslab.pruning import delete_orphans, find_orphans, still_referenced
from django_modelslab.storage import get_image_storage
from django_modelslab.storage.content import store_file, stored_digest

pytest.register_assert_rewrite("tests.s3")
pytest_plugins = ["tests.s3"]

from .helpers import (  # noqa: E402
    configure,
    generate,
    new_kind_request,
    png,
    run_command,
    sha256_hex,
    stored_image,
    submit_and_run,
    tiny_png,
    wait_for,
)
from .s3 import STORAGE_BACKEND, S3Case  # noqa: E402

pytestmark = pytest.mark.django_db
Kind = GenerationRequest.Kind
DAY = 24 * 60 * 60


def names_of(generation: GenerationRequest) -> set[str]:
    """Every file a request's rows reference: inputs, images, thumbnails, renditions."""
    names = {generation.init_image.name, generation.mask_image.name}
    for image in generation.images.all():
        names |= {image.image.name, image.thumbnail.name}
        names |= {rendition.file.name for rendition in image.renditions.all()}
    return {name for name in names if name}


def on_disk(media: Path) -> set[str]:
    return {str(p.relative_to(media)) for p in (media / "modelslab").rglob("*") if p.is_file()}


def age_files(media: Path, seconds: float = 2 * DAY) -> None:
    then = time.time() - seconds
    for path in (media / "modelslab").rglob("*"):
        if path.is_file():
            os.utime(path, (then, then))


def listed(out: str, verb: str) -> set[str]:
    """The names of ``verb`` lines (``would delete``, ``deleted``) a -v 2 run printed."""
    return set(re.findall(rf"^{verb} (\S+) \(", out, re.M))


def record_row(key: str, data: bytes, prompt: str) -> GeneratedImage:
    """A row for bytes already stored under ``key`` (as the pipeline records one)."""
    generation = GenerationRequest.objects.create(prompt=prompt)
    return GeneratedImage.objects.create(
        request=generation, image=key, sha256=sha256_hex(data), width=16, height=12,
        format="PNG", bytes=len(data),
    )  # fmt: skip


def build_and_delete(tag: int) -> tuple[set[str], set[str]]:
    """Requests, some deleted: (the files nothing references any more, those still used).

    Kept: a request's files (a rendition too); a cached repeat's (its original deleted: they
    share files); an image two requests stored (one deleted). Unreferenced: a deleted
    request's image, thumbnail and rendition; a deleted img2img request's input image, output
    and thumbnail.
    """
    kept = generate(f"prune {tag}: a lighthouse that stays", seed=tag)
    kept.images.get().get_rendition("fill-40x30")
    original = generate(f"prune {tag}: an original and its repeat", seed=tag + 1)
    repeat = generate(f"prune {tag}: an original and its repeat", seed=tag + 1)
    assert repeat.cached_from_id == original.pk and names_of(repeat) == names_of(original)
    owl = generate(f"prune {tag}: an owl that goes", seed=tag + 2)
    owl.images.get().get_rendition("width-50|format-jpeg")
    edit = submit_and_run(
        new_kind_request(
            Kind.IMG2IMG,
            init=png((96, 64), (tag % 256, 9, 9)),
            prompt=f"prune {tag}: an input that goes",
            seed=tag + 3,
            strength=0.0,
        )
    )
    assert edit.status == GenerationRequest.Status.SUCCEEDED, edit.error
    assert edit.init_image.name.startswith("modelslab/inputs/")
    first = GenerationRequest.objects.create(prompt=f"prune {tag}: used twice")
    second = GenerationRequest.objects.create(prompt=f"prune {tag}: used twice, again")
    twice = stored_image(first, tiny_png(tag % 256)).image.name
    assert stored_image(second, tiny_png(tag % 256)).image.name == twice

    unreferenced = names_of(owl) | names_of(edit)
    used = names_of(kept) | names_of(repeat) | {twice}
    assert len(unreferenced) == 6 and not unreferenced & used
    for generation in (original, owl, edit, first):
        generation.delete()
    return unreferenced, used


class Terminal:
    """A pseudo-terminal for the command's stdin: ``answer(...)`` types once prompted."""

    def __init__(self) -> None:
        self.master, slave = pty.openpty()
        self.stdin = os.fdopen(slave, "r")
        self.out = io.StringIO()
        self.thread: threading.Thread | None = None

    def answer(self, text: bytes, before: Callable[[], None] = lambda: None) -> None:
        def type_it() -> None:
            wait_for(lambda: "[y/N]" in self.out.getvalue())
            before()
            os.write(self.master, text)

        self.thread = threading.Thread(target=type_it, daemon=True)
        self.thread.start()

    def run(self, *args: str) -> tuple[str, str | None]:
        err = io.StringIO()
        try:
            call_command("prune_images", *args, stdin=self.stdin, stdout=self.out, stderr=err)
            error = None
        except CommandError as exc:
            error = str(exc)
        if self.thread is not None:
            self.thread.join(10)
        return self.out.getvalue() + err.getvalue(), error

    def close(self) -> None:
        self.stdin.close()
        os.close(self.master)


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    tty = Terminal()
    yield tty
    tty.close()


# --- on the filesystem ------------------------------------------------------------------------


def test_deletes_exactly_the_unreferenced_files_and_dry_run_deletes_nothing(emulator, media):
    unreferenced, used = build_and_delete(610)
    age_files(media)  # all older than the grace period (a day)...
    young = store_file(io.BytesIO(tiny_png(61))).key  # ...but this one, stored just now
    before = on_disk(media)
    assert unreferenced | used | {young} == before

    out, error = run_command("prune_images", "--dry-run", "-v", "2")

    assert error is None, out
    assert on_disk(media) == before  # nothing deleted
    assert listed(out, "would delete") == unreferenced
    freed = sum((media / name).stat().st_size for name in unreferenced)
    assert f"Dry run: 6 file(s) ({freed:,} bytes) would be deleted; nothing deleted." in out

    out, error = run_command("prune_images", "--yes", "-v", "2")

    assert error is None, out
    assert listed(out, "deleted") == unreferenced  # what the dry run said
    assert on_disk(media) == used | {young}
    assert f"Deleted 6 file(s), {freed:,} bytes freed; 0 not deleted." in out
    assert "1 unreferenced but younger, kept" in out
    for image in GeneratedImage.objects.all():  # every row still has its files
        assert stored_digest(get_image_storage(), image.image.name) == (image.sha256, image.bytes)

    out, error = run_command("prune_images", "--yes")  # nothing left to do
    assert error is None and "0 unreferenced and older" in out


def test_grace_keeps_younger_files(media):
    old = store_file(io.BytesIO(tiny_png(62))).key
    age_files(media, 3600)  # an hour old
    recent = store_file(io.BytesIO(tiny_png(63))).key

    out, error = run_command("prune_images", "--yes", "--grace", "7200")
    assert error is None and on_disk(media) == {old, recent}

    out, error = run_command("prune_images", "--yes", "--grace", "1800", "-v", "2")
    assert error is None and on_disk(media) == {recent}
    assert listed(out, "deleted") == {old}
    assert "Warning: --grace 1800 is under a quarter of PRUNE_GRACE" in out


def test_bad_options_are_refused(media, settings):
    key = store_file(io.BytesIO(tiny_png(64))).key
    age_files(media)

    _out, error = run_command("prune_images", "--yes", "--grace", "-1")
    assert error == "--grace must be 0 or more seconds, got -1."
    configure(settings, UPLOAD_PREFIX="")
    _out, error = run_command("prune_images", "--yes")
    assert error is not None and "UPLOAD_PREFIX'] is empty" in error
    assert on_disk(media) == {key}


def test_without_a_terminal_and_without_yes_nothing_is_deleted(media):
    key = store_file(io.BytesIO(tiny_png(65))).key
    age_files(media)

    _out, error = run_command("prune_images")  # stdin is not a terminal here

    assert error is not None and "Not on a terminal" in error and "--yes" in error
    assert on_disk(media) == {key}


def test_on_a_terminal_it_asks_first(media, terminal: Terminal):
    key = store_file(io.BytesIO(tiny_png(66))).key
    size = (media / key).stat().st_size
    age_files(media)
    terminal.answer(b"n\n")

    out, error = terminal.run()

    assert f"Delete 1 file(s), {size:,} bytes? [y/N]" in out
    assert error == "Not confirmed: nothing deleted."
    assert on_disk(media) == {key}


def test_on_a_terminal_yes_deletes(media, terminal: Terminal):
    store_file(io.BytesIO(tiny_png(67)))
    age_files(media)
    terminal.answer(b"y\n")

    out, error = terminal.run()

    assert error is None, out
    assert "Deleted 1 file(s)" in out and on_disk(media) == set()


# --- a store racing a prune -------------------------------------------------------------------


def test_a_store_while_the_prune_waits_for_confirmation_keeps_its_file(media, terminal: Terminal):
    """The prune has listed the files and read the references; a worker then stores the same
    bytes (the file exists: nothing uploaded) and records a row only after the prune is done.
    The store refreshed the file's time, and the prune checks it again before deleting."""
    data = tiny_png(68)
    key = store_file(io.BytesIO(data)).key
    age_files(media)  # an old orphan: a candidate
    stores = []
    terminal.answer(b"y\n", before=lambda: stores.append(store_file(io.BytesIO(data))))

    out, error = terminal.run("-v", "2")

    assert error is None, out
    assert [(s.key, s.uploaded) for s in stores] == [(key, False)]  # reused, not written
    assert "Delete 1 file(s)" in out  # it was a candidate when listed
    assert "Deleted 0 file(s), 0 bytes freed; 1 kept (stored or referenced again" in out
    record_row(key, data, "prune: the racing store's row")
    assert stored_digest(get_image_storage(), key) == (sha256_hex(data), len(data))


def test_a_store_after_the_prune_set_the_file_aside_writes_it_again(media):
    """The last moment: the prune has moved the file aside and is reading the references
    when the worker stores the same bytes; it finds nothing there and writes them again."""
    data = tiny_png(69)
    key = store_file(io.BytesIO(data)).key
    age_files(media)
    storage = get_image_storage()
    orphans = find_orphans(storage, prefix="modelslab/", grace=DAY)
    assert [file.name for file in orphans.files] == [key]
    stores = []

    def references_while_a_store_runs(names):
        stores.append(store_file(io.BytesIO(data)))
        return still_referenced(names)

    result = storage.delete_stale(
        [key], before=orphans.cutoff, still_wanted=references_while_a_store_runs
    )

    assert [(s.key, s.uploaded) for s in stores] == [(key, True)]
    assert [file.name for file in result.deleted] == [key]  # the old copy went...
    assert stored_digest(storage, key) == (sha256_hex(data), len(data))  # ...the new one stays
    assert on_disk(media) == {key}  # nothing left aside


def test_a_row_made_after_the_listing_keeps_its_file(media):
    data = tiny_png(70)
    key = store_file(io.BytesIO(data)).key
    age_files(media)
    storage = get_image_storage()
    orphans = find_orphans(storage, prefix="modelslab/", grace=DAY)
    record_row(key, data, "prune: a row made meanwhile")

    result = delete_orphans(storage, orphans)

    assert result.kept == [key] and not result.deleted
    assert on_disk(media) == {key}


# --- a user's data (docs/deleting.md) ---------------------------------------------------------


def test_deleting_a_users_requests_then_pruning_removes_their_files(emulator, media):
    alice = User.objects.create_user("prune-alice")
    bob = User.objects.create_user("prune-bob")
    hers = generate("prune 620: alice's own", seed=620, requested_by=alice)
    shared = generate("prune 620: alice's, repeated by bob", seed=621, requested_by=alice)
    edit = submit_and_run(
        new_kind_request(
            Kind.IMG2IMG,
            init=png((80, 60), (62, 0, 62)),
            prompt="prune 620: alice's photo",
            seed=622,
            strength=0.0,
            requested_by=alice,
        )
    )
    bobs = generate("prune 620: alice's, repeated by bob", seed=621, requested_by=bob)
    assert bobs.cached_from_id == shared.pk  # bob's request shares alice's files
    theirs = names_of(hers) | names_of(edit)
    kept = names_of(bobs)

    # what docs/deleting.md says to run
    generations = GenerationRequest.objects.filter(requested_by=alice)
    WebhookDelivery.objects.filter(request__in=generations).delete()
    generations.delete()
    alice.delete()
    age_files(media)
    out, error = run_command("prune_images", "--yes", "-v", "2")

    assert error is None, out
    assert listed(out, "deleted") == theirs
    assert on_disk(media) == kept
    assert list(GenerationRequest.objects.all()) == [bobs]


def test_deleting_only_the_user_keeps_their_requests_and_files(emulator, media):
    carol = User.objects.create_user("prune-carol")
    hers = generate("prune 630: carol's", seed=630, requested_by=carol)
    files = names_of(hers)
    carol.delete()
    hers.refresh_from_db()
    assert hers.requested_by is None
    age_files(media)

    _out, error = run_command("prune_images", "--yes")

    assert error is None and on_disk(media) == files


# --- on S3 (SeaweedFS) ------------------------------------------------------------------------

#: S3 cannot date objects back: a short PRUNE_GRACE (refreshes after 2 s), objects waited on.
S3_GRACE = {"PRUNE_GRACE": 8}


@pytest.fixture
def on_s3(s3: S3Case, settings) -> S3Case:
    settings.STORAGES = {
        **settings.STORAGES,
        "modelslab": {"BACKEND": STORAGE_BACKEND, "OPTIONS": s3.options()},
    }
    configure(settings, **S3_GRACE)
    return s3


def in_bucket(s3: S3Case) -> set[str]:
    return {key.removeprefix(f"{s3.location}/") for key in s3.keys()}  # noqa: SIM118


def test_s3_deletes_exactly_the_unreferenced_objects(emulator, on_s3: S3Case):
    unreferenced, used = build_and_delete(640)
    time.sleep(2.5)  # older than --grace 2
    young = store_file(io.BytesIO(tiny_png(71))).key
    before = in_bucket(on_s3)
    assert before == unreferenced | used | {young}

    out, error = run_command("prune_images", "--dry-run", "--grace", "2", "-v", "2")

    assert error is None, out
    assert listed(out, "would delete") == unreferenced
    assert in_bucket(on_s3) == before

    out, error = run_command("prune_images", "--yes", "--grace", "2", "-v", "2")

    assert error is None, out
    assert listed(out, "deleted") == unreferenced
    assert in_bucket(on_s3) == used | {young}
    assert "Deleted 6 file(s)" in out and "ContentAddressedS3Storage" in out


def test_s3_a_store_while_the_prune_waits_keeps_its_object(on_s3: S3Case, terminal: Terminal):
    data = tiny_png(72)
    key = store_file(io.BytesIO(data)).key
    storage = get_image_storage()
    headers = on_s3.client.head_object(Bucket=on_s3.server.bucket, Key=f"{on_s3.location}/{key}")
    time.sleep(2.5)  # older than the grace (2 s) and than a quarter of PRUNE_GRACE
    stores = []
    terminal.answer(b"y\n", before=lambda: stores.append(store_file(io.BytesIO(data))))

    out, error = terminal.run("--grace", "2")

    assert error is None, out
    assert [(s.key, s.uploaded) for s in stores] == [(key, False)]  # reused: no upload
    assert "Delete 1 file(s)" in out and "Deleted 0 file(s)" in out and "1 kept" in out
    assert stored_digest(storage, key) == (sha256_hex(data), len(data))
    # the refresh (a copy in place) kept what the object carried
    after = on_s3.client.head_object(Bucket=on_s3.server.bucket, Key=f"{on_s3.location}/{key}")
    assert after["LastModified"] > headers["LastModified"]
    for header in ("ContentType", "CacheControl", "Metadata"):
        assert after.get(header) == headers.get(header), header


def test_s3_errors_are_reported_per_key_and_nothing_is_deleted(on_s3: S3Case, settings):
    key = store_file(io.BytesIO(tiny_png(73))).key
    time.sleep(2.5)
    storage = get_image_storage()
    orphans = find_orphans(storage, prefix="modelslab/", grace=2)
    assert [file.name for file in orphans.files] == [key]
    # the credentials stop working between the listing and the deletion
    settings.STORAGES = {
        **settings.STORAGES,
        "modelslab": {
            "BACKEND": STORAGE_BACKEND,
            "OPTIONS": on_s3.options(secret_key="not-the-secret"),
        },
    }

    result = delete_orphans(get_image_storage(), orphans)

    assert not result.deleted and list(result.errors) == [key]
    assert key in in_bucket(on_s3)
