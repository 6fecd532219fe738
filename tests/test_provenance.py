"""Provenance XMP: written into PNG/JPEG without touching pixels, before the content hash."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import IO

import pytest
from django.conf import settings as django_settings
from PIL import Image as PILImage
from PIL import PngImagePlugin

from django_modelslab.models import GenerationRequest
from django_modelslab.provenance import DIGITAL_SOURCE_TYPE, add_provenance

from .helpers import configure, encoded, generate

IPTC = "{http://iptc.org/std/Iptc4xmpExt/2008-02-29/}"
RDF_DESCRIPTION = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}Description"
PROMPT = 'a <red> fox & "friends" in snow'


def sample(mode: str = "RGB", size: tuple[int, int] = (48, 32)) -> PILImage.Image:
    return PILImage.frombytes(mode, size, os.urandom(size[0] * size[1] * len(mode)))


def xmp_of(data: bytes) -> tuple[bytes, dict[str, str]]:
    """The packet Pillow finds in the file, and the attributes of its rdf:Description."""
    with PILImage.open(io.BytesIO(data)) as img:
        packet = img.info["XML:com.adobe.xmp"] if img.format == "PNG" else img.info["xmp"]
    packet = packet.encode() if isinstance(packet, str) else packet
    description = ET.fromstring(packet.split(b"?>", 1)[1].rsplit(b"<?xpacket", 1)[0])
    return packet, description.find(f".//{RDF_DESCRIPTION}").attrib


def pixels(data: bytes) -> tuple[str, tuple[int, int], bytes]:
    with PILImage.open(io.BytesIO(data)) as img:
        return img.mode, img.size, img.tobytes()


def jpeg_markers(data: bytes) -> list[bytes]:
    """Marker codes and the first bytes of each segment, up to the scan."""
    found, at = [], 2
    while data[at + 1] != 0xDA:
        length = struct.unpack(">H", data[at + 2 : at + 4])[0]
        found.append(data[at + 1 : at + 2] + data[at + 4 : at + 8])
        at += 2 + length
    return found


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
def test_png_gets_xmp_after_ihdr_with_the_same_pixels(mode: str) -> None:
    original = encoded(sample(mode), "PNG").getvalue()

    tagged = add_provenance(io.BytesIO(original), model_id="flux")

    assert tagged is not None
    data = tagged.file.read()
    assert tagged.sha256 == hashlib.sha256(data).hexdigest() and tagged.size == len(data)
    assert data[12:16] == b"IHDR" and data[37:41] == b"iTXt"  # right after IHDR
    with PILImage.open(io.BytesIO(data)) as img:
        img.verify()  # every chunk's CRC, ours included
    assert pixels(data) == pixels(original)
    packet, attributes = xmp_of(data)
    assert attributes[f"{IPTC}DigitalSourceType"] == DIGITAL_SOURCE_TYPE
    assert "trainedAlgorithmicMedia" in packet.decode()
    assert attributes[f"{IPTC}AISystemUsed"] == "ModelsLab flux"
    assert f"{IPTC}AIPromptInformation" not in attributes


def test_jpeg_gets_an_app1_after_jfif_with_the_same_pixels() -> None:
    original = encoded(sample(), "JPEG", quality=90).getvalue()

    tagged = add_provenance(io.BytesIO(original), model_id="sdxl", prompt=PROMPT)

    assert tagged is not None
    data = tagged.file.read()
    assert tagged.sha256 == hashlib.sha256(data).hexdigest()
    markers = jpeg_markers(data)
    assert markers[0] == b"\xe0JFIF" and markers[1] == b"\xe1http"
    assert pixels(data) == pixels(original)  # same entropy-coded data, same decode
    assert data.endswith(original[original.index(b"\xff\xda") :])
    _, attributes = xmp_of(data)
    assert attributes[f"{IPTC}DigitalSourceType"] == DIGITAL_SOURCE_TYPE
    assert attributes[f"{IPTC}AISystemUsed"] == "ModelsLab sdxl"
    assert attributes[f"{IPTC}AIPromptInformation"] == PROMPT  # escaped, read back intact


def test_jpeg_exif_stays_first() -> None:
    exif = PILImage.Exif()
    exif[0x0131] = "camera software"  # Software
    original = encoded(sample(), "JPEG", exif=exif.tobytes()).getvalue()

    tagged = add_provenance(io.BytesIO(original), model_id="flux")

    data = tagged.file.read()
    kinds = jpeg_markers(data)
    assert kinds[:3] == [b"\xe0JFIF", b"\xe1Exif", b"\xe1http"]
    with PILImage.open(io.BytesIO(data)) as img:
        assert img.getexif()[0x0131] == "camera software"
    assert pixels(data) == pixels(original)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_an_earlier_xmp_packet_is_replaced(fmt: str) -> None:
    old = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><old/></x:xmpmeta>'
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", old.decode())
        info.add_text("Comment", "kept")
        original = encoded(sample(), fmt, pnginfo=info).getvalue()
    else:
        original = encoded(sample(), fmt, xmp=old).getvalue()
    assert old in original

    data = add_provenance(io.BytesIO(original), model_id="flux").file.read()

    assert old not in data
    assert data.count(b"trainedAlgorithmicMedia") == 1
    if fmt == "PNG":
        with PILImage.open(io.BytesIO(data)) as img:
            assert img.info["Comment"] == "kept"
    assert pixels(data) == pixels(original)


@pytest.mark.parametrize("fmt", ["WEBP", "GIF"])
def test_webp_and_gif_are_left_unchanged(fmt: str) -> None:
    original = encoded(sample(), fmt)

    assert add_provenance(original, model_id="flux") is None
    assert original.tell() == 0


class ReadRecorder(io.RawIOBase):
    """A file that remembers the largest read asked of it."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)
        self.largest = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._inner.seek(offset, whence)

    def tell(self) -> int:
        return self._inner.tell()

    def read(self, size: int = -1) -> bytes:
        self.largest = max(self.largest, size if size >= 0 else 1 << 62)
        return self._inner.read(size)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_large_files_are_streamed_in_bounded_pieces(fmt: str) -> None:
    options = {"compress_level": 0} if fmt == "PNG" else {"quality": 100}
    original = encoded(sample(size=(1200, 1000)), fmt, **options).getvalue()
    assert len(original) > 2 * 1024 * 1024
    source: IO[bytes] = ReadRecorder(original)

    tagged = add_provenance(source, model_id="flux")

    assert source.largest <= 64 * 1024  # never the whole file at once
    assert tagged.file._rolled  # spilled to disk past 1 MiB instead of growing in memory
    data = tagged.file.read()
    assert tagged.sha256 == hashlib.sha256(data).hexdigest()
    assert pixels(data) == pixels(original)


# -- through the pipeline ----------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("image_format", ["png", "jpeg"])
def test_stored_file_carries_provenance_under_its_own_hash(emulator, image_format: str) -> None:
    emulator.configure(image_format=image_format)

    request = generate(PROMPT, seed=31, model_id="flux-pro")

    assert request.status == GenerationRequest.Status.SUCCEEDED, request.error
    image = request.images.get()
    stored = (Path(django_settings.MEDIA_ROOT) / image.image.name).read_bytes()
    served = emulator.output_bytes(image.source_url)
    digest = hashlib.sha256(stored).hexdigest()
    assert stored != served
    assert image.sha256 == digest and image.bytes == len(stored)
    assert (
        image.image.name
        == f"modelslab/{digest[:2]}/{digest}.{'png' if image_format == 'png' else 'jpg'}"
    )
    assert pixels(stored) == pixels(served)
    packet, attributes = xmp_of(stored)
    assert attributes[f"{IPTC}DigitalSourceType"] == DIGITAL_SOURCE_TYPE
    assert attributes[f"{IPTC}AISystemUsed"] == "ModelsLab flux-pro"
    assert b"fox" not in packet  # the prompt stays out unless a setting allows it


@pytest.mark.django_db
def test_prompt_is_written_when_the_setting_allows(emulator, settings) -> None:
    configure(settings, PROVENANCE_INCLUDE_PROMPT=True)

    request = generate(PROMPT, seed=31)

    stored = (Path(django_settings.MEDIA_ROOT) / request.images.get().image.name).read_bytes()
    _, attributes = xmp_of(stored)
    assert attributes[f"{IPTC}AIPromptInformation"] == PROMPT
    assert attributes[f"{IPTC}AISystemUsed"] == "ModelsLab flux"


@pytest.mark.django_db
def test_provenance_off_stores_the_downloaded_bytes(emulator, settings) -> None:
    configure(settings, PROVENANCE=False)

    request = generate(PROMPT, seed=32)

    image = request.images.get()
    stored = (Path(django_settings.MEDIA_ROOT) / image.image.name).read_bytes()
    assert stored == emulator.output_bytes(image.source_url)
    assert image.sha256 == hashlib.sha256(stored).hexdigest()
