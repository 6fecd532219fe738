"""Content-addressed storage: keys, dedup, races, settings, and image verification."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import pytest
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, storages
from PIL import Image

from django_modelslab.downloads import download
from django_modelslab.exceptions import InvalidImage
from django_modelslab.imaging import verify
from django_modelslab.imaging.verify import ImageInfo, decode_image, inspect_image
from django_modelslab.inputs import store_input
from django_modelslab.storage import (
    ContentAddressedFileSystemStorage,
    get_image_storage,
    image_storage,
)
from django_modelslab.storage.content import content_key, restore_file, store_file
from django_modelslab.testing import Emulator, Fault

from .helpers import CAFS, configure, image_bytes, raw_png, sha256_hex


def png_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` (its pixel data is a stub)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return raw_png(ihdr, zlib.compress(b"\0" * 64))


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# --- keys -------------------------------------------------------------------------------


def test_content_key_layout() -> None:
    digest = sha256_hex(b"x")
    assert content_key(digest, "png", "modelslab/") == f"modelslab/{digest[:2]}/{digest}.png"
    assert content_key(digest, "jpg", "") == f"{digest[:2]}/{digest}.jpg"
    assert content_key(digest, "png", "assets") == f"assets/{digest[:2]}/{digest}.png"
    with pytest.raises(ValueError, match="SHA-256"):
        content_key("../../etc/passwd", "png", "modelslab/")


def test_store_file_writes_under_the_content_key(media: Path) -> None:
    data = image_bytes("PNG")
    stored = store_file(io.BytesIO(data), sha256=sha256_hex(data), size=len(data))
    assert stored.key == f"modelslab/{sha256_hex(data)[:2]}/{sha256_hex(data)}.png"
    assert stored.uploaded is True
    assert stored.info == ImageInfo("PNG", "png", "image/png", 32, 24)
    assert (media / stored.key).read_bytes() == data
    assert files_under(media) == [media / stored.key]  # no temporary files left behind
    assert image_storage.exists(stored.key)


def test_extension_comes_from_the_bytes_not_the_name(media: Path) -> None:
    data = image_bytes("JPEG")
    stored = store_file(ContentFile(data, name="fake.png"))
    assert stored.key.endswith(f"/{sha256_hex(data)}.jpg")
    assert stored.sha256 == sha256_hex(data)
    assert stored.size == len(data)


def test_storing_the_same_bytes_twice_writes_once(media: Path) -> None:
    data = image_bytes("PNG", seed=1)
    first = store_file(io.BytesIO(data), sha256=sha256_hex(data), size=len(data))
    path = media / first.key
    before = os.stat(path)
    second = store_file(io.BytesIO(data), sha256=sha256_hex(data), size=len(data))
    after = os.stat(path)
    assert (first.uploaded, second.uploaded) == (True, False)
    assert second.key == first.key
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert files_under(media) == [path]


class CountingStorage(FileSystemStorage):
    """A plain (not content-addressed) storage that counts writes."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.writes = 0

    def _save(self, name, content):
        self.writes += 1
        return super()._save(name, content)


def test_store_file_works_with_any_storage(tmp_path: Path) -> None:
    storage = CountingStorage(location=tmp_path)
    data = image_bytes("PNG", seed=2)
    first = store_file(io.BytesIO(data), storage=storage, prefix="p/", max_pixels=10_000)
    second = store_file(io.BytesIO(data), storage=storage, prefix="p/", max_pixels=10_000)
    assert (first.uploaded, second.uploaded) == (True, False)
    assert storage.writes == 1
    assert files_under(tmp_path) == [
        tmp_path / "p" / sha256_hex(data)[:2] / f"{sha256_hex(data)}.png"
    ]


def test_two_threads_storing_the_same_bytes(media: Path) -> None:
    data = image_bytes("PNG", size=(400, 300), seed=3)
    storage = ContentAddressedFileSystemStorage(location=media)
    barrier = threading.Barrier(8)
    results, errors = [], []

    def worker() -> None:
        try:
            barrier.wait(timeout=5)
            results.append(store_file(io.BytesIO(data), storage=storage))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert errors == []
    assert len(results) == 8
    assert {r.key for r in results} == {results[0].key}
    assert sum(r.uploaded for r in results) == 1
    assert files_under(media) == [media / results[0].key]
    assert (media / results[0].key).read_bytes() == data


def test_get_available_name_never_suffixes(media: Path) -> None:
    storage = ContentAddressedFileSystemStorage(location=media)
    assert storage.save("a/b.png", ContentFile(b"first")) == "a/b.png"
    assert storage.get_available_name("a/b.png") == "a/b.png"
    assert storage.save("a/b.png", ContentFile(b"second")) == "a/b.png"
    assert (media / "a" / "b.png").read_bytes() == b"first"  # existing key kept
    assert files_under(media) == [media / "a" / "b.png"]


def test_upload_prefix_cannot_escape(media: Path, settings) -> None:
    configure(settings, UPLOAD_PREFIX="../outside/")
    with pytest.raises(SuspiciousFileOperation):
        store_file(io.BytesIO(image_bytes("PNG", seed=5)))
    assert not (media.parent / "outside").exists()


def test_invalid_image_is_not_stored(media: Path) -> None:
    with pytest.raises(InvalidImage):
        store_file(io.BytesIO(b"<html>not an image</html>"))
    assert files_under(media) == []


# --- which storage ----------------------------------------------------------------------


def test_storage_alias_and_fallback_to_default(media: Path, settings) -> None:
    assert isinstance(get_image_storage(), ContentAddressedFileSystemStorage)
    assert get_image_storage() is storages["modelslab"]
    configure(settings, STORAGE="missing")
    assert get_image_storage() is storages["default"]
    assert image_storage.location == str(media)  # resolves the lazy object
    assert image_storage._wrapped is storages["default"]
    assert not isinstance(image_storage._wrapped, ContentAddressedFileSystemStorage)


def test_image_storage_follows_overridden_storages(media: Path, settings) -> None:
    assert image_storage.location == str(media)
    other = media / "other"
    settings.STORAGES = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "modelslab": {"BACKEND": CAFS, "OPTIONS": {"location": str(other)}},
    }
    assert image_storage.location == str(other)
    data = image_bytes("PNG", seed=4)
    stored = store_file(io.BytesIO(data))
    assert (other / stored.key).read_bytes() == data


IMPORTS_AFTER_MODELS = """
import sys
import django
from django.conf import settings

settings.configure(
    INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes", "django_modelslab"]
)
django.setup()
import django_modelslab.models

def loaded():
    heavy = {name.split(".")[0] for name in sys.modules} & {"PIL", "boto3", "storages"}
    ours = ("django_modelslab.imaging", "django_modelslab.storage.")
    return sorted(heavy) + sorted(name for name in sys.modules if name.startswith(ours))

print(loaded())
from django_modelslab.storage import ContentAddressedS3Storage
print(ContentAddressedS3Storage.__module__, "boto3" in sys.modules)
"""


def test_the_models_load_neither_pillow_nor_boto3() -> None:
    """Every process imports the models: that loads the storage selection, not the image
    checks (Pillow) or the S3 backend (boto3), which load when first asked for."""
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", IMPORTS_AFTER_MODELS],
        cwd=root,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    after_models, s3 = result.stdout.splitlines()
    assert after_models == str(
        [
            "django_modelslab.storage.base",
            "django_modelslab.storage.filesystem",
            "django_modelslab.storage.selection",
        ]
    )
    assert s3 == "django_modelslab.storage.s3 True"  # the documented path, loaded on use


# --- inspect_image ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("PNG", ("PNG", "png", "image/png")),
        ("JPEG", ("JPEG", "jpg", "image/jpeg")),
        ("WEBP", ("WEBP", "webp", "image/webp")),
        ("GIF", ("GIF", "gif", "image/gif")),
    ],
)
def test_inspect_image_formats(fmt: str, expected: tuple[str, str, str]) -> None:
    file = io.BytesIO(image_bytes(fmt, size=(20, 10)))
    file.seek(5)
    info = inspect_image(file, max_pixels=10_000)
    assert (info.format, info.extension, info.content_type) == expected
    assert (info.width, info.height) == (20, 10)
    assert file.tell() == 0


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage bytes, not an image at all",
        image_bytes("BMP"),  # a real image, but not a format we accept
        image_bytes("PNG", size=(64, 64), noise=True)[:-500],  # truncated
        image_bytes("JPEG", size=(64, 64), noise=True)[:-500],  # truncated
    ],
    ids=["empty", "garbage", "bmp", "truncated-png", "truncated-jpeg"],
)
def test_inspect_image_refuses_non_images(data: bytes) -> None:
    file = io.BytesIO(data)
    with pytest.raises(InvalidImage):
        inspect_image(file, max_pixels=10_000)
    assert file.tell() == 0


def test_inspect_image_checks_pixels_before_decoding() -> None:
    # 30000 x 30000 = 900 MP claimed by a 33-byte header: refused without decoding.
    with pytest.raises(InvalidImage, match="decompression bomb"):
        inspect_image(io.BytesIO(png_header(30_000, 30_000)), max_pixels=40_000_000)
    # Below Pillow's own limit, our MAX_IMAGE_PIXELS applies.
    with pytest.raises(InvalidImage, match=r"MAX_IMAGE_PIXELS \(1000000\)"):
        inspect_image(io.BytesIO(png_header(2000, 2000)), max_pixels=1_000_000)


def test_inspect_image_with_a_tiny_pixel_limit() -> None:
    data = image_bytes("PNG", size=(32, 24))
    assert inspect_image(io.BytesIO(data), max_pixels=32 * 24).width == 32
    with pytest.raises(InvalidImage, match="decompression bomb"):
        inspect_image(io.BytesIO(data), max_pixels=32 * 24 - 1)


def gradients(size: tuple[int, int], turn: int = 0) -> Image.Image:
    """A picture with detail everywhere, the same every time."""
    bands = [Image.linear_gradient("L"), Image.radial_gradient("L"), Image.linear_gradient("L")]
    bands[2] = bands[2].rotate(90 + turn)
    return Image.merge("RGB", [band.resize(size) for band in bands])


def corrupted(fmt: str, size: tuple[int, int]) -> bytes:
    """A GIF or WebP whose structure is intact (GIF trailer, WebP RIFF sizes) but whose
    image data is garbage: only decoding finds out."""
    buffer = io.BytesIO()
    gradients(size).save(buffer, fmt)
    data = bytearray(buffer.getvalue())
    start, end = (len(data) // 2, len(data) - 1) if fmt == "GIF" else (40, len(data))
    for i in range(start, end):
        data[i] = (i * 13) & 0xFF
    return bytes(data)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_gif_and_webp_above_the_full_decode_size_are_decoded_for_real(fmt: str) -> None:
    size = (2000, 1300)  # 2.6 Mpx: more than FULL_DECODE_PIXELS
    assert size[0] * size[1] > verify.FULL_DECODE_PIXELS
    data = corrupted(fmt, size)

    with pytest.raises(InvalidImage, match="Unreadable or corrupt image"):
        inspect_image(io.BytesIO(data), max_pixels=40_000_000)

    info, pixels = decode_image(io.BytesIO(image_bytes(fmt, size=size)), max_pixels=40_000_000)
    assert pixels is not None and pixels.size == size == (info.width, info.height)


def test_every_frame_of_an_animation_is_decoded() -> None:
    frames = [gradients((64, 48), turn=30 * n).convert("P") for n in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100)
    data = buffer.getvalue()
    assert inspect_image(io.BytesIO(data), max_pixels=10_000).format == "GIF"
    with Image.open(io.BytesIO(data)) as gif:  # where the last frame's image data starts
        gif.seek(2)
        last = gif.tile[0][2]
    broken = data[:last] + bytes(b ^ 0x5A for b in data[last:-1]) + data[-1:]

    with pytest.raises(InvalidImage, match="Unreadable or corrupt image"):
        inspect_image(io.BytesIO(broken), max_pixels=10_000)


def test_a_corrupt_input_image_is_refused_and_not_stored(media: Path) -> None:
    with pytest.raises(InvalidImage, match="Unreadable or corrupt image"):
        store_input(io.BytesIO(corrupted("WEBP", (2000, 1300))))
    assert files_under(media) == []


def test_restore_file_replaces_damaged_bytes_only_with_the_right_ones(media: Path) -> None:
    data = image_bytes(seed=21)
    stored = store_file(io.BytesIO(data))
    (media / stored.key).write_bytes(b"bit rot")
    assert store_file(io.BytesIO(data)).uploaded is False  # storing again does not see it

    with pytest.raises(InvalidImage, match="not " + stored.key):
        restore_file(io.BytesIO(image_bytes(seed=22)), stored.key)
    assert (media / stored.key).read_bytes() == b"bit rot"

    restore_file(io.BytesIO(data), stored.key)
    assert (media / stored.key).read_bytes() == data
    assert [p.name for p in files_under(media)] == [Path(stored.key).name]  # no temporary left


# --- end to end with the emulator -------------------------------------------------------


def _output_url(emulator: Emulator) -> str:
    import httpx

    body = httpx.post(
        emulator.base_url + "/v6/images/text2img",
        json={"key": "k", "model_id": "flux", "prompt": "fox", "width": 256, "height": 256},
        timeout=5,
    ).json()
    return body["output"][0]


def _fetch(url: str):
    return download(
        url, allowed_hosts=["127.0.0.1"], max_bytes=10**7, timeout=2.0, connect_timeout=1.0
    )


def test_download_then_store(emulator: Emulator, media: Path) -> None:
    url = _output_url(emulator)
    with _fetch(url) as result:
        stored = store_file(result.file, sha256=result.sha256, size=result.size)
    served = emulator.output_bytes(url)
    assert stored.sha256 == sha256_hex(served)
    assert (stored.info.width, stored.info.height) == (256, 256)
    assert (media / stored.key).read_bytes() == served


def test_corrupt_download_is_refused(emulator: Emulator, media: Path) -> None:
    url = _output_url(emulator)
    emulator.add_fault("download", Fault.corrupt())
    with _fetch(url) as result, pytest.raises(InvalidImage):
        store_file(result.file, sha256=result.sha256, size=result.size)
    assert files_under(media) == []
