"""Content Credentials: a signed C2PA manifest embedded in an image before it is hashed.

``MODELSLAB["C2PA"]`` names a certificate chain and its private key (PEM files or PEM text).
With it, every image the pipeline stores is signed here (the ``c2pa-python`` bindings, the
optional extra ``django-modelslab[c2pa]``, imported only when signing or checking):

* a generated image: ``c2pa.created`` with IPTC ``trainedAlgorithmicMedia`` as
  ``digitalSourceType`` and ModelsLab and the model id as ``softwareAgent``; an image made
  from an input (img2img, inpaint, upscale) gets the input as its ``parentOf`` ingredient
  (with the input's own manifest when it has one), ``c2pa.opened`` on it, then
  ``c2pa.edited`` with the same source type and agent;
* a thumbnail or rendition: ``c2pa.opened`` on the original (its ingredient),
  ``c2pa.resized``, and ``c2pa.converted`` when the format changed.

Signing reads and writes streams (the output is spooled: memory stays bounded); the bytes
returned are what gets hashed and stored. No Pillow and no models here.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .. import __version__
from ..conf import C2PA_KEYS, get_setting
from ..exceptions import ModelsLabConfigurationError
from ..provenance import DIGITAL_SOURCE_TYPE, SPOOL_MAX_MEMORY, Tagged

logger = logging.getLogger("django_modelslab.credentials")

#: Formats signed; anything else is stored unsigned (with a warning).
MIME_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif", "image/avif")
INSTALL_HINT = "pip install 'django-modelslab[c2pa]'"
_CHUNK = 64 * 1024
_AI_MODELS = DIGITAL_SOURCE_TYPE  # IPTC trainedAlgorithmicMedia
# Validation failures that are expected and say nothing about the file: a certificate not
# on the C2PA trust list (any private CA, a test CA) and OCSP not asked.
_TRUST_CODES = ("signingCredential.untrusted", "signingCredential.ocsp.skipped")
_CURVES = {"es256": "secp256r1", "es384": "secp384r1", "es512": "secp521r1"}
# A 1x1 PNG: what the configuration check signs.
_PIXEL = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415478"
    "9c63f8ffff3f0005fe02fe0def46b80000000049454e44ae426082"
)


def c2pa_module() -> Any:
    """The ``c2pa`` bindings; ModelsLabConfigurationError when the extra is not installed."""
    try:
        import c2pa
    except ImportError as exc:
        raise ModelsLabConfigurationError(
            f"MODELSLAB['C2PA'] is set but c2pa-python is not installed ({INSTALL_HINT})."
        ) from exc
    return c2pa


@dataclass(frozen=True)
class Credentials:
    """A signing certificate chain and key as read from ``MODELSLAB["C2PA"]``."""

    cert_chain: bytes = field(repr=False)
    private_key: bytes = field(repr=False)  # never shown
    algorithm: str = "es256"
    tsa_url: str | None = None
    include_prompt: bool = False


def _pem(value: Any, what: str) -> bytes:
    """PEM text as given, or the contents of the file it names."""
    if isinstance(value, bytes):
        return value
    text = str(value)
    if "-----BEGIN" in text:
        return text.encode("ascii", "replace")
    try:
        return Path(text).expanduser().read_bytes()
    except OSError as exc:
        raise ModelsLabConfigurationError(
            f"MODELSLAB['C2PA']['{what}'] cannot be read: {exc.strerror or exc} ({text})"
        ) from exc


def configured() -> Credentials | None:
    """The credentials ``MODELSLAB["C2PA"]`` names, read now; None when signing is off."""
    return load_credentials(get_setting("C2PA"))


def load_credentials(setting: Mapping[str, Any] | None) -> Credentials | None:
    """The credentials ``setting`` names (None when unset); files are read now."""
    if not setting:
        return None
    conf = {**C2PA_KEYS, **setting}
    return Credentials(
        cert_chain=_pem(conf["CERT_CHAIN"], "CERT_CHAIN"),
        private_key=_pem(conf["PRIVATE_KEY"], "PRIVATE_KEY"),
        algorithm=str(conf["ALGORITHM"]).lower(),
        tsa_url=conf["TSA_URL"] or None,
        include_prompt=bool(conf["INCLUDE_PROMPT"]),
    )


def configuration_problem(setting: Mapping[str, Any] | None) -> str:
    """Why ``setting`` cannot sign ("" when it can): the extra missing, a file unreadable,
    a key that is not the certificate's, an algorithm that does not fit the key, or a
    certificate the C2PA library refuses (a test signature is made)."""
    if not setting:
        return ""
    try:
        c2pa_module()
        credentials = load_credentials(setting)
    except ModelsLabConfigurationError as exc:
        return str(exc)
    assert credentials is not None
    if problem := _key_problem(credentials):
        return problem
    try:
        with sign_generated(
            _bytes_file(_PIXEL), credentials, mime="image/png", title="check", model_id="check"
        ):
            pass
    except ModelsLabConfigurationError as exc:
        return str(exc)
    return ""


def _key_problem(credentials: Credentials) -> str:
    """The key does not parse, is not the first certificate's, or does not fit ALGORITHM."""
    from cryptography import x509  # a dependency of c2pa-python
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    try:
        certificates = x509.load_pem_x509_certificates(credentials.cert_chain)
    except ValueError as exc:
        return f"MODELSLAB['C2PA']['CERT_CHAIN'] is not a PEM certificate chain ({exc})."
    try:
        key = serialization.load_pem_private_key(credentials.private_key, password=None)
    except (ValueError, TypeError):
        return (
            "MODELSLAB['C2PA']['PRIVATE_KEY'] is not an unencrypted PEM private key "
            "(PKCS#8 or traditional)."
        )
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != certificates[0].public_key().public_bytes(*spki):
        return (
            "MODELSLAB['C2PA']['PRIVATE_KEY'] is not the key of the first certificate in "
            "CERT_CHAIN (the chain starts with the signing certificate, then its issuers)."
        )
    algorithm = credentials.algorithm
    fits = (
        (algorithm in _CURVES and isinstance(key, ec.EllipticCurvePrivateKey)
         and key.curve.name == _CURVES[algorithm])
        or (algorithm.startswith("ps") and isinstance(key, rsa.RSAPrivateKey))
        or (algorithm == "ed25519" and isinstance(key, ed25519.Ed25519PrivateKey))
    )  # fmt: skip
    if not fits:
        return (
            f"MODELSLAB['C2PA']['ALGORITHM'] is {algorithm!r}, which does not fit the key "
            f"({type(key).__name__.removeprefix('_')})."
        )
    return ""


def sniff_mime(file: IO[bytes]) -> str | None:
    """The image's MIME type from its first bytes (PNG, JPEG, WebP, GIF, AVIF), else None."""
    file.seek(0)
    head = file.read(16)
    file.seek(0)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[4:12] in (b"ftypavif", b"ftypavis"):
        return "image/avif"
    return None


@dataclass
class Ingredient:
    """An image the signed one was made from (its input, or the original of a rendition)."""

    file: IO[bytes]
    title: str


def sign_generated(
    file: IO[bytes],
    credentials: Credentials,
    *,
    mime: str | None = None,
    title: str,
    model_id: str,
    prompt: str | None = None,
    parent: Ingredient | None = None,
) -> Tagged:
    """``file`` with a manifest saying a ModelsLab model made it (from ``parent``, if any)."""
    agent = {"name": f"ModelsLab {model_id}".strip(), "version": model_id or None}
    made = {"digitalSourceType": _AI_MODELS, "softwareAgent": _clean(agent)}
    if prompt and credentials.include_prompt:
        made["description"] = prompt
    if parent is None:
        actions = [{"action": "c2pa.created", **made}]
    else:
        actions = [_opened(), {"action": "c2pa.edited", **made}]
    return _sign(file, credentials, mime=mime, title=title, actions=actions, parent=parent)


def sign_derived(
    file: IO[bytes],
    credentials: Credentials,
    *,
    title: str,
    parent: Ingredient,
    mime: str | None = None,
) -> Tagged:
    """``file``, a smaller copy of ``parent``: ``c2pa.resized`` (and ``c2pa.converted``)."""
    mime = mime or sniff_mime(file)
    actions = [_opened(), {"action": "c2pa.resized"}]
    if mime != sniff_mime(parent.file):
        actions.append({"action": "c2pa.converted"})
    return _sign(file, credentials, mime=mime, title=title, actions=actions, parent=parent)


def _opened() -> dict[str, Any]:
    return {"action": "c2pa.opened", "parameters": {"ingredientIds": ["parent"]}}


def _clean(value: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in value.items() if v is not None}


def _sign(
    file: IO[bytes],
    credentials: Credentials,
    *,
    mime: str | None,
    title: str,
    actions: list[dict[str, Any]],
    parent: Ingredient | None,
) -> Tagged:
    c2pa = c2pa_module()
    mime = mime or sniff_mime(file)
    if mime not in MIME_TYPES:
        raise ModelsLabConfigurationError(f"C2PA signing does not support {mime or 'this file'}.")
    manifest = {
        "claim_generator_info": [{"name": "django-modelslab", "version": __version__}],
        "title": title,
        "format": mime,
        "assertions": [{"label": "c2pa.actions.v2", "data": {"actions": actions}}],
    }
    # No claim thumbnail: it would decode the whole image again (memory, time), and the
    # pipeline stores its own thumbnails, signed as renditions.
    context = c2pa.Context.from_dict({"builder": {"thumbnail": {"enabled": False}}})
    out: Any = tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX_MEMORY)  # noqa: SIM115
    try:
        signer = c2pa.Signer.from_info(
            c2pa.C2paSignerInfo(
                credentials.algorithm.encode(),
                credentials.cert_chain,
                credentials.private_key,
                credentials.tsa_url,
            )
        )
        with signer, c2pa.Builder(manifest, context) as builder:
            if parent is not None:
                parent_mime = sniff_mime(parent.file) or "image/png"
                ingredient = {"title": parent.title, "relationship": "parentOf", "label": "parent"}
                builder.add_ingredient(ingredient, parent_mime, parent.file)
                parent.file.seek(0)
            file.seek(0)
            builder.sign(signer, mime, file, out)
    except c2pa.C2paError as exc:
        out.close()
        raise ModelsLabConfigurationError(
            f"C2PA signing with MODELSLAB['C2PA'] failed: {_message(exc)}"
        ) from exc
    except BaseException:
        out.close()
        raise
    finally:
        file.seek(0)
    return _hashed(out)


def _message(exc: Exception) -> str:
    """The library's message without the key material it never holds anyway, one line."""
    return " ".join(str(exc).split())[:500] or type(exc).__name__


def _hashed(out: Any) -> Tagged:
    out.seek(0)
    digest, size = hashlib.sha256(), 0
    while chunk := out.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    out.seek(0)
    return Tagged(out, digest.hexdigest(), size)


def _bytes_file(data: bytes) -> IO[bytes]:
    import io

    return io.BytesIO(data)


# -- reading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ManifestCheck:
    """What a file's manifest store says: ``state`` is "missing", "invalid" or "valid"."""

    state: str
    problems: tuple[str, ...] = ()
    manifest: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.state == "valid"


def check_manifest(file: IO[bytes], mime: str | None = None) -> ManifestCheck:
    """Validate the manifest embedded in ``file``: missing, invalid (with the failure codes:
    ``assertion.dataHash.mismatch`` when the bytes changed after signing) or valid. A
    certificate that is not on the C2PA trust list is not a failure here."""
    c2pa = c2pa_module()
    mime = mime or sniff_mime(file)
    if mime is None:
        return ManifestCheck("missing", ("not an image format C2PA reads",))
    file.seek(0)
    try:
        with c2pa.Reader(mime, file) as reader:
            results = reader.get_validation_results() or {}
            manifest = reader.get_active_manifest()
    except c2pa.C2paError as exc:
        text = _message(exc)
        if "ManifestNotFound" in type(exc).__name__ or "no JUMBF" in text or "not found" in text:
            return ManifestCheck("missing")
        return ManifestCheck("invalid", (text,))
    finally:
        file.seek(0)
    if manifest is None:
        return ManifestCheck("missing")
    failures = (results.get("activeManifest") or {}).get("failure") or []
    codes = tuple(
        str(item.get("code")) for item in failures if item.get("code") not in _TRUST_CODES
    )
    return ManifestCheck("invalid" if codes else "valid", codes, manifest)
