"""What test modules share: requests, users and clients, admin forms, images, waiting.

Plain functions (import them); fixtures built on them live in ``tests/conftest.py``.
docs/development.md ("Writing tests") says which to reach for.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from django.contrib.auth.models import Permission, User
from django.core.files.base import ContentFile
from django.core.management import CommandError, call_command
from django.db import connection
from django.dispatch import Signal
from django.test import TestCase
from django.urls import reverse
from PIL import Image
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from django_modelslab import kinds, pipeline
from django_modelslab.models import GeneratedImage, GenerationRequest
from django_modelslab.storage.content import store_file

T = TypeVar("T")

#: The ``modelslab`` storage alias a test points at its own MEDIA_ROOT (the ``media`` fixture).
CAFS = "django_modelslab.storage.ContentAddressedFileSystemStorage"

#: The secrets the ``webhooks_on`` fixture configures (both accepted: a rotation).
WEBHOOK_SECRET = "webhook-secret-for-tests-0123456789"
OLD_WEBHOOK_SECRET = "an-older-secret-still-accepted-0123456789"


def configure(settings, **values: Any) -> None:
    """Override some MODELSLAB settings (pytest-django's ``settings`` restores them)."""
    settings.MODELSLAB = {**settings.MODELSLAB, **values}


# --- generation requests ----------------------------------------------------------------------
# The emulator draws its pictures from prompt, seed and size, and the suite shares one media
# directory: a test that asserts a file is stored for the first time needs inputs no other
# test uses. Modules therefore keep their own prompt (and seeds) and pass them.

PROMPT = "a red fox in snow"


def new_request(prompt: str = PROMPT, **fields: Any) -> GenerationRequest:
    """A saved text2img request, 256 x 256 unless given; nothing sent yet."""
    return GenerationRequest.objects.create(
        **{"prompt": prompt, "width": 256, "height": 256, **fields}
    )


def new_kind_request(
    kind: str, *, init: bytes | None = None, mask: bytes | None = None, **fields: Any
) -> GenerationRequest:
    """A saved request of ``kind`` (seed 5 unless given) whose input images are stored the
    way the faces store uploads."""
    request = GenerationRequest(kind=kind, **{"prompt": PROMPT, "seed": 5, **fields})
    kinds.set_inputs(
        request,
        init_file=ContentFile(init, name="init.png") if init is not None else None,
        mask_file=ContentFile(mask, name="mask.png") if mask is not None else None,
    )
    request.save()
    return request


def generate(prompt: str = PROMPT, **fields: Any) -> GenerationRequest:
    """A new request submitted as the faces submit it, its task run now (inline tasks, the
    on-commit callback executed); reloaded."""
    with TestCase.captureOnCommitCallbacks(execute=True):
        request = pipeline.submit(new_request(prompt, **fields))
    request.refresh_from_db()
    return request


def run_new(prompt: str = PROMPT, **fields: Any) -> GenerationRequest:
    """A new request run by the worker's entry point, ``pipeline.run``; reloaded."""
    request = new_request(prompt, **fields)
    pipeline.run(request.pk)
    request.refresh_from_db()
    return request


def submit_and_run(request: GenerationRequest) -> GenerationRequest:
    """Submit ``request`` without enqueueing, run it in this thread; reloaded."""
    pipeline.run(pipeline.submit(request, enqueue=False).pk)
    request.refresh_from_db()
    return request


def generated_image(prompt: str = PROMPT, **fields: Any) -> GeneratedImage:
    """The one image of a new request run through the pipeline (it must succeed)."""
    request = submit_and_run(new_request(prompt, **fields))
    assert request.status == GenerationRequest.Status.SUCCEEDED, request.error
    return request.images.get()


def stored_image(request: GenerationRequest, data: bytes, position: int = 0) -> GeneratedImage:
    """An image row of ``request`` for ``data``, stored content-addressed (no thumbnail)."""
    stored = store_file(io.BytesIO(data))
    return GeneratedImage.objects.create(
        request=request,
        image=stored.key,
        sha256=stored.sha256,
        width=stored.info.width,
        height=stored.info.height,
        format=stored.info.format,
        bytes=stored.size,
        position=position,
    )


def succeeded_request(user: User | None, *, images: int = 2, **fields: Any) -> GenerationRequest:
    """A finished request with image rows, made directly (no files behind them)."""
    fields = {
        "prompt": "a red fox",
        "status": GenerationRequest.Status.SUCCEEDED,
        "model_id": "flux",
        **fields,
    }
    generation = GenerationRequest.objects.create(requested_by=user, **fields)
    for position in range(images):
        digest = hashlib.sha256(f"{generation.pk}-{position}".encode()).hexdigest()
        GeneratedImage.objects.create(
            request=generation,
            image=f"modelslab/{digest[:2]}/{digest}.png",
            thumbnail=f"modelslab/{digest[:2]}/{digest}.webp",
            sha256=digest,
            width=512,
            height=512,
            format="PNG",
            bytes=1234,
            source_url=f"http://provider.invalid/out/{digest}.png",
            position=position,
        )
    return generation


@contextmanager
def signals_sent(signals: dict[str, Signal]) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """(name, kwargs) of every send of these signals inside the block, in order."""
    seen: list[tuple[str, dict[str, Any]]] = []
    receivers = {}
    for name, signal in signals.items():

        def receiver(sender: Any, name: str = name, **kwargs: Any) -> None:
            seen.append((name, kwargs))

        receivers[name] = receiver  # signals hold weak references
        signal.connect(receiver)
    try:
        yield seen
    finally:
        for name, signal in signals.items():
            signal.disconnect(receivers[name])


def sent(emulator, route: str = "text2img") -> list[dict[str, Any]]:
    """The body of every ``route`` call the emulator received, in order."""
    return [body for name, body in emulator.requests if name == route]


def sent_seeds(emulator) -> list[int | None]:
    """The seed of every text2img call the emulator received, in order."""
    return [body.get("seed") for body in sent(emulator)]


def process_env(emulator, settings, **extra: str) -> dict[str, str]:
    """The environment of a ``tests.settings`` process (a worker, ``manage.py``) that uses
    this test's database, emulator and media directory (see the end of tests/settings.py)."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "MODELSLAB_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
        "MODELSLAB_TEST_BASE_URL": emulator.base_url,
        "TEST_MEDIA_ROOT": str(settings.MEDIA_ROOT),
        **extra,
    }


def run_command(name: str, *args: str) -> tuple[str, str | None]:
    """Run a management command: (stdout + stderr, the CommandError's message or None)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command(name, *args, stdout=out, stderr=err)
    except CommandError as exc:
        return out.getvalue() + err.getvalue(), str(exc)
    return out.getvalue() + err.getvalue(), None


# --- users and the REST API -------------------------------------------------------------------


def with_perms(username: str, *codenames: str, **fields: Any) -> User:
    """A user holding these permissions (no password unless given: hashing is slow)."""
    user = User.objects.create_user(username, **fields)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


def staff(username: str, codenames: list[str], password: str | None = None) -> User:
    """A staff user with these permissions."""
    return with_perms(username, *codenames, is_staff=True, password=password)


def api_url(name: str, *args: object) -> str:
    return reverse(f"modelslab-api:{name}", args=args)


def api_client(user: User | None) -> APIClient:
    """A client sending the user's DRF token the way OpenAI clients do (Bearer)."""
    client = APIClient()
    if user is not None:
        token, _ = Token.objects.get_or_create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token.key}")
    return client


# --- the admin --------------------------------------------------------------------------------

CHANGELIST = reverse("admin:django_modelslab_generationrequest_changelist")
VIEW_PERMS = ["view_generationrequest", "view_generatedimage"]
EDIT_PERMS = [*VIEW_PERMS, "add_generationrequest", "change_generationrequest"]


def change_url(obj: GenerationRequest) -> str:
    return reverse("admin:django_modelslab_generationrequest_change", args=[obj.pk])


def form_data(**fields: Any) -> dict[str, Any]:
    """What the add/change form posts (the images inline included)."""
    data = {
        "prompt": "a red kite over hills",
        "negative_prompt": "",
        "model_id": "",
        "width": "256",
        "height": "256",
        "samples": "1",
        "kind": "text2img",
        "seed": "7",
        "steps": "",
        "guidance": "",
        "use_cache": "on",
        "extra": "{}",
        "images-TOTAL_FORMS": "0",
        "images-INITIAL_FORMS": "0",
        "images-MIN_NUM_FORMS": "0",
        "images-MAX_NUM_FORMS": "1000",
    }
    data.update(fields)
    return data


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def run_action(client, action: str, *objs, url: str = CHANGELIST):
    """Post a changelist action and follow the redirect (which shows, and clears, messages)."""
    data = {"action": action, "_selected_action": [obj.pk for obj in objs]}
    return client.post(url, data, follow=True)


# --- images -----------------------------------------------------------------------------------


def encoded(image: Image.Image, fmt: str = "PNG", **options: Any) -> io.BytesIO:
    """``image`` saved as ``fmt``, as a file read from its start."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    buffer.seek(0)
    return buffer


def opened(data: bytes) -> Image.Image:
    """The decoded image (loaded, so the bytes may go)."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def pixels(data: bytes) -> Image.Image:
    """The decoded image in RGB, to compare pixels."""
    return opened(data).convert("RGB")


def stored_pixels(image: GeneratedImage) -> Image.Image:
    with image.image.open("rb") as file:
        return pixels(file.read())


def solid_png(size: tuple[int, int], color: tuple[int, int, int]) -> bytes:
    """One colour: the same bytes every time."""
    return encoded(Image.new("RGB", size, color)).getvalue()


def tiny_png(seed: int) -> bytes:
    """16 x 12 in one colour per ``seed`` (0-255): a different file for each seed."""
    return solid_png((16, 12), (seed, 40, 90))


def png(size: tuple[int, int] = (256, 192), color: tuple[int, int, int] = (20, 140, 220)) -> bytes:
    """An RGB test picture: a colour with a gradient band, so resizes and blends show."""
    image = Image.new("RGB", size, color)
    for x in range(size[0]):
        image.putpixel((x, size[1] // 2), (x % 256, 255 - x % 256, 7))
    return encoded(image).getvalue()


def mask_png(size: tuple[int, int], box: tuple[int, int, int, int]) -> bytes:
    """Black with a white ``box``: the area inpaint repaints."""
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return encoded(mask).getvalue()


def raw_png(ihdr: bytes, idat: bytes) -> bytes:
    """A PNG put together chunk by chunk: for headers Pillow would not write."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def image_bytes(
    fmt: str = "PNG", size: tuple[int, int] = (32, 24), seed: int = 0, noise: bool = False
) -> bytes:
    """A small picture in ``fmt``, different for each ``seed`` (0-65535); ``noise``: random."""
    if noise:
        image = Image.effect_noise(size, 64).convert("RGB")
    else:
        image = Image.new("RGB", size, (seed % 256, 80, 160))
    image.putpixel((0, 0), (seed % 256, seed // 256 % 256, 7))
    return encoded(image, fmt).getvalue()


def noise_png(side: int) -> bytes:
    """Random pixels: bytes no other test stores, and that barely compress."""
    return encoded(Image.effect_noise((side, side), 64).convert("RGB")).getvalue()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- waiting ----------------------------------------------------------------------------------


def wait_for(predicate: Callable[[], T], timeout: float = 10.0) -> T:
    """``predicate()``'s first truthy answer, polled until ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def finished(request: GenerationRequest, status: str | None = None) -> GenerationRequest | None:
    """The request, reloaded, once it has finished (with ``status``, if given)."""
    request.refresh_from_db()
    if not request.is_finished or (status is not None and request.status != status):
        return None
    return request
