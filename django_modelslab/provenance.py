"""Mark generated images as AI-made: an XMP packet, written into the file before hashing.

The packet says ``Iptc4xmpExt:DigitalSourceType`` = IPTC's ``trainedAlgorithmicMedia`` and,
with the IPTC 2025.1 AI properties, which system made the image (``AISystemUsed``: ModelsLab
and the model id) and, only when ``PROVENANCE_INCLUDE_PROMPT`` allows, the prompt
(``AIPromptInformation``). Pixels are never re-encoded: the container is copied piece by piece
(bounded memory) with the packet inserted:

* PNG: an ``iTXt`` chunk with keyword ``XML:com.adobe.xmp`` right after ``IHDR``;
* JPEG: an ``APP1`` segment (``http://ns.adobe.com/xap/1.0/\\0`` + packet) after ``SOI`` and
  any leading ``APP0`` (JFIF) / Exif ``APP1``.

XMP the file already carried (same chunk keyword / APP1 namespace) is dropped, so a file holds
one packet. WebP, GIF and anything unrecognised are left unchanged (:func:`add_provenance`
returns None). No Django models here; settings are read by the caller.
"""

from __future__ import annotations

import hashlib
import logging
import re
import struct
import tempfile
import zlib
from dataclasses import dataclass
from typing import IO, Any
from xml.sax.saxutils import quoteattr

from . import __version__

logger = logging.getLogger("django_modelslab.provenance")

DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_XMP_KEYWORD = b"XML:com.adobe.xmp"
JPEG_XMP_NAMESPACE = b"http://ns.adobe.com/xap/1.0/\x00"
#: Bytes kept in memory before the tagged copy spills to a temporary file on disk.
SPOOL_MAX_MEMORY = 1024 * 1024
#: A prompt is cut to this many characters in the packet (a JPEG segment holds < 64 KiB).
MAX_PROMPT_CHARACTERS = 2000
_CHUNK = 64 * 1024
# Characters XML 1.0 does not allow (control characters other than tab, LF, CR).
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


@dataclass
class Tagged:
    """A tagged copy, spooled to memory or disk and rewound; the caller closes ``file``."""

    file: IO[bytes]
    sha256: str
    size: int

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> Tagged:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def xmp_packet(*, model_id: str = "", prompt: str | None = None) -> bytes:
    """The UTF-8 XMP packet: source type always, model id when given, prompt when given."""
    attributes = {
        "Iptc4xmpExt:DigitalSourceType": DIGITAL_SOURCE_TYPE,
        "xmp:CreatorTool": f"django-modelslab {__version__}",
    }
    if model_id:
        attributes["Iptc4xmpExt:AISystemUsed"] = f"ModelsLab {_xml_text(model_id)}"
    if prompt:
        attributes["Iptc4xmpExt:AIPromptInformation"] = _xml_text(prompt)[:MAX_PROMPT_CHARACTERS]
    shown = "".join(f"\n    {name}={quoteattr(value)}" for name, value in attributes.items())
    packet = (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about=""\n'
        '    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"\n'
        f'    xmlns:xmp="http://ns.adobe.com/xap/1.0/"{shown}/>\n'
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="r"?>'
    )
    return packet.encode("utf-8")


def add_provenance(
    file: IO[bytes], *, model_id: str = "", prompt: str | None = None
) -> Tagged | None:
    """Copy ``file`` (a PNG or JPEG) with the XMP packet in it, hashing while writing.

    Returns None, leaving ``file`` rewound and unchanged, for other formats and for files
    whose structure is not understood (the storage's own checks still judge those).
    """
    file.seek(0)
    head = file.read(8)
    file.seek(0)
    if head == PNG_SIGNATURE:
        copy = _tag_png
    elif head[:3] == b"\xff\xd8\xff":
        copy = _tag_jpeg
    else:
        return None
    packet = xmp_packet(model_id=model_id, prompt=prompt)
    out = _HashingWriter()
    try:
        copy(file, out, packet)
    except _Unrecognised as exc:
        out.close()
        logger.warning("Provenance not added, the file is left unchanged: %s", exc)
        return None
    except BaseException:
        out.close()
        raise
    finally:
        file.seek(0)
    return out.finish()


class _Unrecognised(Exception):
    """The container is not laid out as expected."""


class _HashingWriter:
    """A spooled temporary file that hashes and counts what is written."""

    def __init__(self) -> None:
        self.file: Any = tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX_MEMORY)  # noqa: SIM115
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.digest.update(data)
        self.file.write(data)
        self.size += len(data)

    def close(self) -> None:
        self.file.close()

    def finish(self) -> Tagged:
        self.file.seek(0)
        return Tagged(self.file, self.digest.hexdigest(), self.size)


def _read_exactly(file: IO[bytes], size: int) -> bytes:
    data = file.read(size)
    if len(data) != size:
        raise _Unrecognised("unexpected end of file")
    return data


def _copy(file: IO[bytes], out: _HashingWriter, size: int | None = None) -> None:
    """Copy ``size`` bytes (None: the rest) in pieces of at most 64 KiB."""
    while size is None or size > 0:
        chunk = file.read(_CHUNK if size is None else min(_CHUNK, size))
        if not chunk:
            if size is not None:
                raise _Unrecognised("unexpected end of file")
            return
        out.write(chunk)
        if size is not None:
            size -= len(chunk)


def _xml_text(value: str) -> str:
    return _XML_INVALID.sub("", value)


# -- PNG -----------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _tag_png(file: IO[bytes], out: _HashingWriter, packet: bytes) -> None:
    out.write(_read_exactly(file, 8))
    length, kind = struct.unpack(">I4s", _read_exactly(file, 8))
    if kind != b"IHDR":
        raise _Unrecognised("PNG does not start with IHDR")
    out.write(struct.pack(">I4s", length, kind))
    _copy(file, out, length + 4)
    # keyword \0, compression flag 0, method 0, language "" \0, translated keyword "" \0, text
    out.write(_png_chunk(b"iTXt", PNG_XMP_KEYWORD + b"\x00\x00\x00\x00\x00" + packet))
    prefix = PNG_XMP_KEYWORD + b"\x00"
    while header := file.read(8):
        if len(header) != 8:
            raise _Unrecognised("PNG chunk header cut short")
        length, kind = struct.unpack(">I4s", header)
        if kind == b"iTXt" and length >= len(prefix):
            start = _read_exactly(file, len(prefix))
            if start == prefix:  # an older XMP packet: dropped, ours replaces it
                file.seek(length - len(prefix) + 4, 1)
                continue
            out.write(header + start)
            _copy(file, out, length - len(prefix) + 4)
        else:
            out.write(header)
            _copy(file, out, length + 4)
        if kind == b"IEND":
            _copy(file, out)  # whatever trails IEND is kept as it was
            return
    raise _Unrecognised("PNG has no IEND")


# -- JPEG ----------------------------------------------------------------------------------

_SOS = 0xDA
_APP0 = 0xE0
_APP1 = 0xE1


def _tag_jpeg(file: IO[bytes], out: _HashingWriter, packet: bytes) -> None:
    segment = JPEG_XMP_NAMESPACE + packet
    if len(segment) + 2 > 0xFFFF:
        raise _Unrecognised("XMP packet too large for a JPEG segment")
    out.write(_read_exactly(file, 2))  # SOI
    inserted = False
    while True:
        marker = _read_exactly(file, 2)
        while marker[1] == 0xFF:  # fill bytes before a marker
            marker = marker[1:] + _read_exactly(file, 1)
        if marker[0] != 0xFF:
            raise _Unrecognised("JPEG marker expected")
        code = marker[1]
        if code == _SOS:
            if not inserted:
                out.write(_app1(segment))
            out.write(marker)
            _copy(file, out)  # scan data and everything after: copied as is
            return
        if 0xD0 <= code <= 0xD7 or code in (0x01, 0xD8, 0xD9):
            raise _Unrecognised(f"unexpected JPEG marker 0x{code:02X} before the scan")
        length = struct.unpack(">H", _read_exactly(file, 2))[0]
        if length < 2:
            raise _Unrecognised("JPEG segment length")
        body = _read_exactly(file, length - 2)  # at most 64 KiB
        if code == _APP1 and body.startswith(JPEG_XMP_NAMESPACE):
            continue  # an older XMP packet: dropped, ours replaces it
        leading = code == _APP0 or (code == _APP1 and body.startswith(b"Exif\x00"))
        if not inserted and not leading:
            out.write(_app1(segment))
            inserted = True
        out.write(marker + struct.pack(">H", length) + body)


def _app1(segment: bytes) -> bytes:
    return b"\xff\xe1" + struct.pack(">H", len(segment) + 2) + segment
